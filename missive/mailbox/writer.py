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
stops with that error (and the node with it) instead of going on; unless
the failure is a full disk, below: then the writer goes on, and the owner of
the last write learns of the failure from the call it never gets (the
runtime drops its actors' memory and reloads them from the store).

A full disk (:class:`missive.mailbox.disk.DiskFull`) does not stop the
writer.  The transaction that met it wrote nothing (LMDB's last committed
state stands), so every write in it fails with the same one line naming the
store's path and the disk ("the disk holding ... is full (No space left on
device, 0 B free): nothing was written; free space and retry"); the node
keeps serving reads, its peers resend what they delivered, and every later
transaction tries again, so writes work once there is space, without a
restart.  Why not exit: a node that exits on a full disk takes its reads and
its part of the cluster with it, and a supervisor restarting it meets the
same disk; nothing is gained over refusing writes until an operator frees
space.  The error is logged once, then at most every ``DISK_LOG_EVERY``
seconds while it lasts, and once more when writes work again.  Only a store
LMDB gives up on (``MDB_PANIC``: a meta page it could not write) stops the
writer, and the node with it (exit code 74, one line: ``missive.cluster.node.main``).

The writer also frees, every ``readers_every`` seconds at most, the reader
slots that processes killed inside a read transaction leave in the lock file
(:meth:`missive.mailbox.store.Store.clear_stale_readers`): one of those pins
an old snapshot, so the pages each transaction frees could not be reused and
the file would grow with every transaction.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import attrs
import lmdb
import trio

from missive.mailbox.disk import DiskFull, StoreError, disk_full
from missive.mailbox.store import Store

T = TypeVar("T")
#: gives the write to run last in a transaction (or None); that write returns what to call once durable
LastWrite = Callable[[], Callable[[lmdb.Transaction], Callable[[], None]] | None]

log = logging.getLogger(__name__)

LATER = 0.05  # seconds a write_later waits at most for a transaction to ride in
WINDOW = 0.001  # seconds a transaction waits at most for writes under way to join it
MIN_YIELDS = 3  # a frame already read reaches the writer within a few scheduler batches
MAX_YIELDS = 16
READERS_EVERY = 5.0  # seconds between two looks for reader slots of dead processes (Store.clear_stale_readers)
DISK_LOG_EVERY = 10.0  # seconds between two log lines while the disk stays full


@attrs.define(eq=False)
class _Write(Generic[T]):
    run: Callable[[lmdb.Transaction], T]
    done: trio.Event = attrs.field(factory=trio.Event)
    result: Any = None


class GroupWriter:
    """Group commit for one store; :meth:`run` must be running (in the node's nursery)."""

    def __init__(self, store: Store, *, later: float = LATER, window: float = WINDOW,
                 readers_every: float = READERS_EVERY) -> None:
        self.store = store
        self.later, self.window = later, window
        self.readers_every = readers_every
        #: why the last transaction failed, while transactions fail for want of disk (None: they do not)
        self.disk_full: DiskFull | None = None
        self._disk_logged = -math.inf
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
                self.store.clear_stale_readers(every=self.readers_every)
                try:
                    results = self._checked(self.store.write_together(writes))
                except Exception as exc:  # the transaction failed as a whole: every write in it failed
                    results = [self._failed(exc)] * len(writes)
                after = results.pop() if last is not None else None
                self.transactions += 1
                self.writes += len(batch)
                for write, result in zip(batch, results, strict=True):
                    write.result = result
                    write.done.set()
                for result in results[:len(riders)]:
                    if isinstance(result, BaseException) and not isinstance(result, DiskFull):  # (logged)
                        log.warning("a deferred write failed (it is redone after a restart): %s", result)
                if isinstance(after, DiskFull):
                    after = None  # its owner never hears the transaction was durable: it knows (docstring)
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

    def _checked(self, results: list[Any]) -> list[Any]:
        """The results of a durable transaction's writes, a full disk met inside one (LMDB's map
        full on a put) as :class:`DiskFull`; if none met one, say that writes work again."""
        refused = False
        for index, result in enumerate(results):
            if isinstance(result, lmdb.Error | OSError):
                found = disk_full(self.store.path, result)
                if found is not None:
                    self._disk_failure(found)
                    results[index], refused = found, True
        if not refused and self.disk_full is not None:
            log.warning("writes to %s work again", self.store.path)
            self.disk_full = None
        return results

    def _failed(self, exc: Exception) -> Exception:
        """What every write of a transaction that failed as a whole gets: the error, or the one line
        of :class:`DiskFull` for a full disk (the writer goes on: the module docstring says why).
        A store LMDB has given up on stops the writer: nothing can be written or read any more."""
        if isinstance(exc, lmdb.PanicError):
            raise StoreError(f"the store at {self.store.path} cannot be used any more ({exc}); restart the "
                             "node") from exc
        found = disk_full(self.store.path, exc)
        if found is None:
            return exc
        self._disk_failure(found)
        return found

    def _disk_failure(self, error: DiskFull) -> None:
        """Note a write refused for want of disk; log it if it is new, or at most every DISK_LOG_EVERY s."""
        now = trio.current_time()
        if self.disk_full is None or now >= self._disk_logged + DISK_LOG_EVERY:
            log.error("%s (writes fail until then; reads go on)", error)
            self._disk_logged = now
        self.disk_full = error
