"""Ledger seals: every write transaction's records are sealed, and replay finds any change to them.

The ledger is real LMDB in a temp dir.  Each tampering is undone after its
replay, so one busy ledger serves every hypothesis example.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack
import nacl.signing
import pytest
from eth_abi import encode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ledger_actors import ASKER, TOKEN, Ledger, selector, transfer

from missive.actors.replay import ReplayReport, replay
from missive.mailbox.disk import StoreError
from missive.mailbox.envelope import Envelope, Kind
from missive.mailbox.seals import GENESIS, KEY_FILE, chain, record_bytes, seal_message
from missive.mailbox.store import STORE_FORMAT, Store, u64
from tests.copies_support import copies_of

REPO = Path(__file__).resolve().parents[1]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def build(path: Path) -> Ledger:
    ledger = Ledger(path)
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    asker = ledger.deploy(ledger.alice, ASKER)
    for i in range(3):
        ledger.submit(ledger.alice, Kind.CALL, token, transfer(ledger.bob.address, i))
    # several messages in one transaction (group commit): one seal covers them all
    nonce = ledger.nonce(ledger.bob)
    batch = [ledger.bob.sign(Envelope(Kind.CALL, ledger.bob.address, ledger.alice.address, value=1 + i, nonce=nonce + i,
                                      gas=100_000, chain_id=ledger.store.chain_id)) for i in range(4)]
    assert all(not isinstance(r, Exception) for r in ledger.store.accept(batch, ledger.check))
    ledger.submit(ledger.alice, Kind.CALL, asker,
                  selector("ask(address,address)") + encode(["address", "address"], [token, ledger.bob.address]))
    ledger.submit(ledger.alice, Kind.CALL, asker, selector("fail()"), value=77)  # revert + bounce
    ledger.run()
    return ledger


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    ledger = build(tmp_path_factory.mktemp("sealed") / "node")
    yield ledger
    ledger.store.close()


def table(store: Store, name: str) -> list[tuple[bytes, bytes]]:
    with store.read() as txn:
        return [(bytes(k), bytes(v)) for k, v in txn.cursor(db=store.db[name])]


@contextmanager
def tampered(store: Store, name: str, changes: dict[bytes, bytes | None]) -> Iterator[None]:
    """Put (or with None delete) entries of table ``name``; put everything back afterwards."""
    db = store.db[name]
    with store.env.begin(write=True) as txn:
        before = {key: txn.get(key, db=db) for key in changes}
        for key, value in changes.items():
            if value is None:
                txn.delete(key, db=db)
            else:
                txn.put(key, value, db=db)
    try:
        yield
    finally:
        with store.env.begin(write=True) as txn:
            for key, value in before.items():
                if value is None:
                    txn.delete(key, db=db)
                else:
                    txn.put(key, value, db=db)


def covering_seal(store: Store, seq: int) -> int | None:
    """The seq of the seal that covers ledger record ``seq`` (None: beyond the last seal)."""
    return next((int.from_bytes(k, "big") for k, _ in table(store, "seals") if int.from_bytes(k, "big") >= seq), None)


def broken_at(report: ReplayReport) -> tuple[int, int]:
    assert report.divergence is not None, "the tampering went unnoticed"
    assert report.divergence.records is not None, report.divergence.describe()
    assert report.divergence.describe().startswith("ledger records ")
    return report.divergence.records


def test_every_write_transaction_is_sealed_and_replays_clean(sealed: Ledger) -> None:
    store = sealed.store
    report = replay(store)
    assert report.ok, report.divergence and report.divergence.describe()
    assert report.checked == sum(a.handled for _, a in store.accounts())
    seals, records = table(store, "seals"), table(store, "ledger")
    assert len(seals) > 5 and {k for k, _ in seals} <= {k for k, _ in records}
    assert records[-1][0] == seals[-1][0]  # nothing unsealed
    # the chain, recomputed by hand, and each seal's signature by the key in meta
    public_key = store.seal_public_key()
    assert public_key is not None and public_key == bytes(store.seal_key.signing_key.verify_key)  # type: ignore[union-attr]
    previous, after = GENESIS, b""
    for key, raw in seals:
        digest, signature = msgpack.unpackb(raw)
        covered = [record_bytes(k, v) for k, v in records if after < k <= key]
        assert covered and chain(previous, b"".join(covered)) == digest
        nacl.signing.VerifyKey(public_key).verify(seal_message(key, digest), signature)
        previous, after = digest, key
    assert report.sealed == (int.from_bytes(seals[-1][0], "big"), msgpack.unpackb(seals[-1][1])[0])
    assert store.seal_head() == report.sealed
    # a group commit: one seal for several records
    assert any(sum(1 for k, _ in records if lo < k <= hi) >= 4 for (lo, _), (hi, _) in zip(seals, seals[1:], strict=False))


def test_the_seal_key_file_is_private_and_matches_the_store(tmp_path: Path) -> None:
    with Store(tmp_path / "node", create=True) as store:
        public_key = store.seal_public_key()
    key_file = tmp_path / "node" / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with Store(tmp_path / "node") as store:
        assert store.seal_public_key() == public_key and store.seal_key is not None
    # another key in the file: the store refuses to append with it
    key_file.rename(tmp_path / "saved.key")
    from missive.identity import NodeIdentity

    NodeIdentity.generate().save(key_file)
    with pytest.raises(StoreError, match="not the key that sealed this ledger"):
        Store(tmp_path / "node")
    # no key at all: reading and replaying work, appending to the ledger does not
    key_file.unlink()
    with Store(tmp_path / "node") as store:
        assert store.seal_key is None and replay(store).ok
        with pytest.raises(StoreError, match="no ledger seal key"):
            store.create_account(b"\x01" * 20, b"\x02" * 32, 5)
        assert list(store.ledger()) == []


def test_a_record_appended_outside_a_sealing_transaction_is_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "node", create=True) as store, store.env.begin(write=True) as txn:
        with pytest.raises(StoreError, match="outside a sealing transaction"):
            store.append(txn, ["genesis", b"\x01" * 20, b"", b""])


def test_an_old_store_without_seals_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    Store(tmp_path / "node", create=True).close()
    with Store(tmp_path / "node") as store, store.env.begin(write=True) as txn:
        txn.put(b"format", msgpack.packb(1), db=store.db["meta"])
    with pytest.raises(StoreError, match=rf"store format 1 \(a ledger without seals.*reads {STORE_FORMAT}"):
        Store(tmp_path / "node")
    with pytest.raises(StoreError, match="store format 1"):
        Store(tmp_path / "node", readonly=True)


def test_a_store_whose_replies_got_free_gas_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    """Format 2 ledgers were written when a reply got 100,000 gas no message paid for: under
    today's rule they would replay as a divergence, so they are refused by name instead."""
    Store(tmp_path / "node", create=True).close()
    with Store(tmp_path / "node") as store, store.env.begin(write=True) as txn:
        txn.put(b"format", msgpack.packb(2), db=store.db["meta"])
    with pytest.raises(StoreError, match=rf"store format 2 \(its replies got gas no message paid for.*reads {STORE_FORMAT}"):
        Store(tmp_path / "node", readonly=True)


