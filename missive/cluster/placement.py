"""Where an actor lives: rendezvous (highest-random-weight) hashing over the members.

Every node computes the same answer from the address and the member list alone,
with no table to agree on; and when a member leaves, only the actors it held
move (each to its next-highest node), which is what failover needs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from missive.vm.keccak import keccak256

#: Rankings remembered (a node asks for the same busy actors' holders for every message).
RANKINGS_CACHED = 1 << 16


def ranking(address: bytes, members: Sequence[bytes]) -> list[bytes]:
    """Members (node ids) in the order ``address`` prefers them: the first is its executor."""
    return list(_ranking(address, tuple(members)))


@functools.lru_cache(maxsize=RANKINGS_CACHED)
def _ranking(address: bytes, members: tuple[bytes, ...]) -> tuple[bytes, ...]:
    return tuple(sorted(members, key=lambda node_id: keccak256(node_id + address), reverse=True))


def replicas(address: bytes, members: Sequence[bytes], k: int) -> list[bytes]:
    """The ``k`` nodes that hold ``address``'s actor (all members if there are fewer)."""
    if k < 1:
        raise ValueError(f"an actor needs at least one replica, not {k}")
    return ranking(address, members)[:k]


def executor(address: bytes, members: Sequence[bytes]) -> bytes:
    """The node that orders ``address``'s mailbox and runs its handlers."""
    if not members:
        raise ValueError("a cluster with no members executes nothing")
    return ranking(address, members)[0]
