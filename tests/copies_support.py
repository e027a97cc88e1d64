"""Tests' way to a store's replication engine (:class:`missive.replicas.copies.Copies`).

Tests that play one node of a cluster by hand give a :class:`Store` a placement; here
:func:`copies_of` attaches the copies once and returns them every time after.  A store
given no placement keeps copies of every actor and executes none (a plain replica).
"""

from __future__ import annotations

import attrs

from missive.mailbox.store import Store
from missive.replicas.copies import Copies
from missive.replicas.records import Placement


@attrs.frozen
class KeepsCopies:
    """A replica's placement: ``me`` keeps a copy of every actor, ``executor`` executes them all."""

    me: bytes = b"R" * 32
    executor: bytes = b"E" * 32

    def holders(self, address: bytes) -> list[bytes]:
        return [self.executor, self.me]

    def executes(self, address: bytes) -> bool:
        return False

    def peers(self) -> list[bytes]:
        return [self.executor]

    def epoch(self) -> int:
        return 0


def copies_of(store: Store, placement: Placement | None = None) -> Copies:
    """``store``'s copies: attached with ``placement`` the first time.  Without one: a bare replica
    (:class:`KeepsCopies`) that holds only what it is sent of an executor's history, so it cannot
    compare state digests with states it never had (what a store with no placement did before
    the replication engine left the store)."""
    if isinstance(store.replication, Copies):
        return store.replication
    if placement is None:
        return Copies(store, KeepsCopies(), compare_digests=False)
    return Copies(store, placement)
