"""Value types that cross the VM's boundary: what goes in, what comes out.

Everything here is a frozen attrs class so a result can be kept, compared and
hashed without fear that the VM (or a caller) changes it afterwards.  The VM's
hot loop never builds these per instruction; they are made once per run.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

ADDRESS_SIZE: Final = 20
UINT256_MASK: Final = (1 << 256) - 1

#: The reserved address of Missive's system contract (SPEC §3).  Its bytes spell
#: "missive"; it is outside the precompile range 0x01..0x0a and outside every
#: range Ethereum has reserved so far, so no EVM deployment can collide with it.
SYSTEM_CONTRACT: Final = bytes.fromhex("000000000000000000000000006d697373697665")


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


class MessageKind(enum.Enum):
    """Kinds of message a handler can emit (SPEC §1, §3)."""

    CALL = "call"
    QUERY = "query"
    DEPLOY = "deploy"
    SCHEDULED = "scheduled"


@attrs.frozen
class BlockContext:
    """The block-like context a handler may read.

    In Missive these values are recorded in the ledger with the message, so a
    replay sees exactly what the first run saw.
    """

    coinbase: bytes = bytes(20)
    timestamp: int = 0
    number: int = 0
    prevrandao: int = 0
    gas_limit: int = 30_000_000
    base_fee: int = 0
    chain_id: int = 1
    blob_base_fee: int = 1
    blob_hashes: tuple[bytes, ...] = ()
    gas_price: int = 0
    origin: bytes = bytes(20)
    #: Lamport time of the message being handled (the system contract's now()).
    logical_time: int = 0


@attrs.frozen
class Log:
    address: bytes
    topics: tuple[int, ...]
    data: bytes


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


@attrs.frozen
class ExecutionResult:
    """Everything a run produced.  On failure the effect fields are empty."""

    status: Status
    output: bytes
    gas_used: int
    gas_refund: int
    storage_writes: dict[int, int]
    logs: tuple[Log, ...]
    outbox: tuple[OutgoingMessage, ...]
    balance: int
    nonce: int
    error: str = ""
    #: Addresses whose code the run inspected (EXTCODE*, DELEGATECALL): the
    #: receipt records them so a replay reads the same code.
    code_reads: tuple[bytes, ...] = ()

    @property
    def success(self) -> bool:
        return self.status is Status.SUCCESS
