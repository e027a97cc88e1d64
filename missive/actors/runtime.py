"""The node's runtime: one trio task per loaded actor, rounds of work, group commit.

A *round* takes up to ``batch`` waiting messages from the store, in queue
order, gives each loaded actor its share in one channel send (a channel hop
costs microseconds, so actors get batches, not single messages), lets every
actor handle its messages one at a time to completion, then commits every
outcome in one LMDB transaction (one fsync for the round) on a worker thread.
Only after that commit do the messages the round sent become visible to a
later round: nothing is delivered before it is durable.

Commits are pipelined: while round N's transaction is being written and
synced, round N+1 already runs, on messages that were durable before it
started.  That is safe because a loaded actor's state lives in memory (its
account and every slot it read or wrote), so round N+1 sees round N's effects
without reading them back; because an actor touched by an uncommitted round is
never unloaded; and because commits happen one at a time, in round order, so
round N+1 is durable only after round N.  Observers hear about a round, and
callers see its receipts, only once it is committed.  Without the pipeline
the CPU would sit idle during every fsync.

On a cluster node a round may also run inside a write transaction, as its
last write (:meth:`Runtime.round_in_transaction`), when the runtime is idle:
the messages the transaction stores are handled and committed with it.

Actors are loaded on demand, when a message for them is waiting, and unloaded
(least recently used first) when more than ``max_live`` are loaded, so a node
with 100,000 contracts keeps only its busy ones in memory.  Only one process
at a time may run a node's actors: the executor lock (``<node>/executor.lock``)
makes a second one fail with a clear error instead of handling messages twice.

A round whose commit meets a full disk (:class:`missive.mailbox.disk.DiskFull`)
was not written, but the loaded actors' memory already holds its effects, and
the round after it may have run on them.  Both are dropped with that memory:
every actor is reloaded from the store when next needed, and the messages,
still queued there, are handled again by a later round (:meth:`Runtime._recover`).
A runtime that runs until idle then raises the error (its caller gets the one
line); one that runs forever (a node) tries again ``retry_after`` seconds later,
so handling resumes by itself once there is space.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import attrs
import lmdb
import trio

from missive.actors.handler import ActorState, handle
from missive.mailbox.disk import DiskFull, StoreDamaged, StoreError
from missive.mailbox.envelope import Envelope, Kind
from missive.mailbox.records import Account
from missive.mailbox.store import Outcome, Store
from missive.market.raises import arrange, rank_bid, running_with

Observer = Callable[[list[tuple[Envelope, Outcome]]], None]
Committer = Callable[[list[Outcome]], Awaitable[None]]

log = logging.getLogger(__name__)

RETRY_AFTER = 1.0  # seconds a node's runtime waits after a round lost to a full disk before the next
READERS_EVERY = 5.0  # seconds between two looks for reader slots of dead processes (Store.clear_stale_readers)
LOST_LOG_EVERY = 10.0  # seconds between two log lines while rounds keep being lost to a full disk


class NodeBusy(StoreError):
    """Another process is already running this node's actors (the store is in use: a StoreError)."""


class QueuedMessageMissing(StoreDamaged):
    """A message is queued to run but its body is not in the ledger: the store is not whole.

    The store writes a message and its place in the queue in one transaction, so only a damaged
    (or hand-edited) store gets here.  Raised before the round runs anything: nothing was handled
    or written, and the CLI says so in one line with the damaged-data exit code (4).
    """

    def __init__(self, store_path: Path, message_id: bytes) -> None:
        super().__init__(f"the store at {store_path} is damaged: queued message 0x{message_id.hex()} is missing "
                         "from its ledger (nothing was run)")
        self.message_id = message_id


@attrs.define(eq=False)
class Actor:
    """A loaded actor: its state, and the channel its task reads batches from."""

    state: ActorState
    send: trio.MemorySendChannel[list[tuple[bytes, bytes, Envelope]]]
    receive: trio.MemoryReceiveChannel[list[tuple[bytes, bytes, Envelope]]]
    #: the last round that gave it messages (it may not be unloaded before that round commits)
    last_round: int = 0


