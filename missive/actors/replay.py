"""Replay: rebuild state from the ledger alone and check every receipt (SPEC §5).

Replay reads only the ledger proper (the ``ledger`` records in order, the
messages and the receipts), never the node's derived state.  It walks the
records: a genesis creates an account, an accepted external message has its
signature checked again and moves its value out of the sender, and every
receipt's message is handled again from scratch with the same handler the
live runtime used.  The reproduced receipt must encode to exactly the recorded
bytes; the first that does not is reported field by field, expected vs got.  A
message whose stored body no longer hashes to its id is reported too, so
editing the ledger by hand, or changing the VM, is caught at the first message
it affects.

Code read from other accounts comes from the recorded code hashes (deployed
code is in the deploy receipts), exactly as the live run saw it.

Signatures: checking an Ed25519 signature (about 50 µs here) costs several
times re-running an ERC20 transfer, and 50,000 of them a second would take
more cores than a small machine has.  By default they are checked anyway,
ahead, a chunk of records at a time, on worker threads (PyNaCl releases the GIL
inside libsodium) while this thread re-executes; results are still taken in
ledger order, so a bad signature is the divergence at its own record.  With
``signatures=False`` (``missive replay --trust-signatures``) replay takes the
node's word that it checked each signature before accepting the message, and
checks everything else: for re-checking your own node's execution, or a
changed VM, quickly.  Someone who can write to the LMDB file could then add a
message no key signed; auditing a ledger you did not write needs the default.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import attrs
import msgpack

from missive.actors.handler import ActorState, run_handler
from missive.mailbox.admission import verify_signature
from missive.mailbox.diffs import StateDiff
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
from missive.mailbox.records import Account, Receipt, RecordError
from missive.mailbox.store import Store
from missive.vm.keccak import keccak256


@attrs.frozen
class Divergence:
    message_id: bytes
    recipient: bytes
    position: int
    differences: tuple[str, ...]

    def describe(self) -> str:
        head = f"message 0x{self.message_id.hex()} (0x{self.recipient.hex()} #{self.position}) diverges:"
        return "\n  ".join([head, *self.differences])


@attrs.frozen
class ReplayReport:
    checked: int
    divergence: Divergence | None
    stopped_at: bytes | None = None

    @property
    def ok(self) -> bool:
        return self.divergence is None


#: Ledger records read (and their signatures checked) per chunk.
CHUNK = 512

#: index of ``code_reads`` in a stored receipt (after the format version; see Receipt.encode)
_CODE_READS = 10


class _Problem(Exception):
    """A ledger record that cannot be replayed: the divergence is reported at it."""


def _message(txn: Any, messages_db: Any, message_id: bytes) -> tuple[Envelope, bytes, bytes]:
    """A stored message whose body still hashes to its id: (envelope, public key, signature)."""
    raw = txn.get(message_id, db=messages_db)
    if raw is None:
        raise _Problem("the message is missing from the ledger")
    try:
        canonical, public_key, signature = msgpack.unpackb(raw)
        digest = keccak256(canonical)
        if digest != message_id:
            raise _Problem(f"the stored message hashes to 0x{digest.hex()}, not to its id")
        # Well formed: the node validated it before storing it, and its hash binds it to its id.
        envelope = Envelope.decode(canonical, check=False)
    except EnvelopeError as err:
        raise _Problem(str(err)) from None
    except (ValueError, TypeError, KeyError, IndexError) as err:
        raise _Problem(f"malformed message record: {err}") from None
    envelope.__dict__["id"] = message_id
    return envelope, public_key, signature


def _signature_problems(chunk: list[tuple[int, Envelope, bytes, bytes]]) -> dict[int, str]:
    """Ledger seq -> what is wrong with the signature of that accepted message."""
    problems = {}
    for seq, envelope, public_key, signature in chunk:
        try:
            verify_signature(envelope, public_key, signature)
        except EnvelopeError as err:
            problems[seq] = str(err)
    return problems


class _SignatureChecks:
    """Ed25519 checks of accepted messages, run ahead on worker threads.

    Checking a signature costs several times an ERC20 transfer's re-execution,
    so chunks of them go to a pool (PyNaCl releases the GIL inside libsodium)
    while the replay thread re-executes; results are awaited in ledger order,
    so a bad signature is still the divergence at its own record.
    """

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool
        self.chunk: list[tuple[int, Envelope, bytes, bytes]] = []
        self.futures: list[tuple[int, Future[dict[int, str]]]] = []  # (last seq covered, checks)
        self.problems: dict[int, str] = {}
        self.done_through = -1

    def add(self, seq: int, envelope: Envelope, public_key: bytes, signature: bytes) -> None:
        self.chunk.append((seq, envelope, public_key, signature))
        if len(self.chunk) == CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.chunk:
            self.futures.append((self.chunk[-1][0], self.pool.submit(_signature_problems, self.chunk)))
            self.chunk = []

    def problem(self, seq: int) -> str | None:
        """What is wrong with the signature accepted at ``seq`` (waits for its check)."""
        if seq > self.done_through:
            self.flush()
            while self.futures and self.done_through < seq:
                last, future = self.futures.pop(0)
                self.problems.update(future.result())
                self.done_through = last
        return self.problems.pop(seq, None)


def _seq(key: bytes) -> int:
    """A ledger record's sequence number: its key, big-endian (decoded only where it is needed)."""
    return int.from_bytes(key, "big")


