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

Seals (:mod:`missive.mailbox.seals`): the store signs a hash chain over the
ledger records at the end of every write transaction.  Replay reads one
transaction's records at a time, recomputes the chain over them and compares
the seal's hash *before* it replays them, so a changed, added, deleted or
reordered record, or a forged or missing seal, is the divergence at the first
broken seal, naming its record range and the expected vs computed hash;
records after the last seal are reported as unsealed.  The newest seal's
signature, verified first, vouches for the whole chain (see :class:`~missive.mailbox.sealed.SealedRecords`).
No Ed25519 verify per message is what lets replay run at 50,000 messages a
second on two cores.  Receipts and admissions a rollback gave up are
listed by its (sealed) rollback record and indexed in the store's
``discarded`` table: replay skips them, checking each skip against that record.

Client signatures: checking an Ed25519 signature (about 50 µs here) costs
several times re-running an ERC20 transfer.  The node checked each one before
accepting the message and the seal is its signed word for that; the message
bodies are bound to the sealed ``accept`` records by their ids.  With
``check_signatures=True`` (``missive replay --check-signatures``) every external
message's signature is checked again anyway, ahead, a chunk of records at a
time, on worker threads (PyNaCl releases the GIL inside libsodium) while this
thread re-executes; results are still taken in ledger order, so a bad
signature is the divergence at its own record.  That is for auditing a ledger
whose seal key you do not trust (about a third of the speed).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

import attrs
import msgpack

from missive.actors.handler import ActorState, run_handler
from missive.errors import MissiveError
from missive.mailbox.admission import verify_signature
from missive.mailbox.broker import differs as broker_differs
from missive.mailbox.diffs import DiffError
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
from missive.mailbox.ledger_records import (
    ACCEPT,
    DiffRecord,
    GenesisRecord,
    JobRecord,
    MessageRef,
    RaiseRecord,
    Record,
    RollbackRecord,
    TicketsRecord,
    UnraiseRecord,
    WorkerRecord,
    decode,
)
from missive.mailbox.records import Account, Receipt, RecordError
from missive.mailbox.sealed import SealedRecords, Unsealed
from missive.mailbox.store import Store
from missive.market.fees import credits, escrow
from missive.market.jobs import JOB, MemoryBoard
from missive.market.jobs import apply as apply_job_op
from missive.market.raises import check_raise, raise_misfit, raise_target, running_with
from missive.market.tickets.broker import Rebuilt as RebuiltBroker
from missive.market.tickets.ticket import BROKER
from missive.market.workers import Worker, accuse
from missive.market.workers import apply as apply_worker_op
from missive.vm.keccak import keccak256


@attrs.frozen
class Divergence:
    message_id: bytes
    recipient: bytes
    position: int
    differences: tuple[str, ...]
    #: (first, last) seq of the ledger records a broken seal covers (then ``message_id`` is b"")
    records: tuple[int, int] | None = None

    def describe(self) -> str:
        if self.records is not None:
            head = f"ledger records {self.records[0]}..{self.records[1]} diverge from their seal:"
        elif not self.message_id:
            head = "the ledger diverges:"
        else:
            head = f"message 0x{self.message_id.hex()} (0x{self.recipient.hex()} #{self.position}) diverges:"
        return "\n  ".join([head, *self.differences])


@attrs.frozen
class ReplayReport:
    checked: int
    divergence: Divergence | None
    stopped_at: bytes | None = None
    #: (seq of the last record covered, chain hash) of the last seal checked: note it to catch a
    #: ledger later cut short together with its newest seals
    sealed: tuple[int, bytes] | None = None

    @property
    def ok(self) -> bool:
        return self.divergence is None


#: Ledger records read (and their signatures checked) per chunk.
CHUNK = 512

#: index of ``code_reads`` in a stored receipt (after the format version; see Receipt.encode)
_CODE_READS = 10
#: index of block.timestamp (seconds) in an encoded receipt
_TIMESTAMP = 12
#: index of the coinbase its fee went to in an encoded receipt
_COINBASE = 16


