"""Highest bid first on a cluster node (issue 23, item 2): the bid-order index stays right while
replication moves the node's queues.

A cluster node's ``pending`` queue changes under it in ways a node alone never sees: a change
of executor moves waiting messages between ``pending`` and ``standby`` (``rehome``), messages
another holder handled leave the queues (``_unqueue``), and a rollback gives up receipts and
queues their messages again.  Each of these must keep the ``ranked``/``queued`` index equal to
what :func:`missive.mailbox.bids.index_pending` rebuilds from ``pending`` (or keep it empty while
every waiting message offers one bid), so that every round the node takes is the one a full
index gives, each pair's messages leaving its queue as a prefix of it.
"""

from __future__ import annotations

import functools
import itertools
import tempfile
from pathlib import Path

import lmdb
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ledger_actors import Ledger
from test_market_fees import submit
from test_market_index import rounds_match_a_full_index
from test_state_diffs import EXECUTOR, REPLICA

from missive.actors.replay import replay
from missive.actors.runtime import Runtime
from missive.mailbox import bids
from missive.mailbox.diffs import DiffError
from missive.mailbox.envelope import Kind
from missive.mailbox.signed import record_envelope
from missive.mailbox.store import Store
from tests.copies_support import copies_of

GAS = 50_000


class Switching:
    """EXECUTOR's placement in a two-node cluster whose executors change: every actor is held by
    EXECUTOR and REPLICA, and this node executes every actor but those in ``elsewhere``."""

    def __init__(self) -> None:
        self.me = EXECUTOR
        self.elsewhere: set[bytes] = set()

    def holders(self, address: bytes) -> list[bytes]:
        return [EXECUTOR, REPLICA]

    def executes(self, address: bytes) -> bool:
        return address not in self.elsewhere

    def peers(self) -> list[bytes]:
        return [REPLICA]

    def epoch(self) -> int:
        return 0


def _table(txn: lmdb.Transaction, store: Store, name: str) -> list[tuple[bytes, bytes]]:
    return [(bytes(k), bytes(v)) for k, v in txn.cursor(db=store.db[name])]


def index_is_current(store: Store) -> None:
    """The index equals a rebuild from ``pending``; or, while the meta says every waiting message
    offers one bid (``bids.UNIFORM`` + bid), it is empty and they do."""
    txn = store.env.begin(write=True)
    try:
        mark = txn.get(b"ranked", db=store.db["meta"])
        kept = (_table(txn, store, "ranked"), _table(txn, store, "queued"))
        assert mark is not None
        if mark.startswith(bids.UNIFORM):
            level = int.from_bytes(mark[len(bids.UNIFORM):], "big")
            assert kept == ([], [])
            for _, message_id in _table(txn, store, "pending"):
                found = store.message(message_id, txn)
                assert found is not None and store._bid_of(txn, message_id, found[0]) == level
        else:
            assert mark == bids.RANKED
            store._index_pending(txn)
            assert kept == (_table(txn, store, "ranked"), _table(txn, store, "queued"))
    finally:
        txn.abort()


def rounds_take_pair_prefixes(store: Store) -> None:
    """Whatever the round's size, each (sender, recipient) pair's taken messages are the oldest of
    its waiting ones, each taken once."""
    for limit, per_actor in ((2, 1), (3, 2), (64, 64)):
        taken = store.pending_by_bid(limit, per_actor)
        assert len({key for key, _ in taken}) == len(taken)
        waiting = store.pending()
        for key, message_id in taken:
            assert (key, message_id) in waiting
        sender = {m: store.message(m)[0].sender for _, m in waiting}  # type: ignore[index]
        for pair in {(sender[m], k[:20]) for k, m in taken}:
            queue = [k for k, m in waiting if (sender[m], k[:20]) == pair]
            mine = sorted(k for k, m in taken if (sender[m], k[:20]) == pair)
            assert mine == queue[:len(mine)]


def run_rounds(runtime: Runtime, rounds: int) -> None:
    """At most ``rounds`` of the runtime's rounds (a partial drain)."""
    looked = itertools.count()
    trio.run(functools.partial(runtime.run, until=lambda: next(looked) >= rounds))


SEND = st.tuples(st.just("send"), st.integers(0, 2), st.integers(0, 2), st.sampled_from([0, 1, 3, 3]))
OPERATION = st.one_of(
    SEND, SEND, SEND,  # (queues long enough for the moves to meet indexed entries)
    st.tuples(st.just("drain"), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3)),
    st.tuples(st.just("rehome"), st.integers(0, 2), st.just(0), st.just(0)),
    st.tuples(st.just("unqueue"), st.integers(0, 50), st.just(0), st.just(0)),
    st.tuples(st.just("snapshot"), st.integers(0, 2), st.just(0), st.just(0)),
    st.tuples(st.just("rollback"), st.integers(0, 50), st.just(0), st.just(0)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPERATION, min_size=8, max_size=30))
