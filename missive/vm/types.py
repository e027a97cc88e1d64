"""Value types that cross the VM's boundary: what goes in, what comes out.

Everything here is immutable so a result can be kept, compared and hashed
without fear that the VM (or a caller) changes it afterwards.  Some are frozen
attrs classes; the three built for every run (:class:`BlockContext`,
:class:`ExecutionResult` and :class:`Log`) are plain classes with read-only
properties, which mypyc compiles into native classes that cost a few dozen
nanoseconds to build.
"""

from __future__ import annotations

import enum
from typing import Any, Final, TypeVar, final

import attrs

ADDRESS_SIZE: Final = 20
UINT256_MASK: Final = (1 << 256) - 1

#: The reserved address of Missive's system contract (SPEC §3).  Its bytes spell
#: "missive"; it is outside the precompiles (0x01..0x11, 0x100) and outside every
#: range Ethereum has reserved so far, so no EVM deployment can collide with it.
SYSTEM_CONTRACT: Final = bytes.fromhex("000000000000000000000000006d697373697665")


_Value = TypeVar("_Value", bound="ValueFields")


class ValueFields:
    """What an attrs frozen class gives, for the plain classes mypyc compiles natively.

    A subclass keeps its fields in read-only properties and lists them in
    :meth:`fields`; equality, hashing, ``repr`` and :meth:`replace` (the
    ``attrs.evolve`` of these classes) follow from that one list.
    """

    def fields(self) -> dict[str, object]:
        """The fields by name, in declaration order (what ``attrs.asdict`` would give)."""
        raise NotImplementedError

    def replace(self: _Value, **changes: Any) -> _Value:
        """A copy with some fields changed (``attrs.evolve`` for this class)."""
        current = self.fields()
        unknown = changes.keys() - current.keys()
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(unknown)}")
        made: _Value = type(self)(**{**current, **changes})
        return made

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, ValueFields)
        return self.fields() == other.fields()

    def __hash__(self) -> int:
        # As for an attrs frozen class: the hash of the fields, so a value is
        # hashable only if its fields are (a dict field makes it unhashable).
        return hash(tuple(self.fields().values()))

    def __repr__(self) -> str:
        return type(self).__name__ + "(" + ", ".join(f"{k}={v!r}" for k, v in self.fields().items()) + ")"


class Status(enum.Enum):
    """How a run ended.  Everything but SUCCESS discards the run's effects."""

    SUCCESS = "success"
    REVERT = "revert"
    OUT_OF_GAS = "out of gas"
    INVALID_OPCODE = "invalid opcode"
    STACK_UNDERFLOW = "stack underflow"
    STACK_OVERFLOW = "stack overflow"
    BAD_JUMP = "bad jump destination"
    STATIC_VIOLATION = "state change in a read-only (static) run"
    RETURNDATA_OUT_OF_BOUNDS = "return data out of bounds"
    FORBIDDEN_READ = "synchronous read of another actor's state"
    CALL_DEPTH = "call depth exceeded"
    UNSUPPORTED = "unsupported operation"

    @property
    def is_success(self) -> bool:
        return self is Status.SUCCESS

    @property
    def is_exceptional_halt(self) -> bool:
        """True for the halts that consume all gas (everything but SUCCESS and REVERT)."""
        return self is not Status.SUCCESS and self is not Status.REVERT


class MessageKind(enum.IntEnum):
    """SPEC §1 message kinds, the one enum of them: integers on the wire, names for people.

    A handler emits CALL, QUERY, DEPLOY and SCHEDULED (SPEC §3); the runtime makes REPLY and
    BOUNCE.  RAISE is an account's raise of the bid of one of its waiting messages on a cluster
    (``missive.market.raises``): it runs no code.  The ledger's envelopes use it too (:class:`missive.mailbox.envelope.Kind` is this
    class): the VM imports nothing of Missive, so the enum lives here."""

    DEPLOY = 1
    CALL = 2
    QUERY = 3
    REPLY = 4
    BOUNCE = 5
    SCHEDULED = 6
    RAISE = 7


@final
class BlockContext(ValueFields):
    """The block-like context a handler may read.

    In Missive these values are recorded in the ledger with the message, so a
    replay sees exactly what the first run saw.

    Immutable (read-only properties) and compared by value like the attrs
    classes here, but a plain class that mypyc compiles: the actor handler
    builds one per message (its time and origin change every time), and an
    attrs frozen instance of twelve fields cost a microsecond to build, a
    sixth of an ERC20 transfer's execution.  :meth:`replace` stands in for
    ``attrs.evolve``, :meth:`fields` for ``attrs.asdict``.
    """

    def __init__(
        self,
        coinbase: bytes = bytes(20),
        timestamp: int = 0,
        number: int = 0,
        prevrandao: int = 0,
        gas_limit: int = 30_000_000,
        base_fee: int = 0,
        chain_id: int = 1,
        blob_base_fee: int = 1,
        blob_hashes: tuple[bytes, ...] = (),
        gas_price: int = 0,
        origin: bytes = bytes(20),
        logical_time: int = 0,
    ) -> None:
        self._coinbase = coinbase
        self._timestamp = timestamp
        self._number = number
        self._prevrandao = prevrandao
        self._gas_limit = gas_limit
        self._base_fee = base_fee
        self._chain_id = chain_id
        self._blob_base_fee = blob_base_fee
        self._blob_hashes = blob_hashes
        self._gas_price = gas_price
        self._origin = origin
        self._logical_time = logical_time

    @property
    def coinbase(self) -> bytes:
        return self._coinbase

    @property
    def timestamp(self) -> int:
        return self._timestamp

    @property
    def number(self) -> int:
        return self._number

    @property
    def prevrandao(self) -> int:
        return self._prevrandao

    @property
    def gas_limit(self) -> int:
        return self._gas_limit

    @property
    def base_fee(self) -> int:
        return self._base_fee

    @property
    def chain_id(self) -> int:
        return self._chain_id

    @property
    def blob_base_fee(self) -> int:
        return self._blob_base_fee

    @property
    def blob_hashes(self) -> tuple[bytes, ...]:
        return self._blob_hashes

    @property
    def gas_price(self) -> int:
        return self._gas_price

    @property
    def origin(self) -> bytes:
        return self._origin

    @property
    def logical_time(self) -> int:
        """Lamport time of the message being handled (the system contract's now())."""
        return self._logical_time

    def fields(self) -> dict[str, object]:
        return {
            "coinbase": self._coinbase,
            "timestamp": self._timestamp,
            "number": self._number,
            "prevrandao": self._prevrandao,
            "gas_limit": self._gas_limit,
            "base_fee": self._base_fee,
            "chain_id": self._chain_id,
            "blob_base_fee": self._blob_base_fee,
            "blob_hashes": self._blob_hashes,
            "gas_price": self._gas_price,
            "origin": self._origin,
            "logical_time": self._logical_time,
        }