@SETTINGS
@given(data=st.data())
def test_flipping_any_byte_of_any_record_is_reported_at_its_seal(sealed: Ledger, data: st.DataObject) -> None:
    store = sealed.store
    records = table(store, "ledger")
    key, value = data.draw(st.sampled_from(records))
    at = data.draw(st.integers(0, len(value) - 1))
    flip = data.draw(st.integers(1, 255))
    seq = int.from_bytes(key, "big")
    with tampered(store, "ledger", {key: value[:at] + bytes([value[at] ^ flip]) + value[at + 1:]}):
        report = replay(store)
    first, last = broken_at(report)
    assert first <= seq <= last == covering_seal(store, seq)
    assert "chain hash: expected 0x" in report.divergence.describe()  # type: ignore[union-attr]
    # nothing of the broken transaction was replayed
    assert report.checked == sum(1 for k, v in records if k < u64(first) and msgpack.unpackb(v)[0] == "receipt")


@SETTINGS
@given(data=st.data())
def test_deleting_any_record_is_reported_at_its_seal(sealed: Ledger, data: st.DataObject) -> None:
    store = sealed.store
    key, _ = data.draw(st.sampled_from(table(store, "ledger")))
    seq = int.from_bytes(key, "big")
    with tampered(store, "ledger", {key: None}):
        report = replay(store)
    assert broken_at(report)[1] == covering_seal(store, seq)


