"""Raising a bid and highest-bid-first scheduling (issue 23, SPEC §7; docs/market.md "Raising a bid").

A raise is a record signed by the message's sender: it tops up the escrow, the message runs with
the new bid, replay re-checks it and reproduces it; every bad raise is refused with one line and
changes nothing; a raise that lands after a round read the message is undone by that round's
commit; the runtime serves higher bids first, each (sender, recipient) pair in order, so a raised
message overtakes lower bids queued before it and pulls its pair's earlier messages along.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import trio
from eth_abi import encode
from test_ledger_actors import TOKEN, Ledger, selector
from test_market_fees import balance, submit

from missive.actors.replay import replay
from missive.actors.runtime import Runtime
from missive.cli.main import main as cli
from missive.keys import Key
from missive.mailbox.envelope import EnvelopeError, Kind
from missive.mailbox.store import Outcome
from missive.market.raises import sign_raise

GAS = 200_000


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "node")


def transfer(to: bytes, amount: int = 1) -> bytes:
    return selector("transfer(address,uint256)") + encode(["address", "uint256"], [to, amount])


def raise_bid(ledger: Ledger, key: Key, message_id: bytes, bid: int) -> int:
    signature = sign_raise(key.signing_key, ledger.store.chain_id, message_id, bid)
    return ledger.store.raise_bid(message_id, bid, key.public_key, signature)


def state(ledger: Ledger) -> tuple[object, ...]:
    store = ledger.store
    return (list(store.ledger()), store.accounts(), store.pending(), store.scan("meta", b"raised:"),
            store.scan("ranked", b""))


def handled_order(ledger: Ledger) -> list[bytes]:
    return [bytes(record[1]) for _, record in ledger.store.ledger() if record[0] == "receipt"]


def test_a_raise_tops_up_the_escrow_and_the_run_pays_with_the_new_bid(ledger: Ledger) -> None:
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    message = submit(ledger, ledger.alice, Kind.CALL, token, transfer(ledger.bob.address), gas=GAS, bid=2)
    before = balance(ledger, ledger.alice.address)
    nonce = ledger.nonce(ledger.alice)
    assert raise_bid(ledger, ledger.alice, message, 9) == GAS * 7
    assert ledger.nonce(ledger.alice) == nonce  # a raise is not one of the account's messages
    assert balance(ledger, ledger.alice.address) == before - GAS * 7
    assert raise_bid(ledger, ledger.alice, message, 10) == GAS  # raised again, from the raised bid
    assert [r[0] for _, r in ledger.store.ledger()][-2:] == ["raise", "raise"]
    coinbase = ledger.store.coinbase()
    paid_before = balance(ledger, coinbase)
    ledger.run()
    receipt = ledger.store.receipt(message)
    assert receipt is not None and receipt.success
    assert receipt.fee == receipt.gas_used * 10 and receipt.fee + receipt.refund == GAS * 10
    assert balance(ledger, coinbase) - paid_before == receipt.fee
    assert balance(ledger, ledger.alice.address) == before - GAS * 8 + receipt.refund
    report = replay(ledger.store)
    assert report.ok, report.divergence and report.divergence.describe()


@pytest.mark.parametrize("case", ["equal", "lower", "not the sender", "handled", "unknown", "too poor", "forged"])
def test_a_bad_raise_is_one_line_and_changes_nothing(ledger: Ledger, case: str) -> None:
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    handled = submit(ledger, ledger.alice, Kind.CALL, token, transfer(ledger.bob.address), gas=GAS, bid=3)
    ledger.run()
    message = submit(ledger, ledger.alice, Kind.CALL, token, transfer(ledger.bob.address), gas=GAS, bid=3)
    before = state(ledger)
    key, target, bid, expected = ledger.alice, message, 4, ""
    if case == "equal":
        bid, expected = 3, "must offer more than the current bid"
    elif case == "lower":
        bid, expected = 1, "must offer more than the current bid"
    elif case == "not the sender":
        key, expected = ledger.bob, "only the sender of"
    elif case == "handled":
        target, expected = handled, "already handled"
    elif case == "unknown":
        target, expected = b"\x01" * 32, "unknown message"
    elif case == "too poor":
        bid, expected = 10**18, "balance too low"
    with pytest.raises(EnvelopeError) as refused:
        if case == "forged":  # alice's key, a signature over another bid
            signature = sign_raise(key.signing_key, ledger.store.chain_id, target, bid + 1)
            ledger.store.raise_bid(target, bid, key.public_key, signature)
        else:
            raise_bid(ledger, key, target, bid)
    text = str(refused.value)
    assert "\n" not in text and (expected or "bad signature") in text, text
    assert state(ledger) == before


def test_a_raise_after_the_round_read_the_message_is_undone_by_its_commit(ledger: Ledger) -> None:
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    message = submit(ledger, ledger.alice, Kind.CALL, token, transfer(ledger.bob.address), gas=GAS, bid=2)
    before = balance(ledger, ledger.alice.address)
    store = ledger.store

    async def raise_then_commit(outcomes: list[Outcome]) -> None:
        raise_bid(ledger, ledger.alice, message, 5)  # lands while the round is handled, before its commit
        assert balance(ledger, ledger.alice.address) == before - GAS * 3
        store.commit(outcomes)

    runtime = Runtime(store, committer=raise_then_commit)
    trio.run(runtime.run)
    receipt = store.receipt(message)
    assert receipt is not None and receipt.fee + receipt.refund == GAS * 2  # paid with the bid it ran with
    assert balance(ledger, ledger.alice.address) == before + receipt.refund  # the top-up came back
    records = [r[0] for _, r in store.ledger()]
    assert records[-3:] == ["raise", "unraise", "receipt"]
    report = replay(store)
    assert report.ok, report.divergence and report.divergence.describe()


def test_a_raised_message_overtakes_lower_bids_queued_before_it_and_pulls_its_pair_along(ledger: Ledger) -> None:
    """Saturation: 60 messages wait (rounds of 8); alice's two messages are queued last with the
    lowest bid; her second is raised above everything: it is handled in the first round, right
    after her first (same pair: FIFO), ahead of the 58 others queued before it."""
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [10**6]))
    others = [ledger.keys.new(f"user{i}") for i in range(6)]
    for key in others:
        ledger.store.create_account(key.address, key.public_key, 10**18)
    queued = [submit(ledger, key, Kind.CALL, token, transfer(ledger.bob.address), gas=GAS, bid=5 + i % 3)
              for i in range(58) for key in [others[i % len(others)]]]
    first = submit(ledger, ledger.alice, Kind.CALL, token, transfer(ledger.bob.address), gas=GAS, bid=1)
    second = submit(ledger, ledger.alice, Kind.CALL, token, transfer(ledger.bob.address), gas=GAS, bid=1)
    raise_bid(ledger, ledger.alice, second, 50)
    ledger.runtime = Runtime(ledger.store, batch=8, per_actor=8)
    ledger.run()
    order = handled_order(ledger)[1:]  # after the deploy
    assert order[:2] == [first, second]  # the raised one, with its pair's earlier message before it
    assert set(order[2:]) == set(queued)
    bids = [ledger.store.message(m)[0].bid for m in order[2:]]  # type: ignore[index]
    assert bids == sorted(bids, reverse=True)  # then highest bid first
    for key in others:  # each pair in its order
        mine = [m for m in order if ledger.store.message(m)[0].sender == key.address]  # type: ignore[index]
        assert mine == [m for m in queued if ledger.store.message(m)[0].sender == key.address]  # type: ignore[index]
    report = replay(ledger.store)
    assert report.ok, report.divergence and report.divergence.describe()


def test_bids_of_0_stay_out_of_the_index_wait_behind_higher_bids_and_are_pulled_along_by_a_raise(
        ledger: Ledger) -> None:
    """Messages bidding 0 cost the bid index nothing (they are not in it) and are served in queue
    order once no higher bid waits; a bid queued after them goes first; a raised bid-0 message
    pulls its pair's earlier bid-0 messages along with it (rounds of 4)."""
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [10**6]))
    others = [ledger.keys.new(f"user{i}") for i in range(3)]
    for key in others:
        ledger.store.create_account(key.address, key.public_key, 10**18)
    free = [submit(ledger, others[i % 3], Kind.CALL, token, transfer(ledger.bob.address), gas=GAS, bid=0)
            for i in range(9)]
    assert ledger.store.scan("ranked", b"") == [] and ledger.store.scan("queued", b"") == []
    paid = submit(ledger, ledger.bob, Kind.CALL, token, transfer(ledger.alice.address), gas=GAS, bid=2)
    mine = [submit(ledger, ledger.alice, Kind.CALL, token, transfer(ledger.bob.address), gas=GAS, bid=0)
            for _ in range(3)]
    assert len(ledger.store.scan("ranked", b"")) == 1  # bob's bid of 2 only
    raise_bid(ledger, ledger.alice, mine[1], 9)
    ledger.runtime = Runtime(ledger.store, batch=4, per_actor=4)
    ledger.run()
    order = handled_order(ledger)[1:]  # after the deploy
    # alice's first two (her raised second pulling her first), bob's bid of 2, then the bids of 0 in
    # queue order (alice's third after her others: her pair in order)
    assert order == [mine[0], mine[1], paid, *free, mine[2]]
    assert ledger.store.scan("ranked", b"") == [] and ledger.store.scan("queued", b"") == []
    report = replay(ledger.store)
    assert report.ok, report.divergence and report.divergence.describe()


def test_missive_bid_raises_and_refuses_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISSIVE_UNENCRYPTED_KEYS", "1")
    node = tmp_path / "n"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        assert cli(["init", "--dir", str(node)]) == 0
    from missive.node import Node

    with Node.open(node) as n:
        sent = n.send(n.default.address, value=5, bid=1)
        message = sent.id.hex()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli(["bid", message, "4", "--dir", str(node)]) == 0
    assert f"raised 0x{message} to bid 4" in out.getvalue()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
        assert cli(["bid", message[:16], "4", "--dir", str(node)]) == 2
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and "must offer more than the current bid" in lines[0], lines
