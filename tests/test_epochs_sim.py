"""Choosing epochs, simulated on trio's MockClock: many more interleavings than real processes reach.

Several coordinators propose at once, messages are lost and delayed at random, and nodes crash
and restart from what they saved.  What must hold (docs/cluster.md, "The replication
protocol", rule 1): no two nodes ever install different records for one epoch number, and
the cluster keeps choosing epochs while a majority is up.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from missive.replicas.epochs import (
    Acceptor,
    AcceptorState,
    Epoch,
    EpochError,
    History,
    Proposer,
    decode_ballot,
    parse_request,
)

MEMBERS = [bytes([i]) * 32 for i in range(1, 6)]


def holders(address: bytes) -> list[bytes]:
    return MEMBERS[:2]


class SimNode:
    """One member: its acceptor (rebuilt from its saved state after a crash) and its proposer."""

    def __init__(self, me: bytes, net: SimNet) -> None:
        self.me = me
        self.net = net
        self.saved: tuple[list[Any], AcceptorState] = ([], AcceptorState())
        self.up = True
        self.start()

    def start(self) -> None:
        epochs, state = self.saved
        history = History(MEMBERS, holders, (Epoch.decode(e, set(MEMBERS)) for e in epochs))
        self.acceptor = Acceptor(history, state, self.save)
        self.proposer = Proposer(self.me, self.acceptor, self.net.asker(self), timeout=0.5, rng=self.net.rng)

    async def save(self, history: History, state: AcceptorState) -> None:
        await trio.sleep(0.001)  # an fsync: other tasks run meanwhile
        self.saved = ([e.encode() for e in history.after(0)], state)

    def crash(self) -> None:
        self.up = False

    def restart(self) -> None:
        self.up = True
        self.start()

    async def handle(self, method: str, params: Any) -> Any:
        members = set(MEMBERS)
        if method == "epoch_prepare":
            number, ballot, _, known = parse_request(params, members, with_epoch=False)
            return await self.acceptor.prepare(number, ballot, known)
        number, ballot, epoch, known = parse_request(params, members, with_epoch=True)
        assert epoch is not None
        return await self.acceptor.accept(number, ballot, epoch, known)


class SimNet:
    def __init__(self, rng: random.Random, loss: float) -> None:
        self.rng = rng
        self.loss = loss
        self.nodes: dict[bytes, SimNode] = {}

    def asker(self, node: SimNode) -> Any:
        async def ask(peer: bytes, method: str, params: Any) -> Any:
            await trio.sleep(self.rng.uniform(0.001, 0.05))
            target = self.nodes[peer]
            if not node.up or not target.up or self.rng.random() < self.loss:
                await trio.sleep(1.0)  # never answered: the caller's timeout fires
                return None
            answer = await target.handle(method, params)
            await trio.sleep(self.rng.uniform(0.001, 0.05))
            return answer if node.up and self.rng.random() >= self.loss else None
        return ask


async def run_cluster(seed: int, loss: float, steps: int) -> tuple[SimNet, list[str]]:
    rng = random.Random(seed)
    net = SimNet(rng, loss)
    for me in MEMBERS:
        net.nodes[me] = SimNode(me, net)
    problems: list[str] = []

    async def coordinate(node: SimNode) -> None:
        while True:
            await trio.sleep(rng.uniform(0.05, 0.4))
            if not node.up:
                continue
            history = node.acceptor.history
            live = frozenset(m for m in MEMBERS if rng.random() < 0.8)
            desired = history.proposal(live, frozenset(rng.sample(MEMBERS, 2))) or Epoch(
                history.latest.number + 1, frozenset(live), frozenset())
            try:
                await node.proposer.propose(desired)
            except EpochError as exc:  # a contradiction: two records for one number
                problems.append(f"{node.me.hex()[:2]}: {exc}")

    async def faults() -> None:
        for _ in range(steps):
            await trio.sleep(rng.uniform(0.1, 0.6))
            node = rng.choice(MEMBERS)
            down = sum(1 for n in net.nodes.values() if not n.up)
            if net.nodes[node].up and down < 2:
                net.nodes[node].crash()
            elif not net.nodes[node].up:
                net.nodes[node].restart()

    async with trio.open_nursery() as nursery:
        for node in net.nodes.values():
            nursery.start_soon(coordinate, node)
        await faults()
        for node in net.nodes.values():
            if not node.up:
                node.restart()
        await trio.sleep(5.0)  # all up, no faults: proposals go on
        nursery.cancel_scope.cancel()
    return net, problems


def chosen_records(net: SimNet) -> dict[int, set[tuple[int, frozenset[bytes], frozenset[bytes]]]]:
    seen: dict[int, set[tuple[int, frozenset[bytes], frozenset[bytes]]]] = {}
    for node in net.nodes.values():
        for epoch in node.acceptor.history.epochs:
            seen.setdefault(epoch.number, set()).add((epoch.number, epoch.serving, epoch.joining))
    return seen


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), loss=st.sampled_from([0.0, 0.05, 0.15]))
def test_no_two_nodes_ever_install_different_records_for_one_epoch(seed: int, loss: float) -> None:
    net, problems = trio.run(run_cluster, seed, loss, 40, clock=trio.testing.MockClock(autojump_threshold=0))
    assert problems == []
    records = chosen_records(net)
    assert all(len(r) == 1 for r in records.values()), {n: r for n, r in records.items() if len(r) > 1}
    newest = max(records)
    assert newest >= 3  # the cluster kept choosing epochs through the faults
    # every node that knows an epoch knows every one before it: the history has no holes
    for node in net.nodes.values():
        assert [e.number for e in node.acceptor.history.epochs] == list(range(len(node.acceptor.history.epochs)))


def test_a_restarted_acceptor_keeps_its_promise() -> None:
    """The promise is saved before it is answered: after a crash the acceptor still refuses a
    lower ballot for the same epoch (else two records could be chosen)."""

    async def go() -> None:
        saved: list[Any] = []

        async def save(history: History, state: AcceptorState) -> None:
            saved.append(state.encode())

        a = Acceptor(History(MEMBERS, holders), AcceptorState(), save)
        assert (await a.prepare(1, (5, MEMBERS[1]), []))["promised"] is True
        again = Acceptor(History(MEMBERS, holders), AcceptorState.decode(saved[-1], set(MEMBERS)), save)
        answer = await again.prepare(1, (4, MEMBERS[2]), [])
        assert answer["promised"] is False and decode_ballot(answer["ballot"]) == (5, MEMBERS[1])
        refused = await again.accept(1, (4, MEMBERS[2]), Epoch(1, frozenset(MEMBERS[:3])), [])
        assert refused["accepted"] is False

    trio.run(go)


@pytest.mark.parametrize("params, message", [
    (None, "expected"),
    ({"number": 0, "ballot": [1, b"x"], "known": []}, "number"),
    ({"number": 1, "ballot": [1, b"x"], "known": "x"}, "known"),
    ({"number": 1, "ballot": "x", "known": []}, "ballot"),
    ({"number": 1, "ballot": [1, b"x"], "known": [[1, [b"\x09" * 32], []]]}, "not members"),
    ({"number": 1, "ballot": [1, b"x"], "known": [[1, [MEMBERS[0]], [MEMBERS[0]]]]}, "both"),
])
def test_malformed_epoch_requests_are_named(params: Any, message: str) -> None:
    with pytest.raises(EpochError, match=message):
        parse_request(params, set(MEMBERS), with_epoch=False)


def test_who_executes_acknowledges_and_is_complete_follows_the_epochs() -> None:
    a, b, c = MEMBERS[:3]

    def placed(address: bytes) -> list[bytes]:
        return [a, b]  # every actor: a first, then b

    h = History(MEMBERS[:3], placed)
    assert h.executor(b"x") == a and h.ack_set(b"x") == {a, b}
    # b frozen past the timeout: a goes on alone, and acknowledges with itself only
    h.extend([Epoch(1, frozenset({a, c}))])
    assert h.executor(b"x") == a and h.ack_set(b"x") == {a}
    # a killed, b back: b joins, but a served last and b did not; b is not complete
    h.extend([Epoch(2, frozenset({c}), frozenset({b}))])
    assert h.executor(b"x") is None and h.ack_set(b"x") == {b}
    assert not h.complete_without_executor(b, placed(b"x"))
    assert h.complete_without_executor(a, placed(b"x"))
    assert h.proposal({b, c}, set()) is None  # b does not report complete: nothing to change
    nxt = h.proposal({a, b, c}, set())
    assert nxt == Epoch(3, frozenset({c}), frozenset({a, b}))
    h.extend([nxt])
    assert h.proposal({a, b, c}, {a}) == Epoch(4, frozenset({a, c}), frozenset({b}))
    with pytest.raises(EpochError, match="two different records"):
        h.extend([Epoch(3, frozenset({a}))])
