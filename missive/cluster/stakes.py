"""A cluster node executes only as a worker with a stake (issue 23): each node reads the members'
stakes from the registry actor, and the epochs leave out the members without one.

Every member's worker is the account of its node key (``missive cluster up`` registers each with
a stake).  A worker that unbonds, or is slashed, has no stake: its node must execute nothing.  The
registry is an actor like any other, held by a few nodes, so each node reads it through its client
door (the registry's executor answers) every :data:`POLL` seconds and hands the members without a
stake to its :class:`~missive.cluster.membership.Membership`: the coordinator proposes epochs
without them (as it does without a distrusted member), and the member itself stops serving at
once.  A worker that registers again with a fresh stake is counted back in (a member distrusted on
evidence of a wrong diff stays out: distrust is execution trust's, and it does not end).  The
node's own fees go to the coinbase its worker registered (each receipt records the coinbase it
paid, so a holder re-executing it, or replay, pays the same whenever the choice changed), and
admission refuses a message bidding below the minimum of the worker whose node executes its
recipient (as this node last read it: a change takes up to a poll to be seen).

What it does not do: keep the registry's view agreed between nodes (each reads it for itself,
seconds apart, as each hears heartbeats for itself), or act while the registry cannot be read
(its holders down: the last view stands).  A cluster without a registry (made before it) leaves
everyone in.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from missive.errors import MissiveError
from missive.market.registry_actor import read_worker, reader
from missive.market.workers import Worker
from missive.net import NetError
from missive.vm.keccak import keccak256

log = logging.getLogger(__name__)

#: seconds between two reads of the registry
POLL = 1.0


def entries(members: Sequence[bytes], slots: dict[int, int]) -> dict[bytes, Worker | None]:
    """Each member's worker entry (keccak256 of its node id, last 20 bytes) in the registry whose
    storage is ``slots``; None: never registered."""
    read = reader(slots)
    return {node_id: read_worker(read, keccak256(node_id)[12:]) for node_id in members}


def unstaked(workers: dict[bytes, Worker | None]) -> frozenset[bytes]:
    """The members whose worker has no stake."""
    return frozenset(node_id for node_id, worker in workers.items() if worker is None or not worker.stake)


def minimum_bids(workers: dict[bytes, Worker | None]) -> dict[bytes, int]:
    """Each member's worker's minimum bid (a member without a worker entry: 0)."""
    return {node_id: worker.min_bid if worker is not None else 0 for node_id, worker in workers.items()}


async def watch(members: Sequence[bytes], read_storage: Callable[[bytes | None], Awaitable[dict[str, Any] | None]],
                has_registry: Callable[[], Awaitable[bool]],
                update: Callable[[frozenset[bytes], dict[bytes, int]], None],
                me: bytes = b"", pay_to: Callable[[bytes], Awaitable[None]] | None = None, poll: float = POLL) -> None:
    """Read the registry every ``poll`` s and tell ``update`` who has no stake and each member's
    worker's minimum bid, and ``pay_to`` the coinbase this node's worker (``me``'s) registered
    (forever)."""
    while True:
        await trio.sleep(poll)
        try:
            if not await has_registry():
                continue
            slots: dict[int, int] = {}
            after: bytes | None = None
            while True:
                page = await read_storage(after)
                if page is None:
                    break
                slots.update((int.from_bytes(k, "big"), int.from_bytes(v, "big")) for k, v in page["slots"])
                after = page["next"]
                if after is None:
                    break
        except (NetError, MissiveError, KeyError, TypeError, ValueError) as exc:
            log.debug("the registry could not be read now: %s; the last view stands", exc)
            continue
        workers = entries(members, slots)
        update(unstaked(workers), minimum_bids(workers))
        own = workers.get(me) if me else None
        if own is not None and pay_to is not None:
            await pay_to(own.coinbase)


__all__ = ["POLL", "entries", "minimum_bids", "unstaked", "watch"]
