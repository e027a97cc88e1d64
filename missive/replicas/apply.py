"""Applying an executor's state diffs to this node's copies (validate, then commit: nothing of a
refused diff is written).  The checks are one function each; what decides "apply or re-execute"
is the ``check`` a caller passes (:mod:`missive.replicas.execution_trust`)."""

from __future__ import annotations

from collections.abc import Callable

import lmdb
import msgpack

from missive.mailbox.diffs import DiffConflict, DiffError, DiffGap, DiffSuperseded, StateDiff
from missive.mailbox.records import Account
from missive.mailbox.signed import record_id
from missive.mailbox.store import MAX_TIME_AHEAD, u64
from missive.replicas.records import Records
from missive.vm.keccak import keccak256


class Applying(Records):
    """Applying diffs to the copies (see :meth:`apply_diffs`)."""

    def apply_diffs(self, executor_id: bytes, diffs: list[StateDiff],
                    check: Callable[[lmdb.Transaction, StateDiff], None] | None = None) -> tuple[int, DiffError | None]:
        """Apply an executor's diffs in order, in one transaction, stopping at the first bad one.

        ``check(txn, diff)`` runs once a diff is found to continue this copy, with
        the copy as the diff found it; it may raise DiffError to refuse the diff
        (execution trust re-executes the diff there: :mod:`missive.replicas.execution`).

        Returns how many were applied or were already here (a re-sent diff is a
        no-op, whoever re-sends it: :meth:`_already_held`), and what was wrong with
        the next one, if anything.  A bad diff
        writes nothing, and neither does any diff after it.  Among the wrong
        ones: a diff for an actor this node executes now (the sender's view of
        who executes it is out of date, or two nodes both think they do), and
        receipts that do not continue this node's copy of the mailbox exactly
        (a gap, or receipts for positions this copy already holds: a conflict).
        """
        done = 0
        with self.store.writing() as txn:
            for diff in diffs:
                try:
                    if (self._holds_record(txn, diff) if diff.version
                            else self._legacy_held(txn, executor_id, diff)):
                        done += 1  # a re-sent record, from whichever holder
                        continue
                    self._check_diff(txn, diff)
                    if check is not None:
                        check(txn, diff)
                except DiffError as err:
                    return done, err
                self._apply_diff(txn, executor_id, diff)
                done += 1
        return done, None

    def _holds_record(self, txn: lmdb.Transaction, diff: StateDiff) -> bool:
        """Where ``diff`` (a versioned record) stands against this copy's records of its actor.

        True: this copy holds it already (same version, same epoch, same resulting state:
        one executor per epoch makes one record per version, so that is the same record).
        False: it is the next record of this copy.  Otherwise raises: :class:`DiffConflict`
        (another record for that version here, or for the one before it: the copies
        diverged; the record of the higher epoch wins, missive.replicas.epochs rule 4) or
        :class:`DiffGap` (records between this copy's last and it are missing here).
        """
        where = f"state diff for 0x{diff.address.hex()}"
        held = self._entry(txn, diff.address, diff.version)
        if held is not None:
            if held[0] == diff.epoch and bytes(held[1]) == diff.after:
                return True
            raise DiffConflict(f"{where} is record {diff.version} of epoch {diff.epoch}; this copy holds record "
                               f"{diff.version} of epoch {held[0]}", diff.address, self._handled_at(txn, diff),
                               version=diff.version, theirs=diff.epoch, mine=int(held[0]))
        version, epoch = self._head(txn, diff.address)
        if diff.version > version + 1:
            account = self.store.account(diff.address, txn)
            raise DiffGap(f"{where} is record {diff.version}; this copy holds {version}", diff.address,
                          account.handled if account is not None else 0, version=version)
        if diff.prev_epoch != epoch:
            raise DiffConflict(f"{where} follows a record {version} of epoch {diff.prev_epoch}; this copy's is of "
                               f"epoch {epoch}", diff.address, self._handled_at(txn, diff, version),
                               version=version, theirs=diff.prev_epoch, mine=epoch)
        return False

    def _handled_at(self, txn: lmdb.Transaction, diff: StateDiff, version: int | None = None) -> int:
        """Messages handled in this copy before record ``version`` (default: the diff's)."""
        before = self._entry(txn, diff.address, (diff.version if version is None else version) - 1)
        return int(before[2]) if before is not None else 0

    def _legacy_held(self, txn: lmdb.Transaction, executor_id: bytes, diff: StateDiff) -> bool:
        """A diff from before versions (0): held if its executor's last diff applied here came after
        it, or if this copy holds what it records (:meth:`_already_held`)."""
        seen = txn.get(diff.address, db=self.db["replica"])
        if seen is not None:
            seen_executor, seen_seq = msgpack.unpackb(seen)
            if seen_executor == executor_id and diff.seq <= seen_seq:
                return True
        return self._already_held(txn, diff)

    def _already_held(self, txn: lmdb.Transaction, diff: StateDiff) -> bool:
        """Whether this copy already holds everything ``diff`` records, so applying it is a no-op.

        Why not only "the last executor's seq": a diff is re-sent by whoever queued it,
        and after a failover that may be a former executor (E1 applied here, was killed
        before it dropped the diff from its queue, E2 took over, E1 came back and sent it
        again).  Taken for new, it would look like a conflict over receipts this copy holds
        byte for byte.  A record is identified by what it holds, not by who sends it:

        * receipts: every position it covers is already filled here by the same message,
          with the same receipt, byte for byte (execution is deterministic, so the same
          receipt means the same run, from the same state);
        * no receipts (an admission: the messages accepted and the sender's nonce): every
          message it carries is already here;
        * neither (a genesis): this copy's state is already the state it leads to.
        """
        raw = txn.get(diff.address, db=self.db["accounts"])
        if raw is None:
            return False
        current = Account.decode(raw)
        if diff.receipts:
            receipts = diff.decoded_receipts()
            if receipts[-1].position >= current.handled:
                return False
            mailbox, stored = self.db["mailbox"], self.db["receipts"]
            return all(txn.get(diff.address + u64(r.position), db=mailbox) == r.message_id
                       and txn.get(r.message_id, db=stored) == encoded
                       for r, encoded in zip(receipts, diff.receipts, strict=True))
        if diff.messages:
            known = (self.db["replica_messages"], self.db["messages"])
            return diff.account.nonce <= current.nonce and all(
                any(txn.get(record_id(record), db=table) is not None for table in known)
                for record in diff.messages)
        return self.compare_digests and diff.after == self.store.state_digest(diff.address, txn)

    def _check_diff(self, txn: lmdb.Transaction, diff: StateDiff) -> None:
        """Raise DiffError if ``diff`` does not continue this node's copy of its actor exactly, or
        its time is more than :data:`MAX_TIME_AHEAD` seconds ahead of this node's clock."""
        where = f"state diff for 0x{diff.address.hex()}"
        if self.placement.executes(diff.address):
            raise DiffSuperseded(f"{where}: this node executes that actor now", diff.address)
        if diff.receipts:
            now = int(self.store.wall_clock())
            latest = max([diff.account.timestamp, *(r.timestamp for r in diff.decoded_receipts())])
            if latest > now + MAX_TIME_AHEAD:
                raise DiffError(f"{where}: its block.timestamp {latest} is {latest - now} s ahead of this "
                                f"node's clock (at most {MAX_TIME_AHEAD} s is taken); it is taken once this "
                                "clock catches up")
        if diff.version:  # its version and epochs follow this copy's records
            try:
                self._check_continues(txn, diff, where)
            except DiffConflict as exc:  # ...but not its state: one of the two copies drifted
                raise DiffConflict(str(exc), diff.address, exc.position, version=diff.version - 1,
                                   theirs=diff.prev_epoch, mine=diff.prev_epoch) from None
            except DiffGap as exc:  # positions past this copy's while the versions follow: a lie
                raise DiffError(f"{exc}, though its version follows this copy's") from None
            return
        self._check_continues(txn, diff, where)

    def _check_continues(self, txn: lmdb.Transaction, diff: StateDiff, where: str) -> None:
        receipts = diff.decoded_receipts()
        raw = txn.get(diff.address, db=self.db["accounts"])
        current = Account.decode(raw) if raw is not None else Account()
        if receipts and receipts[0].position < current.handled:
            position = receipts[0].position
            theirs = txn.get(diff.address + u64(position), db=self.db["mailbox"])
            raise DiffConflict(f"{where} conflicts at mailbox position {position}: this copy handled "
                               f"{'0x' + theirs.hex()[:16] if theirs else 'another message'} there, the diff "
                               f"0x{receipts[0].message_id.hex()[:16]}", diff.address, position)
        if receipts and receipts[0].position != current.handled:
            raise DiffGap(f"{where} starts at mailbox position {receipts[0].position}, this replica holds "
                          f"{current.handled}", diff.address, current.handled)
        if diff.account.handled > current.handled + len(receipts):
            raise DiffGap(f"{where} leaves {diff.account.handled} messages handled after {len(receipts)} "
                          f"receipts from {current.handled}", diff.address, current.handled)
        if diff.account.handled != current.handled + len(receipts):
            raise DiffError(f"{where} leaves {diff.account.handled} messages handled after {len(receipts)} "
                            f"receipts from {current.handled}")
        if not diff.account.code_hash and diff.account.nonce < current.nonce:
            raise DiffError(f"{where} takes the account's nonce back from {current.nonce} to {diff.account.nonce}")
        if diff.code and keccak256(diff.code) != diff.account.code_hash:
            raise DiffError(f"{where}: its code does not hash to the account's code hash")
        try:
            carried = {record_id(record) for record in diff.messages}
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise DiffError(f"{where}: a message record it carries is malformed ({exc})") from None
        if not {out for r in receipts for out in r.outgoing} <= carried:
            raise DiffError(f"{where}: its receipts name messages it does not carry")
        mine = self.store.state_digest(diff.address, txn)
        if self.compare_digests and diff.before != mine:  # same position, other state: the copies diverged (a conflict too)
            raise DiffConflict(f"{where} starts from another state than this copy's (pre-state digest "
                               f"{diff.before.hex()[:16] or 'missing'}, this copy's {mine.hex()[:16]})",
                               diff.address, min(current.handled, diff.account.handled - len(receipts)))

    def _apply_diff(self, txn: lmdb.Transaction, executor_id: bytes, diff: StateDiff) -> None:
        db = self.db
        txn.put(diff.address, diff.account.encode(), db=db["accounts"])
        if diff.storage:
            self.store.write_storage(txn, diff.address, diff.storage)
        if diff.code:
            txn.put(diff.account.code_hash, diff.code, db=db["code"])
        handled = set()
        for receipt, raw_receipt in zip(diff.decoded_receipts(), diff.receipts, strict=True):
            txn.put(receipt.message_id, raw_receipt, db=db["receipts"])
            txn.put(diff.address + u64(receipt.position), receipt.message_id, db=db["mailbox"])
            handled.add(receipt.message_id)
        if handled:
            self._unqueue(txn, diff.address, handled)
        for record in diff.messages:
            txn.put(record_id(record), record, db=db["replica_messages"])
        txn.put(diff.address, msgpack.packb([executor_id, diff.seq]), db=db["replica"])
        if diff.version:
            self._record_entry(txn, diff, made_here=False)
        self.store.append(txn, ["diff", executor_id, diff.encode()])
