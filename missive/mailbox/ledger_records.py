"""The ledger's records, typed: the one place that decodes them.

The ``ledger`` table (see :mod:`missive.mailbox.store`) holds one msgpack list
per record, its kind first.  Replay re-checks them, the node lists them
(``missive ledger``), a cluster node sends them to clients a page at a time,
the RPC index files them into blocks and a rollback searches them.  Each of
those used to index into the raw list itself; now they call :func:`decode` (a
stored value) or :func:`from_fields` (a list already unpacked, or the wire
form a cluster client gets) and match on the types below.

Decoding never raises.  Bytes that are no record at all, or a record whose
fields are not the types its kind declares, come back as
:class:`UnreadableRecord` naming what was wrong, and a kind this version does
not know as :class:`UnknownRecord`: replay reports either as the divergence at
its own record and a ledger listing shows it, instead of a traceback half way
down the ledger.

Cost: replay decodes every record, two per message.  Building one of these
frozen classes costs about 0.2 µs, about 1% of replaying a message; replay's
hot loop therefore uses the same types as everyone else (measured in the
issue 22 note, docs/architecture.md).

The layout each kind is written with is :meth:`fields`, which the property
tests check against :func:`from_fields` both ways; the store and the replicas
still build the lists they append themselves (the layouts are listed in the
store's table of tables).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

import attrs
import msgpack

from missive.errors import MissiveError
from missive.mailbox.diffs import StateDiff
from missive.mailbox.envelope import EnvelopeError, bytes_int, int_bytes
from missive.mailbox.records import Account, RecordError

if TYPE_CHECKING:
    import lmdb

    from missive.mailbox.store import Store

ACCEPT = "accept"
RECEIPT = "receipt"
#: the wire kind of a receipt record a rollback gave up (never on disk: the ``discarded`` index says so)
DISCARDED = "discarded"
#: the wire kind of a record that could not be read (never on disk)
UNREADABLE = "unreadable"


@attrs.frozen
class GenesisRecord:
    """An account created with a balance, outside any message (``missive init``, ``account new --fund``)."""

    kind: ClassVar[str] = "genesis"
    address: bytes
    public_key: bytes
    balance: int
    #: a system actor's (a cluster's worker registry): its code and starting storage; b"", () for an account
    code: bytes = b""
    storage: tuple[tuple[int, int], ...] = ()

    def fields(self) -> list[Any]:
        fields = [self.kind, self.address, self.public_key, int_bytes(self.balance)]
        if self.code:
            fields += [self.code, [[int_bytes(k), int_bytes(v)] for k, v in self.storage]]
        return fields


@attrs.frozen
class AcceptRecord:
    """An external message admitted: its value and escrow left the sender."""

    kind: ClassVar[str] = ACCEPT
    message_id: bytes

    def fields(self) -> list[Any]:
        return [self.kind, self.message_id]


@attrs.frozen
class ReceiptRecord:
    """A message handled here: its receipt is in the ``receipts`` table under the message id."""

    kind: ClassVar[str] = RECEIPT
    message_id: bytes
    #: a rollback gave this record up (known from the ``discarded`` index, or from the wire form)
    discarded: bool = False

    def fields(self) -> list[Any]:
        return [self.kind, self.message_id]


@attrs.frozen
class DiffRecord:
    """A state diff another holder executed and this node applied (a cluster's)."""

    kind: ClassVar[str] = "diff"
    executor: bytes
    #: the encoded :class:`~missive.mailbox.diffs.StateDiff` (decoded by :meth:`state_diff`, which may
    #: refuse it: a listing still shows the record then)
    diff: bytes

    def state_diff(self) -> StateDiff:
        """The diff itself; DiffError if it does not decode."""
        return StateDiff.decode(self.diff)

    def fields(self) -> list[Any]:
        return [self.kind, self.executor, self.diff]


@attrs.frozen
class RollbackRecord:
    """This node gave up its receipts of ``address`` from mailbox ``position`` on, for another
    holder's copy, whole: the account and storage it took over, and the ledger records given up."""

    kind: ClassVar[str] = "rollback"
    address: bytes
    position: int
    account: Account
    #: (slot, value) as written: 32-byte big-endian slot, value without leading zeros
    storage: tuple[tuple[bytes, bytes], ...]
    #: seqs of the receipt and accept records this rollback gives up
    discarded: tuple[int, ...]

    def slots(self) -> dict[int, int]:
        return {int.from_bytes(slot, "big"): int.from_bytes(value, "big") for slot, value in self.storage}

    def fields(self) -> list[Any]:
        return [self.kind, self.address, self.position, self.account.encode(),
                [list(pair) for pair in self.storage], list(self.discarded)]


@attrs.frozen
class RaiseRecord:
    """A signed raise of a waiting message's bid (:mod:`missive.market.raises`)."""

    kind: ClassVar[str] = "raise"
    message_id: bytes
    bid: int
    public_key: bytes
    signature: bytes

    def fields(self) -> list[Any]:
        return [self.kind, self.message_id, int_bytes(self.bid), self.public_key, self.signature]


@attrs.frozen
class UnraiseRecord:
    """A raise that came too late for the run: the message ran with ``bid``, the top-up went back."""

    kind: ClassVar[str] = "unraise"
    message_id: bytes
    bid: int

    def fields(self) -> list[Any]:
        return [self.kind, self.message_id, int_bytes(self.bid)]


@attrs.frozen
class WorkerRecord:
    """A signed operation on the worker registry (:mod:`missive.market.workers`): ``args`` exactly as
    signed (register: stake, coinbase, minimum bid; unbond and withdraw: the logical time)."""

    kind: ClassVar[str] = "worker"
    op: str
    address: bytes
    args: tuple[Any, ...]
    public_key: bytes
    signature: bytes

    def fields(self) -> list[Any]:
        return [self.kind, self.op, self.address, *self.args, self.public_key, self.signature]


@attrs.frozen
class TicketsRecord:
    """A signed operation on the ticket broker (:mod:`missive.market.tickets`): fund, unlock,
    withdraw, redeem...; ``clock`` is the logical time it was applied at, ``args`` exactly as signed."""

    kind: ClassVar[str] = "tickets"
    op: str
    address: bytes
    clock: int
    args: tuple[Any, ...]
    public_key: bytes
    signature: bytes

    def fields(self) -> list[Any]:
        return [self.kind, self.op, self.address, self.clock, *self.args, self.public_key, self.signature]


@attrs.frozen
class JobRecord:
    """A signed operation on the job board (:mod:`missive.market.jobs`): post, take, commit, reveal...;
    ``args`` exactly as signed by ``signer``."""

    kind: ClassVar[str] = "job"
    op: str
    signer: bytes
    args: tuple[Any, ...]
    public_key: bytes
    signature: bytes

    def fields(self) -> list[Any]:
        return [self.kind, self.op, self.signer, *self.args, self.public_key, self.signature]


@attrs.frozen
class UnknownRecord:
    """A record of a kind this version does not know (written by a newer one)."""

    kind: str
    rest: tuple[Any, ...]

    def fields(self) -> list[Any]:
        return [self.kind, *self.rest]


@attrs.frozen
class UnreadableRecord:
    """Stored bytes that are no ledger record, or a record whose fields are not what its kind says."""

    kind: ClassVar[str] = UNREADABLE
    problem: str

    def fields(self) -> list[Any]:
        return [self.kind, self.problem]


#: every record a ledger holds, and the two ways one can fail to be read
Record: TypeAlias = (GenesisRecord | AcceptRecord | ReceiptRecord | DiffRecord | RollbackRecord | RaiseRecord
                     | UnraiseRecord | WorkerRecord | TicketsRecord | JobRecord | UnknownRecord | UnreadableRecord)
#: the records that name a message (its body is in the ``messages`` table)
MESSAGE_RECORDS = (AcceptRecord, ReceiptRecord, RaiseRecord, UnraiseRecord)


class _Bad(MissiveError):
    """A field of the record being decoded is wrong (becomes an UnreadableRecord)."""


def _bytes(value: object, what: str, size: int | None = None) -> bytes:
    if type(value) is not bytes or (size is not None and len(value) != size):
        raise _Bad(f"{what} is not {size} bytes" if size is not None else f"{what} is not bytes")
    return value


def _int(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise _Bad(f"{what} is not a non-negative integer")
    return value


def _size(fields: list[Any], n: int) -> None:
    if len(fields) != n:
        raise _Bad(f"{len(fields) - 1} fields, not {n - 1}")


def _genesis(f: list[Any]) -> GenesisRecord:
    if len(f) != 6:  # (six: a system actor's, with its code and storage)
        _size(f, 4)
    code: bytes = b""
    storage: tuple[tuple[int, int], ...] = ()
    if len(f) == 6:
        code = _bytes(f[4], "the code")
        if not isinstance(f[5], list) or not all(isinstance(p, list) and len(p) == 2 for p in f[5]):
            raise _Bad("the storage is not a list of [slot, value] pairs")
        storage = tuple((int.from_bytes(_bytes(k, "a slot"), "big"), int.from_bytes(_bytes(v, "a value"), "big"))
                        for k, v in f[5])
    return GenesisRecord(_bytes(f[1], "the address", 20), _bytes(f[2], "the public key"),
                         int.from_bytes(_bytes(f[3], "the balance"), "big"), code, storage)


def _accept(f: list[Any]) -> AcceptRecord:
    if len(f) != 2 or type(f[1]) is not bytes or len(f[1]) != 32:  # the hot path: checked inline
        _size(f, 2)
        _bytes(f[1], "the message id", 32)
    return AcceptRecord(f[1])


def _receipt(f: list[Any]) -> ReceiptRecord:
    if len(f) != 2 or type(f[1]) is not bytes or len(f[1]) != 32:
        _size(f, 2)
        _bytes(f[1], "the message id", 32)
    return ReceiptRecord(f[1])


def _discarded(f: list[Any]) -> ReceiptRecord:
    return ReceiptRecord(_receipt(f).message_id, discarded=True)


def _diff(f: list[Any]) -> DiffRecord:
    _size(f, 3)
    return DiffRecord(_bytes(f[1], "the executor"), _bytes(f[2], "the state diff"))


def _rollback(f: list[Any]) -> RollbackRecord:
    _size(f, 6)
    storage, discarded = f[4], f[5]
    if not isinstance(storage, list) or not all(isinstance(pair, list) and len(pair) == 2 for pair in storage):
        raise _Bad("the storage is not a list of (slot, value) pairs")
    if not isinstance(discarded, list):
        raise _Bad("the records given up are not a list")
    return RollbackRecord(_bytes(f[1], "the address", 20), _int(f[2], "the position"),
                          Account.decode(_bytes(f[3], "the account")),
                          tuple((_bytes(s, "a slot"), _bytes(v, "a value")) for s, v in storage),
                          tuple(_int(seq, "a record given up") for seq in discarded))


def _raise(f: list[Any]) -> RaiseRecord:
    _size(f, 5)
    return RaiseRecord(_bytes(f[1], "the message id", 32), bytes_int(f[2], "bid"), _bytes(f[3], "the public key"),
                       _bytes(f[4], "the signature"))


def _unraise(f: list[Any]) -> UnraiseRecord:
    _size(f, 3)
    return UnraiseRecord(_bytes(f[1], "the message id", 32), bytes_int(f[2], "bid"))


def _worker(f: list[Any]) -> WorkerRecord:
    if len(f) < 6:
        raise _Bad(f"{len(f) - 1} fields, not at least 5")
    if type(f[1]) is not str:
        raise _Bad("the operation is not text")
    return WorkerRecord(f[1], _bytes(f[2], "the address", 20), tuple(f[3:-2]), _bytes(f[-2], "the public key"),
                        _bytes(f[-1], "the signature"))


def _tickets(f: list[Any]) -> TicketsRecord:
    if len(f) < 6:
        raise _Bad(f"{len(f) - 1} fields, not at least 5")
    if type(f[1]) is not str:
        raise _Bad("the operation is not text")
    return TicketsRecord(f[1], _bytes(f[2], "the address", 20), _int(f[3], "the logical time"), tuple(f[4:-2]),
                         _bytes(f[-2], "the public key"), _bytes(f[-1], "the signature"))


def _job(f: list[Any]) -> JobRecord:
    if len(f) < 5:
        raise _Bad(f"{len(f) - 1} fields, not at least 4")
    if type(f[1]) is not str:
        raise _Bad("the operation is not text")
    return JobRecord(f[1], _bytes(f[2], "the signer", 20), tuple(f[3:-2]), _bytes(f[-2], "the public key"),
                     _bytes(f[-1], "the signature"))


def _unreadable(f: list[Any]) -> UnreadableRecord:
    _size(f, 2)
    return UnreadableRecord(str(f[1]))


_DECODERS: dict[str, Callable[[list[Any]], Record]] = {
    ACCEPT: _accept,
    RECEIPT: _receipt,
    "genesis": _genesis,
    "diff": _diff,
    "rollback": _rollback,
    "raise": _raise,
    "unraise": _unraise,
    "worker": _worker,
    "tickets": _tickets,
    "job": _job,
}
_WIRE_DECODERS: dict[str, Callable[[list[Any]], Record]] = {**_DECODERS, DISCARDED: _discarded,
                                                            UNREADABLE: _unreadable}


def from_fields(fields: object, *, wire: bool = False) -> Record:
    """The record whose unpacked fields are ``fields``; ``wire``: as a cluster node sends them
    (:func:`wire_fields`), which may also say ``discarded`` or ``unreadable``."""
    if type(fields) is not list or not fields or type(fields[0]) is not str:
        return UnreadableRecord("a ledger record is a list starting with its kind")
    kind = fields[0]
    decoder = (_WIRE_DECODERS if wire else _DECODERS).get(kind)
    if decoder is None:
        return UnknownRecord(kind, tuple(fields[1:]))
    try:
        return decoder(fields)
    except _Bad as bad:
        return UnreadableRecord(f"corrupt {kind} record: {bad}")
    except (RecordError, EnvelopeError) as err:
        return UnreadableRecord(f"corrupt {kind} record: {err}")


#: an accept or receipt record as :func:`decode_lean` gives it: (kind, message id)
MessageRef: TypeAlias = tuple[str, bytes]


def decode(raw: bytes | memoryview) -> Record:
    """The record stored as ``raw`` (a value of the ``ledger`` table)."""
    found = decode_lean(raw)
    if isinstance(found, tuple):
        return AcceptRecord(found[1]) if found[0] == ACCEPT else ReceiptRecord(found[1])
    return found


def decode_lean(raw: bytes | memoryview) -> MessageRef | Record:
    """:func:`decode` for replay's hot loop: the two kinds every message writes, accept and
    receipt, come back as a plain ``(kind, message id)``, every other kind as the record
    :func:`decode` gives.

    Those two are read without msgpack when they are in the form the store writes (their
    bytes are a fixed head and the 32-byte id); any other form takes the full path, which
    checks them the same way.  Building a record object and unpacking costs about 0.5 µs,
    twice per message: several percent of replaying an ERC20 transfer (docs/architecture.md).
    """
    if type(raw) is bytes:
        if len(raw) == _RECEIPT_SIZE and raw.startswith(_RECEIPT_HEAD):
            return RECEIPT, raw[_RECEIPT_SIZE - 32:]
        if len(raw) == _ACCEPT_SIZE and raw.startswith(_ACCEPT_HEAD):
            return ACCEPT, raw[_ACCEPT_SIZE - 32:]
    try:
        fields = msgpack.unpackb(raw)
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        return UnreadableRecord(f"not msgpack ({str(exc) or type(exc).__name__})")
    if (type(fields) is list and len(fields) == 2 and type(fields[1]) is bytes and len(fields[1]) == 32
            and (fields[0] == RECEIPT or fields[0] == ACCEPT)):
        return fields[0], fields[1]
    return from_fields(fields)


def _head(kind: str) -> bytes:
    """The stored bytes of a ``kind`` record naming a message, up to its id (as the store packs it)."""
    packed: bytes = msgpack.packb([kind, bytes(32)], use_bin_type=True)
    return packed[:-32]


_ACCEPT_HEAD, _RECEIPT_HEAD = _head(ACCEPT), _head(RECEIPT)
_ACCEPT_SIZE, _RECEIPT_SIZE = len(_ACCEPT_HEAD) + 32, len(_RECEIPT_HEAD) + 32


def wire_fields(record: Record) -> list[Any]:
    """What a cluster node sends a client for ``record`` (:func:`from_fields` with ``wire=True``
    reads it back): the stored layout, but ``discarded`` for a receipt record a rollback gave up."""
    if type(record) is ReceiptRecord and record.discarded:
        return [DISCARDED, record.message_id]
    return record.fields()


def _seq(key: bytes | memoryview) -> int:
    return int.from_bytes(key, "big")


def read(txn: lmdb.Transaction, ledger_db: Any, start: int = 0) -> Iterator[tuple[int, Record]]:
    """(seq, record) from sequence number ``start`` on, in ledger order, within ``txn``."""
    cursor = txn.cursor(db=ledger_db)
    if cursor.set_range(start.to_bytes(8, "big")):
        for key, value in cursor:
            yield _seq(key), decode(value)


def page(txn: lmdb.Transaction, ledger_db: Any, start: int = 0, limit: int | None = None,
         last: int | None = None) -> list[tuple[int, Record]]:
    """At most ``limit`` records from ``start`` on, or the ``last`` N of them (still at or after
    ``start``, and at most ``limit``), in ledger order."""
    wanted = limit if last is None else max(0, last) if limit is None else min(max(0, last), limit)
    out: list[tuple[int, Record]] = []
    if last is None:
        for seq, record in read(txn, ledger_db, start):
            if wanted is not None and len(out) >= wanted:
                break
            out.append((seq, record))
        return out
    cursor = txn.cursor(db=ledger_db)
    if wanted and cursor.last():
        for key, value in cursor.iterprev():
            seq = _seq(key)
            if seq < start or len(out) >= wanted:
                break
            out.append((seq, decode(value)))
    out.reverse()
    return out


def records(store: Store, start: int = 0) -> Iterator[tuple[int, Record]]:
    """(seq, record) of ``store``'s ledger from ``start`` on, in a read transaction of their own."""
    with store.read() as txn:
        yield from read(txn, store.db["ledger"], start)


__all__ = [
    "ACCEPT",
    "DISCARDED",
    "RECEIPT",
    "MESSAGE_RECORDS",
    "AcceptRecord",
    "DiffRecord",
    "GenesisRecord",
    "RaiseRecord",
    "ReceiptRecord",
    "MessageRef",
    "Record",
    "RollbackRecord",
    "UnknownRecord",
    "UnraiseRecord",
    "UnreadableRecord",
    "WorkerRecord",
    "decode",
    "decode_lean",
    "from_fields",
    "page",
    "read",
    "records",
    "wire_fields",
]
