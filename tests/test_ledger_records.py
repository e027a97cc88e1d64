"""Ledger records decoded in one place (issue 22): :mod:`missive.mailbox.ledger_records`.

Every kind the store writes reads back as its type and packs back to the very bytes stored;
bytes that are no record never raise but come back unreadable, named; replay's lean path reads
exactly what the full decoder reads; and a ledger record that cannot be read is the divergence at
its own record, in one line, even under a valid seal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest
from eth_abi import encode
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ledger_actors import TOKEN, Ledger, selector
from test_market_fees import submit
from test_market_raise import raise_bid
from test_market_workers import op

from missive.actors.replay import replay
from missive.mailbox import ledger_records as lr
from missive.mailbox.envelope import Kind
from missive.mailbox.records import Account
from missive.mailbox.seals import GENESIS, chain, load_key, record_bytes, seal_message
from missive.node import Node
from missive.node.records import ledger_record

ids = st.binary(min_size=32, max_size=32)
addresses = st.binary(min_size=20, max_size=20)
words = st.integers(min_value=0, max_value=2**256 - 1)
accounts = st.builds(Account, words, st.integers(0, 2**64 - 1), st.binary(max_size=32), st.integers(0, 2**64 - 1),
                     st.integers(0, 2**64 - 1), st.binary(min_size=32, max_size=32), st.binary(max_size=32),
                     st.integers(0, 2**64 - 1))
records = st.one_of(
    st.builds(lr.GenesisRecord, addresses, st.binary(max_size=64), words),
    st.builds(lr.AcceptRecord, ids),
    st.builds(lr.ReceiptRecord, ids),
    st.builds(lr.DiffRecord, st.binary(max_size=32), st.binary(max_size=200)),
    st.builds(lr.RollbackRecord, addresses, st.integers(0, 2**32), accounts,
              st.lists(st.tuples(st.binary(min_size=32, max_size=32), st.binary(max_size=32)), max_size=4).map(tuple),
              st.lists(st.integers(0, 2**63), max_size=6).map(tuple)),
    st.builds(lr.RaiseRecord, ids, words, st.binary(max_size=32), st.binary(max_size=64)),
    st.builds(lr.UnraiseRecord, ids, words),
    st.builds(lr.WorkerRecord, st.sampled_from(["register", "unbond", "withdraw"]), addresses,
              st.lists(st.one_of(st.binary(max_size=32), st.integers(0, 2**64 - 1)), min_size=1, max_size=3).map(tuple),
              st.binary(max_size=32), st.binary(max_size=64)),
)


@settings(max_examples=300, deadline=None)
@given(records)
def test_every_kind_reads_back_as_written(record: lr.Record) -> None:
    raw = msgpack.packb(record.fields(), use_bin_type=True)
    assert lr.decode(raw) == record
    assert lr.from_fields(msgpack.unpackb(raw)) == record
    assert lr.from_fields(msgpack.unpackb(msgpack.packb(lr.wire_fields(record))), wire=True) == record
    lean = lr.decode_lean(raw)
    if isinstance(record, (lr.AcceptRecord, lr.ReceiptRecord)):
        assert lean == (record.kind, record.message_id)
    else:
        assert lean == record


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=80),
                 st.lists(st.one_of(st.sampled_from(["accept", "receipt", "genesis", "diff", "rollback", "raise",
                                                     "unraise", "worker", "discarded", "what"]),
                                    st.binary(max_size=40), st.integers(-5, 2**64 - 1), st.none(),
                                    st.lists(st.binary(max_size=4), max_size=3)),
                          max_size=7).map(lambda fields: msgpack.packb(fields, use_bin_type=True))))
def test_bytes_that_are_no_record_never_raise_and_lean_agrees(raw: bytes) -> None:
    record = lr.decode(raw)
    assert isinstance(record, (lr.GenesisRecord, lr.AcceptRecord, lr.ReceiptRecord, lr.DiffRecord, lr.RollbackRecord,
                               lr.RaiseRecord, lr.UnraiseRecord, lr.WorkerRecord, lr.UnknownRecord,
                               lr.UnreadableRecord))
    lean = lr.decode_lean(raw)
    assert lean == ((record.kind, record.message_id) if isinstance(record, (lr.AcceptRecord, lr.ReceiptRecord))
                    else record)
    if isinstance(record, lr.UnreadableRecord):
        assert record.problem and "\n" not in record.problem
    elif not isinstance(record, lr.UnknownRecord):  # a record it read packs back to the same fields
        assert record.fields() == msgpack.unpackb(raw) or isinstance(record, lr.GenesisRecord)


def test_a_discarded_receipt_is_only_a_wire_kind() -> None:
    fields = ["discarded", bytes(32)]
    assert lr.from_fields(fields, wire=True) == lr.ReceiptRecord(bytes(32), discarded=True)
    assert lr.from_fields(fields) == lr.UnknownRecord("discarded", (bytes(32),))
    assert lr.wire_fields(lr.ReceiptRecord(bytes(32), discarded=True)) == fields


@pytest.fixture
def market_ledger(tmp_path: Path) -> Ledger:
    """A ledger with every kind a node alone writes: genesis, accept, receipt, raise, worker."""
    ledger = Ledger(tmp_path / "node")
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    message = submit(ledger, ledger.alice, Kind.CALL, token, selector("transfer(address,uint256)")
                     + encode(["address", "uint256"], [ledger.bob.address, 3]), bid=1, gas=200_000)
    raise_bid(ledger, ledger.alice, message, 2)
    ledger.run()
    op(ledger, ledger.bob, "register", 10**17, ledger.bob.address, 0)
    return ledger


def test_every_record_a_store_writes_decodes_to_its_kind_and_packs_back_exactly(market_ledger: Ledger) -> None:
    store = market_ledger.store
    with store.read() as txn:
        stored = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=store.db["ledger"])]
    kinds = []
    for _, raw in stored:
        record = lr.decode(raw)
        assert not isinstance(record, (lr.UnknownRecord, lr.UnreadableRecord)), record
        assert msgpack.packb(record.fields(), use_bin_type=True) == raw
        kinds.append(record.kind)
    assert {"genesis", "accept", "receipt", "raise", "worker"} <= set(kinds)
    # the one page reader serves the listing: the last N, at most a limit, from a start
    with store.read() as txn:
        everything = lr.page(txn, store.db["ledger"])
        assert [seq for seq, _ in everything] == [int.from_bytes(k, "big") for k, _ in stored]
        assert lr.page(txn, store.db["ledger"], last=2) == everything[-2:]
        assert lr.page(txn, store.db["ledger"], limit=3) == everything[:3]
        assert lr.page(txn, store.db["ledger"], everything[-3][0], last=10) == everything[-3:]
        assert lr.page(txn, store.db["ledger"], last=0) == []
    worker = next(record for _, record in everything if isinstance(record, lr.WorkerRecord))
    shown = ledger_record(7, worker)
    assert shown.type == "worker" and shown.detail.startswith(f"worker register of 0x{market_ledger.bob.address.hex()}")


def _resealed_with(store_dir: Path, store: Any, victim: bytes, raw: bytes) -> None:
    """Replace ledger record ``victim`` by ``raw`` and re-seal the chain with the store's own key:
    what a bug in a writer (or a holder of the seal key) could leave behind."""
    identity = load_key(store_dir, create=False)
    assert identity is not None
    with store.env.begin(write=True) as txn:
        txn.put(victim, raw, db=store.db["ledger"])
        records = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=store.db["ledger"])]
        previous, after = GENESIS, b""
        for seal_key in [bytes(k) for k in txn.cursor(db=store.db["seals"]).iternext(values=False)]:
            covered = b"".join(record_bytes(k, v) for k, v in records if after < k <= seal_key)
            digest = chain(previous, covered)
            txn.put(seal_key, msgpack.packb([digest, identity.sign(seal_message(seal_key, digest))]),
                    db=store.db["seals"])
            previous, after = digest, seal_key


@pytest.mark.parametrize(("raw", "said"), [
    (b"\xc1not msgpack", "not msgpack"),
    (msgpack.packb(["genesis", b"short", b"", b"\x01"]), "corrupt genesis record: the address is not 20 bytes"),
    (msgpack.packb(["ticket", b"x"]), "a record of unknown kind 'ticket'"),
])
def test_replay_names_a_sealed_record_it_cannot_read(tmp_path: Path, raw: bytes, said: str) -> None:
    ledger = Ledger(tmp_path / "node")
    ledger.submit(ledger.alice, Kind.CALL, ledger.bob.address, value=5)
    ledger.run()
    assert replay(ledger.store).ok
    with ledger.store.read() as txn:
        victim = bytes(next(k for k, v in txn.cursor(db=ledger.store.db["ledger"]) if msgpack.unpackb(v)[0] == "genesis"))
    _resealed_with(tmp_path / "node", ledger.store, victim, raw)
    report = replay(ledger.store)
    assert report.divergence is not None
    head, what = report.divergence.describe().split("\n")
    assert head == "the ledger diverges:" and what.startswith(f"  ledger record {int.from_bytes(victim, 'big')}: {said}")
    ledger.store.close()
    ledger.keys.close()
    with Node.open(tmp_path / "node") as node:  # the listing shows it too, in words, and goes on
        listed = node.ledger()
    odd = next(r for r in listed if r.seq == int.from_bytes(victim, "big"))
    assert odd.detail.startswith(said) or "unknown to this version" in odd.detail
    assert any(r.type == "receipt" for r in listed)
