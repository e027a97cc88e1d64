"""State diffs: what an executor sends the other replicas of an actor (SPEC §6).

An actor lives on K nodes; one executes it, the others hold copies.  Whenever a
transaction of the executor changes the actor (it handled messages, it sent or
had accepted messages, it was created), the executor's store queues one diff
per other replica in that same transaction.  The diff carries the result, not
the work: the account as committed, the storage slots written (last write
wins), new code, the receipts in mailbox order and the messages the actor sent
or had accepted.  A replica applies it without running anything (re-execution
by trust is the trust issue's job; the receipts in the diff are what it would
check).

Diffs are ordered by the executor's sequence number (``seq``), so a replica
applies each exactly once however often it is re-sent, and receipts must
continue the replica's copy of the mailbox exactly where it stands: a gap or an
overlap is refused, naming both positions, and nothing of that diff is written.
"""

from __future__ import annotations

from typing import Any, cast

import attrs
import msgpack

from missive.errors import MissiveError
from missive.mailbox.envelope import FORMAT_VERSION, int_bytes
from missive.mailbox.records import Account, Receipt, RecordError

#: A diff larger than this is refused (it would not fit a network frame either).
MAX_DIFF_BYTES = 1 << 20


class DiffError(MissiveError, ValueError):
    """A state diff that cannot be applied; the text names what is wrong."""


class DiffConflict(DiffError):
    """A diff's receipts are for mailbox positions this copy already holds other receipts for:
    two nodes executed the same actor from the same state (see SPEC §6)."""

    def __init__(self, message: str, address: bytes, position: int, *, version: int = 0, theirs: int = 0,
                 mine: int = 0) -> None:
        super().__init__(message)
        self.address = address
        self.position = position
        #: the version both copies hold different records for, and the epochs of the two records
        #: (0 for diffs from before versions: then the copies conflict by mailbox position only)
        self.version = version
        self.theirs = theirs
        self.mine = mine


class DiffSuperseded(DiffError):
    """A diff for an actor this node executes now: whatever it holds that this copy does not was
    never acknowledged (the sender's epoch is over, or its record lost to a higher epoch's); the
    sender takes this copy instead (it reconciles, :meth:`missive.replicas.rollback.RollingBack.roll_back`)."""

    def __init__(self, message: str, address: bytes) -> None:
        super().__init__(message)
        self.address = address


class DiffGap(DiffError):
    """A diff starts beyond this copy: diffs before it never reached this holder (they were lost
    with a rollback of their sender, or queued by a former executor).  Nothing it holds is
    contradicted, so the copy fetches what it lacks (a snapshot from ``position`` on) from the
    actor's executor instead of waiting for diffs that will never come."""

    def __init__(self, message: str, address: bytes, position: int, *, version: int = 0) -> None:
        super().__init__(message)
        self.address = address
        self.position = position
        #: the version this copy holds (its last record): a snapshot from there fills the gap
        self.version = version