def test_the_index_of_a_cluster_node_equals_a_rebuild_whatever_replication_moves(
        operations: list[tuple[str, int, int, int]]) -> None:
    """Random sends (bids 0, 1, 3) from three senders to three actors, partial drains, changes of
    executor, messages another holder handled, and rollbacks to earlier copies: after each step
    the index equals a rebuild from ``pending`` and the rounds are those of a full index, taking
    each pair's oldest first; at the end every message is handled once here (unless another
    holder did), each pair's in the order sent, rollbacks or not."""
    with tempfile.TemporaryDirectory() as tmp:
        placement = Switching()
        ledger = Ledger(Path(tmp) / "node", placement=placement)
        store, copies = ledger.store, copies_of(ledger.store)
        senders = [ledger.alice, ledger.bob, ledger.keys.new("carol")]
        store.create_account(senders[2].address, senders[2].public_key, 10**18)
        keys = [ledger.keys.new(name) for name in ("dave", "erin", "frank")]
        for key in keys:
            store.create_account(key.address, key.public_key, 0)
        actors = [key.address for key in keys]
        sent: list[tuple[bytes, int, int]] = []  # (message id, sender, actor)
        elsewhere: set[bytes] = set()  # handled by the other holder (dropped from the queues here)
        snapshots: list[tuple[bytes, int, dict[str, object]]] = []
        for op, a, b, c in operations:
            if op == "send":
                sent.append((submit(ledger, senders[a], Kind.CALL, actors[b], value=1, gas=GAS, bid=c), a, b))
                ledger.release_held()
            elif op == "drain":
                run_rounds(Runtime(store, batch=a, per_actor=b), c)
            elif op == "rehome":
                placement.elsewhere ^= {actors[a]}
                copies.rehome()
            elif op == "unqueue":
                waiting = sorted(m for table in ("pending", "standby") for _, m in store.scan(table, b""))
                if waiting:
                    message_id = waiting[a % len(waiting)]
                    recipient = record_envelope(store.get(None, "messages", message_id)).recipient  # type: ignore[arg-type]
                    with store.writing() as txn:
                        copies._unqueue(txn, recipient, {message_id})
                    elsewhere.add(message_id)
            elif op == "snapshot":
                version = copies.head(actors[a])[0]
                snapshot = copies.snapshot(actors[a], version)
                assert snapshot is not None
                snapshots.append((actors[a], version, snapshot))
            elif snapshots:
                address, version, snapshot = snapshots[a % len(snapshots)]
                try:
                    copies.roll_back(REPLICA, address, version, snapshot)
                except DiffError:
                    pass  # this copy no longer reaches that record: nothing was written
            index_is_current(store)
            rounds_match_a_full_index(store)
            rounds_take_pair_prefixes(store)
        placement.elsewhere.clear()
        copies.rehome()
        index_is_current(store)
        ledger.runtime = Runtime(store, batch=3, per_actor=2)
        ledger.run()
        assert store.pending() == [] and store.scan("standby", b"") == []
        for who, to in itertools.product(range(3), range(3)):
            mailbox = [m for m in store.mailbox(actors[to]) if store.message(m)[0].sender == senders[who].address]  # type: ignore[index]
            mine = [m for m, s, r in sent if (s, r) == (who, to) and m not in elsewhere]
            assert sorted(mailbox) == sorted(mine)  # each once
            assert mailbox == mine  # in the order sent, across rollbacks too (they queue what they undo ahead)
        assert (len(store.scan("ranked", b"")), len(store.scan("queued", b""))) == (0, 0)
        report = replay(store)
        assert report.divergence is None, report.divergence.describe()
        store.close()
        ledger.keys.close()


def test_a_stale_index_entry_neither_takes_a_message_twice_nor_breaks_its_pairs_order(tmp_path: Path) -> None:
    """An index entry whose message no longer waits (what a queue move that forgot the index would
    leave) is passed over, and the earlier messages of its pair it met on the way stay theirs:
    the pair's next entry still takes them first."""
    ledger = Ledger(tmp_path / "node", placement=Switching())
    store = ledger.store
    key = ledger.keys.new("dave")
    store.create_account(key.address, key.public_key, 0)
    dave = key.address
    first = submit(ledger, ledger.alice, Kind.CALL, dave, value=1, gas=GAS, bid=1)
    moved = submit(ledger, ledger.alice, Kind.CALL, dave, value=1, gas=GAS, bid=9)
    second = submit(ledger, ledger.alice, Kind.CALL, dave, value=1, gas=GAS, bid=5)
    ledger.release_held()
    (k1, _), (stale, _), (k3, _) = store.pending()
    with store.writing() as txn:  # the bid-9 message leaves the queue but not the index
        txn.delete(stale, db=store.db["pending"])
        txn.put(stale, moved, db=store.db["standby"])
    assert len(store.scan("ranked", b"")) == 3
    for limit, per_actor in ((1, 1), (2, 2), (8, 8)):
        assert store.pending_by_bid(limit, per_actor) == [(k1, first), (k3, second)][:limit]
    ledger.run()
    assert store.mailbox(dave) == [first, second]
