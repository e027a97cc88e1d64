"""Replay: rebuild state from the ledger alone and check every receipt (SPEC §5).

Replay reads only the ledger proper (the ``ledger`` records in order, the
messages and the receipts), never the node's derived state.  It walks the
records: a genesis creates an account, an accepted external message has its
signature checked again and moves its value out of the sender, and every
receipt's message is handled again from scratch with the same handler the
live runtime used.  The reproduced receipt must equal the recorded one field
by field; the first that does not is reported with expected vs got.  A message
whose stored body no longer hashes to its id is reported too, so editing the
ledger by hand, or changing the VM, is caught at the first message it affects.

Code read from other accounts comes from the recorded code hashes (deployed
code is in the deploy receipts), exactly as the live run saw it.

Speed: checking an Ed25519 signature costs more than re-running an ERC20
transfer, so signatures are checked ahead, a chunk of records at a time, on
worker threads (PyNaCl releases the GIL while libsodium works) while this
thread re-executes the previous chunk.  Results are still reported in ledger
order: a bad signature is the divergence at its own record, not earlier.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
import msgpack

from missive.actors.handler import ActorState, handle
from missive.mailbox.admission import verify_signature
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
from missive.mailbox.records import Account, Receipt
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


@attrs.frozen
class _Loaded:
    """One ledger record with its message read and checked (``error`` says what was wrong)."""

    seq: int
    record: list[Any]
    envelope: Envelope | None = None
    public_key: bytes = b""
    signature: bytes = b""
    error: str = ""


def _load(store: Store, txn: Any, seq: int, record: list[Any], known: dict[bytes, Envelope]) -> _Loaded:
    """Read a record's message; its stored body must hash to its id."""
    if record[0] == "genesis":
        return _Loaded(seq, record)
    message_id = bytes(record[1])
    found = known.pop(message_id, None)
    if found is not None:  # read for its accept record already
        return _Loaded(seq, record, found)
    raw = txn.get(message_id, db=store.db["messages"])
    if raw is None:
        return _Loaded(seq, record, error="the message is missing from the ledger")
    try:
        canonical, public_key, signature = msgpack.unpackb(raw)
        if keccak256(canonical) != message_id:
            return _Loaded(seq, record, error=f"the stored message hashes to 0x{keccak256(canonical).hex()}, not to its id")
        envelope = Envelope.decode(canonical)
    except EnvelopeError as err:
        return _Loaded(seq, record, error=str(err))
    except (ValueError, TypeError) as err:
        return _Loaded(seq, record, error=f"malformed message record: {err}")
    envelope.__dict__["id"] = message_id  # checked above
    if record[0] == "accept":
        known[message_id] = envelope  # its receipt record comes later
    return _Loaded(seq, record, envelope, public_key, signature)


def _check_signatures(chunk: list[_Loaded]) -> list[_Loaded]:
    out = []
    for item in chunk:
        if item.record[0] == "accept" and item.envelope is not None:
            try:
                verify_signature(item.envelope, item.public_key, item.signature)
            except EnvelopeError as err:
                item = attrs.evolve(item, error=str(err))
        out.append(item)
    return out


def _records(store: Store) -> Iterator[_Loaded]:
    """The ledger's records in order, messages loaded, signatures checked ahead on worker threads."""
    known: dict[bytes, Envelope] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool, store.read() as txn:
        cursor = txn.cursor(db=store.db["ledger"])
        in_flight: list[Any] = []
        chunk: list[_Loaded] = []
        for key, value in cursor:
            chunk.append(_load(store, txn, int.from_bytes(key, "big"), msgpack.unpackb(value), known))
            if len(chunk) == CHUNK:
                in_flight.append(pool.submit(_check_signatures, chunk))
                chunk = []
                if len(in_flight) > 2:  # keep two chunks checking while we run one
                    yield from in_flight.pop(0).result()
        in_flight.append(pool.submit(_check_signatures, chunk))
        for future in in_flight:
            yield from future.result()


def replay(
    store: Store,
    *,
    actor: bytes | None = None,
    until: bytes | None = None,
    trace: Callable[[Envelope, Receipt], None] | None = None,
) -> ReplayReport:
    """Re-execute the ledger; check ``actor``'s receipts only, or everyone's; stop after ``until``."""
    actors: dict[bytes, ActorState] = {}
    code_by_hash: dict[bytes, bytes] = {}
    checked = 0

    def state(address: bytes) -> ActorState:
        found = actors.get(address)
        if found is None:
            found = actors[address] = ActorState(address, Account(), b"")
        return found

    for loaded in _records(store):
        seq, record = loaded.seq, loaded.record
        tag = record[0]
        if tag == "genesis":
            _, address, public_key, balance = record
            state(address).account = Account(balance=int.from_bytes(balance, "big"), public_key=public_key)
            continue
        message_id = record[1]
        envelope = loaded.envelope
        if loaded.error or envelope is None:
            return ReplayReport(checked, Divergence(message_id, b"", -1, (f"ledger record {seq}: {loaded.error}",)))
        if tag == "accept":
            sender = state(envelope.sender)
            sender.account = attrs.evolve(
                sender.account, balance=sender.account.balance - envelope.value, nonce=sender.account.nonce + 1
            )
            continue
        recorded = store.receipt(message_id)
        if recorded is None:
            return ReplayReport(checked, Divergence(message_id, envelope.recipient, -1, ("the receipt is missing",)))
        if envelope.kind is Kind.DEPLOY and recorded.success:
            code_by_hash[keccak256(recorded.output)] = recorded.output
        reads = dict(recorded.code_reads)
        me = state(envelope.recipient)
        if me.account.code_hash and not me.code:
            me.code = code_by_hash.get(me.account.code_hash, b"")

        def read_code(address: bytes, reads: dict[bytes, bytes] = reads) -> tuple[bytes, bytes]:
            code_hash = reads.get(address)
            if code_hash is None:  # the live run did not read it: report what replay sees
                other = actors.get(address)
                code_hash = other.account.code_hash if other else b""
            return (code_by_hash.get(code_hash, b""), code_hash) if code_hash else (b"", b"")

        before_balance = me.account.balance
        outcome = handle(me, envelope, message_id, ("pending", b""), lambda slot: 0, read_code)
        # the merge the store's commit does: the balance moves by the handler's delta
        me.account = attrs.evolve(me.account, balance=before_balance + outcome.balance_delta)
        if actor is None or envelope.recipient == actor:
            checked += 1
            if trace is not None:
                trace(envelope, outcome.receipt)
            differences = recorded.differences(outcome.receipt)
            if differences:
                return ReplayReport(
                    checked, Divergence(message_id, envelope.recipient, recorded.position, tuple(differences))
                )
        if until is not None and message_id == until:
            return ReplayReport(checked, None, stopped_at=message_id)
    return ReplayReport(checked, None)


def snapshot(store: Store) -> dict[bytes, tuple[int, bytes, dict[int, int]]]:
    """Live state as (balance, state root, storage) per account, to compare with a replay's."""
    return {address: (account.balance, account.state_root, store.storage(address)) for address, account in store.accounts()}


__all__ = ["Divergence", "ReplayReport", "replay", "snapshot"]