class ExecutorLock:
    def __init__(self, node_dir: Path) -> None:
        self.path = node_dir / "executor.lock"
        self.fd = -1

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise NodeBusy(f"another process (pid {holder}) is running the actors of {self.path.parent}") from None
        os.ftruncate(fd, 0)
        with suppress(OSError):  # who holds it, for the message above: a full disk does not stop the actors
            os.write(fd, str(os.getpid()).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Runtime:
    """Runs the actors of one node directory until idle or cancelled."""

    def __init__(self, store: Store, *, batch: int = 2048, per_actor: int = 256, max_live: int = 10_000,
                 committer: Committer | None = None, may_run: Callable[[], bool] | None = None) -> None:
        self.store = store
        #: asked before every round: False holds rounds back (a cluster node without its lease)
        self.may_run = may_run
        #: how a round's outcomes are made durable (a cluster node shares one writer among its tasks)
        self.committer: Committer = committer or (lambda outcomes: trio.to_thread.run_sync(store.commit, outcomes))
        self.batch = batch
        self.per_actor = per_actor
        self._cursor = b""  # the last actor of the previous round: the next round starts after it
        #: messages whose raise this round settled, by the bid the bid index holds them by (_arranged)
        self._index_bids: dict[bytes, int] = {}
        self.max_live = max_live
        self.live: OrderedDict[bytes, Actor] = OrderedDict()
        self.observers: list[Observer] = []
        self.handled_total = 0
        self.rounds = 0
        self._txn: lmdb.Transaction | None = None
        self._outcomes: list[tuple[Envelope, Outcome]] = []
        self._remaining = 0
        self._round_done = trio.Event()
        self._nursery: trio.Nursery | None = None
        # the pipeline: the round being committed and its queue keys; rounds run so far
        self._committing: trio.Event | None = None
        self._committing_keys: set[bytes] = set()
        self._executed_rounds = 0
        # held by each round until it is committed, and by `paused` (trio's Lock is fair: FIFO)
        self._turn = trio.Lock()
        # set by wake(): something may have been queued, so an idle run() looks at the store again
        self._wake = trio.Event()
        # a full disk: a commit that failed (the memory is ahead of the store), or a round run in a
        # write transaction whose durability was never confirmed (see _check_memory)
        self._lost: DiskFull | None = None
        self._unconfirmed = False
        self.retry_after = RETRY_AFTER
        self._lost_logged = -math.inf
        #: the account the fees of the runs here are paid to (the node's worker's coinbase; read
        #: from the store at each round)
        self.coinbase = store.coinbase()
        #: why this node executes nothing, as of the last look (None: it executes)
        self.idle_reason: str | None = None

    # -- reading committed state during a round -----------------------------------

    def _idle(self) -> bool:
        """Whether this node may execute nothing now (its worker is unbonded or slashed:
        :meth:`Store.idle_reason`); said once in the log each time it starts."""
        reason = self.store.idle_reason()
        if reason != self.idle_reason and reason is not None:
            log.warning("%s", reason)
        self.idle_reason = reason
        return reason is not None

    def _slot_reader(self, address: bytes) -> Callable[[int], int]:
        return lambda slot: self.store.slot(address, slot, self._txn)

    def _read_code(self, address: bytes) -> tuple[bytes, bytes]:
        loaded = self.live.get(address)
        if loaded is not None:  # may be deployed by a round still being committed
            return loaded.state.code, loaded.state.account.code_hash
        account = self.store.account(address, self._txn)
        if account is None:  # perhaps an actor another node of a cluster executes
            return self.store.known_code(address, self._txn)
        if not account.code_hash:
            return b"", b""
        return self.store.code(account.code_hash, self._txn), account.code_hash

    # -- actors -------------------------------------------------------------------------

    def _load(self, address: bytes) -> Actor:
        actor = self.live.get(address)
        if actor is not None:
            self.live.move_to_end(address)
            return actor
        account = self.store.account(address, self._txn) or Account()
        code = self.store.code(account.code_hash, self._txn) if account.code_hash else b""
        send, receive = trio.open_memory_channel[list[tuple[bytes, bytes, Envelope]]](1)
        actor = Actor(ActorState(address, account, code), send, receive)
        self.live[address] = actor
        assert self._nursery is not None
        self._nursery.start_soon(self._serve, actor, name=f"actor 0x{address.hex()}")
        return actor

    async def _serve(self, actor: Actor) -> None:
        """The actor's task: handle each batch one message at a time, to completion."""
        read_slot = self._slot_reader(actor.state.address)
        async with actor.receive:
            async for batch in actor.receive:
                self._handle(actor, batch, read_slot, self._outcomes)
                self._remaining -= 1
                if self._remaining == 0:
                    self._round_done.set()

    def _handle(self, actor: Actor, batch: list[tuple[bytes, bytes, Envelope]], read_slot: Callable[[int], int],
                outcomes: list[tuple[Envelope, Outcome]]) -> None:
        """Handle an actor's share of a round, one message at a time, adding each outcome to ``outcomes``.

        block.timestamp: this node's clock in seconds as the share starts (the handler keeps it from
        going back for the actor), recorded in each receipt; CHAINID: the ledger's id."""
        now, chain_id, coinbase = int(self.store.wall_clock()), self.store.chain_id, self.coinbase
        for queue_key, message_id, envelope in batch:
            outcome = handle(actor.state, envelope, message_id, ("pending", queue_key), read_slot, self._read_code,
                             now, chain_id, coinbase)
            if self._index_bids and (indexed := self._index_bids.pop(message_id, None)) is not None:
                outcome = attrs.evolve(outcome, bid=indexed)  # a raise settled: see _arranged
            outcomes.append((envelope, outcome))

    def _unload_idle(self) -> None:
        """Unload least recently used actors beyond ``max_live``, but none whose last round is
        not yet committed (its state in memory is newer than the store's)."""
        while len(self.live) > self.max_live:
            address, actor = next(iter(self.live.items()))
            if actor.last_round > self.rounds:  # self.rounds: rounds committed
                break  # LRU order: every later actor was used at least as recently
            del self.live[address]
            actor.send.close()

    # -- rounds ---------------------------------------------------------------------------

    def _take(self, skip: set[bytes] | frozenset[bytes] = frozenset(),
              txn: lmdb.Transaction | None = None) -> list[tuple[bytes, bytes]]:
        """A round's messages: highest bid first on a node alone (:meth:`Store.pending_by_bid`: each
        (sender, recipient) pair in order, then the bids of 0), else each actor's oldest in turn from
        where the last round stopped (:meth:`Store.pending_batch`; bids of 0 on a node alone too)."""
        if self.store.ranks_bids:
            return self.store.pending_by_bid(self.batch, self.per_actor, skip, txn=txn, start_after=self._cursor)
        return self.store.pending_batch(self.batch, self.per_actor, self._cursor, skip, txn=txn)

    async def _due_work(self) -> list[tuple[bytes, bytes]]:
        skip = self._committing_keys
        pending = self._take(skip)
        soonest = self.store.next_scheduled()
        if soonest is not None and (not pending or soonest <= self.store.clock()):
            # Releasing is a write: let the round in flight commit first (it moves the clock too).
            await self._finish_commit()
            clock = self.store.clock()
            if soonest <= clock or not pending:
                # Release what is due; when nothing else waits, logical time jumps to the soonest.
                self.store.release_scheduled(clock if pending else max(soonest, clock))
                pending = self._take()
        if not pending and self._committing is not None:
            # What the round in flight sent becomes visible once it is committed.
            await self._finish_commit()
            return await self._due_work()
        if pending:
            self._cursor = pending[-1][0][:20]
        return pending

    def _has_work(self) -> bool:
        """Whether a round would find something to do: messages waiting (besides those of the
        round being committed) or scheduled.

        Why it is asked before the round takes its turn: an idle look that held the
        turn (across a checkpoint, or while a commit finished) would keep the
        writer's transactions from handling what they store
        (:meth:`round_in_transaction`), and every message stored meanwhile would
        wait for a round of its own.
        """
        if self.may_run is not None and not self.may_run():
            return self._committing is not None  # step() waits for it: a round held back ends committed
        if self._idle():
            return self._committing is not None
        if self.store.next_scheduled() is not None:
            return True
        return bool(self.store.pending_batch(1, 1, skip=self._committing_keys))

    async def step(self) -> int:
        """Run one round; return how many messages it handled (0: idle).

        The round's commit may still be under way when this returns; the next
        ``step`` (or the end of :meth:`run`) waits for it.  Raises :class:`DiskFull`
        if the memory it would run on, or ran on, holds a round that was not written.
        """
        self._check_memory()
        if (self.may_run is not None and not self.may_run()) or self._idle():
            await self._finish_commit()
            return 0
        pending = await self._due_work()
        if not pending:
            return 0
        self._executed_rounds += 1
        with self.store.read() as txn:
            self._txn = txn
            self.coinbase = self.store.coinbase(txn)  # set by `missive init`, or a worker's registration
            groups = self._grouped(pending, txn)
            self._outcomes = []
            self._remaining = len(groups)
            self._round_done = trio.Event()
            for address, batch in groups.items():
                actor = self._load(address)
                actor.last_round = self._executed_rounds
                await actor.send.send(batch)
            await self._round_done.wait()
            self._txn = None
        await self._finish_commit()  # commits stay one at a time, in round order
        self._check_memory()  # the round before was not written: this one ran on its memory, and goes too
        self._start_commit(self._outcomes, {key for key, _ in pending})
        return len(self._outcomes)

    def round_in_transaction(self) -> Callable[[lmdb.Transaction], Callable[[], None]] | None:
        """A round to run inside a write transaction about to commit, or None if one may not run now.

        Why: on a cluster node a message that arrives is stored in one of the
        writer's transactions and handled in a later one, two durable steps in a
        row with a wake-up between them.  Run as the last write of the
        transaction that stores it, the round makes the message, its receipt and
        the messages it sends durable together: one step.  It sees the
        transaction's own writes, so it handles what the earlier writes queued.

        Only when no round is running and its turn is free (not :meth:`paused`),
        and when the loaded actors' memory is exactly the transaction's state: a
        round being committed must have had its commit written already, in this
        transaction or an earlier one (its messages are then no longer pending).
        Otherwise the messages wait for a regular round, which it wakes.  The
        write returned handles the messages, one at a time
        per actor, with the same loaded actors as any round, and commits them in
        the transaction; it returns what to call once that transaction is
        durable (observers, counters), like a round's commit.  If the
        transaction fails, the actors' memory is ahead of the store and nothing
        may run on it: the caller must stop the runtime.
        """
        if self._nursery is None or self._turn.locked():
            return None
        if self._memory_lost():
            self.wake()  # run() drops the memory first
            return None
        if self.may_run is not None and not self.may_run():
            return None

        def run(txn: lmdb.Transaction) -> Callable[[], None]:
            if self._committing is not None and self.store.any_pending(self._committing_keys, txn):
                return self.wake  # the round being committed is not in the store yet: its memory is ahead
            soonest = self.store.next_scheduled(txn)
            if soonest is not None and soonest <= self.store.clock(txn):
                return self.wake  # releasing scheduled messages is the runtime's own work
            pending = self._take(txn=txn)
            if not pending:
                return lambda: None
            self._cursor = pending[-1][0][:20]
            self._executed_rounds += 1
            self._unconfirmed = True  # until the transaction is durable: the writer calls what this returns
            outcomes: list[tuple[Envelope, Outcome]] = []
            self._txn = txn
            self.coinbase = self.store.coinbase(txn)
            try:
                for address, batch in self._grouped(pending, txn).items():
                    actor = self._load(address)
                    actor.last_round = self._executed_rounds
                    self._handle(actor, batch, self._slot_reader(address), outcomes)
            finally:
                self._txn = None
            self.store.commit([o for _, o in outcomes], txn)
            return lambda: self._confirmed(outcomes)

        return run

    def _grouped(self, pending: list[tuple[bytes, bytes]],
                 txn: lmdb.Transaction) -> dict[bytes, list[tuple[bytes, bytes, Envelope]]]:
        """A round's messages (queue key, message id), read from the ledger and grouped by actor."""
        groups: dict[bytes, list[tuple[bytes, bytes, Envelope]]] = {}
        raised = self.store.any_raised(txn)
        raising: set[bytes] = set()  # actors with a raise message in this round (a cluster node's)
        for queue_key, message_id in pending:
            found = self.store.message(message_id, txn, check=False)
            if found is None:  # the store's own invariant: only a damaged store breaks it
                raise QueuedMessageMissing(self.store.path, message_id)
            envelope = found[0]
            if raised:
                bid = self.store.bid(message_id, envelope, txn)
                if bid != envelope.bid:  # raised (missive.market.raises): run with the new bid
                    envelope = running_with(envelope, message_id, bid)
            if envelope.kind is Kind.RAISE:
                raising.add(queue_key[:20])
            groups.setdefault(queue_key[:20], []).append((queue_key, message_id, envelope))
        for address in raising:  # raises go right before their message, which runs with their bid
            groups[address] = self._arranged(groups[address])
        return groups

    def _arranged(self, batch: list[tuple[bytes, bytes, Envelope]]) -> list[tuple[bytes, bytes, Envelope]]:
        """``batch`` with its raise messages settled (:func:`missive.market.raises.arrange`); the
        messages whose bid that changed are remembered with the bid the index holds them by, which
        their outcomes carry to the commit (it takes them out of the index by it)."""
        arranged = arrange(batch)
        originals = {message_id: envelope for _, message_id, envelope in batch}
        for _, message_id, envelope in arranged:
            original = originals[message_id]
            if envelope.bid != original.bid or envelope.kind is Kind.RAISE:
                self._index_bids[message_id] = rank_bid(original)
        return arranged

    def _start_commit(self, outcomes: list[tuple[Envelope, Outcome]], keys: set[bytes]) -> None:
        done = trio.Event()
        self._committing, self._committing_keys = done, keys
        assert self._nursery is not None
        self._nursery.start_soon(self._commit, outcomes, done, name="commit")

    async def _commit(self, outcomes: list[tuple[Envelope, Outcome]], done: trio.Event) -> None:
        # A failed commit raises out of the nursery and stops the runtime: the
        # actors' memory is ahead of the store, so nothing may run on it.  Unless
        # the disk is full: then the next step() finds it and drops that memory.
        try:
            await self.committer([o for _, o in outcomes])
        except DiskFull as exc:
            self._lost = exc
            self._committing, self._committing_keys = None, set()
            done.set()
            self.wake()
            return
        self._committing, self._committing_keys = None, set()
        done.set()
        self._committed(outcomes)
        self.wake()  # what it sent to actors here is visible now

    def _confirmed(self, outcomes: list[tuple[Envelope, Outcome]]) -> None:
        """The write transaction a round ran in is durable (see :meth:`round_in_transaction`)."""
        self._unconfirmed = False
        self._committed(outcomes)

    def _memory_lost(self) -> bool:
        """Whether the loaded actors' memory holds a round that was not written (a full disk)."""
        return self._lost is not None or self._unconfirmed

    def _check_memory(self) -> None:
        """Raise :class:`DiskFull` if the loaded actors' memory holds a round that was not written.

        Why ``_unconfirmed`` counts: a round run inside a write transaction hears that the
        transaction is durable from the writer, in the same pass of the event loop as the
        commit; any other task that finds it still unconfirmed knows the transaction failed."""
        if self._lost is not None:
            raise self._lost
        if self._unconfirmed:
            raise DiskFull(f"a transaction that handled messages in {self.store.path} was not written "
                           "(the disk is full: the writer's error says more)")

    async def _recover(self, error: DiskFull, *, retry: bool) -> None:
        """Drop the actors' memory after a round was lost to a full disk, and wait ``retry_after``
        seconds if ``retry``: the store is the whole truth again (see the module docstring)."""
        async with self._turn:
            await self._finish_commit()
            for actor in self.live.values():
                actor.send.close()
            self.live.clear()
            self._lost, self._unconfirmed = None, False
            self._executed_rounds = self.rounds  # the rounds not written are forgotten with their memory
        if not retry:
            return  # the caller gets the error and says it (one line, not two)
        now = trio.current_time()
        if now >= self._lost_logged + LOST_LOG_EVERY:
            self._lost_logged = now
            log.warning("handling stopped: %s; the actors are reloaded from the store, and handling tries again "
                        "every %g s", error, self.retry_after)
        await trio.sleep(self.retry_after)

    def _committed(self, outcomes: list[tuple[Envelope, Outcome]]) -> None:
        """A round is durable: count it, tell the observers, unload what may go."""
        self.handled_total += len(outcomes)
        self.rounds += 1
        for observer in self.observers:
            observer(outcomes)
        self._unload_idle()

    @asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """No round runs, and every earlier round is committed, inside this block; on leaving it
        every actor is reloaded from the store when next needed.

        Why: a cluster node changes which actors it executes when a peer fails
        or returns.  In between rounds the store is the whole truth, so the
        node can move queues and apply other holders' diffs, and no loaded
        actor keeps state older than what the store then holds.
        """
        async with self._turn:
            await self._finish_commit()
            try:
                yield
            finally:
                for actor in self.live.values():
                    actor.send.close()
                self.live.clear()

    def wake(self) -> None:
        """Messages may be waiting now (a writer in this process queued some): an idle
        :meth:`run` takes another round at once instead of at its next poll."""
        self._wake.set()

    async def _finish_commit(self) -> None:
        """Wait until the round being committed (if any) is durable."""
        if self._committing is not None:
            await self._committing.wait()

    async def run(self, *, until_idle: bool = True, poll_interval: float = 0.01,
                  until: Callable[[], bool] | None = None) -> int:
        """Run rounds until idle (or forever: when idle, wait for :meth:`wake` or, for writers
        in other processes, ``poll_interval`` seconds before looking at the store again).

        A round lost to a full disk drops the actors' memory (:meth:`_recover`); then a
        run until idle raises :class:`DiskFull`, and one that runs forever tries again
        ``retry_after`` seconds later.  Every ``READERS_EVERY`` seconds it frees reader
        slots of dead processes (:meth:`Store.clear_stale_readers`).
        """
        total = 0
        failure: StoreError | None = None
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                while until is None or not until():
                    self._wake = trio.Event()  # before the round looks: a later wake() is not lost
                    self.store.clear_stale_readers(every=READERS_EVERY)
                    handled = 0
                    try:
                        if self._memory_lost() or self._has_work():
                            async with self._turn:
                                handled = await self.step()
                        elif until_idle and self._committing is not None:
                            await self._finish_commit()  # what it sends may be work here
                            continue
                    except DiskFull as exc:
                        await self._recover(exc, retry=not until_idle)
                        if until_idle:
                            failure = exc
                            break
                        continue
                    except QueuedMessageMissing as exc:  # nothing of the round ran; raised past the nursery,
                        failure = exc                    # so the caller gets this error, not a group holding it
                        break
                    total += handled
                    if handled == 0:
                        if until_idle:
                            break
                        with trio.move_on_after(poll_interval):
                            await self._wake.wait()
                    elif until is not None:
                        await self._finish_commit()  # `until` looks at the store
                await self._finish_commit()
                if failure is None and self._lost is not None:  # the last round's commit
                    failure = self._lost
                    await self._recover(failure, retry=False)
            finally:
                for actor in self.live.values():
                    actor.send.close()
                self.live.clear()
                self._nursery = None
        if failure is not None:
            raise failure
        return total
