"""Receiving on a holder: messages other nodes deliver for actors held here, state diffs applied (or
re-executed first, by trust) or refused with what the sender should do, and the rollbacks and
gap-fills that take another holder's copy (:mod:`missive.replicas.epochs`, rule 4).

The receiver is handed what it works with (the copies, the writer and the runtime, the links, the
membership and execution trust); the node's door routes the peers' requests to it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgpack
import trio

from missive.actors.runtime import Runtime
from missive.identity import verify
from missive.mailbox.diffs import DiffConflict, DiffError, DiffGap, DiffSuperseded, StateDiff
from missive.mailbox.envelope import EnvelopeError
from missive.mailbox.records import RecordError
from missive.mailbox.store import Store
from missive.mailbox.writer import GroupWriter
from missive.net import NetError, PeerLink
from missive.replicas import delivery
from missive.replicas.copies import Copies
from missive.replicas.execution import WrongResult
from missive.replicas.execution_trust import ExecutionTrust, NotYetCheckable
from missive.replicas.refusals import NotAHolder, require_member
from missive.vm.creation import MAX_CODE_SIZE
from missive.vm.keccak import keccak256

if TYPE_CHECKING:
    from missive.cluster.membership import Membership
    from missive.cluster.tracing import Tracer

log = logging.getLogger(__name__)


class Receiver:
    """One node's receiving side (see the module docstring)."""

    def __init__(self, *, me: bytes, names: dict[bytes, str], links: dict[bytes, PeerLink], copies: Copies,
                 writer: GroupWriter, runtime: Runtime, membership: Membership, execution: ExecutionTrust, k: int,
                 trace: Tracer, queued: Callable[[], None]) -> None:
        self.me = me
        self.names = names
        self.links = links
        self.copies = copies
        self.store: Store = copies.store
        self.writer = writer
        self.runtime = runtime
        self.membership = membership
        self.execution = execution
        self.k = k
        self.trace = trace
        #: a transaction queued something (wake the senders and the runtime)
        self.queued = queued
        self.line = delivery.Line()  # where each peer's deliveries stand (missive/replicas/delivery.py)
        self.rolling_back = trio.Lock()
        #: where reconciliations run (set by :meth:`run`)
        self.nursery: trio.Nursery | None = None
        self.diffs_applied = 0
        self.conflicts = 0
        self.rolled_back = 0
        self.gone_after_rollback = 0  # messages sent by receipts given up that had already left

    async def run(self) -> None:
        """Keep a nursery for the reconciliations the answers start, until cancelled."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            await trio.sleep_forever()

    def member(self, peer: bytes, method: str) -> str:
        """The name of cluster member ``peer`` (the caller of ``method``), or :class:`NotAMember`."""
        return require_member(self.names, self.me, peer, method)

    def deliver(self, peer: bytes, params: Any) -> Awaitable[tuple[int, str | None]]:
        """Messages for actors this node holds, from the node that sent or accepted them, in
        batches that follow each other (missive/replicas/delivery.py).  A bad record is refused
        alone (logged and reported); it is never retried into the queues.

        Not ``async``: this part runs in the RPC read loop, in the order the batches arrived,
        and joins the writer in that order, so that a sender may keep several in flight.
        """
        name = self.member(peer, "deliver")
        records, after, last = delivery.parse(params)
        arrived = self.trace.records("arrived", records)
        write = self.writer.join(functools.partial(self.receive_in_line, peer, records, after, last))
        return self.stored(write, name, arrived)

    def receive_in_line(self, peer: bytes, records: list[bytes], after: bytes | None, last: bytes,
                         txn: Any) -> list[bytes | EnvelopeError]:
        """Store a delivery, in the writer's transaction, if it follows the last one taken from ``peer``."""
        return self.line.take(peer, after, last, functools.partial(self.copies.receive, records, txn=txn))

    async def stored(self, write: Any, name: str, arrived: list[bytes]) -> tuple[int, str | None]:
        try:
            results = await self.writer.result(write)
        except delivery.NotInLine as exc:
            return 0, str(exc)
        self.trace.ids("stored", arrived)
        self.runtime.wake()
        bad = [r for r in results if isinstance(r, EnvelopeError)]
        if bad:
            log.warning("%s delivered %d bad message(s): %s", name, len(bad), bad[0])
        return len(results), (str(bad[0]) if bad else None)

    async def apply(self, peer: bytes, params: dict[str, Any]) -> list[Any]:
        """State diffs of actors ``peer`` executes or executed (see the module docstring):
        ``{"diffs": [[diff, signature], ...], "epoch": the epoch the sender acts in}``.

        Answers ``[done, problem, action, epoch]``: how many diffs this copy holds now, what
        was wrong with the next (None), what the sender should do about it (None,
        ``["reconcile", address]``: take the executor's copy of that actor), and the newest
        epoch this node knows.  A sender acting in an older epoch than this node's is refused
        whole: the epoch it made its records in is over, and they may not be acknowledged
        any more (missive/replicas/epochs.py, rule 2).  Within one epoch, every copy that
        differs from the actor's executor's takes the executor's (rule 4).
        """
        name = self.member(peer, "apply")
        if not (isinstance(params, dict) and isinstance(params.get("diffs"), list)
                and isinstance(params.get("epoch"), int) and not isinstance(params.get("epoch"), bool)):
            raise ValueError("apply takes {diffs: [[state diff, signature], ...], epoch: the sender's epoch}")
        signed, epoch = params["diffs"], params["epoch"]
        latest = self.membership.history.latest.number
        if self.execution.distrusts(peer):
            return [0, f"{name} is distrusted (evidence of a wrong state diff): its diffs are refused", None, latest]
        if self.k > 1 and epoch != latest:
            if epoch < latest:
                return [0, f"{name} acts in epoch {epoch}, this node in {latest}: its records of that epoch can "
                        "no longer be acknowledged", None, latest]
            return [0, f"this node has not installed epoch {epoch} yet", None, latest]
        if self.k > 1 and self.membership.number != latest:
            return [0, f"this node is adopting epoch {latest}", None, latest]
        diffs = []
        problem = None
        stray: bytes | None = None  # an actor whose record the sender made in an epoch it did not execute it
        for raw, signature in signed:
            try:
                if not verify(peer, keccak256(raw), signature):
                    raise DiffError(f"bad signature from {name} on a state diff")
                diff = StateDiff.decode(raw)
                holders = self.copies.placement.holders(diff.address)
                if peer not in holders:
                    raise DiffError(f"{name} does not hold 0x{diff.address.hex()}")
                if self.me not in holders:
                    raise DiffError(f"this node does not replicate 0x{diff.address.hex()}")
                made_in = self.membership.history.get(diff.epoch)
                if diff.version and (made_in is None or self.membership.history.executor(
                        diff.address, diff.epoch) != peer):
                    stray = diff.address if made_in is not None else None
                    raise DiffError(f"{name} did not execute 0x{diff.address.hex()} in epoch {diff.epoch}")
            except DiffError as err:
                problem = str(err)
                break
            diffs.append(diff)
        done, refused = await trio.to_thread.run_sync(self.copies.apply_diffs, peer, diffs,
                                                      self.execution.checker(peer))
        self.diffs_applied += done
        if isinstance(refused, NotYetCheckable):  # re-executing it needs a message still on its way
            log.debug("%s", refused)
            return [done, problem, None, latest]
        if isinstance(refused, WrongResult):
            raw, signature = signed[done]
            self.execution.accuse(peer, refused, raw, signature)
        action = None
        if isinstance(refused, DiffConflict | DiffGap | DiffSuperseded):
            action = self.resolve(peer, refused)
        elif refused is None and stray is not None:
            # no holder will ever acknowledge that record (rule 2), and resending it changes nothing:
            # the sender's copy gives it up by taking the executor's (found by tools/faults.py: a node
            # admitted a message just after the epoch changed and resent the refused record for ever)
            action = ["reconcile", stray]
        problem = str(refused) if refused is not None else problem
        if problem:
            log.log(logging.INFO if action else logging.WARNING, "refused a state diff from %s: %s", name, problem)
        return [done, problem, action, latest]

    def resolve(self, peer: bytes, refused: DiffConflict | DiffGap | DiffSuperseded) -> list[Any] | None:
        """Who takes whose copy where ``peer``'s diff does not continue this one (rule 4: the copy of
        the actor's executor in the epoch both act in stands); returns what ``peer`` should do."""
        address = refused.address
        executor = self.membership.history.executor(address, self.membership.number)
        assert self.nursery is not None
        if isinstance(refused, DiffConflict):
            self.conflicts += 1
        if isinstance(refused, DiffSuperseded) or executor == self.me:
            return ["reconcile", address]  # this copy is the executor's: the sender's differs, so it goes
        if executor == peer:  # the sender's copy stands: this one takes it (a gap, or records that lost)
            version = refused.version if isinstance(refused, DiffConflict | DiffGap) else 0
            self.nursery.start_soon(self.reconcile, peer, address, version)
            return None
        if isinstance(refused, DiffGap):
            # a former executor's records this copy cannot place yet: the executor's copy fills the
            # gap, and then they are held here (a no-op) or lose to it (the sender reconciles)
            return None
        return ["reconcile", address]  # neither is the executor's: the sender asks the executor

    async def act_on(self, peer: bytes, action: Any) -> None:
        """Do what a holder answered about diffs this node sent it (see :meth:`apply`): take the
        executor's copy of the actor named."""
        if action is None:
            return
        if not (isinstance(action, list) and len(action) == 2 and action[0] == "reconcile"
                and isinstance(action[1], bytes) and len(action[1]) == 20):
            log.warning("%s answered an apply with an unknown action: %r", self.names[peer], action)
            return
        address = action[1]
        executor = self.membership.history.executor(address, self.membership.number)
        if executor is not None and executor != self.me:
            assert self.nursery is not None
            self.nursery.start_soon(self.reconcile, executor, address, self.copies.head(address)[0])

    async def reconcile(self, peer: bytes, address: bytes, version: int) -> None:
        """Take ``peer``'s copy of ``address`` (the actor's executor's) where this one differs or ends.

        Asks for a snapshot from this copy's record ``version`` on (at most its last); where
        the copies differ at that record already, from earlier ones (the last record they
        share is their common point).  What this copy held after it is given up
        (:meth:`Copies.roll_back`); nothing of it was acknowledged, since the executor's copy
        holds every acknowledged record (missive/replicas/epochs.py, rules 2 and 3).
        """
        async with self.rolling_back:
            version = min(version, self.copies.head(address)[0])
            step = 1
            while True:
                try:
                    snapshot = await self.links[peer].call("snapshot", {"address": address, "version": version},
                                                           timeout=10.0)
                    if snapshot is None:
                        return
                    if isinstance(snapshot, dict) and isinstance(snapshot.get("head"), int) and (
                            0 <= snapshot["head"] < version):
                        # the executor's copy ends before this one: the records past its end were never
                        # acknowledged (rules 2, 3), so they go; ask from its last record
                        version = snapshot["head"]
                        continue
                    async with self.runtime.paused():
                        if self.membership.history.executor(address, self.membership.number) != peer:
                            # the epoch changed while the snapshot came: its copy no longer stands (this
                            # node may execute the actor now, and its own records must not be given up)
                            log.info("not taking %s's copy of 0x%s: it no longer executes it", self.names[peer],
                                     address.hex())
                            return
                        rolled = await trio.to_thread.run_sync(self.copies.roll_back, peer, address, version, snapshot)
                    break
                except DiffError as exc:
                    if version == 0 or "differ at that record already" not in str(exc):
                        log.warning("could not take %s's copy of 0x%s: %s", self.names[peer], address.hex(), exc)
                        return
                    version, step = max(0, version - step), step * 4  # the common point is earlier
                except (NetError, RecordError, KeyError, TypeError, ValueError) as exc:
                    # the peer could not answer (down, frozen, too slow) or sent something unusable: this
                    # copy stays as it was, and the next diff or catch-up that finds it behind asks again
                    log.warning("could not take %s's copy of 0x%s from record %d: %s",
                                self.names[peer], address.hex(), version, exc)
                    return
            self.queued()
            if not rolled.discarded:
                log.info("filled 0x%s after record %d with %s's copy", address.hex(), version, self.names[peer])
                return
            self.rolled_back += 1
            log.warning("rolled back 0x%s after record %d to %s's copy; %d message(s) queued again",
                        address.hex(), version, self.names[peer], len(rolled.requeued))
            if rolled.gone:  # only the executor's copy stands; what the other side already sent stands too
                self.gone_after_rollback += len(rolled.gone)
                log.error("%d message(s) sent by the records of 0x%s given up had already left this node and "
                          "are not taken back: %s", len(rolled.gone), address.hex(),
                          ", ".join(f"0x{m.hex()}" for m in rolled.gone[:8]) + (" ..." if len(rolled.gone) > 8 else ""))

    async def snapshot(self, peer: bytes, params: dict[str, Any]) -> dict[str, Any] | None:
        """This node's copy of an actor after its record ``version``, for a holder taking it (see
        :meth:`reconcile`)."""
        self.member(peer, "snapshot")
        address, version = bytes(params["address"]), int(params["version"])
        if len(address) != 20 or version < 0:
            raise ValueError("snapshot takes {address: 20 bytes, version: a record number}")
        if peer not in self.copies.placement.holders(address):
            raise NotAHolder(self.names[peer], address)
        return await trio.to_thread.run_sync(self.copies.snapshot, address, version)

    async def learn_code(self, peer: bytes, records: list[bytes]) -> tuple[int, str | None]:
        """Code of actors ``peer`` executes and deployed (see the store's ``announce``)."""
        name = self.member(peer, "learn_code")
        entries, problem = [], None
        for raw in records:
            try:
                address, code = msgpack.unpackb(raw)
                if not isinstance(address, bytes) or len(address) != 20 or not isinstance(code, bytes):
                    raise ValueError("expected [20-byte address, code]")
                if len(code) > MAX_CODE_SIZE:
                    raise ValueError(f"code of {len(code)} bytes exceeds {MAX_CODE_SIZE}")
                if peer not in self.copies.placement.holders(address):
                    raise ValueError(f"{name} does not hold 0x{address.hex()}")
            except (ValueError, TypeError) as exc:
                problem = f"bad code announcement: {exc}"
                break
            entries.append((address, code))
        done = await trio.to_thread.run_sync(self.store.learn_code, entries)
        if problem:
            log.warning("refused code from %s: %s", self.names[peer], problem)
        return done, problem
