"""Execution trust: re-running an executor's state diff, and evidence that one was wrong.

An actor's executor sends its other holders state diffs: results, not work
(:mod:`missive.mailbox.diffs`).  A holder that trusts the executor applies
them; one that does not (or picks the diff for its random sample) re-executes
the messages the diff's receipts handled, from its own copy, and compares
(:func:`rerun`).  Same code, same state, same messages: the handler is
deterministic, so any difference means the executor's diff is wrong.

A wrong diff becomes :class:`WrongDiff`, evidence that *any* node can check
without holding the actor: it carries the diff with the executor's signature,
the whole state the diff started from, the messages and the code the receipts
read, all signed by the accuser.  The executor signed a commitment to that
pre-state (the diff's ``before``, :mod:`missive.mailbox.digest`), so an
accuser cannot make up a pre-state to frame an honest executor; and since
the accusation is signed, a false one is evidence against the accuser.
:meth:`WrongDiff.check` re-runs the diff from the carried state and returns
the differences (none: the accusation is false).

What a re-run takes on faith, like replay: the code hashes a receipt says it
read of *other* accounts (their code is checked to hash to them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs
import msgpack

from missive.actors.handler import ActorState, SlotReader, run_handler
from missive.errors import MissiveError
from missive.identity import NodeIdentity, verify
from missive.mailbox import digest
from missive.mailbox.diffs import DiffError, StateDiff
from missive.mailbox.envelope import Envelope, EnvelopeError
from missive.mailbox.records import Account, Receipt, RecordError
from missive.mailbox.signed import record_id
from missive.market.fees import credit_messages
from missive.market.raises import with_effective_bids
from missive.vm.keccak import keccak256

#: What an accuser signs (so the signature cannot be replayed as anything else).
EVIDENCE_DOMAIN = "missive/trust/wrong-diff/v2"
#: Evidence larger than this is refused: it must fit one network frame (1 MiB) with room to spare.
MAX_EVIDENCE_BYTES = 960 * 1024
#: Differences reported per re-run (the first is what matters; the rest is context).
MAX_DIFFERENCES = 8
#: What a diff whose ``after`` does not follow from its ``before`` and its own writes is found to be.
CONTRADICTION = ("the diff contradicts itself: its account and storage writes applied to the state it signed it "
                 "started from do not give the state it signed it ends in")


class CannotCheck(MissiveError):
    """A message or code a re-run needs is not here (yet): the diff can be neither confirmed nor refuted."""


class EvidenceError(MissiveError, ValueError):
    """Evidence that is malformed, not signed by whom it names, or does not start from the signed state."""


class WrongResult(DiffError):
    """A re-executed diff gave other results than the executor's (raised from within the store's
    transaction, so ``evidence`` holds the pre-state exactly as the diff found it)."""

    def __init__(self, diff: StateDiff, differences: list[str], evidence: PreState) -> None:
        super().__init__(f"state diff for 0x{diff.address.hex()} is wrong when re-executed: {differences[0]}")
        self.diff = diff
        self.differences = differences
        self.evidence = evidence


@attrs.frozen
class PreState:
    """What a re-run of one diff starts from and reads: the evidence's body without the signatures."""

    account: bytes  # encoded Account, b"" if the actor did not exist
    storage: tuple[tuple[int, int], ...]  # every non-zero slot
    code: bytes  # the actor's code (b"" if none)
    messages: tuple[bytes, ...]  # canonical envelopes of the messages handled, in order
    codes: tuple[bytes, ...]  # code of other accounts the receipts read
    chain_id: int = 0  # the ledger's chain id (CHAINID in the re-run); a node refuses evidence of another


def code_reader(receipt: Receipt, code_by_hash: Callable[[bytes], bytes | None]) -> Callable[[bytes], tuple[bytes, bytes]]:
    """Other accounts' code as the receipt says the executor read it (by hash, checked)."""
    reads = dict(receipt.code_reads)

    def read_code(address: bytes) -> tuple[bytes, bytes]:
        code_hash = reads.get(address, b"")
        if not code_hash:
            return b"", b""
        code = code_by_hash(code_hash)
        if code is None or keccak256(code) != code_hash:
            raise CannotCheck(f"code 0x{code_hash.hex()[:16]} read by message 0x{receipt.message_id.hex()[:16]} is not here")
        return code, code_hash

    return read_code


