"""Snapshots and rollbacks: the losing side of a conflict takes the winning copy; a copy with a gap
fills it; an executor change moves waiting messages between the live and standby queues."""

from __future__ import annotations

from typing import Any

import attrs
import lmdb
import msgpack

from missive.mailbox import bids, digest
from missive.mailbox.diffs import DiffError, StateDiff
from missive.mailbox.ledger_records import AcceptRecord, ReceiptRecord, decode
from missive.mailbox.records import Account, Receipt
from missive.mailbox.signed import record_envelope, record_id
from missive.mailbox.store import GIVEN_UP, u64
from missive.replicas.apply import Applying


@attrs.frozen
class RolledBack:
    """What :meth:`RollingBack.roll_back` did to the messages around the receipts it gave up."""

    #: messages the discarded receipts had handled: queued again, for whichever holder executes them
    requeued: tuple[bytes, ...]
    #: messages the discarded receipts sent that had already left this node (every other holder of
    #: their recipient acknowledged them): they stand where they went, nothing here takes them back
    gone: tuple[bytes, ...]
    #: how many receipts of this copy were given up (0: the snapshot only filled a gap)
    discarded: int = 0


class RollingBack(Applying):
    """Snapshots of this node's copies, and rollbacks to another holder's."""

    def rehome(self) -> tuple[int, int]:
        """Move waiting messages between ``pending`` and ``standby`` after who-executes-what changed.

        Keys (recipient + arrival seq) move unchanged, so each actor's queue
        keeps its arrival order whichever table it was in: per-pair FIFO holds
        across a change of executor.  Returns (taken over, handed back).
        """
        moved = {"pending": 0, "standby": 0}
        verdicts: dict[bytes, bool] = {}
        with self.store.env.begin(write=True) as txn:
            for source, target, wanted in (("standby", "pending", True), ("pending", "standby", False)):
                for key, message_id in self.scan(source, b"", txn=txn):
                    address = key[:20]
                    if address not in verdicts:
                        verdicts[address] = self.placement.executes(address)
                    if verdicts[address] != wanted:
                        continue
                    txn.delete(key, db=self.db[source])
                    if source == "pending":
                        bids.left(self.store, txn, (key,))
                    if txn.get(message_id, db=self.db["receipts"]) is None:
                        txn.put(key, message_id, db=self.db[target])
                        if target == "pending":
                            bids.entered(self.store, txn, key, message_id)
                        moved[target] += 1
        return moved["pending"], moved["standby"]

    def snapshot(self, address: bytes, version: int) -> dict[str, Any] | None:
        """This node's copy of an actor after its record ``version``, for a holder whose copy diverged
        after that record, or ends there (a gap): the record itself (``base``: [epoch, digest], so
        the other side checks it is theirs too), the records after it (``entries``: [version,
        epoch, digest, handled, message ids]), the receipts from the mailbox position it left
        (``since``), the account, every storage slot, and the seq of the last diff this node
        made for it.  ``{"head": n}`` if this copy does not reach record ``version``."""
        with self.store.read() as txn:
            raw = txn.get(address, db=self.db["accounts"])
            if raw is None:
                return None
            head, _ = self._head(txn, address)
            base = self._entry(txn, address, version) if version else None
            if version > head or (version and base is None):
                return {"head": head}
            since = int(base[2]) if base is not None else 0
            receipts = [txn.get(message_id, db=self.db["receipts"])
                        for key, message_id in self.scan("mailbox", address, txn=txn)
                        if int.from_bytes(key[20:], "big") >= since]
            entries = [[int.from_bytes(key[20:], "big"), *msgpack.unpackb(value)[:4]]
                       for key, value in self.scan("entries", address, txn=txn, after=address + u64(version))]
            storage = [[key[20:], value] for key, value in self.scan("storage", address, txn=txn)]
            seq = txn.get(address, db=self.db["last_diff"])
            carried = []  # the messages those records sent or admitted: the other copy keeps them too
            for entry in entries:
                for message_id in entry[4]:
                    record = (txn.get(bytes(message_id), db=self.db["messages"])
                              or txn.get(bytes(message_id), db=self.db["replica_messages"]))
                    if record is not None:
                        carried.append(record)
            return {"account": raw, "storage": storage, "receipts": receipts, "since": since,
                    "base": None if base is None else base[:2], "entries": entries, "messages": carried,
                    "seq": int.from_bytes(seq, "big") if seq else -1}

    def roll_back(self, source: bytes, address: bytes, version: int, snapshot: dict[str, Any]) -> RolledBack:
        """Replace this node's copy of ``address`` after its record ``version`` by ``source``'s (a
        :meth:`snapshot` from that record), in one transaction; say which messages this node had
        handled there (they now stand unhandled, queued again) and which messages the records
        given up had sent that had already left.

        This is the losing side of a conflict (the record of the higher epoch wins:
        missive.replicas.epochs, rule 4), or a copy filling a gap (``version`` is its last
        record: nothing is given up).  What the records given up did goes with them: their
        storage writes (the snapshot replaces all storage), their receipts, the diffs queued
        for other holders after ``version`` (earlier ones stand, and still go out), and the
        messages they sent or admitted, unless the standing records carry the same ones
        (the same message run again from the same state sends the same ids).  What the
        standing receipts handled leaves this node's queues.  A message that had already left
        is not taken back; it is named in the result so that the node can say so (with the
        epochs' acknowledgement rule, a message leaves only with a record that stands).

        Raises DiffError if the snapshot is not from this copy's record ``version`` (the copies
        diverged earlier: ask from an earlier record) or does not hold what it says.
        """
        where = f"snapshot of 0x{address.hex()} from record {version}"
        if "head" in snapshot:
            raise DiffError(f"{where}: the other copy holds only {snapshot['head']} records")
        account = Account.decode(snapshot["account"])
        receipts = [Receipt.decode(raw) for raw in snapshot["receipts"]]
        since = int(snapshot["since"])
        theirs = [(int(v), int(epoch), bytes(after), int(handled), [bytes(m) for m in ids])
                  for v, epoch, after, handled, ids, *_ in snapshot["entries"]]
        if any(r.position != since + i for i, r in enumerate(receipts)) or account.handled != since + len(receipts):
            raise DiffError(f"{where} does not hold mailbox positions {since}.. in order")
        if [v for v, *_ in theirs] != list(range(version + 1, version + 1 + len(theirs))):
            raise DiffError(f"{where} does not hold the records after {version} in order")
        db = self.db
        with self.store.writing() as txn:
            base = self._entry(txn, address, version) if version else None
            their_base = snapshot["base"]
            if (None if base is None else [int(base[0]), bytes(base[1])]) != (
                    None if their_base is None else [int(their_base[0]), bytes(their_base[1])]):
                raise DiffError(f"{where}: the copies differ at that record already")
            if (int(base[2]) if base is not None else 0) != since:
                raise DiffError(f"{where} starts at mailbox position {since}, this copy's record {version} at "
                                f"{int(base[2]) if base is not None else 0}")
            given_up: set[bytes] = set()  # what this copy's records after `version` carried
            standing_records = {v: (epoch, after) for v, epoch, after, _, _ in theirs}
            differing = 0  # records of this copy that the other's does not hold (0: a gap filled)
            made_from: int | None = None  # the lowest seq of those this node made: its ledger records follow
            for key, value in self.scan("entries", address, txn=txn, after=address + u64(version)):
                entry = msgpack.unpackb(value)
                given_up.update(bytes(m) for m in entry[3])
                if standing_records.get(int.from_bytes(key[20:], "big")) != (int(entry[0]), bytes(entry[1])):
                    differing += 1
                    if len(entry) > 4 and entry[4] >= 0:
                        made_from = entry[4] if made_from is None else min(made_from, entry[4])
                txn.delete(key, db=db["entries"])
            mine = [(key, message_id) for key, message_id in self.scan("mailbox", address, txn=txn)
                    if int.from_bytes(key[20:], "big") >= since]
            for key, message_id in mine:
                raw_receipt = txn.get(message_id, db=db["receipts"])
                if raw_receipt is not None:
                    given_up.update(Receipt.decode(raw_receipt).outgoing)
                txn.delete(message_id, db=db["receipts"])
                txn.delete(key, db=db["mailbox"])
            for key, _ in self.scan("storage", address, txn=txn):
                txn.delete(key, db=db["storage"])
            for slot, value in snapshot["storage"]:
                txn.put(address + bytes(slot), bytes(value), db=db["storage"])
            txn.put(address, digest.sum_bytes(digest.storage_sum(
                (int.from_bytes(bytes(slot), "big"), int.from_bytes(bytes(value), "big"))
                for slot, value in snapshot["storage"])), db=db["digests"])
            txn.put(address, account.encode(), db=db["accounts"])
            for receipt, raw in zip(receipts, snapshot["receipts"], strict=True):
                txn.put(receipt.message_id, raw, db=db["receipts"])
                txn.put(address + u64(receipt.position), receipt.message_id, db=db["mailbox"])
            for v, epoch, after, count, ids in theirs:
                txn.put(address + u64(v), msgpack.packb([epoch, after, count, ids], use_bin_type=True),
                        db=db["entries"])
            # the standing records may carry the very same messages: those stay, wherever they are
            standing = {out for r in receipts for out in r.outgoing} | {m for *_, ids in theirs for m in ids}
            for record in snapshot.get("messages", ()):
                message_id = record_id(bytes(record))
                if message_id in standing and txn.get(message_id, db=db["messages"]) is None:
                    txn.put(message_id, bytes(record), db=db["replica_messages"])
            gone = self._forget_messages(txn, given_up - standing)
            self._drop_diffs_after(txn, address, version, since)
            txn.delete(address, db=db["last_diff"])
            txn.put(address, msgpack.packb([source, snapshot["seq"]]), db=db["replica"])
            handled = {r.message_id for r in receipts}
            self._unqueue(txn, address, handled)  # what the standing receipts handled waits nowhere
            # what this copy had handled there waits again, unless the record that sent it was given
            # up meanwhile (its body stayed only for replay): queued, it would be handled twice
            unhandled = [m for _, m in mine if m not in handled and txn.get(GIVEN_UP + m, db=db["meta"]) is None]
            requeue = []
            for message_id in unhandled:
                found = txn.get(message_id, db=db["messages"])
                if found is not None:
                    requeue.append((record_envelope(found), message_id))
            # ahead of what waits: this copy took them before any later message of their pairs
            self.store.place_ahead(txn, address, requeue, self.placement.executes(address))
            discarded = self._records_given_up(txn, {m for _, m in mine}, given_up - standing, made_from)
            rollback = self.store.append(txn, ["rollback", address, since, account.encode(),
                                          [[bytes(slot), bytes(value)] for slot, value in snapshot["storage"]],
                                          discarded])
            for seq in discarded:
                txn.put(u64(seq), u64(rollback), db=db["discarded"])
        standing_receipts = {(r.position, r.message_id) for r in receipts}
        differing += sum(1 for key, m in mine if (int.from_bytes(key[20:], "big"), m) not in standing_receipts)
        return RolledBack(tuple(unhandled), tuple(gone), differing)

    def _records_given_up(self, txn: lmdb.Transaction, handled: set[bytes], carried: set[bytes],
                          made_from: int | None) -> list[int]:
        """Seqs of the standing (not yet discarded) ledger records a rollback gives up, ascending: the
        receipt records of ``handled`` and the accept records of ``carried`` (messages this node
        admitted in records given up).  Sealed records are never rewritten: the rollback record
        lists them and the ``discarded`` index points replay from each to it.  They are recent:
        search from the end, down to ``made_from`` (the seq of the first record given up that
        this node made; None: it made none, so its ledger has none of them)."""
        if made_from is None:
            return []
        wanted = {ReceiptRecord: set(handled), AcceptRecord: set(carried)}
        found_seqs: list[int] = []
        discarded = self.db["discarded"]
        cursor = txn.cursor(db=self.db["ledger"])
        found = cursor.last()
        while found and (wanted[ReceiptRecord] or wanted[AcceptRecord]):
            key, value = cursor.item()
            if int.from_bytes(key, "big") < made_from:
                break
            record = decode(value)
            left = wanted.get(type(record))
            if (left and isinstance(record, (AcceptRecord, ReceiptRecord)) and record.message_id in left
                    and txn.get(key, db=discarded) is None):
                left.discard(record.message_id)
                found_seqs.append(int.from_bytes(key, "big"))
            found = cursor.prev()
        return sorted(found_seqs)

    def _forget_messages(self, txn: lmdb.Transaction, message_ids: set[bytes]) -> list[bytes]:
        """Drop messages sent by discarded receipts: from the ledger's messages and every queue
        they are in (the holder whose receipts stand sends its own, perhaps with the same ids).
        Return those that had left already: their recipient has holders other than this node,
        and no copy of them waited in the outbound queue any more (each was acknowledged)."""
        if not message_ids:
            return []
        db = self.db
        waiting: set[bytes] = set()
        for key, record in self.scan("outbound", b"", txn=txn):
            message_id = record_id(record)
            if message_id in message_ids:
                waiting.add(message_id)
                txn.delete(key, db=db["outbound"])
        gone = []
        placement = self.placement
        for message_id in sorted(message_ids - waiting):
            raw = txn.get(message_id, db=db["messages"])
            if raw is None:
                continue
            recipient = record_envelope(raw).recipient
            if any(holder != placement.me for holder in placement.holders(recipient)):
                gone.append(message_id)
        self._unqueue(txn, b"", message_ids)  # reads their records: before they go
        for message_id in message_ids:
            if txn.get(message_id, db=db["receipts"]) is None:  # a receipt here names it: replay needs it
                txn.delete(message_id, db=db["messages"])
            else:  # kept for replay, but nothing sends it any more: never queue it again (roll_back)
                txn.put(GIVEN_UP + message_id, b"", db=db["meta"])
            txn.delete(message_id, db=db["replica_messages"])
        return gone

    def _drop_diffs_after(self, txn: lmdb.Transaction, address: bytes, version: int, since: int) -> None:
        """Drop the diffs queued for ``address`` that a rollback after record ``version`` (mailbox
        position ``since``) gives up: later records (diffs from before versions: those leaving it
        with more than ``since`` messages handled).  Earlier ones stand, and a holder that has
        not had them still needs them."""
        for key, raw in self.scan("replicate", b"", txn=txn):
            diff = StateDiff.decode(raw)
            if diff.address == address and (diff.version > version if diff.version
                                            else diff.account.handled > since):
                txn.delete(key, db=self.db["replicate"])
