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
signature, verified first, vouches for the whole chain (see :class:`_Seals`).
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
from missive.mailbox.diffs import StateDiff
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind, bytes_int
from missive.mailbox.records import Account, Receipt, RecordError
from missive.mailbox.seals import GENESIS, LENGTH, chain, verify_seal
from missive.mailbox.store import Store
from missive.market.fees import credits, escrow
from missive.market.raises import check_raise
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


class _Unsealed(MissiveError):
    """The ledger records from ``first`` to ``last`` do not match their seal."""

    def __init__(self, first: int, last: int, *what: str) -> None:
        super().__init__(first, last, what)
        self.first, self.last, self.what = first, last, what


def _signed(public_key: bytes | None, key: bytes, raw_seal: bytes) -> bool:
    """Whether the seal ``raw_seal`` at ledger key ``key`` is signed by ``public_key``."""
    try:
        digest, signature = msgpack.unpackb(raw_seal)
        return public_key is not None and verify_seal(public_key, key, bytes(digest), bytes(signature))
    except (ValueError, TypeError):
        return False


class _Seals:
    """The ledger's records, a sealed transaction at a time, each checked against its seal first.

    Iterating yields (key, decoded record) in ledger order, but only records
    whose seal has been checked: a transaction's records are read ahead to its
    seal (the next key in the ``seals`` table), the chain recomputed over
    them and compared with the seal's hash; then they are yielded.  A mismatch
    raises :class:`_Unsealed` naming the range.

    Signatures.  The newest seal's signature vouches for the whole chain under
    it, since every earlier seal's hash is recomputed from the records and
    compared: so only that one is verified, before anything is replayed (one
    Ed25519 verify, not one per transaction, which would cost about as much
    as re-running a transfer each).  If it fails, every seal is verified in
    order to find the first one the store key did not sign, and the walk
    reports that one at its place.  ``every_signature`` verifies each seal as
    it is reached instead (``--check-signatures``).  A replay that stops early
    calls :meth:`stop`, which verifies the last seal it reached.  ``head`` is
    the last seal checked.
    """

    def __init__(self, txn: Any, ledger_db: Any, seals_db: Any, public_key: bytes | None,
                 every_signature: bool = False) -> None:
        self.txn, self.ledger_db, self.seals_db, self.public_key = txn, ledger_db, seals_db, public_key
        self.every_signature = every_signature
        self.head: tuple[int, bytes] | None = None
        self._last_seal: tuple[bytes, bytes] | None = None  # (key, raw) of the last seal checked
        #: the first seal whose signature fails (None: the newest one verifies, so all are vouched for)
        self.unsigned: bytes | None = None
        if not every_signature:
            cursor = txn.cursor(db=seals_db)
            if cursor.last() and not _signed(public_key, cursor.key(), cursor.value()):
                self.unsigned = next(k for k, v in txn.cursor(db=seals_db) if not _signed(public_key, k, v))

    def _unsigned(self, first: int, last: int) -> _Unsealed:
        whose = f"0x{self.public_key.hex()}" if self.public_key else "(none recorded)"
        return _Unsealed(first, last, f"the seal at {last} is not signed by the store's seal key {whose}")

    def stop(self) -> _Unsealed | None:
        """Stopping before the newest seal: verify the last one reached (it vouches for the rest)."""
        if self._last_seal is None or self.every_signature:
            return None
        key, raw = self._last_seal
        return None if _signed(self.public_key, key, raw) else self._unsigned(_seq(key), _seq(key))

    def __iter__(self) -> Iterator[tuple[bytes, list[Any]]]:
        public_key, unsigned, every_signature = self.public_key, self.unsigned, self.every_signature
        seals = iter(self.txn.cursor(db=self.seals_db))
        seal = next(seals, None)
        previous = GENESIS
        batch: list[tuple[bytes, bytes]] = []
        unpackb = msgpack.unpackb
        for key, value in self.txn.cursor(db=self.ledger_db):
            if seal is None:
                batch.append((key, value))
                continue
            seal_key = seal[0]
            if seal_key < key:  # a seal whose last record is not there
                first = _seq(batch[0][0]) if batch else _seq(seal_key)
                raise _Unsealed(first, _seq(seal_key), f"the seal at {_seq(seal_key)} covers ledger record "
                                f"{_seq(seal_key)}, which is missing (records deleted, or a seal moved or added)")
            batch.append((key, value))
            if seal_key != key:
                continue
            first, last = _seq(batch[0][0]), _seq(key)
            got = chain(previous, b"".join([k + LENGTH(len(v)) + v for k, v in batch]))
            try:
                expected, _signature = unpackb(seal[1])
                expected = bytes(expected)
            except (ValueError, TypeError) as err:
                raise _Unsealed(first, last, f"the seal at {last} is unreadable: {err}") from None
            if got != expected:
                raise _Unsealed(first, last, f"chain hash: expected 0x{expected.hex()} (sealed), got 0x{got.hex()} "
                                "(records changed, added, deleted or reordered, or a seal missing or changed)")
            if key == unsigned or (every_signature and not _signed(public_key, key, seal[1])):
                raise self._unsigned(first, last)
            previous = expected
            self.head = (last, expected)
            self._last_seal = seal
            for k, v in batch:
                yield k, unpackb(v)
            batch = []
            seal = next(seals, None)
        if batch:
            raise _Unsealed(_seq(batch[0][0]), _seq(batch[-1][0]), "these records have no seal (appended after the "
                            "last seal, or the seal deleted)")
        if seal is not None:
            last = _seq(seal[0])
            raise _Unsealed(last, last, f"the seal at {last} covers ledger record {last}, which is missing "
                            "(records deleted at the end of the ledger)")


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
    _, address, _since, account, storage, _discarded = record
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
}


