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

The transaction runs on the event loop's own thread, which it blocks for
its commit (two fdatasyncs: about 0.4 ms on an idle machine, 1 ms under
load, most of it for the pages the transaction writes).  On a worker
thread it ran no sooner: LMDB's get and put release the GIL, so there
every one of them waited for the busy event loop to hand the GIL back (13
times slower, measured), and the node spent a third more CPU per message.

Before each transaction the writer lets whatever is already under way on
the node join it, and waits for nothing else: it yields to the scheduler
(at least ``MIN_YIELDS`` times, at most ``MAX_YIELDS`` or ``window``
seconds) until a yield adds no write and leaves no task runnable.  Each
yield also polls the sockets, so a frame that has already arrived is read,
and its write joins, before the transaction starts.  It used to sleep a
fixed window (1 ms) under load instead; that put the window, and the
process's wake-up after it, on every durable step of a message's path,
three times on a cross-node query's.  Yielding took the query's p50 at
1,000 messages/s from about 15 ms to 11, and its p99 from 24-43 ms to
17-22, for about 1.6 times the fsyncs on the asking node
(``tools/bench/cluster.py``, docs/cluster.md).  Under a heavy load the
transactions still group many writes, because those that arrive while
one is written wait for the next.

A write's caller resumes only once the transaction holding it is durable,
and cannot be cancelled out of that wait: it learns the outcome of a write
that has its place in line.

Some writes need not be durable at once: dropping records a peer has
acknowledged, say (lost in a crash, they are sent again and the peer drops
the copy by id).  :meth:`GroupWriter.write_later` lets such a write ride in
the next transaction made for another reason instead of paying an fsync of
its own, on a disk the writes on a message's path are waiting for; if none
comes within ``later`` seconds, it gets a transaction of its own.

``last``, if set, may give a write to run at the end of each transaction,
after everything that joined it: the node's runtime handles there the
messages the transaction's other writes queued, so that a message is stored
and handled in one durable step (:meth:`missive.actors.runtime.Runtime.round_in_transaction`).
Its write returns what to call once the transaction is durable.  It shares the
fate of the actors' memory, so if it or the transaction fails, the writer
stops with that error (and the node with it) instead of going on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import attrs
import lmdb
import trio

from missive.mailbox.store import Store, StoreError

T = TypeVar("T")
#: gives the write to run last in a transaction (or None); that write returns what to call once durable
LastWrite = Callable[[], Callable[[lmdb.Transaction], Callable[[], None]] | None]

log = logging.getLogger(__name__)

LATER = 0.05  # seconds a write_later waits at most for a transaction to ride in
WINDOW = 0.001  # seconds a transaction waits at most for writes under way to join it
MIN_YIELDS = 3  # a frame already read reaches the writer within a few scheduler batches
MAX_YIELDS = 16


@attrs.define(eq=False)
class _Write(Generic[T]):
    run: Callable[[lmdb.Transaction], T]
    done: trio.Event = attrs.field(factory=trio.Event)
    result: Any = None


class GroupWriter:
    """Group commit for one store; :meth:`run` must be running (in the node's nursery)."""

    def __init__(self, store: Store, *, later: float = LATER, window: float = WINDOW) -> None:
        self.store = store
        self.later, self.window = later, window
        self._waiting: list[_Write[Any]] = []
        self._later: list[Callable[[lmdb.Transaction], Any]] = []
        self._idle: trio.CancelScope | None = None  # the writer's wait for the next write, if waiting
        self._arrived = trio.Event()
        self.transactions = 0
        self.writes = 0
        self._stopped = False
        self.last: LastWrite | None = None

    async def write(self, run: Callable[[lmdb.Transaction], T]) -> T:
        """Run ``run(txn)`` in the next shared transaction; its result once that is durable."""
        return await self.result(self.join(run))

    def join(self, run: Callable[[lmdb.Transaction], T]) -> _Write[T]:
        """Queue ``run(txn)`` for the next shared transaction now (writes run in the order they
        joined); :meth:`result` waits for it.  For callers that must fix their place in line
        before they can afford to wait."""
        if self._stopped:
            raise StoreError("the store's writer has stopped (the node is shutting down)")
        write: _Write[T] = _Write(run)
        self._waiting.append(write)
        self._arrived.set()
        return write

    async def result(self, write: _Write[T]) -> T:
        """The result of a joined write once its transaction is durable (or the error it raised)."""
        with trio.CancelScope(shield=True):
            await write.done.wait()
        if isinstance(write.result, BaseException):
            raise write.result
        return write.result  # type: ignore[no-any-return]

    def write_later(self, run: Callable[[lmdb.Transaction], Any]) -> None:
        """Run ``run(txn)`` in the next transaction, whenever that is (within ``later`` seconds);
        nobody waits for it.  For writes that may be lost in a crash: a failure is only logged."""
        if self._stopped:
            raise StoreError("the store's writer has stopped (the node is shutting down)")
        self._later.append(run)
        if self._idle is not None:  # the writer waits for a write: it need wait only ``later`` s more
            self._idle.deadline = min(self._idle.deadline, trio.current_time() + self.later)

    async def _let_under_way_join(self) -> None:
        """Yield until the writes that tasks already running or already woken (by a frame that
        arrived, say) will add have joined; see the module docstring."""
        give_up = trio.current_time() + self.window
        for done in range(1, MAX_YIELDS + 1):
            joined = len(self._waiting)
            await trio.lowlevel.checkpoint()
            settled = (done >= MIN_YIELDS and len(self._waiting) == joined
                       and trio.lowlevel.current_statistics().tasks_runnable == 0)  # (statistics: not for nothing)
            if settled or trio.current_time() >= give_up:
                return

    async def run(self) -> None:
        batch: list[_Write[Any]] = []
        try:
            while True:
                with trio.move_on_after(self.later if self._later else float("inf")) as self._idle:
                    await self._arrived.wait()
                self._idle = None
                await self._let_under_way_join()
                self._arrived = trio.Event()
                batch, self._waiting = self._waiting, []
                riders, self._later = self._later, []
                batch = [_Write(run) for run in riders] + batch
                if not batch:
                    continue
                last = self.last() if self.last is not None else None
                writes = [w.run for w in batch] + ([last] if last is not None else [])
                try:
                    results = self.store.write_together(writes)
                except Exception as exc:  # the transaction failed as a whole: every write in it failed
                    results = [exc] * len(writes)
                after = results.pop() if last is not None else None
                self.transactions += 1
                self.writes += len(batch)
                for write, result in zip(batch, results, strict=True):
                    write.result = result
                    write.done.set()
                for result in results[:len(riders)]:
                    if isinstance(result, BaseException):
                        log.warning("a deferred write failed (it is redone after a restart): %s", result)
                if isinstance(after, BaseException):
                    raise StoreError(f"the transaction's last write (a round) failed: {after}") from after
                if after is not None:
                    after()
        finally:  # stopped: nothing waits for a transaction that will not come
            self._stopped = True
            for write in batch + self._waiting:
                if not write.done.is_set():
                    write.result = StoreError("the store's writer stopped before this write was made")
                    write.done.set()
