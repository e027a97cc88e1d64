"""Sending this node's queues to the other holders of its actors: messages (``outbound``), state
diffs (``replicate``, signed) and deployed code (``announce``), each oldest first, dropped once the
peer acknowledges them durably; and the acknowledgement rule a submit and a held message wait for
(:mod:`missive.replicas.epochs`, rule 2).

The sender is handed what it works with (the copies and the writer, the links to the peers, the
membership that says which epoch this node acts in): it owns no store and answers no request.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any

import lmdb
import trio

from missive.identity import short_id
from missive.mailbox.signed import record_envelope
from missive.mailbox.store import Store
from missive.mailbox.writer import GroupWriter
from missive.net import NetError, NodeIdentity, PeerLink
from missive.net.rpc import Refused
from missive.replicas import delivery
from missive.replicas.copies import Copies
from missive.vm.keccak import keccak256

if TYPE_CHECKING:
    from missive.cluster.membership import Membership
    from missive.cluster.tracing import Tracer

log = logging.getLogger(__name__)

#: Records sent to a peer per request.
SEND_BATCH = 256
#: The peer queues drained by :meth:`Sender.drain`: (table, the peer's method).
PEER_QUEUES = (("replicate", "apply"), ("announce", "learn_code"))


class NotServing(Refused):
    """A request this node turns away on purpose because it may not serve it now (catching up, no
    lease, distrusted, or the epoch changed under a submit): one line to the client, no traceback."""


class Sender:
    """One node's sending side (see the module docstring)."""

    def __init__(self, *, name: str, identity: NodeIdentity, names: dict[bytes, str], links: dict[bytes, PeerLink],
                 copies: Copies, writer: GroupWriter, membership: Membership, k: int, trace: Tracer,
                 distrusted: Callable[[bytes], bool], act_on: Callable[[bytes, Any], Awaitable[None]],
                 queued: Callable[[], None], sign: Callable[[bytes], bytes] | None = None) -> None:
        self.name = name
        self.identity = identity
        self.me = identity.node_id
        self.names = names
        self.links = links
        self.copies = copies
        self.store: Store = copies.store
        self.writer = writer
        self.membership = membership
        self.k = k
        self.trace = trace
        #: whether a node is distrusted (execution trust: evidence of a wrong diff)
        self.distrusts = distrusted
        #: what to do about a holder's answer to diffs sent (the receiving side: take another copy)
        self.act_on = act_on
        #: a transaction queued something (wake the senders and the runtime)
        self.queued = queued
        #: turns a diff's bytes into what is signed and sent (a falsifier in fault-injection tests)
        self.prepare = sign if sign is not None else (lambda raw: raw)
        #: per (peer, table): set when a transaction may have queued something there (its sender wakes)
        self.ready: dict[tuple[bytes, str], trio.Event] = {}
        self.diffs_acked = trio.Event()  # set (and replaced) each time a peer acknowledges diffs
        self.forwarded = 0
        self.diffs_sent = 0

    def wake(self) -> None:
        """A transaction committed: every queue's sender looks again."""
        for ready in list(self.ready.values()):
            ready.set()

    async def run(self) -> None:
        """Send every peer's queues, for ever (and place held messages for this node's own actors)."""
        async with trio.open_nursery() as nursery:
            if self.k > 1:
                nursery.start_soon(self.release_held)  # messages for actors here, once acknowledged
            for node_id in self.links:
                nursery.start_soon(self.deliver_to, node_id)
                for table, method in PEER_QUEUES:
                    nursery.start_soon(self.drain, node_id, table, method)

    async def until_replicated(self, seq: int, senders: set[bytes], admitted: Collection[bytes] = ()) -> None:
        """Wait until every holder whose copy takes part in the epoch has the diffs queued before ``seq``
        (those of the admissions of ``senders``' messages among them).

        Why: acceptance moves an account's nonce and balance.  Acknowledged while only
        this node had it, a crash here would let the next holder take over without it and
        accept a different message with the same nonce; so with K > 1 a submit is
        acknowledged once every copy of the epoch's ack set holds it (missive/replicas/
        epochs.py, rule 2).  If the epoch changes meanwhile and this node still executes
        the senders, its copies stand and the new epoch's ack set decides; if it does not,
        the records may be given up, and the client is told so.

        ``admitted``: the ids of the messages the submit admitted.  Before acknowledging, each
        must still stand here.  Why: between two looks the epoch may move on twice (this node
        loses the senders to another holder, whose copy this one takes, giving up the records
        that admitted them, and then executes them again); their diffs left the queue with the
        records, so every holder "has every diff queued before ``seq``", and the client would
        be told "accepted" for a message no copy holds any more (a nonce then accepted twice:
        tools/faults.py, 3 nodes K=2, double faults, seed 21).
        """
        epoch = self.membership.number
        while self.k > 1:
            if self.distrusts(self.me):
                raise NotServing(f"{self.name} is distrusted (it sent a wrong state diff): "
                                   "its acceptances are not replicated; submit to another node")
            if self.membership.number != epoch:
                # executed in every epoch since (not only now: another node may have executed the
                # sender in an epoch this loop did not see, and its records win over these)
                history, now = self.membership.history, self.membership.number
                if not all(self.membership.executes(sender)
                           and (run := history.executing_since(sender, self.me, now)) is not None and run <= epoch
                           for sender in senders):
                    raise NotServing(f"the cluster moved to epoch {self.membership.number} and another node "
                                       "executes the sender now: this submit may or may not be handled; ask for "
                                       "its receipt before sending it again")
                epoch = self.membership.number
            behind = [n for n in self.links if n in self.membership.acting
                      and not self.copies.replicated_before(n, seq)]
            if not behind:
                given_up = self.copies.given_up(admitted)
                if given_up:
                    log.warning("a rollback gave up the admission of %d message(s) before it was acknowledged "
                                "(epoch %d now): the submit is refused", len(given_up), self.membership.number)
                    raise NotServing(f"the cluster moved to epoch {self.membership.number} and a rollback gave up "
                                     "this submit before it was acknowledged: it will not be handled; send it "
                                     "again (with the account's nonce read afresh)")
                return
            with trio.move_on_after(0.05):
                await self.diffs_acked.wait()

    async def release_held(self) -> None:
        """Place the messages this node made for actors it holds itself, once the records that made
        them are acknowledged (the same rule as for messages leaving: replicated_prefix).

        Why: a record given up (missive/replicas/epochs.py, rule 4) must not have had its messages
        handled anywhere; handled here at once, a rolled-back admission's message would still
        move value and spend its nonce."""
        while True:
            ready = self.ready[self.me, "outbound"] = trio.Event()
            batch = self.releasable(self.me)
            if batch:
                await self.writer.write(functools.partial(self.copies.release_held, [key for key, _ in batch]))
                self.queued()
                continue
            with trio.move_on_after(0.05):  # woken by a commit, or by a peer acknowledging diffs
                await ready.wait()

    async def deliver_to(self, node_id: bytes) -> None:
        """Send the messages queued for ``node_id`` (``outbound``) to its ``deliver``, oldest first,
        several batches in flight (missive/replicas/delivery.py); drop them once acknowledged."""

        async def batch_after(key: bytes | None) -> list[tuple[bytes, bytes]]:
            while True:
                ready = self.ready[node_id, "outbound"] = trio.Event()
                batch = self.releasable(node_id, after=key)
                if batch:
                    self.trace.records("forwarded", [raw for _, raw in batch])
                    return batch
                with trio.move_on_after(0.05):  # woken by a commit that may have queued some (or, for
                    await ready.wait()  # messages waiting on diffs, by a peer acknowledging diffs)

        def acknowledged(keys: list[bytes], done: int, problem: str | None) -> None:
            if done:  # lost in a crash, they are sent again and the peer drops the copies by id
                self.writer.write_later(functools.partial(self.copies.dequeue, "outbound", keys[:done]))
                self.forwarded += done
                if problem is not None:
                    log.error("%s refused a message: %s", self.names.get(node_id, short_id(node_id)), problem)

        await delivery.send(self.links[node_id], batch_after, acknowledged)

    async def drain(self, node_id: bytes, table: str, method: str) -> None:
        """Send what ``table`` holds for ``node_id`` to its ``method``, oldest first; drop it once
        acknowledged.  The peer answers (how many it has durably, what was wrong with the next).
        Messages and code go as stored; state diffs are signed (the peer checks who sent them)."""
        link = self.links[node_id]
        name = self.names.get(node_id, short_id(node_id))
        acknowledged: bytes | None = None  # the last key the peer has: later ones go next
        while True:
            ready = self.ready[node_id, table] = trio.Event()
            batch = self.copies.queued(table, node_id, SEND_BATCH, after=acknowledged)
            if not batch:
                with trio.move_on_after(0.05):  # woken by a commit that may have queued some (or, for
                    await ready.wait()  # messages waiting on diffs, by a peer acknowledging diffs)
                continue
            records: Any = [self.signed_diff(raw) if table == "replicate" else raw for _, raw in batch]
            if table == "replicate":  # the epoch this node acts in: a holder in a newer one refuses them
                records = {"diffs": records, "epoch": self.membership.number}
            try:
                answer = await link.call(method, records, timeout=10.0)
                done, problem, *said = answer
                if not isinstance(done, int) or not 0 <= done <= len(batch):
                    raise ValueError(f"{done!r} records done of {len(batch)}")
                if table == "replicate" and len(said) == 2:
                    self.membership.told_epoch(node_id, said[1])
                    await self.act_on(node_id, said[0])
            except NetError as exc:
                log.debug("%s of %d record(s) to %s failed (%s); will retry", method, len(batch), name, exc)
                await trio.sleep(0.2)
                continue
            except (TypeError, ValueError) as exc:
                log.warning("%s answered %s with something unusable (%s); will retry", name, method, exc)
                await trio.sleep(1.0)
                continue
            if done:
                keys = [key for key, _ in batch[:done]]
                acknowledged = keys[-1]
                drop = functools.partial(self.copies.dequeue, table, keys)
                if table == "replicate":
                    await self.writer.write(drop)  # until_replicated looks at what is left in the table
                    self.diffs_sent += done
                    self.diffs_acked.set()
                    self.diffs_acked = trio.Event()
                    for (_, queue), waiting in list(self.ready.items()):
                        if queue == "outbound":  # messages held for these diffs may leave now
                            waiting.set()
                else:  # lost in a crash, it is sent again and the peer drops the copy
                    self.writer.write_later(drop)
            if problem is not None:
                log.warning("%s refused %s: %s", name, method, problem)
                await trio.sleep(1.0)
            elif not done:  # the peer puts it off (a diff it re-executes waits for a message): later
                await trio.sleep(0.05)

    def releasable(self, node_id: bytes, after: bytes | None = None) -> list[tuple[bytes, bytes]]:
        """The messages queued for ``node_id`` (after the key ``after``) that may leave now, oldest
        first (:meth:`replicated_prefix`): the queue and everything that judges it read in one
        read transaction, so from one state of the store.

        Why: a rollback (:meth:`Copies.roll_back`) commits from a worker thread while this runs.
        Read in several transactions, a message could be read from the queue before the rollback
        gave its record up and deleted it, and its record's entry and diffs after (the diff that a
        holder of the record's epoch lacked gone with the record): nothing held it any more, and
        a message whose record was given up left (tests/test_cluster_faults.py [k3-3nodes-kill] in
        CI: n3 gave up the record later and logged that its message had already left)."""
        with self.store.read() as txn:
            return self.replicated_prefix(self.copies.queued("outbound", node_id, SEND_BATCH, after=after, txn=txn),
                                          txn)

    def replicated_prefix(self, batch: list[tuple[bytes, bytes]],
                          txn: lmdb.Transaction | None = None) -> list[tuple[bytes, bytes]]:
        """The messages of ``batch`` (outbound, oldest first) that may leave now: with K > 1, a
        message leaves once the record that made it (its sender's diff numbered below it:
        Copies.changed) is acknowledged (missive/replicas/epochs.py, rule 2): every holder of
        the sender that served or joined in the epoch the record was made in has it, or, if this
        node still executes the sender, every such holder of the epoch it acts in now.

        Why the record's epoch and not the current one: a record made before a change of epoch
        and never acknowledged may lose to the new executor's; with the holders of a later epoch
        only (which may leave out the very holder that refused it), its message would leave, and
        nothing could take it back when the record is given up.  "Still executes" means in every
        epoch since the record's (:meth:`History.executing_since`): if another node executed
        the sender in between, this copy may be the losing one even though it executes now.

        ``txn``: the read transaction ``batch`` was read in (:meth:`releasable`); without it, one of
        its own (the batch must then be read from the same state by the caller's own means).
        """
        if self.k == 1 or not batch:
            return batch
        if txn is None:
            with self.store.read() as own:
                return self.replicated_prefix(batch, own)
        history, number = self.membership.history, self.membership.number
        lacking: dict[bytes, int | None] = {}  # per holder: the oldest diff it still lacks
        since: dict[bytes, int | None] = {}  # per sender: since which epoch this node executes it unbroken
        for index, (key, raw) in enumerate(batch):
            seq = int.from_bytes(key[32:], "big")
            envelope = record_envelope(raw)
            sender = envelope.sender
            if sender not in since:
                executes = self.copies.placement.executes(sender)
                since[sender] = history.executing_since(sender, self.me, number) if executes else None
            start = since[sender]
            # executing since epoch 0 (the usual case): no record here can be older, so no read
            made_in = None if start == 0 else self.copies.epoch_of_record_before(sender, seq, txn)
            if start is not None and (made_in is None or made_in >= start):
                epoch = history.epochs[number]
            else:
                # (found by tools/faults.py, 4 nodes, K=3, mixed, seed 43: value created) a record made
                # in an earlier epoch, then another node executed the sender, then this one again: the
                # current ack set let its messages leave, although the other executor's records had
                # won meanwhile at a holder that had acknowledged these; they lost, and their messages
                # (a relay's forwards) had already been credited
                if made_in is None and self.store.receipt(envelope.id, txn) is not None:
                    # Handled already (here: so by the recipient's executor's history): the record
                    # that made it stands, in a copy this node took from another (a rollback to the
                    # executor's copy keeps the entry queued, but the record is no longer "made
                    # here").  Sending it again is a no-op for every holder (dedup by id); holding
                    # it would hold back everything queued behind it, for ever.
                    continue
                if made_in is None:  # its record is gone (given up: the message goes with it) or unknown
                    return batch[:index]
                epoch = history.epochs[min(made_in, number)]
            for holder in self.copies.placement.holders(sender):
                if holder == self.me or not (holder in epoch.serving or holder in epoch.joining):
                    continue
                if holder not in lacking:
                    lacking[holder] = self.copies.oldest_unreplicated(holder, txn)
                oldest = lacking[holder]
                if oldest is not None and oldest < seq:
                    return batch[:index]
        return batch

    def signed_diff(self, raw: bytes) -> list[bytes]:
        """A state diff as sent: with this node's signature (which makes a wrong one evidence)."""
        raw = self.prepare(raw)
        return [raw, self.identity.sign(keccak256(raw))]