@SETTINGS
@given(data=st.data())
def test_reordering_records_is_reported_at_the_first_seal_it_breaks(sealed: Ledger, data: st.DataObject) -> None:
    store = sealed.store
    records = table(store, "ledger")
    i, j = sorted(data.draw(st.lists(st.integers(0, len(records) - 1), min_size=2, max_size=2, unique=True)))
    (a, va), (b, vb) = records[i], records[j]
    if va == vb:
        return
    with tampered(store, "ledger", {a: vb, b: va}):
        report = replay(store)
    assert broken_at(report)[1] == covering_seal(store, int.from_bytes(a, "big"))


@SETTINGS
@given(data=st.data())
def test_an_inserted_record_is_reported(sealed: Ledger, data: st.DataObject) -> None:
    store = sealed.store
    records = table(store, "ledger")
    used = {int.from_bytes(k, "big") for k, _ in records}
    seq = data.draw(st.integers(0, max(used) + 3).filter(lambda s: s not in used))
    value = data.draw(st.sampled_from([v for _, v in records]))
    with tampered(store, "ledger", {u64(seq): value}):
        report = replay(store)
    first, last = broken_at(report)
    seal = covering_seal(store, seq)
    assert last == seal if seal is not None else (first, last) == (seq, seq)


def test_deleting_a_seal_is_reported(sealed: Ledger) -> None:
    store = sealed.store
    seals = table(store, "seals")
    middle, after = seals[len(seals) // 2][0], seals[len(seals) // 2 + 1][0]
    with tampered(store, "seals", {middle: None}):
        assert broken_at(replay(store))[1] == int.from_bytes(after, "big")
    head = seals[-1][0]
    with tampered(store, "seals", {head: None}):
        report = replay(store)
    assert broken_at(report)[1] == int.from_bytes(head, "big") and "have no seal" in report.divergence.describe()  # type: ignore[union-attr]


def test_a_seal_at_a_record_that_is_not_there_is_reported(sealed: Ledger) -> None:
    store = sealed.store
    seals, records = table(store, "seals"), table(store, "ledger")
    gap = next(s for s in range(1, 10**6) if u64(s) not in dict(records) and u64(s) < records[-1][0])
    with tampered(store, "seals", {u64(gap): seals[0][1]}):
        report = replay(store)
    assert broken_at(report)[1] == gap and "which is missing" in report.divergence.describe()  # type: ignore[union-attr]
    with tampered(store, "seals", {u64(10**9): seals[0][1]}):
        assert broken_at(replay(store)) == (10**9, 10**9)


def resealed(store: Store, key: nacl.signing.SigningKey, records: dict[bytes, bytes], since: bytes) -> dict[bytes, bytes | None]:
    """Seals from ``since`` on recomputed over ``records`` and signed by ``key``: a thorough forger."""
    out: dict[bytes, bytes | None] = {}
    previous, after = GENESIS, b""
    for seal_key, raw in table(store, "seals"):
        digest = msgpack.unpackb(raw)[0]
        if seal_key >= since:
            covered = [record_bytes(k, v) for k, v in sorted(records.items()) if after < k <= seal_key]
            digest = chain(previous, b"".join(covered))
            out[seal_key] = msgpack.packb([digest, key.sign(seal_message(seal_key, digest)).signature])
        previous, after = digest, seal_key
    return out


def test_a_rewritten_ledger_resealed_with_another_key_is_reported_at_the_first_forged_seal(sealed: Ledger) -> None:
    store = sealed.store
    records = dict(table(store, "ledger"))
    seals = table(store, "seals")
    victim_seal = seals[len(seals) // 2][0]
    victim = max(k for k in records if k <= victim_seal)
    forged = dict(records)
    forged[victim] = forged[victim][:-1] + bytes([forged[victim][-1] ^ 1])
    forger = nacl.signing.SigningKey.generate()
    changes = resealed(store, forger, forged, victim_seal)
    with tampered(store, "ledger", {victim: forged[victim]}), tampered(store, "seals", changes):
        report = replay(store)
        assert broken_at(report)[1] == int.from_bytes(victim_seal, "big")
        assert "is not signed by the store's seal key" in report.divergence.describe()  # type: ignore[union-attr]
    # the forger re-signs every seal and swaps the public key in meta too: the seals hold (the
    # forger has a key), and only the store's key as noted beforehand tells
    honest = store.seal_public_key()
    assert honest is not None
    everything = resealed(store, forger, records, b"")
    with tampered(store, "seals", everything), tampered(store, "meta", {b"seal_key": bytes(forger.verify_key)}):
        assert replay(store).ok
        pinned = replay(store, seal_key=honest)
        assert pinned.divergence is not None and "seal key: expected 0x" + honest.hex() in pinned.divergence.describe()
    assert replay(store).ok and replay(store, seal_key=honest).ok


def test_a_seal_whose_hash_or_signature_is_changed_is_reported(sealed: Ledger) -> None:
    store = sealed.store
    seals = table(store, "seals")
    key, raw = seals[len(seals) // 3]
    digest, signature = msgpack.unpackb(raw)
    with tampered(store, "seals", {key: msgpack.packb([bytes(32), signature])}):
        assert broken_at(replay(store))[1] == int.from_bytes(key, "big")
    # a bad signature on the newest seal: reported there
    head, head_raw = seals[-1]
    head_digest, head_signature = msgpack.unpackb(head_raw)
    bad = bytes([head_signature[0] ^ 1]) + head_signature[1:]
    with tampered(store, "seals", {head: msgpack.packb([head_digest, bad])}):
        report = replay(store)
    assert broken_at(report)[1] == int.from_bytes(head, "big") and "not signed" in report.divergence.describe()  # type: ignore[union-attr]
    # an older seal's signature damaged, its hash right: the newest seal still vouches for every record
    # (nothing the seals protect changed); --check-signatures verifies every seal and reports it
    bad = bytes([signature[0] ^ 1]) + signature[1:]
    with tampered(store, "seals", {key: msgpack.packb([digest, bad])}):
        assert replay(store).ok
        assert broken_at(replay(store, check_signatures=True))[1] == int.from_bytes(key, "big")


def test_stopping_early_checks_the_last_seal_it_reached(sealed: Ledger) -> None:
    store = sealed.store
    token_first = store.mailbox(next(a for a, acc in store.accounts() if acc.code_hash))[0]
    stopped = replay(store, until=token_first)
    assert stopped.ok and stopped.stopped_at == token_first and stopped.sealed is not None
    reached = u64(stopped.sealed[0])
    digest, signature = msgpack.unpackb(dict(table(store, "seals"))[reached])
    with tampered(store, "seals", {reached: msgpack.packb([digest, bytes(64)])}):
        assert broken_at(replay(store, until=token_first))[1] == stopped.sealed[0]


def test_rollback_appends_and_never_rewrites_a_sealed_record(tmp_path: Path) -> None:
    from test_state_diffs import REPLICA, ExecutesAll

    from missive.mailbox.diffs import StateDiff

    ledger = Ledger(tmp_path / "executor")
    copies_of(ledger.store, ExecutesAll())
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    for i in range(6):
        ledger.submit(ledger.alice, Kind.CALL, token, transfer(ledger.bob.address, i))
    ledger.run()
    handled = ledger.store.account(token).handled  # type: ignore[union-attr]
    diffs = [StateDiff.decode(raw) for _, raw in copies_of(ledger.store).queued("replicate", REPLICA, 10**6)]
    with Store(tmp_path / "replica", create=True) as replica:
        prefix = [d for d in diffs if d.address != token or d.account.handled <= handled // 2]
        assert copies_of(replica).apply_diffs(b"E" * 32, prefix)[1] is None
        assert replay(replica).ok  # the replica's own ledger (its applied diffs) is sealed too
        since = replica.account(token).handled  # type: ignore[union-attr]
        snapshot = copies_of(replica).snapshot(token, since)
    assert snapshot is not None
    before = table(ledger.store, "ledger")
    copies_of(ledger.store).roll_back(REPLICA, token, since, snapshot)
    after = table(ledger.store, "ledger")
    assert after[:len(before)] == before  # nothing sealed was rewritten
    rollback_key, rollback_raw = after[len(before)]
    rollback = msgpack.unpackb(rollback_raw)
    assert rollback[0] == "rollback" and len(rollback[5]) == handled - since
    discarded = table(ledger.store, "discarded")
    assert [int.from_bytes(k, "big") for k, _ in discarded] == rollback[5]
    assert {v for _, v in discarded} == {rollback_key}
    assert all(msgpack.unpackb(dict(before)[k])[0] == "receipt" for k, _ in discarded)
    from missive.cluster.reads import ledger_page

    shown = {seq: record[0] for seq, record, _, _ in ledger_page(ledger.store, limit=10**6)["records"]}
    assert [seq for seq, kind in shown.items() if kind == "discarded"] == rollback[5]  # listed as before seals
    ledger.run()  # the discarded messages handled again: new receipt records
    report = replay(ledger.store)
    assert report.ok, report.divergence and report.divergence.describe()
    # the discarded index is not sealed, but every entry is checked against the sealed rollback record
    first, _ = discarded[0]
    with tampered(ledger.store, "discarded", {first: None}):
        report = replay(ledger.store)
    assert report.divergence is not None and "did not skip" in report.divergence.describe()
    standing = next(k for k, v in after if msgpack.unpackb(v)[0] == "receipt" and k not in dict(discarded))
    with tampered(ledger.store, "discarded", {standing: rollback_key}):
        report = replay(ledger.store)
    assert report.divergence is not None and "does not list it" in report.divergence.describe()
    assert replay(ledger.store).ok


# -- the command ---------------------------------------------------------------------------------

def missive(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "missive", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_replay_command_checks_seals_by_default_and_signatures_on_request(tmp_path: Path) -> None:
    node = tmp_path / "node"
    ledger = build(node)
    store = ledger.store
    public_key = store.seal_public_key()
    assert public_key is not None
    records = table(store, "ledger")
    accept_key, accept_raw = next((k, v) for k, v in records if msgpack.unpackb(v)[0] == "accept")
    message_id = bytes(msgpack.unpackb(accept_raw)[1])
    store.close()
    ledger.keys.close()

    out = missive("replay", "--dir", str(node))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "replay ok:" in out.stdout and f"seal key 0x{public_key.hex()}" in out.stdout
    assert "sealed through ledger record" in out.stdout
    assert missive("replay", "--dir", str(node), "--seal-key", public_key.hex()).returncode == 0
    wrong = missive("replay", "--dir", str(node), "--seal-key", "00" * 32)
    assert wrong.returncode == 4 and "seal key: expected 0x" in wrong.stdout
    assert missive("replay", "--dir", str(node), "--trust-signatures").returncode == 0  # the old flag: a no-op now
    help_text = missive("replay", "--help").stdout
    assert "--check-signatures" in help_text and "seal" in help_text and "--trust-signatures" not in help_text

    with Store(node) as store:
        # a client signature forged in the messages table: covered by the seals' word, checked on request
        with store.env.begin(write=True) as txn:
            canonical, pk, sig = msgpack.unpackb(txn.get(message_id, db=store.db["messages"]))
            txn.put(message_id, msgpack.packb([canonical, pk, bytes([sig[0] ^ 1]) + sig[1:]]), db=store.db["messages"])
    assert missive("replay", "--dir", str(node)).returncode == 0
    checking = missive("replay", "--dir", str(node), "--check-signatures")
    assert checking.returncode == 4 and "bad signature" in checking.stdout, checking.stdout

    with Store(node) as store, store.env.begin(write=True) as txn:
        txn.put(accept_key, accept_raw[:-1] + bytes([accept_raw[-1] ^ 0x40]), db=store.db["ledger"])
    broken = missive("replay", "--dir", str(node))
    assert broken.returncode == 4 and "replay diverged" in broken.stdout
    seq = int.from_bytes(accept_key, "big")
    assert "diverge from their seal" in broken.stdout and "chain hash: expected 0x" in broken.stdout
    assert f"..{covering_seal_at(node, seq)} diverge" in broken.stdout


def covering_seal_at(node: Path, seq: int) -> int | None:
    with Store(node, readonly=True) as store:
        return covering_seal(store, seq)


def test_threads_writing_at_once_each_seal_their_own_records(tmp_path: Path) -> None:
    """A cluster node accepts in one worker thread while it commits in another: each transaction's
    records go into its own seal, whichever thread finishes tidying up first."""
    import threading

    from missive.keys import Keystore
    from missive.mailbox.admission import checker

    store = Store(tmp_path / "node", create=True)
    keys = Keystore(tmp_path / "node", create=True)
    alice, bob = keys.new("alice"), keys.new("bob")
    store.create_account(alice.address, alice.public_key, 10**18)
    check = checker(store)
    errors: list[BaseException] = []

    class SlowTxn:
        """A write transaction that lingers a moment after it commits (as a busy thread may)."""

        def __init__(self, txn: Any) -> None:
            self.txn = txn

        def __getattr__(self, name: str) -> Any:
            return getattr(self.txn, name)

        def get(self, *args: Any, **kwargs: Any) -> Any:
            if threading.current_thread().name == "creating":
                time.sleep(0.002)  # a slow transaction, while the other thread tidies up
            return self.txn.get(*args, **kwargs)

        def commit(self) -> None:
            self.txn.commit()
            time.sleep(0.001)

        def __enter__(self) -> SlowTxn:
            return self

        def __exit__(self, kind: object, *rest: object) -> None:
            self.txn.__exit__(kind, *rest)
            time.sleep(0.001)

    class SlowEnv:
        def __init__(self, env: Any) -> None:
            self.env = env

        def __getattr__(self, name: str) -> Any:
            return getattr(self.env, name)

        def begin(self, **kwargs: Any) -> Any:
            return SlowTxn(self.env.begin(**kwargs)) if kwargs.get("write") else self.env.begin(**kwargs)

    real_env = store.env
    store.env = SlowEnv(real_env)  # type: ignore[assignment]

    def accepting() -> None:
        try:
            for nonce in range(300):
                envelope = Envelope(Kind.CALL, alice.address, bob.address, value=1, nonce=nonce, gas=50_000,
                                    chain_id=store.chain_id)
                (result,) = store.accept([alice.sign(envelope)], check)
                assert not isinstance(result, Exception), result
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    def creating() -> None:
        try:
            for i in range(300):
                store.create_account((i + 1).to_bytes(20, "big"), bytes(32), i)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=accepting), threading.Thread(target=creating, name="creating")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.env = real_env
    assert not errors, errors
    assert len(table(store, "seals")) == 601 == len(table(store, "ledger"))
    report = replay(store)
    assert report.ok, report.divergence and report.divergence.describe()
    store.close()
    keys.close()
