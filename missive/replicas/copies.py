"""A cluster node's copies: the hook the store calls inside its write transactions, and what the
node's sender and receiver call (:mod:`missive.cluster.node`).

On a lone node there is no :class:`Copies`: the store's hook is ``None`` and costs one test per
message.  As one node of a cluster:

* A message is queued for *every* holder of its recipient's actor: here in ``pending`` if this
  node executes it, in ``standby`` if it only keeps a copy, and in ``outbound`` for each other
  holder, in the transaction that creates it.  So whichever holder executes the actor next
  already has every message, in arrival order, and nothing depends on the sender's node being
  up when the executor changes.
* Every transaction that changes an actor queues a state diff for its other holders in
  ``replicate`` (see :mod:`missive.mailbox.diffs`); a diff applied here drops the messages its
  receipts handled from the queues.
* Each deploy's code is queued in ``announce`` for every peer, so every node can answer
  EXTCODESIZE/EXTCODEHASH/EXTCODECOPY about an actor it does not hold.  Code never changes once
  deployed, so a copy is never stale; until it arrives the actor reads as having no code, and
  the receipt records that, so replay agrees.
"""

from __future__ import annotations

import os

import lmdb
import msgpack

from missive.mailbox.envelope import Envelope, EnvelopeError
from missive.mailbox.signed import SignedRecord, record_envelope
from missive.mailbox.store import GIVEN_UP, Store
from missive.replicas.records import Placement
from missive.replicas.rollback import RollingBack


class Copies(RollingBack):
    """One cluster node's replication engine over its store (see the module docstring)."""

    def __init__(self, store: Store, placement: Placement, *, compare_digests: bool = True) -> None:
        super().__init__(store, placement, compare_digests=compare_digests)
        store.attach(self)

    @classmethod
    def open(cls, path: str | os.PathLike[str], placement: Placement, *, chain_id: int | None = None) -> Copies:
        """Open (or make) a cluster node's store at ``path`` with its copies."""
        return cls(Store(path, create=True, chain_id=chain_id, replicated=True), placement)

    # -- the store's hook (missive.mailbox.store.Replication) --------------------------------

    def executes(self, address: bytes) -> bool:
        return self.placement.executes(address)

    def queue_message(self, txn: lmdb.Transaction, envelope: Envelope, message_id: bytes, record: bytes,
                      fan_out: bool) -> None:
        """Queue a stored message for every holder of its recipient: here (live or standby queue, or
        held until the record that made it is acknowledged) and in ``outbound`` for the others.
        ``fan_out=False``: a delivery from a peer, which already sent it to every holder."""
        placement = self.placement
        holders = placement.holders(envelope.recipient)
        # a message made here (an admission, or a handler's) for another actor waits for the record
        # that made it to be acknowledged, here too: given up, it must not have been handled anywhere
        held = fan_out and envelope.sender != envelope.recipient and self.replicated(envelope.sender)
        if placement.me in holders:
            if held:
                pass  # queued for this node below, like for the others: release_held places it
            elif txn.get(message_id, db=self.db["receipts"]) is None:  # not handled by another holder yet
                self.store.place(txn, envelope, message_id, placement.executes(envelope.recipient))
        elif not fan_out:
            raise EnvelopeError(f"this node keeps no copy of 0x{envelope.recipient.hex()}, the recipient")
        if fan_out:
            targets = [n for n in holders if n != placement.me or held]
            self._queue_for(txn, "outbound", targets, record)

    def deployed(self, txn: lmdb.Transaction, address: bytes, code: bytes) -> None:
        """Tell every peer about a deploy's code (EXTCODE* on actors held elsewhere)."""
        self._queue_for(txn, "announce", self.placement.peers(), msgpack.packb([address, code], use_bin_type=True))

    # -- between nodes ---------------------------------------------------------------

    def receive(self, records: list[bytes], txn: lmdb.Transaction | None = None) -> list[bytes | EnvelopeError]:
        """Accept messages another node sent here (its stored records), in order, in one transaction
        (``txn`` if given: a :meth:`write_together` write).

        Each is checked (decodes, validates) and deduplicated by id, so a retried
        delivery is harmless; the Lamport clock moves past each message's time.  A message a
        rollback gave up here (kept for replay only) that arrives again is no duplicate: the
        holder whose record stands sent it again, so it stands here again.
        Returns the ids (or the error naming what was wrong with a record).
        """
        if txn is None:
            with self.store.env.begin(write=True) as own:
                return self.receive(records, own)
        results: list[bytes | EnvelopeError] = []
        for raw in records:
            try:
                record = SignedRecord.decode(raw)
                envelope = record.envelope
                message_id = envelope.id
                if (txn.get(message_id, db=self.db["messages"]) is None
                        or txn.get(GIVEN_UP + message_id, db=self.db["meta"]) is not None):
                    # new here, or given up here by a rollback and sent again (same id) by the
                    # record that stands on another holder: it stands again, so it is queued
                    # like a new one (unless handled here) and a later rollback queues it again
                    self.store.enqueue(txn, envelope, message_id, record.public_key, record.signature, fan_out=False)
                    self.store.advance_clock(txn, envelope.time)
            except EnvelopeError as err:
                results.append(err)
                continue
            except (ValueError, TypeError) as err:
                results.append(EnvelopeError(f"malformed message record: {err}"))
                continue
            results.append(message_id)
        return results

    def release_held(self, keys: list[bytes], txn: lmdb.Transaction) -> int:
        """Place the messages queued for this node itself under ``keys`` (outbound, this node's id +
        seq), now that the records that made them are acknowledged (a :meth:`write_together`
        write).  One given up meanwhile is gone from the queue and is skipped."""
        placed = 0
        for key in keys:
            record = txn.get(key, db=self.db["outbound"])
            if record is None:
                continue
            txn.delete(key, db=self.db["outbound"])
            envelope = record_envelope(record)
            message_id = envelope.id
            if txn.get(message_id, db=self.db["receipts"]) is None:
                self.store.place(txn, envelope, message_id, self.placement.executes(envelope.recipient))
                placed += 1
        return placed