def rerun(diff: StateDiff, account: Account, code: bytes, storage: dict[int, int], read_slot: SlotReader | None,
          message: Callable[[bytes], Envelope | None], code_by_hash: Callable[[bytes], bytes | None],
          chain_id: int) -> list[str]:
    """Re-execute the messages ``diff``'s receipts handled, from ``account``/``code``/storage, and
    return how the results differ from the diff's (empty: the diff is right).

    ``storage`` holds slots already known; ``read_slot`` reads the others (None: ``storage`` is whole).
    Raises :class:`CannotCheck` when a message or code it needs is missing.  Each message runs with
    the block.timestamp its receipt records (the handler keeps it from going back) and ``chain_id``.
    """
    actor = ActorState(diff.address, account, code, storage)
    writes: dict[int, int] = {}
    sent: list[bytes] = []
    handled: list[tuple[Receipt, bytes, Envelope]] = []
    for raw in diff.receipts:
        try:
            recorded = Receipt.decode(raw)
        except RecordError as exc:
            return [f"a receipt does not decode: {exc}"]
        envelope = message(recorded.message_id)
        if envelope is None:
            raise CannotCheck(f"message 0x{recorded.message_id.hex()[:16]} is not here")
        if envelope.recipient != diff.address:
            return [f"message 0x{recorded.message_id.hex()[:16]} is for 0x{envelope.recipient.hex()}, not this actor"]
        handled.append((recorded, raw, envelope))
    # raises settle by the order the messages were handled in (missive.market.raises), as they did live
    running = with_effective_bids([(recorded.message_id, envelope) for recorded, _, envelope in handled])
    for (recorded, raw, _), envelope in zip(handled, running, strict=True):
        got, written, _, outgoing, _ = run_handler(actor, envelope, recorded.message_id, read_slot,
                                                   code_reader(recorded, code_by_hash), recorded.timestamp, chain_id,
                                                   recorded.coinbase)
        if got.encode() != raw:
            found = recorded.differences(got) or ["the receipt is not in canonical form"]
            return [f"receipt at mailbox position {recorded.position}: {d}" for d in found][:MAX_DIFFERENCES]
        writes.update(written)
        sent += [e.id for e in outgoing]
        # the messages carrying its fee and refund (a cluster's commit sends them; see missive.market.fees)
        sent += [e.id for e in credit_messages(got, envelope.origin or envelope.sender)]
    out: list[str] = []
    claimed = dict(diff.storage)
    for slot in sorted(set(writes) | set(claimed)):
        if writes.get(slot) != claimed.get(slot):
            out.append(f"storage slot 0x{slot:x}: re-executed {_word(writes.get(slot))}, the diff {_word(claimed.get(slot))}")
    if diff.receipts:
        for name, value in actor.account.fields().items():
            theirs = diff.account.fields()[name]
            if value != theirs:
                out.append(f"account {name}: re-executed {_show(value)}, the diff {_show(theirs)}")
        listed = [record_id(record) for record in diff.messages]
        if listed != sent:
            out.append(f"messages sent: re-executed {len(sent)}, the diff lists {len(listed)} that differ")
    return out[:MAX_DIFFERENCES]


def contradiction(diff: StateDiff, storage: dict[int, int]) -> list[str]:
    """Whether ``diff`` contradicts itself: its pre-state (``storage``, whose commitment is its
    ``before``) with its own account and writes applied must give its ``after``."""
    total = digest.storage_sum(storage.items())
    for slot, value in diff.storage:
        total = digest.rewrite(total, slot, storage.get(slot, 0), value)
    return [] if digest.state_digest(diff.account.encode(), total) == diff.after else [CONTRADICTION]


def _word(value: int | None) -> str:
    return "unwritten" if value is None else f"0x{value:x}"


def _show(value: object) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else repr(value)