class _Problem(MissiveError):
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


def _checked_ahead(records: Iterator[tuple[bytes, MessageRef | Record]], txn: Any, messages_db: Any,
                   accepted: dict[bytes, Envelope],
                   checks: _SignatureChecks) -> Iterator[tuple[bytes, MessageRef | Record]]:
    """``records``, read two chunks ahead so that accepted messages' signatures are checked before they are needed."""
    window: deque[tuple[bytes, MessageRef | Record]] = deque()
    for key, record in records:
        if isinstance(record, tuple) and record[0] == ACCEPT:
            message_id = record[1]
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


def _recorded_timestamp(raw_receipt: bytes) -> int:
    """The block.timestamp a receipt records: what the replayed run is given as its node's clock
    (the handler still keeps it from going back, so a tampered time is a divergence)."""
    try:
        timestamp = msgpack.unpackb(raw_receipt)[_TIMESTAMP]
    except (ValueError, TypeError, IndexError):
        return 0  # a corrupt receipt: the comparison reports it
    return timestamp if type(timestamp) is int and timestamp >= 0 else 0


def _recorded_coinbase(raw_receipt: bytes) -> bytes:
    """The coinbase a receipt records: the replayed run pays its fee there again (the comparison of
    the receipts checks the fee itself)."""
    try:
        coinbase = msgpack.unpackb(raw_receipt)[_COINBASE]
    except (ValueError, TypeError, IndexError):
        return b""  # a corrupt receipt: the comparison reports it
    return coinbase if type(coinbase) is bytes and len(coinbase) in (0, 20) else b""


def _receipt_differences(raw: bytes, got: Receipt) -> list[str]:
    """Why a reproduced receipt's encoding differs from the recorded bytes, field by field."""
    try:
        recorded = Receipt.decode(raw)
    except RecordError as err:
        return [f"the recorded receipt is unreadable: {err}"]
    return recorded.differences(got) or ["the recorded receipt is not in canonical form"]


def _apply_diff(record: DiffRecord, state: Callable[[bytes], ActorState], code_by_hash: dict[bytes, bytes],
                other_code: Callable[[bytes], bytes]) -> None:
    """A state diff this node applied from another holder (a cluster): its state, taken as signed."""
    diff = record.state_diff()
    actor = state(diff.address)
    actor.account = diff.account
    actor.storage.update(diff.storage)
    if diff.code:
        code_by_hash[diff.account.code_hash] = actor.code = diff.code


def _roll_back(record: RollbackRecord, state: Callable[[bytes], ActorState], code_by_hash: dict[bytes, bytes],
               other_code: Callable[[bytes], bytes]) -> None:
    """This node gave up its receipts from a position on for another holder's copy, whole."""
    actor = state(record.address)
    actor.account = record.account
    actor.storage = record.slots()
    code_hash = actor.account.code_hash
    actor.code = code_by_hash.get(code_hash) or other_code(code_hash) if code_hash else b""


def _job(record: JobRecord, board: MemoryBoard, chain_id: int) -> str | None:
    """Replay a job board record against the board rebuilt so far; None, or why it is refused."""
    try:
        apply_job_op(record.op, record.signer, list(record.args), record.public_key, record.signature, chain_id,
                     board)
    except (EnvelopeError, ValueError, TypeError, IndexError) as err:
        return f"the job {record.op} is refused: {err}"
    return None


def _board_differs(board: MemoryBoard, txn: Any, meta: Any) -> str | None:
    """Whether the job board replay rebuilt is the store's, job by job, bit for bit."""
    stored = {bytes(k)[len(JOB):]: bytes(v) for k, v in txn.cursor(db=meta) if bytes(k).startswith(JOB)}
    rebuilt = {job_id: job.encode() for job_id, job in board.jobs.items()}
    for job_id in sorted(set(stored) | set(rebuilt)):
        if stored.get(job_id) != rebuilt.get(job_id):
            return f"job 0x{job_id.hex()}: the store's job board differs from the one its ledger records make"
    return None