@attrs.frozen
class StateDiff:
    address: bytes
    #: the executor's sequence number when it committed this change (orders its diffs)
    seq: int
    account: Account
    #: (slot, value) written, in slot order; value 0 deletes the slot
    storage: tuple[tuple[int, int], ...] = ()
    #: new code (a deploy), else b""
    code: bytes = b""
    #: encoded receipts, in mailbox order
    receipts: tuple[bytes, ...] = ()
    #: stored message records ([canonical, public key, signature]) the actor sent or had accepted
    messages: tuple[bytes, ...] = ()
    #: the executor's commitment to the actor's state before this diff
    #: (:func:`missive.mailbox.digest.state_digest`): a replica checks its copy
    #: matches, and evidence of a wrong diff is checked against it; b"" in
    #: diffs recorded before it existed
    before: bytes = b""
    #: the executor's commitment to the actor's state after it: the pre-state with this diff's
    #: account and storage applied must give it, so a diff that misstates its own writes is
    #: caught by every replica without running anything
    after: bytes = b""
    #: the epoch its executor made it in (missive.replicas.epochs): where two copies hold different
    #: records for one version, the record of the higher epoch wins
    epoch: int = 0
    #: the actor's record count once this diff is applied (1 for its first); 0 in diffs recorded
    #: before versions existed
    version: int = 0
    #: the epoch of the record before it (version - 1): a copy whose record there is another one
    #: has diverged from the sender's (Raft's log matching)
    prev_epoch: int = 0

    def encode(self) -> bytes:
        return cast(bytes, msgpack.packb(
            [FORMAT_VERSION, self.address, self.seq, self.account.encode(),
             [[int_bytes(k), int_bytes(v)] for k, v in self.storage], self.code, list(self.receipts),
             list(self.messages), self.before, self.after, self.epoch, self.version, self.prev_epoch],
            use_bin_type=True,
        ))

    @classmethod
    def decode(cls, raw: bytes) -> StateDiff:
        if not isinstance(raw, bytes) or len(raw) > MAX_DIFF_BYTES:
            raise DiffError(f"a state diff must be bytes of at most {MAX_DIFF_BYTES}")
        try:
            fields: Any = msgpack.unpackb(raw)
        except Exception as exc:
            raise DiffError(f"malformed state diff: not msgpack ({exc})") from None
        if not isinstance(fields, list) or len(fields) not in (8, 10, 13):
            raise DiffError("malformed state diff: expected an array of 13 fields")
        version, address, seq, account, storage, code, receipts, messages, *rest = fields
        before, after = rest[:2] if rest else (b"", b"")
        epoch, record, prev_epoch = rest[2:] if len(rest) == 5 else (0, 0, 0)
        if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 1 << 63
                   for n in (epoch, record, prev_epoch)):
            raise DiffError("malformed state diff: epoch, version and previous epoch must be non-negative integers")
        if not all(isinstance(d, bytes) and len(d) in (0, 32) for d in (before, after)):
            raise DiffError("malformed state diff: its state digests must be 32 bytes")
        if version != FORMAT_VERSION:
            raise DiffError(f"state diff format {version!r} is not supported (this node reads {FORMAT_VERSION})")
        if not isinstance(address, bytes) or len(address) != 20:
            raise DiffError("malformed state diff: address must be 20 bytes")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise DiffError("malformed state diff: seq must be a non-negative integer")
        try:
            decoded_account = Account.decode(account)
            slots = tuple((_word(k), _word(v)) for k, v in storage)
        except (RecordError, TypeError, ValueError) as exc:
            raise DiffError(f"malformed state diff for 0x{address.hex()}: {exc}") from None
        if not isinstance(code, bytes) or not all(isinstance(r, bytes) for r in [*receipts, *messages]):
            raise DiffError(f"malformed state diff for 0x{address.hex()}: code, receipts and messages must be bytes")
        return cls(address, seq, decoded_account, slots, code, tuple(receipts), tuple(messages), before, after,
                   epoch, record, prev_epoch)

    def decoded_receipts(self) -> list[Receipt]:
        """The receipts, each checked to belong to this actor and to follow the one before."""
        out: list[Receipt] = []
        for raw in self.receipts:
            try:
                receipt = Receipt.decode(raw)
            except RecordError as exc:
                raise DiffError(f"state diff for 0x{self.address.hex()}: {exc}") from None
            if receipt.recipient != self.address:
                raise DiffError(f"state diff for 0x{self.address.hex()} carries a receipt of 0x{receipt.recipient.hex()}")
            if out and receipt.position != out[-1].position + 1:
                raise DiffError(f"state diff for 0x{self.address.hex()}: receipts skip from position "
                                f"{out[-1].position} to {receipt.position}")
            out.append(receipt)
        return out


def _word(raw: object) -> int:
    if not isinstance(raw, bytes) or len(raw) > 32:
        raise ValueError("storage slots and values must be at most 32 bytes")
    return int.from_bytes(raw, "big")


__all__ = ["MAX_DIFF_BYTES", "DiffConflict", "DiffError", "DiffGap", "DiffSuperseded", "StateDiff"]
