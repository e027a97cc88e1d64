"""Replay rebuilds state from the ledger alone and catches tampering and VM changes."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
from eth_abi import encode
from test_ledger_actors import ASKER, TOKEN, Ledger, selector, transfer

import missive.actors.replay as replay_module
from missive.actors.replay import replay, snapshot
from missive.mailbox.envelope import Kind


@pytest.fixture
def busy(tmp_path: Path) -> tuple[Ledger, bytes, bytes]:
    ledger = Ledger(tmp_path / "node")
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    asker = ledger.deploy(ledger.alice, ASKER)
    for i in range(10):
        ledger.submit(ledger.alice, Kind.CALL, token, transfer(ledger.bob.address, i))
    ledger.submit(ledger.alice, Kind.CALL, asker, selector("ask(address,address)") + encode(["address", "address"], [token, ledger.bob.address]))
    ledger.submit(ledger.alice, Kind.CALL, asker, selector("fail()"), value=77)  # revert + bounce
    ledger.run()
    return ledger, token, asker


def test_replay_reproduces_every_receipt(busy: tuple[Ledger, bytes, bytes]) -> None:
    ledger, token, asker = busy
    traced: list[str] = []
    report = replay(ledger.store, trace=lambda env, rc: traced.append(rc.status))
    assert report.ok, report.divergence and report.divergence.describe()
    assert report.checked == sum(a.handled for _, a in ledger.store.accounts())
    assert "revert" in traced and traced.count("success") >= 12


def test_replay_of_one_actor_and_until(busy: tuple[Ledger, bytes, bytes]) -> None:
    ledger, token, _ = busy
    report = replay(ledger.store, actor=token)
    assert report.ok and report.checked == ledger.store.account(token).handled  # type: ignore[union-attr]
    fifth = ledger.store.mailbox(token)[4]
    stopped = replay(ledger.store, actor=token, until=fifth)
    assert stopped.ok and stopped.stopped_at == fifth and stopped.checked == 5


def test_replay_state_equals_live_state(busy: tuple[Ledger, bytes, bytes]) -> None:
    ledger, token, asker = busy
    live = snapshot(ledger.store)
    roots = {address: account.state_root for address, account in ledger.store.accounts()}
    assert replay(ledger.store).ok
    # the recorded roots are what replay recomputed; equal roots mean equal histories
    assert roots[token] == live[token][1] and roots[asker] == live[asker][1]


def test_tampered_receipt_is_reported_at_that_message(busy: tuple[Ledger, bytes, bytes]) -> None:
    ledger, token, _ = busy
    victim = ledger.store.mailbox(token)[3]
    receipt = ledger.store.receipt(victim)
    assert receipt is not None
    with ledger.store.env.begin(write=True) as txn:
        txn.put(victim, receipt.replace(gas_used=receipt.gas_used + 1).encode(), db=ledger.store.db["receipts"])
    report = replay(ledger.store)
    assert report.divergence is not None and report.divergence.message_id == victim
    assert any(d.startswith("gas_used: expected") for d in report.divergence.differences)


def test_tampered_message_body_is_reported(busy: tuple[Ledger, bytes, bytes]) -> None:
    ledger, token, _ = busy
    victim = ledger.store.mailbox(token)[2]
    with ledger.store.env.begin(write=True) as txn:
        canonical, pk, sig = msgpack.unpackb(txn.get(victim, db=ledger.store.db["messages"]))
        forged = canonical.replace(ledger.bob.address, ledger.alice.address)
        txn.put(victim, msgpack.packb([forged, pk, sig]), db=ledger.store.db["messages"])
    report = replay(ledger.store)
    assert report.divergence is not None and report.divergence.message_id == victim
    assert "hashes to" in report.divergence.describe()


def test_changed_vm_is_reported_at_the_first_message_it_affects(
    busy: tuple[Ledger, bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VM that now charges 3 more gas for any run with calldata: replay stops at the first such message.

    The change is made where replay calls the handler, because the handler and
    the VM are compiled together by mypyc, which calls ``execute`` directly
    (patching ``handler.execute`` would change nothing in the compiled build).
    """
    ledger, token, _ = busy
    real = replay_module.run_handler

    def drifting(actor, envelope, *args):  # type: ignore[no-untyped-def]
        receipt, *rest = real(actor, envelope, *args)
        ran_calldata = envelope.payload and envelope.kind is not Kind.DEPLOY and actor.code
        return (receipt.replace(gas_used=receipt.gas_used + 3) if ran_calldata else receipt, *rest)

    monkeypatch.setattr(replay_module, "run_handler", drifting)
    report = replay(ledger.store)
    assert report.divergence is not None
    assert any(line.startswith("gas_used:") for line in report.divergence.differences)
    handled_in_order = [record[1] for _, record in ledger.store.ledger() if record[0] == "receipt"]
    first_with_calldata = next(
        i for i in handled_in_order if (m := ledger.store.message(i)) and m[0].payload and m[0].kind is not Kind.DEPLOY
    )
    assert report.divergence.message_id == first_with_calldata