def _raise(record: RaiseRecord | UnraiseRecord, accepted: dict[bytes, Envelope], raised: dict[bytes, int],
           state: Callable[[bytes], ActorState], chain_id: int) -> str | None:
    """Replay a ``raise`` or ``unraise`` record (:mod:`missive.market.raises`): re-check a raise as
    the store checked it, against the state rebuilt so far, and move the same top-up; None, or
    what is wrong with the record."""
    message_id = record.message_id
    envelope = accepted.get(message_id)
    if type(record) is UnraiseRecord:
        if envelope is None or message_id not in raised:
            return f"an unraise of 0x{message_id.hex()}, which has no raise waiting"
        bid = record.bid
        current = raised[message_id]
        if not envelope.bid <= bid < current:
            return f"an unraise of 0x{message_id.hex()} to {bid}, not below its raised bid {current}"
        payer = state(envelope.sender)
        payer.account = payer.account.credited(envelope.gas * (current - bid))
        raised[message_id] = bid
        return None
    assert type(record) is RaiseRecord
    try:
        current = raised.get(message_id, envelope.bid if envelope is not None else 0)
        sender = state(envelope.sender).account if envelope is not None else None
        top_up = check_raise(message_id, (envelope, b"", b"") if envelope is not None else None, False, current,
                             record.bid, record.public_key, record.signature, sender, chain_id)
    except (EnvelopeError, ValueError, TypeError) as err:
        return f"the raise record is refused: {err}"
    assert envelope is not None
    payer = state(envelope.sender)
    payer.account = payer.account.replace(balance=payer.account.balance - top_up)  # the nonce stays
    raised[message_id] = record.bid
    return None


def _settle_raise(envelope: Envelope, message_id: bytes, raw_receipt: bytes, raising: dict[bytes, tuple[bytes, int]],
                  message: Callable[[bytes], Envelope]) -> Envelope | str:
    """The envelope a cluster's raise message, or the message after it, ran with; or what is wrong.

    Live, the rule is :func:`missive.market.raises.effective_bids` over the messages an actor
    handled in one commit.  The ledger does not mark where a commit ends, so replay takes each
    raise's receipt at its word (a refund of its whole escrow, or less: it was applied) and checks
    the claim: an applied raise must fit its message at the bid it had so far, and the next
    message its actor handles must be that message, which then runs with the raised bid.  The
    re-run receipts are compared as usual, so a wrong claim is a divergence either way."""
    recipient = envelope.recipient
    if envelope.kind is not Kind.RAISE:
        named, bid = raising.pop(recipient)
        if named != message_id:
            return (f"a raise of 0x{named.hex()} was applied, but the next message 0x{recipient.hex()} "
                    f"handled is 0x{message_id.hex()}")
        return envelope if bid == envelope.bid else running_with(envelope, message_id, bid)
    refund = Receipt.decode(raw_receipt).refund
    if refund == envelope.gas * envelope.bid:
        return envelope  # refunded whole: raised nothing
    try:
        named, new_bid = raise_target(envelope)
        target = message(named)
    except (EnvelopeError, _Problem) as err:
        return f"the raise 0x{message_id.hex()} was applied, but {err}"
    so_far = raising.get(recipient)
    current = so_far[1] if so_far is not None and so_far[0] == named else target.bid
    if (misfit := raise_misfit(envelope, named, target, current)) is not None:
        return f"the raise 0x{message_id.hex()} was applied, but {misfit}"
    raising[recipient] = (named, new_bid)
    return running_with(envelope, message_id, current - target.bid)


