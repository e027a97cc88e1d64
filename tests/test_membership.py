"""Membership: the lease that stops a node cut off from the others, and the epoch it acts in.

The membership actor runs for real here (its trio task and mailbox); only its clock is
driven by the test, so a node "frozen" for a while is one whose clock jumped.  Who executes
what follows the epochs (missive/replicas/epochs.py); their rules are tested in
tests/test_epochs_sim.py.
"""

from __future__ import annotations

import os

import trio
from net_support import trio_test

from missive.cluster.membership import Heard, Membership
from missive.cluster.placement import replicas
from missive.replicas.epochs import Epoch

A, B, C = sorted(os.urandom(32) for _ in range(3))
TIMEOUT = 2.0


class Node:
    """A membership actor with a clock the test moves, adopting every epoch it installs."""

    def __init__(self, me: bytes, members: list[bytes], k: int = 2) -> None:
        self.now = 0.0
        self.membership = Membership(me, members, k, timeout=TIMEOUT, clock=lambda: self.now)
        self.adopted = 0

    async def adopt(self) -> None:
        if self.membership.adopt():
            self.adopted += 1

    async def hear(self, *peers: bytes, epoch: int = 0) -> None:
        for peer in peers:
            await self.membership.observe(Heard(peer, True, epoch))


async def running(nursery: trio.Nursery, me: bytes, members: list[bytes]) -> Node:
    node = Node(me, members)
    nursery.start_soon(node.membership.run, node.adopt, 0.01)
    await node.hear(*(m for m in members if m != me))
    assert node.membership.serving and node.membership.may_execute()
    return node


def address_preferring(node: bytes, members: list[bytes]) -> bytes:
    """An actor address whose first holder is ``node``."""
    while True:
        address = os.urandom(20)
        if replicas(address, members, 2)[0] == node:
            return address


@trio_test()
async def test_a_node_frozen_past_its_lease_executes_nothing_until_it_hears_a_majority_again() -> None:
    async with trio.open_nursery() as nursery:
        node = await running(nursery, A, [A, B, C])
        m = node.membership
        node.now += TIMEOUT * 0.75  # frozen: past the lease (timeout / 2), before peers fail it over
        assert not m.may_execute()  # asked before any heartbeat is taken in: no round, no admission
        await node.hear(B)  # thawed: a majority again, and still the same epoch: it goes on
        assert m.may_execute() and m.leases_lost == 1
        nursery.cancel_scope.cancel()


@trio_test()
async def test_a_node_told_of_a_newer_epoch_stops_until_it_has_adopted_it() -> None:
    members = [A, B, C]
    ours = address_preferring(A, members)
    async with trio.open_nursery() as nursery:
        node = await running(nursery, A, members)
        m = node.membership
        assert m.executes(ours)
        await node.hear(B, epoch=1)  # B knows an epoch this node has not installed yet
        assert not m.may_execute() and m.executes(ours)  # no round; the view acted in is unchanged
        m.history.extend([Epoch(1, frozenset({B, C}), frozenset({A}))])  # A was failed over: it joins
        m.installed()
        with trio.fail_after(5):
            while m.number != 1:
                await trio.sleep(0.01)
        assert node.adopted == 1 and m.joining and not m.serving and not m.may_execute()
        assert not m.executes(ours) and m.executor(ours) == replicas(ours, members, 2)[1]
        nursery.cancel_scope.cancel()


@trio_test()
async def test_in_a_two_node_cluster_only_the_first_member_keeps_its_lease_alone() -> None:
    async with trio.open_nursery() as nursery:
        first = await running(nursery, A, [A, B])
        second = await running(nursery, B, [A, B])
        for node in (first, second):
            node.now += TIMEOUT * 3  # each sees the other go silent
        assert first.membership.may_execute()
        assert not second.membership.may_execute()
        nursery.cancel_scope.cancel()


def test_with_one_copy_of_each_actor_there_is_no_lease_to_lose() -> None:
    m = Membership(A, [A, B, C], 1, timeout=TIMEOUT, clock=lambda: 1e9)
    assert m.serving and m.may_execute()


def test_the_coordinator_sees_who_is_up_and_who_reports_complete() -> None:
    now = [0.0]
    m = Membership(A, [A, B, C], 2, timeout=TIMEOUT, clock=lambda: now[0])
    m._record(Heard(B, False, 0, complete=True))
    now[0] = TIMEOUT * 1.5  # C never heard from, past the grace time after start
    assert m.current() == {A} or m.current() == {A, B}
    m._record(Heard(B, False, 0, complete=True))
    assert m.current() == {A, B} and m.complete_peers() == {B}
    m.distrust(B)
    assert m.current() == {A}
