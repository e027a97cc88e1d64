"""The bid-order index costs nothing while every waiting message offers one bid (issue 23, Speed).

A node alone serves higher bids first through an index of the waiting messages
(docs/market.md "Highest bid first").  While all of them offer the same bid there is nothing
to order (each actor's queue order is its bid order), so the store keeps no entry for them: it
remembers the level instead, and indexes the waiting messages the moment a message at another
bid arrives or a bid is raised.  What a user sees must not change: the rounds are the same as
with every message indexed, in every mix of bids, raises and drained queues.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from eth_abi import encode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ledger_actors import TOKEN, Ledger
from test_market_fees import submit
from test_market_raise import handled_order, raise_bid, transfer

from missive.actors.replay import replay
from missive.actors.runtime import Runtime
from missive.mailbox.envelope import Kind
from missive.mailbox.store import Store

GAS = 200_000


def index_entries(store: Store) -> int:
    return len(store.scan("ranked", b"")) + len(store.scan("queued", b""))


def rounds_match_a_full_index(store: Store) -> None:
    """The rounds the store takes now equal those it takes with every waiting message indexed."""
    for limit, per_actor in ((3, 2), (5, 5), (64, 64)):
        txn = store.env.begin(write=True)
        try:
            now = store.pending_by_bid(limit, per_actor, txn=txn)
            store._index_pending(txn)  # the index as it was before levels: every waiting bid above 0
            assert store.pending_by_bid(limit, per_actor, txn=txn) == now
        finally:
            txn.abort()


def test_one_bid_level_writes_no_index_entry_and_another_bid_indexes_the_waiting_ones(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "node")
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [10**6]))
    others = [ledger.keys.new(f"user{i}") for i in range(3)]
    for key in others:
        ledger.store.create_account(key.address, key.public_key, 10**18)
    level = [submit(ledger, others[i % 3], Kind.CALL, token, transfer(ledger.bob.address), gas=GAS, bid=3)
             for i in range(6)]
    assert index_entries(ledger.store) == 0  # six waiting at one bid: nothing to order
    rounds_match_a_full_index(ledger.store)
    paid = submit(ledger, ledger.bob, Kind.CALL, token, transfer(ledger.alice.address), gas=GAS, bid=7)
    assert index_entries(ledger.store) == 2 * 7  # another bid: all seven are indexed
    rounds_match_a_full_index(ledger.store)
    ledger.runtime = Runtime(ledger.store, batch=4, per_actor=4)
    ledger.run()
    assert handled_order(ledger)[1:] == [paid, *level]  # the higher bid first, then queue order
    assert index_entries(ledger.store) == 0
    # the queues are empty: the next bid sets the level again, and a raise indexes the waiting ones
    again = [submit(ledger, others[i], Kind.CALL, token, transfer(ledger.bob.address), gas=GAS, bid=2)
             for i in range(3)]
    assert index_entries(ledger.store) == 0
    ledger.store.close()
    ledger.store = Store(tmp_path / "node")  # reopened: the level stands (no rebuild needed)
    assert index_entries(ledger.store) == 0
    raise_bid(ledger, others[2], again[2], 5)
    assert len(ledger.store.scan("ranked", b"")) == 3
    rounds_match_a_full_index(ledger.store)
    ledger.runtime = Runtime(ledger.store, batch=1, per_actor=1)
    ledger.run()
    assert handled_order(ledger)[-3:] == [again[2], again[0], again[1]]
    report = replay(ledger.store)
    assert report.ok, report.divergence and report.divergence.describe()


OPERATION = st.one_of(
    st.tuples(st.just("send"), st.integers(0, 2), st.sampled_from([0, 1, 3])),
    st.tuples(st.just("raise"), st.integers(0, 50), st.integers(1, 4)),
    st.tuples(st.just("drain"), st.integers(1, 4), st.integers(1, 3)),
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPERATION, min_size=1, max_size=14))
def test_rounds_are_those_of_a_full_index_whatever_the_bids_raises_and_drains(
        operations: list[tuple[str, int, int]]) -> None:
    """Random sends (bids 0, 1, 3), raises and drains (rounds of 1 to 4): after each, the round the
    store would take equals the round a full index gives, and every waiting message is handled
    once, each sender's in order."""
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / "node")
        token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [10**6]))
        senders = [ledger.alice, ledger.bob, ledger.keys.new("carol")]
        ledger.store.create_account(senders[2].address, senders[2].public_key, 10**18)
        sent: list[tuple[bytes, int]] = []  # (message id, sender index)
        for op, a, b in operations:
            if op == "send":
                sent.append((submit(ledger, senders[a], Kind.CALL, token, transfer(ledger.bob.address), gas=GAS,
                                    bid=b), a))
            elif op == "raise":
                waiting = {bytes(m) for _, m in ledger.store.pending()}
                candidates = [(m, s) for m, s in sent if m in waiting]
                if candidates:
                    message, who = candidates[a % len(candidates)]
                    envelope = ledger.store.message(message)[0]  # type: ignore[index]
                    raise_bid(ledger, senders[who], message, ledger.store.bid(message, envelope) + b)
            else:
                ledger.runtime = Runtime(ledger.store, batch=a, per_actor=b)
                ledger.run()
            rounds_match_a_full_index(ledger.store)
        ledger.runtime = Runtime(ledger.store, batch=3, per_actor=2)
        ledger.run()
        order = handled_order(ledger)[1:]
        assert sorted(order) == sorted(m for m, _ in sent)
        for who in range(3):
            assert [m for m in order if (m, who) in sent] == [m for m, s in sent if s == who]
        assert index_entries(ledger.store) == 0
        ledger.store.close()
        ledger.keys.close()