def replay(
    store: Store,
    *,
    actor: bytes | None = None,
    until: bytes | None = None,
    trace: Callable[[Envelope, Receipt], None] | None = None,
    check_signatures: bool = False,
    seal_key: bytes | None = None,
) -> ReplayReport:
    """Re-execute the ledger; check ``actor``'s receipts only, or everyone's; stop after ``until``.

    Every seal is checked (the chain over all records, whatever ``actor``).
    ``check_signatures`` re-verifies every external message's signature too;
    ``seal_key`` insists on the store's seal public key being that one (an
    auditor's copy), instead of taking the one the store records.  Stopping
    at ``until`` leaves the rest of the ledger, and its seals, unread.
    """
    actors: dict[bytes, ActorState] = {}
    code_by_hash: dict[bytes, bytes] = {}
    checked = 0
    db = store.db
    messages_db, receipts_db, ledger_db = db["messages"], db["receipts"], db["ledger"]
    accepted: dict[bytes, Envelope] = {}  # read for their accept record, handled later
    raised: dict[bytes, int] = {}  # bids raised (missive.market.raises) of messages not handled yet
    raising: dict[bytes, tuple[bytes, int]] = {}  # actor -> (message, bid so far) its raise messages raised
    workers: dict[bytes, Worker] = {}  # the worker registry (missive.market.workers)
    tickets = RebuiltBroker()  # the ticket broker (missive.market.tickets)
    used_evidence: set[bytes] = set()  # keccak256 of the evidence that slashed a worker
    burned = 0  # coin burned by slashing
    code_db = db["code"]
    sealed: SealedRecords | None = None
    board = MemoryBoard(lambda address: state(address).account if address in actors else None,
                        lambda address, account: setattr(state(address), "account", account), workers,
                        tickets.payers.get)

    def state(address: bytes) -> ActorState:
        found = actors.get(address)
        if found is None:
            found = actors[address] = ActorState(address, Account(), b"")
        return found

    def diverged(message_id: bytes, recipient: bytes, position: int, *what: str) -> ReplayReport:
        return ReplayReport(checked, Divergence(message_id, recipient, position, what),
                            sealed=sealed.head if sealed is not None else None)

    pool = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) if check_signatures else None
    checks = _SignatureChecks(pool) if pool is not None else None
    try:
        with store.read() as txn:
            chain_id = store.chain_id
            public_key = store.seal_public_key(txn)
            # a node alone credits fees and refunds in the receipt's commit; a cluster node sends
            # them as messages, which are in its ledger and replayed as any message
            credited_here = not store.credits_by_message(txn)
            if seal_key is not None and public_key != seal_key:
                recorded = f"0x{public_key.hex()}" if public_key else "none"
                return diverged(b"", b"", -1, f"seal key: expected 0x{seal_key.hex()}, the store records {recorded}")

            def other_code(code_hash: bytes) -> bytes:
                """Code another node deployed, kept by hash: it counts only if it hashes to it."""
                code = cast("bytes | None", txn.get(code_hash, db=code_db)) or b""
                return code if keccak256(code) == code_hash else b""

            # receipt records a rollback gave up (seq key -> seq key of that rollback record), and
            # the ones skipped so far (each rollback record checks that its list was)
            discarded = {bytes(k): bytes(v) for k, v in txn.cursor(db=db["discarded"])}
            skipped: set[int] = set()
            # (key, record), seal checked: the seq is decoded from the key only where it is needed
            sealed = SealedRecords(txn, ledger_db, db["seals"], public_key, every_signature=check_signatures)
            records: Iterator[tuple[bytes, MessageRef | Record]] = iter(sealed)
            if checks is not None:
                records = _checked_ahead(records, txn, messages_db, accepted, checks)
            try:
                for key, record in records:
                    # the two kinds of every message, (kind, message id) (see decode_lean); the others are rare
                    if not isinstance(record, tuple):
                        if type(record) is GenesisRecord:
                            made = state(record.address)
                            if record.code:  # a system actor (a cluster's worker registry)
                                made.account = Account(code_hash=keccak256(record.code))
                                code_by_hash[made.account.code_hash] = made.code = record.code
                                made.storage.update(record.storage)
                            else:
                                made.account = Account(balance=record.balance, public_key=record.public_key)
                        elif type(record) is DiffRecord:
                            try:
                                _apply_diff(record, state, code_by_hash, other_code)
                            except DiffError as err:
                                return diverged(b"", record.executor, -1, f"ledger record {_seq(key)}: {err}")
                        elif type(record) is RollbackRecord:
                            if missing := [s for s in record.discarded if s not in skipped]:
                                return diverged(b"", record.address, -1, f"ledger record {_seq(key)}: the rollback "
                                                f"discards receipt records {missing}, which replay did not skip (the "
                                                "store's discarded index lacks them)")
                            _roll_back(record, state, code_by_hash, other_code)
                        elif type(record) is WorkerRecord and record.op == "accuse":
                            # slashing: the evidence is re-checked, the same pledge forfeited
                            address, evidence = record.address, bytes(record.args[0]) if record.args else b""
                            try:
                                slash = accuse(address, evidence, record.public_key, record.signature, chain_id,
                                               state(address).account, store.evidence_check, workers.get,
                                               keccak256(evidence) in used_evidence)
                            except (EnvelopeError, ValueError, TypeError, IndexError) as err:
                                return diverged(b"", address, -1,
                                                f"ledger record {_seq(key)}: the accuse is refused: {err}")
                            used_evidence.add(keccak256(evidence))
                            state(address).account, workers[slash.executor] = slash.account, slash.worker
                            burned += slash.burned
                        elif type(record) is WorkerRecord:
                            address = record.address
                            try:
                                account, worker = apply_worker_op(record.op, address, list(record.args),
                                                                  record.public_key, record.signature, chain_id,
                                                                  state(address).account, workers.get(address))
                            except (EnvelopeError, ValueError, TypeError, IndexError) as err:
                                return diverged(b"", address, -1,
                                                f"ledger record {_seq(key)}: the {record.op} is refused: {err}")
                            state(address).account, workers[address] = account, worker
                        elif type(record) is TicketsRecord:
                            try:
                                tickets.replay(record.fields(), chain_id, BROKER, lambda a: state(a).account,
                                               lambda a, account: setattr(state(a), "account", account))
                            except (EnvelopeError, ValueError, TypeError, IndexError) as err:
                                return diverged(b"", b"", -1, f"ledger record {_seq(key)}: the tickets {record.op!r} "
                                                f"is refused: {err}")
                        elif type(record) is JobRecord:  # the job board (missive.market.jobs): the same rules, re-run
                            if (problem := _job(record, board, chain_id)) is not None:
                                return diverged(b"", record.signer, -1, f"ledger record {_seq(key)}: {problem}")
                        elif type(record) is RaiseRecord or type(record) is UnraiseRecord:
                            if (problem := _raise(record, accepted, raised, state, chain_id)) is not None:
                                return diverged(record.message_id, b"", -1, f"ledger record {_seq(key)}: {problem}")
                        else:  # unreadable, or of a kind this version does not know
                            what = getattr(record, "problem", f"a record of unknown kind {record.kind!r}")
                            return diverged(b"", b"", -1, f"ledger record {_seq(key)}: {what}")
                        continue
                    is_accept = record[0] == ACCEPT
                    message_id = record[1]
                    if discarded and key in discarded:
                        why = _discard_problem(txn, ledger_db, key, discarded[key])
                        if why is not None:
                            return diverged(message_id, b"", -1, f"ledger record {_seq(key)}: {why}")
                        skipped.add(_seq(key))
                        accepted.pop(message_id, None)
                        continue
                    # an accepted message is read once, for its accept record, and kept for its receipt's
                    envelope = accepted.get(message_id) if is_accept else accepted.pop(message_id, None)
                    if envelope is None:
                        try:
                            envelope = _message(txn, messages_db, message_id)[0]
                        except _Problem as problem:
                            return diverged(message_id, b"", -1, f"ledger record {_seq(key)}: {problem}")
                    if is_accept:
                        if checks is not None and (bad := checks.problem(_seq(key))) is not None:
                            return diverged(message_id, b"", -1, f"ledger record {_seq(key)}: {bad}")
                        sender = state(envelope.sender)
                        sender.account = sender.account.debited(envelope.value + escrow(envelope))
                        accepted[message_id] = envelope
                        continue
                    raw_receipt = cast("bytes | None", txn.get(message_id, db=receipts_db))
                    if raw_receipt is None:
                        return diverged(message_id, envelope.recipient, -1, "the receipt is missing")
                    if raised and (bid := raised.pop(message_id, None)) is not None and bid != envelope.bid:
                        envelope = running_with(envelope, message_id, bid)  # run with its raised bid
                    if envelope.kind is Kind.RAISE or envelope.recipient in raising:  # a cluster's raise messages
                        settled = _settle_raise(envelope, message_id, raw_receipt, raising,
                                                lambda named: _message(txn, messages_db, named)[0])
                        if isinstance(settled, str):
                            return diverged(message_id, envelope.recipient, -1, f"ledger record {_seq(key)}: {settled}")
                        envelope = settled
                    me = state(envelope.recipient)
                    if me.account.code_hash and not me.code:
                        me.code = code_by_hash.get(me.account.code_hash, b"")
                    # read_slot None: replay starts from nothing, so every slot an actor has is in its ActorState
                    receipt, _, new_code, _, _ = run_handler(me, envelope, message_id, None,
                                                             _code_reader(actors, code_by_hash, raw_receipt, other_code),
                                                             _recorded_timestamp(raw_receipt), chain_id,
                                                             _recorded_coinbase(raw_receipt))
                    if credited_here and (receipt.fee or receipt.refund):
                        for to, amount in credits(receipt, envelope.origin or envelope.sender):
                            payee = state(to)
                            payee.account = payee.account.credited(amount)
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
                        broken = sealed.stop()
                        if broken is not None:
                            raise broken
                        return ReplayReport(checked, None, stopped_at=message_id, sealed=sealed.head)
                if (why := broker_differs(store, tickets, txn)) is not None:
                    return diverged(b"", b"", -1, why)
            except Unsealed as broken:
                return ReplayReport(checked, Divergence(b"", b"", -1, broken.what, (broken.first, broken.last)),
                                    sealed=sealed.head)
            board_problem = _board_differs(board, txn, db["meta"])
            if board_problem is not None:
                return diverged(b"", b"", -1, board_problem)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if actor is None and burned != store.burned():
        return diverged(b"", b"", -1, f"burned by slashing: replay burns {burned}, the store holds {store.burned()}")
    return ReplayReport(checked, None, sealed=sealed.head if sealed is not None else None)


def _discard_problem(txn: Any, ledger_db: Any, key: bytes, rollback_key: bytes) -> str | None:
    """Why the discarded index's entry for receipt record ``key`` is not backed by its rollback record."""
    raw = txn.get(rollback_key, db=ledger_db) if rollback_key > key else None
    record = decode(raw) if raw is not None else None
    if type(record) is not RollbackRecord or _seq(key) not in record.discarded:
        return (f"the store's discarded index says rollback record {_seq(rollback_key)} gave this receipt up, "
                "but that record does not list it")
    return None


def snapshot(store: Store) -> dict[bytes, tuple[int, bytes, dict[int, int]]]:
    """Live state as (balance, state root, storage) per account, to compare with a replay's."""
    return {address: (account.balance, account.state_root, store.storage(address)) for address, account in store.accounts()}


__all__ = ["Divergence", "ReplayReport", "replay", "snapshot"]
