"""Membership: the lease that keeps two holders from executing one actor, and the rule that
decides whose receipts stand when they did anyway (SPEC §6).

The membership actor runs for real here (its trio task and mailbox); only its clock is
driven by the test, so a node "frozen" for a while is one whose clock jumped.
"""

from __future__ import annotations

import os

import trio
from net_support import trio_test

from missive.cluster.membership import Heard, Membership
from missive.cluster.placement import replicas

A, B, C = sorted(os.urandom(32) for _ in range(3))
TIMEOUT = 2.0


class Node:
    """A membership actor with a clock the test moves, adopting every view it reaches."""

    def __init__(self, me: bytes, members: list[bytes], k: int = 2) -> None:
        self.now = 0.0
        self.membership = Membership(me, members, k, timeout=TIMEOUT, clock=lambda: self.now)
        self.views: list[bool] = []  # `serving` of each view adopted

    async def adopt(self, acting: frozenset[bytes], serving: bool) -> None:
        self.membership.adopt(acting, serving)
        self.views.append(serving)

    async def hear(self, *peers: bytes, waiting: int = 0) -> None:
        for peer in peers:
            await self.membership.observe(Heard(peer, True, waiting))


async def serving_node(nursery: trio.Nursery, me: bytes, members: list[bytes]) -> Node:
    node = Node(me, members)
    nursery.start_soon(node.membership.run, node.adopt, 0.01)
    await node.hear(*(m for m in members if m != me))  # every peer: nothing left to send us
    assert node.membership.serving and node.membership.may_execute()
    return node


@trio_test()
async def test_a_node_frozen_past_its_lease_executes_nothing_until_it_has_caught_up_again() -> None:
    async with trio.open_nursery() as nursery:
        node = await serving_node(nursery, A, [A, B, C])
        m = node.membership
        node.now += TIMEOUT * 0.75  # frozen: past the lease (timeout / 2), before peers fail it over
        assert not m.may_execute()  # asked before any heartbeat is taken in: no round, no admission
        await node.hear(B, waiting=3)  # thawed: the first heartbeat comes straight away...
        assert not m.serving and not m.may_execute()  # ...but the lease ran out in between
        assert m.leases_lost == 1 and node.views[-1] is False
        await node.hear(C)  # a majority heard again, but B still holds diffs for our actors
        assert not m.serving
        await node.hear(B)  # B has sent them all
        assert m.serving and m.may_execute() and m.leases_lost == 1
        nursery.cancel_scope.cancel()


@trio_test()
async def test_a_node_that_hears_a_majority_keeps_its_lease() -> None:
    async with trio.open_nursery() as nursery:
        node = await serving_node(nursery, A, [A, B, C])
        m = node.membership
        for _ in range(10):  # C is gone for good; B keeps answering
            node.now += TIMEOUT / 4
            await node.hear(B)
        assert m.may_execute() and m.leases_lost == 0
        assert C not in m.acting  # C's actors moved to their next holders
        nursery.cancel_scope.cancel()


@trio_test()
async def test_in_a_two_node_cluster_only_the_first_member_keeps_serving_alone() -> None:
    async with trio.open_nursery() as nursery:
        first = await serving_node(nursery, A, [A, B])
        second = await serving_node(nursery, B, [A, B])
        for node in (first, second):
            node.now += TIMEOUT * 3  # each sees the other go silent
        with trio.fail_after(5):
            while second.membership.serving:  # its actor's next turn sees the lease gone
                await trio.sleep(0.01)
        await trio.sleep(0.05)  # and a few more turns of the first one's
        assert first.membership.may_execute() and first.membership.serving
        assert not second.membership.may_execute() and not second.membership.serving
        nursery.cancel_scope.cancel()


def test_with_one_copy_of_each_actor_there_is_no_lease_to_lose() -> None:
    m = Membership(A, [A, B, C], 1, timeout=TIMEOUT, clock=lambda: 1e9)
    assert m.serving and m.may_execute()


def address_preferring(node: bytes, members: list[bytes]) -> bytes:
    """An actor address whose first holder (its executor while all are up) is ``node``."""
    while True:
        address = os.urandom(20)
        if replicas(address, members, 2)[0] == node:
            return address


@trio_test()
async def test_where_two_copies_conflict_exactly_one_side_yields_and_both_agree_which() -> None:
    members = [A, B, C]
    ours, theirs = address_preferring(A, members), address_preferring(B, members)
    async with trio.open_nursery() as nursery:
        a = (await serving_node(nursery, A, members)).membership
        b = (await serving_node(nursery, B, members)).membership
        for address in (ours, theirs):  # both executing: the actor's executor in the view stands
            assert a.yields_to(B, address, True) != b.yields_to(A, address, True)
        assert b.yields_to(A, ours, True) and not a.yields_to(B, ours, True)
        assert a.yields_to(B, theirs, True) and not b.yields_to(A, theirs, True)
        # A is catching up (it came back, or lost its lease): it yields even where it is the
        # executor, and B, told so with A's diffs, keeps its receipts even on A's actor
        a.adopt(a.acting, False)
        assert a.yields_to(B, ours, True) and a.yields_to(C, ours, True)
        assert not b.yields_to(A, ours, False)
        assert not a.yields_to(A, ours, True)  # never to itself
        nursery.cancel_scope.cancel()