def _raise(record: list[Any], accepted: dict[bytes, Envelope], raised: dict[bytes, int],
           state: Callable[[bytes], ActorState], chain_id: int) -> str | None:
    """Replay a ``raise`` or ``unraise`` record (:mod:`missive.market.raises`): re-check a raise as
    the store checked it, against the state rebuilt so far, and move the same top-up; None, or
    what is wrong with the record."""
    message_id = bytes(record[1])
    envelope = accepted.get(message_id)
    try:
        if record[0] == "unraise":
            if envelope is None or message_id not in raised:
                return f"an unraise of 0x{message_id.hex()}, which has no raise waiting"
            bid = bytes_int(record[2], "bid")
            current = raised[message_id]
            if not envelope.bid <= bid < current:
                return f"an unraise of 0x{message_id.hex()} to {bid}, not below its raised bid {current}"
            payer = state(envelope.sender)
            payer.account = payer.account.credited(envelope.gas * (current - bid))
            raised[message_id] = bid
            return None
        _, _, new_bid, public_key, signature = record
        new_bid = bytes_int(new_bid, "bid")
        current = raised.get(message_id, envelope.bid if envelope is not None else 0)
        sender = state(envelope.sender).account if envelope is not None else None
        top_up = check_raise(message_id, (envelope, b"", b"") if envelope is not None else None, False, current,
                             new_bid, bytes(public_key), bytes(signature), sender, chain_id)
    except (EnvelopeError, ValueError, TypeError) as err:
        return f"the raise record is refused: {err}"
    assert envelope is not None
    payer = state(envelope.sender)
    payer.account = payer.account.replace(balance=payer.account.balance - top_up)  # the nonce stays
    raised[message_id] = new_bid
    return None


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
    workers: dict[bytes, Worker] = {}  # the worker registry (missive.market.workers)
    used_evidence: set[bytes] = set()  # keccak256 of the evidence that slashed a worker
    burned = 0  # coin burned by slashing
    code_db = db["code"]
    sealed: _Seals | None = None

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
            sealed = _Seals(txn, ledger_db, db["seals"], public_key, every_signature=check_signatures)
            records: Iterator[tuple[bytes, list[Any]]] = iter(sealed)
            if checks is not None:
                records = _checked_ahead(records, txn, messages_db, accepted, checks)
            try:
                for key, record in records:
                    tag = record[0]
                    if tag == "genesis":
                        _, address, public, balance = record
                        state(address).account = Account(balance=int.from_bytes(balance, "big"), public_key=public)
                        continue
                    if tag in _NOT_EXECUTED_HERE:
                        if tag == "rollback" and (missing := [s for s in record[5] if s not in skipped]):
                            return diverged(b"", bytes(record[1]), -1, f"ledger record {_seq(key)}: the rollback "
                                            f"discards receipt records {missing}, which replay did not skip (the "
                                            "store's discarded index lacks them)")
                        _NOT_EXECUTED_HERE[tag](record, state, code_by_hash, other_code)
                        continue
                    if tag == "worker":
                        op, address = str(record[1]), bytes(record[2])
                        try:
                            if op == "accuse":  # slashing: the evidence is re-checked, the same pledge forfeited
                                evidence = bytes(record[3])
                                slash = accuse(address, evidence, bytes(record[-2]), bytes(record[-1]), chain_id,
                                               state(address).account, store.evidence_check, workers.get,
                                               keccak256(evidence) in used_evidence)
                                used_evidence.add(keccak256(evidence))
                                state(address).account, workers[slash.executor] = slash.account, slash.worker
                                burned += slash.burned
                                continue
                            account, worker = apply_worker_op(op, address, list(record[3:-2]), bytes(record[-2]),
                                                              bytes(record[-1]), chain_id, state(address).account,
                                                              workers.get(address))
                        except (EnvelopeError, ValueError, TypeError, IndexError) as err:
                            return diverged(b"", address, -1, f"ledger record {_seq(key)}: the {op} is refused: {err}")
                        state(address).account, workers[address] = account, worker
                        continue
                    if tag in ("raise", "unraise"):
                        if (problem := _raise(record, accepted, raised, state, chain_id)) is not None:
                            return diverged(bytes(record[1]), b"", -1, f"ledger record {_seq(key)}: {problem}")
                        continue
                    message_id = bytes(record[1])
                    if tag in ("receipt", "accept") and discarded and key in discarded:
                        why = _discard_problem(txn, ledger_db, key, discarded[key])
                        if why is not None:
                            return diverged(message_id, b"", -1, f"ledger record {_seq(key)}: {why}")
                        skipped.add(_seq(key))
                        accepted.pop(message_id, None)
                        continue
                    # an accepted message is read once, for its accept record, and kept for its receipt's
                    envelope = accepted.get(message_id) if tag == "accept" else accepted.pop(message_id, None)
                    if envelope is None:
                        try:
                            envelope = _message(txn, messages_db, message_id)[0]
                        except _Problem as problem:
                            return diverged(message_id, b"", -1, f"ledger record {_seq(key)}: {problem}")
                    if tag == "accept":
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
                        envelope = attrs.evolve(envelope, bid=bid)  # run with its raised bid
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
            except _Unsealed as broken:
                return ReplayReport(checked, Divergence(b"", b"", -1, broken.what, (broken.first, broken.last)),
                                    sealed=sealed.head)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if actor is None and burned != store.burned():
        return diverged(b"", b"", -1, f"burned by slashing: replay burns {burned}, the store holds {store.burned()}")
    return ReplayReport(checked, None, sealed=sealed.head if sealed is not None else None)


def _discard_problem(txn: Any, ledger_db: Any, key: bytes, rollback_key: bytes) -> str | None:
    """Why the discarded index's entry for receipt record ``key`` is not backed by its rollback record."""
    raw = txn.get(rollback_key, db=ledger_db) if rollback_key > key else None
    try:
        record = msgpack.unpackb(raw) if raw is not None else None
    except (ValueError, TypeError):
        record = None
    if record is None or record[0] != "rollback" or len(record) < 6 or _seq(key) not in record[5]:
        return (f"the store's discarded index says rollback record {_seq(rollback_key)} gave this receipt up, "
                "but that record does not list it")
    return None


def snapshot(store: Store) -> dict[bytes, tuple[int, bytes, dict[int, int]]]:
    """Live state as (balance, state root, storage) per account, to compare with a replay's."""
    return {address: (account.balance, account.state_root, store.storage(address)) for address, account in store.accounts()}


__all__ = ["Divergence", "ReplayReport", "replay", "snapshot"]