@attrs.frozen
class WrongDiff:
    """Signed evidence that ``executor`` signed a state diff its own pre-state does not lead to."""

    accuser: bytes
    executor: bytes
    diff: bytes  # the diff exactly as the executor signed it
    diff_signature: bytes  # the executor's signature over keccak256(diff)
    state: PreState
    signature: bytes = b""  # the accuser's, over :meth:`body`

    def body(self) -> bytes:
        s = self.state
        packed: bytes = msgpack.packb([
            EVIDENCE_DOMAIN, self.accuser, self.executor, self.diff, self.diff_signature, s.account,
            [[k.to_bytes(32, "big"), v.to_bytes(32, "big")] for k, v in s.storage], s.code,
            list(s.messages), list(s.codes), s.chain_id], use_bin_type=True)
        return packed

    @classmethod
    def make(cls, accuser: NodeIdentity, executor: bytes, diff: bytes, diff_signature: bytes,
             state: PreState) -> WrongDiff:
        unsigned = cls(accuser.node_id, executor, diff, diff_signature, state)
        return attrs.evolve(unsigned, signature=accuser.sign(keccak256(unsigned.body())))

    @property
    def address(self) -> bytes:
        return StateDiff.decode(self.diff).address

    def encode(self) -> bytes:
        packed: bytes = msgpack.packb([self.body(), self.signature], use_bin_type=True)
        return packed

    @classmethod
    def decode(cls, raw: bytes) -> WrongDiff:
        if not isinstance(raw, bytes) or len(raw) > MAX_EVIDENCE_BYTES:
            raise EvidenceError(f"evidence must be bytes of at most {MAX_EVIDENCE_BYTES}")
        try:
            body, signature = msgpack.unpackb(raw)
            (domain, accuser, executor, diff, diff_signature, account, storage, code, messages,
             codes, chain_id) = msgpack.unpackb(body)
            if type(chain_id) is not int or not 0 <= chain_id < 2**64:
                raise ValueError("the chain id must be an integer in [0, 2**64)")
            state = PreState(bytes(account), tuple((_int32(k), _int32(v)) for k, v in storage), bytes(code),
                             tuple(bytes(m) for m in messages), tuple(bytes(c) for c in codes), chain_id)
            evidence = cls(bytes(accuser), bytes(executor), bytes(diff), bytes(diff_signature), state, bytes(signature))
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise EvidenceError(f"malformed evidence: {exc}") from None
        if domain != EVIDENCE_DOMAIN:
            raise EvidenceError(f"not wrong-diff evidence (domain {domain!r})")
        if evidence.body() != body:
            raise EvidenceError("malformed evidence: not in canonical form")
        return evidence

    def check(self) -> list[str]:
        """Re-run the diff from the carried state: the differences (empty: the accusation is false).

        Raises :class:`EvidenceError` if the evidence proves nothing either way:
        a signature that is not the accuser's or the executor's, a pre-state
        that is not the one the executor signed, missing messages or code.
        """
        if not verify(self.accuser, keccak256(self.body()), self.signature):
            raise EvidenceError("the evidence is not signed by its accuser")
        if not verify(self.executor, keccak256(self.diff), self.diff_signature):
            raise EvidenceError("the state diff is not signed by the executor it names")
        try:
            diff = StateDiff.decode(self.diff)
            diff.decoded_receipts()
        except DiffError as exc:
            raise EvidenceError(f"the signed diff is malformed: {exc}") from None
        s = self.state
        if digest.state_digest(s.account, digest.storage_sum(s.storage)) != diff.before:
            raise EvidenceError("the pre-state is not the one the executor's diff says it started from")
        try:
            account = Account.decode(s.account) if s.account else Account()
        except RecordError as exc:
            raise EvidenceError(f"the pre-state account does not decode: {exc}") from None
        if account.code_hash and keccak256(s.code) != account.code_hash:
            raise EvidenceError("the actor's code does not hash to its account's code hash")
        try:
            messages = {keccak256(m): Envelope.decode(m) for m in s.messages}
        except EnvelopeError as exc:
            raise EvidenceError(f"a message in the evidence does not decode: {exc}") from None
        storage = dict(s.storage)
        contradicted = contradiction(diff, storage)
        if contradicted:
            return contradicted
        codes = {keccak256(c): c for c in s.codes}
        try:
            return rerun(diff, account, s.code if account.code_hash else b"", storage, None,
                         messages.get, codes.get, s.chain_id)
        except CannotCheck as exc:
            raise EvidenceError(f"the evidence is incomplete: {exc}") from None


def _int32(raw: object) -> int:
    if not isinstance(raw, bytes) or len(raw) != 32:
        raise ValueError("storage slots and values must be 32 bytes")
    return int.from_bytes(raw, "big")


def pre_state(account: bytes, storage: Iterable[tuple[int, int]], code: bytes, diff: StateDiff,
              message: Callable[[bytes], Envelope | None], code_by_hash: Callable[[bytes], bytes | None],
              chain_id: int) -> PreState:
    """The evidence body for ``diff`` from a holder's copy: the messages and code found of those it read."""
    handled = [Receipt.decode(raw) for raw in diff.receipts]
    read = {h for r in handled for _, h in r.code_reads if h}
    return PreState(account, tuple(sorted(storage)), code,
                    tuple(m.canonical() for r in handled if (m := message(r.message_id)) is not None),
                    tuple(c for h in sorted(read) if (c := code_by_hash(h)) is not None), chain_id)


__all__ = ["CONTRADICTION", "CannotCheck", "EvidenceError", "PreState", "WrongDiff", "WrongResult", "contradiction", "pre_state",
           "rerun"]
