"""One writer per node: every write waiting at the same moment shares one transaction and one fsync.

Why: a cluster node writes for several reasons at once: client submits are
admitted, peers deliver messages, the runtime commits a round, peers
acknowledge what they received.  Each in its own LMDB transaction means each
waits for LMDB's writer lock, then pays its own fsync, so under load the
writers queue behind each other and a message that passes five durable steps
on its way (admitted, delivered, handled, reply delivered, reply handled)
waits at every one.  Here they queue in memory instead: whatever arrived
while one transaction was being written and synced goes into the next, in
arrival order, each in a nested transaction so that one failing write is
undone alone (:meth:`missive.mailbox.store.Store.write_together`).

A write's caller resumes only once the transaction holding it is durable,
and cannot be cancelled out of that wait (as with ``trio.to_thread``): it
learns the outcome of a write that happened.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import attrs
import lmdb
import trio

from missive.mailbox.store import Store, StoreError

T = TypeVar("T")


@attrs.define(eq=False)
class _Write(Generic[T]):
    run: Callable[[lmdb.Transaction], T]
    done: trio.Event = attrs.field(factory=trio.Event)
    result: Any = None


class GroupWriter:
    """Group commit for one store; :meth:`run` must be running (in the node's nursery)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: list[_Write[Any]] = []
        self._arrived = trio.Event()
        self.transactions = 0
        self.writes = 0
        self._stopped = False

    async def write(self, run: Callable[[lmdb.Transaction], T]) -> T:
        """Run ``run(txn)`` in the next shared transaction; its result once that is durable."""
        if self._stopped:
            raise StoreError("the store's writer has stopped (the node is shutting down)")
        write: _Write[T] = _Write(run)
        self._waiting.append(write)
        self._arrived.set()
        with trio.CancelScope(shield=True):
            await write.done.wait()
        if isinstance(write.result, BaseException):
            raise write.result
        return write.result  # type: ignore[no-any-return]

    async def run(self) -> None:
        batch: list[_Write[Any]] = []
        try:
            while True:
                await self._arrived.wait()
                self._arrived = trio.Event()
                batch, self._waiting = self._waiting, []
                if not batch:
                    continue
                try:
                    results = await trio.to_thread.run_sync(self.store.write_together, [w.run for w in batch])
                except Exception as exc:  # the transaction failed as a whole: every write in it failed
                    results = [exc] * len(batch)
                self.transactions += 1
                self.writes += len(batch)
                for write, result in zip(batch, results, strict=True):
                    write.result = result
                    write.done.set()
        finally:  # stopped: nothing waits for a transaction that will not come
            self._stopped = True
            for write in batch + self._waiting:
                if not write.done.is_set():
                    write.result = StoreError("the store's writer stopped before this write was made")
                    write.done.set()