def _checked_ahead(records: Iterator[tuple[bytes, list[Any]]], txn: Any, messages_db: Any,
                   accepted: dict[bytes, Envelope], checks: _SignatureChecks) -> Iterator[tuple[bytes, list[Any]]]:
    """``records``, read two chunks ahead so that accepted messages' signatures are checked before they are needed."""
    window: deque[tuple[bytes, list[Any]]] = deque()
    for key, record in records:
        if record[0] == "accept":
            message_id = bytes(record[1])
            try:
                envelope, public_key, signature = _message(txn, messages_db, message_id)
            except _Problem:
                pass  # reported when its record is replayed
            else:
                accepted[message_id] = envelope
                checks.add(_seq(key), envelope, public_key, signature)
        window.append((key, record))
        if len(window) > 2 * CHUNK:
            yield window.popleft()
    yield from window


def _code_reader(actors: dict[bytes, ActorState], code_by_hash: dict[bytes, bytes], raw_receipt: bytes,
                 other_code: Callable[[bytes], bytes]) -> Callable[[bytes], tuple[bytes, bytes]]:
    """Other accounts' code as the live run saw it: by the code hashes its receipt recorded.

    Code deployed on this node is in its deploy receipts; code of an actor
    another node of a cluster executes comes from ``other_code`` (by hash).
    """
    reads: dict[bytes, bytes] | None = None

    def read_code(address: bytes) -> tuple[bytes, bytes]:
        nonlocal reads
        if reads is None:  # decoded only by the few handlers that read code
            try:
                reads = {bytes(a): bytes(h) for a, h in msgpack.unpackb(raw_receipt)[_CODE_READS]}
            except (ValueError, TypeError, IndexError):
                reads = {}  # a corrupt receipt: the comparison reports it
        code_hash = reads.get(address)
        if code_hash is None:  # the live run did not read it: report what replay sees
            other = actors.get(address)
            code_hash = other.account.code_hash if other else b""
        if not code_hash:
            return b"", b""
        code = code_by_hash.get(code_hash)
        return (other_code(code_hash) if code is None else code), code_hash

    return read_code


def _receipt_differences(raw: bytes, got: Receipt) -> list[str]:
    """Why a reproduced receipt's encoding differs from the recorded bytes, field by field."""
    try:
        recorded = Receipt.decode(raw)
    except RecordError as err:
        return [f"the recorded receipt is unreadable: {err}"]
    return recorded.differences(got) or ["the recorded receipt is not in canonical form"]


def _apply_diff(record: list[Any], state: Callable[[bytes], ActorState], code_by_hash: dict[bytes, bytes],
                other_code: Callable[[bytes], bytes]) -> None:
    """A state diff this node applied from another holder (a cluster): its state, taken as signed."""
    diff = StateDiff.decode(bytes(record[2]))
    actor = state(diff.address)
    actor.account = diff.account
    actor.storage.update(diff.storage)
    if diff.code:
        code_by_hash[diff.account.code_hash] = actor.code = diff.code


def _roll_back(record: list[Any], state: Callable[[bytes], ActorState], code_by_hash: dict[bytes, bytes],
               other_code: Callable[[bytes], bytes]) -> None:
    """This node gave up its receipts from a position on for another holder's copy, whole."""
    _, address, _since, account, storage = record
    actor = state(bytes(address))
    actor.account = Account.decode(bytes(account))
    actor.storage = {int.from_bytes(slot, "big"): int.from_bytes(value, "big") for slot, value in storage}
    code_hash = actor.account.code_hash
    actor.code = code_by_hash.get(code_hash) or other_code(code_hash) if code_hash else b""