@final
class Log:
    """One LOG0..LOG4 record: the emitting address, its topics and its data.

    Like the attrs classes here it is immutable (its fields are read-only
    properties) and compares and hashes by value; it is a plain class compiled
    by mypyc rather than an attrs class because a run makes one per LOG, and an
    attrs frozen class's ``__init__`` (interpreted, one ``object.__setattr__``
    per field) costs more than the rest of the instruction.
    """

    def __init__(self, address: bytes, topics: tuple[int, ...], data: bytes) -> None:
        self._address = address
        self._topics = topics
        self._data = data

    @property
    def address(self) -> bytes:
        return self._address

    @property
    def topics(self) -> tuple[int, ...]:
        return self._topics

    @property
    def data(self) -> bytes:
        return self._data

    def _key(self) -> tuple[bytes, tuple[int, ...], bytes]:
        return (self._address, self._topics, self._data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Log):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Log(address={self._address!r}, topics={self._topics!r}, data={self._data!r})"


@attrs.frozen
class OutgoingMessage:
    """A message a handler emitted: CALL, STATICCALL, CREATE/CREATE2, schedule().

    ``gas`` is what the sender forwarded (paid out of its own run, as in the
    EVM, so a tree of messages can never use more gas than its root was given).
    ``deploy_address`` is set for deploy messages: the address CREATE/CREATE2
    computed and pushed at once.  ``delay`` is set for scheduled messages.
    """

    kind: MessageKind
    sender: bytes
    recipient: bytes
    value: int
    payload: bytes
    gas: int
    wants_reply: bool
    index: int
    message_id: bytes = b""
    deploy_address: bytes = b""
    salt: int | None = None
    delay: int = 0


@final
class ExecutionResult(ValueFields):
    """Everything a run produced.  On failure the effect fields are empty.

    Immutable (read-only properties) and compared by value, like the attrs
    classes here, but a plain class compiled by mypyc: ``execute`` makes one
    per call, and building an attrs frozen instance (interpreted ``__init__``,
    one ``object.__setattr__`` per field) cost over a microsecond, a tenth of
    a whole ERC20 transfer.  :meth:`replace` stands in for ``attrs.evolve``.
    """

    def __init__(
        self,
        status: Status,
        output: bytes,
        gas_used: int,
        gas_refund: int,
        storage_writes: dict[int, int],
        logs: tuple[Log, ...],
        outbox: tuple[OutgoingMessage, ...],
        balance: int,
        nonce: int,
        error: str = "",
        code_reads: tuple[bytes, ...] = (),
    ) -> None:
        self._status = status
        self._output = output
        self._gas_used = gas_used
        self._gas_refund = gas_refund
        self._storage_writes = storage_writes
        self._logs = logs
        self._outbox = outbox
        self._balance = balance
        self._nonce = nonce
        self._error = error
        self._code_reads = code_reads

    @property
    def status(self) -> Status:
        return self._status

    @property
    def output(self) -> bytes:
        return self._output

    @property
    def gas_used(self) -> int:
        return self._gas_used

    @property
    def gas_refund(self) -> int:
        return self._gas_refund

    @property
    def storage_writes(self) -> dict[int, int]:
        return self._storage_writes

    @property
    def logs(self) -> tuple[Log, ...]:
        return self._logs

    @property
    def outbox(self) -> tuple[OutgoingMessage, ...]:
        return self._outbox

    @property
    def balance(self) -> int:
        return self._balance

    @property
    def nonce(self) -> int:
        return self._nonce

    @property
    def error(self) -> str:
        return self._error

    @property
    def code_reads(self) -> tuple[bytes, ...]:
        """Addresses whose code the run inspected (EXTCODE*, DELEGATECALL).

        The receipt records them so a replay reads the same code.
        """
        return self._code_reads

    @property
    def success(self) -> bool:
        return self._status is Status.SUCCESS

    def fields(self) -> dict[str, object]:
        return {
            "status": self._status,
            "output": self._output,
            "gas_used": self._gas_used,
            "gas_refund": self._gas_refund,
            "storage_writes": self._storage_writes,
            "logs": self._logs,
            "outbox": self._outbox,
            "balance": self._balance,
            "nonce": self._nonce,
            "error": self._error,
            "code_reads": self._code_reads,
        }