def _forge_signature(ledger: Ledger, message_id: bytes) -> None:
    with ledger.store.env.begin(write=True) as txn:
        canonical, pk, sig = msgpack.unpackb(txn.get(message_id, db=ledger.store.db["messages"]))
        forged = bytes([sig[0] ^ 1]) + sig[1:]
        txn.put(message_id, msgpack.packb([canonical, pk, forged]), db=ledger.store.db["messages"])


def test_forged_signature_is_reported_at_its_accept_record(busy: tuple[Ledger, bytes, bytes]) -> None:
    ledger, token, _ = busy
    victim = ledger.store.mailbox(token)[4]
    _forge_signature(ledger, victim)
    report = replay(ledger.store, check_signatures=True)
    assert report.divergence is not None and report.divergence.message_id == victim
    assert "bad signature on message from 0x" + ledger.alice.address.hex() in report.divergence.describe()
    # only the messages handled before the forged one was accepted were checked
    accepted_at = next(seq for seq, record in ledger.store.ledger() if record[:2] == ["accept", victim])
    receipts_before = sum(1 for seq, record in ledger.store.ledger() if record[0] == "receipt" and seq < accepted_at)
    assert report.checked == receipts_before


def test_by_default_signatures_are_taken_from_admission_but_bodies_and_receipts_checked(
        busy: tuple[Ledger, bytes, bytes]) -> None:
    ledger, token, _ = busy
    _forge_signature(ledger, ledger.store.mailbox(token)[4])
    assert replay(ledger.store).ok  # what admission checked is taken as checked (the seals vouch for it)
    victim = ledger.store.mailbox(token)[6]
    receipt = ledger.store.receipt(victim)
    assert receipt is not None
    with ledger.store.env.begin(write=True) as txn:
        txn.put(victim, receipt.replace(output=b"\x01").encode(), db=ledger.store.db["receipts"])
    report = replay(ledger.store)
    assert report.divergence is not None and report.divergence.message_id == victim
    assert report.divergence.differences == (f"output: expected 0x01, got 0x{receipt.output.hex()}",)


def test_non_canonical_receipt_bytes_are_reported(busy: tuple[Ledger, bytes, bytes]) -> None:
    ledger, token, _ = busy
    victim = ledger.store.mailbox(token)[1]
    with ledger.store.env.begin(write=True) as txn:
        fields = msgpack.unpackb(txn.get(victim, db=ledger.store.db["receipts"]))
        # the same values, but the position as a 64-bit integer instead of msgpack's shortest form
        parts = [msgpack.packb(f) for f in fields]
        parts[3] = b"\xcf" + fields[3].to_bytes(8, "big")
        header = bytes([0x90 | len(fields)]) if len(fields) < 16 else b"\xdc" + len(fields).to_bytes(2, "big")
        raw = header + b"".join(parts)
        assert msgpack.unpackb(raw) == fields and raw != msgpack.packb(fields)
        txn.put(victim, raw, db=ledger.store.db["receipts"])
    report = replay(ledger.store)
    assert report.divergence is not None and report.divergence.message_id == victim
    assert report.divergence.differences == ("the recorded receipt is not in canonical form",)