#: Ledger records of state this node did not execute itself (see missive.mailbox.store): applied, not re-run.
_NOT_EXECUTED_HERE: dict[str, Callable[[list[Any], Callable[[bytes], ActorState], dict[bytes, bytes],
                                        Callable[[bytes], bytes]], None]] = {
    "diff": _apply_diff,
    "rollback": _roll_back,
    "discarded": lambda *_: None,  # a receipt a rollback gave up: its effects went with it
}


def replay(
    store: Store,
    *,
    actor: bytes | None = None,
    until: bytes | None = None,
    trace: Callable[[Envelope, Receipt], None] | None = None,
    signatures: bool = True,
) -> ReplayReport:
    """Re-execute the ledger; check ``actor``'s receipts only, or everyone's; stop after ``until``.

    ``signatures=False`` trusts the signatures the node checked when it
    accepted each external message (everything else is still checked).
    """
    actors: dict[bytes, ActorState] = {}
    code_by_hash: dict[bytes, bytes] = {}
    checked = 0
    db = store.db
    messages_db, receipts_db = db["messages"], db["receipts"]
    accepted: dict[bytes, Envelope] = {}  # read for their accept record, handled later
    code_db = db["code"]

    def state(address: bytes) -> ActorState:
        found = actors.get(address)
        if found is None:
            found = actors[address] = ActorState(address, Account(), b"")
        return found

    def diverged(message_id: bytes, recipient: bytes, position: int, *what: str) -> ReplayReport:
        return ReplayReport(checked, Divergence(message_id, recipient, position, what))

    pool = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) if signatures else None
    checks = _SignatureChecks(pool) if pool is not None else None
    try:
        with store.read() as txn:

            def other_code(code_hash: bytes) -> bytes:
                """Code another node deployed, kept by hash: it counts only if it hashes to it."""
                code = txn.get(code_hash, db=code_db) or b""
                return code if keccak256(code) == code_hash else b""

            # (key, record): the seq is decoded from the key only for a report or a signature check
            records = ((key, msgpack.unpackb(value)) for key, value in txn.cursor(db=db["ledger"]))
            if checks is not None:
                records = _checked_ahead(records, txn, messages_db, accepted, checks)
            for key, record in records:
                tag = record[0]
                if tag == "genesis":
                    _, address, public_key, balance = record
                    state(address).account = Account(balance=int.from_bytes(balance, "big"), public_key=public_key)
                    continue
                if tag in _NOT_EXECUTED_HERE:
                    _NOT_EXECUTED_HERE[tag](record, state, code_by_hash, other_code)
                    continue
                message_id = bytes(record[1])
                # an accepted message is read once, for its accept record, and kept for its receipt's
                envelope = accepted.get(message_id) if tag == "accept" else accepted.pop(message_id, None)
                if envelope is None:
                    try:
                        envelope = _message(txn, messages_db, message_id)[0]
                    except _Problem as problem:
                        return diverged(message_id, b"", -1, f"ledger record {_seq(key)}: {problem}")
                if tag == "accept":
                    if checks is not None and (problem := checks.problem(_seq(key))) is not None:
                        return diverged(message_id, b"", -1, f"ledger record {_seq(key)}: {problem}")
                    sender = state(envelope.sender)
                    sender.account = sender.account.debited(envelope.value)
                    accepted[message_id] = envelope
                    continue
                raw_receipt = txn.get(message_id, db=receipts_db)
                if raw_receipt is None:
                    return diverged(message_id, envelope.recipient, -1, "the receipt is missing")
                me = state(envelope.recipient)
                if me.account.code_hash and not me.code:
                    me.code = code_by_hash.get(me.account.code_hash, b"")
                # read_slot None: replay starts from nothing, so every slot an actor has is in its ActorState
                receipt, _, new_code, _, _ = run_handler(me, envelope, message_id, None,
                                                         _code_reader(actors, code_by_hash, raw_receipt, other_code))
                if envelope.kind is Kind.DEPLOY and receipt.success and new_code:
                    code_by_hash[me.account.code_hash] = new_code
                if actor is None or envelope.recipient == actor:
                    checked += 1
                    if trace is not None:
                        trace(envelope, receipt)
                    if receipt.encode() != raw_receipt:
                        return diverged(message_id, envelope.recipient, receipt.position,
                                        *_receipt_differences(raw_receipt, receipt))
                if until is not None and message_id == until:
                    return ReplayReport(checked, None, stopped_at=message_id)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return ReplayReport(checked, None)


def snapshot(store: Store) -> dict[bytes, tuple[int, bytes, dict[int, int]]]:
    """Live state as (balance, state root, storage) per account, to compare with a replay's."""
    return {address: (account.balance, account.state_root, store.storage(address)) for address, account in store.accounts()}


__all__ = ["Divergence", "ReplayReport", "replay", "snapshot"]
