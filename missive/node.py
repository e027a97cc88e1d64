"""A node directory from Python, in the spirit of titanoboa: deploy, call, query, inspect.

::

    import missive.node as mn

    node = mn.Node.init("./.missive")                  # or mn.Node.open(path)
    alice = node.new_account("alice", balance=10**21)  # keystore key + genesis account (dev faucet)
    bob = node.new_account("bob")
    token = node.deploy("examples/Token.vy", "Tok", "TOK", 10**6, sender=alice)
    sent = token.transfer(bob.address, 10, sender=alice)   # a `call` message, durable, not yet handled
    sent.receipt()                                          # run the node until it is handled
    token.balanceOf(bob.address)                            # a `query`; runs until the reply arrives -> 10

Functions marked ``view``/``pure`` in the ABI are *queries*: calling one sends a
``query`` message that wants a reply, runs the node until the reply is in the
sender's mailbox, and returns the decoded answer (or raises :class:`Reverted`).
Every other function sends a ``call`` message and returns a :class:`Sent` as
soon as the message is durable; ``sent.receipt()`` waits for its handling and
``sent.reply()`` returns the decoded return value (raising on failure).

Everything that runs the node or waits has an ``a``-prefixed coroutine twin for
trio code (``await sent.areceipt()``, ``await token.balanceOf.acall(x)``,
``await node.arun_until_idle()``); the plain versions call ``trio.run`` on them,
so they cannot be used inside a trio run (the error says which twin to await).

Running: the node runs its actors in this process (:class:`~missive.actors.runtime.Runtime`)
while it holds the node's executor lock.  When another process holds it, a
waiting call polls the store until that process has handled the message.

Not thread-safe beyond what is stated: one :class:`Node` per node directory per
process (LMDB must not be opened twice by one process).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import attrs
import msgpack
import trio
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.abi import is_encodable
from eth_abi.exceptions import DecodingError, EncodingError
from eth_abi.grammar import ABIType, TupleType, normalize, parse

from missive.actors.runtime import ExecutorLock, NodeBusy, Runtime
from missive.errors import NotFound
from missive.keys import Key, Keystore, KeystoreError, ask_passphrase, unencrypted_by_default
from missive.mailbox.admission import checker
from missive.mailbox.disk import NoStore, StoreError
from missive.mailbox.envelope import MAX_GAS, Envelope, EnvelopeError, Kind
from missive.mailbox.records import Account, Receipt
from missive.mailbox.store import Store, check_whole
from missive.market.fees import default_bid
from missive.vm.keccak import keccak256
from missive.vm.messages import create_address

__all__ = [
    "ArgumentError",
    "Contract",
    "ContractFunction",
    "EnvelopeError",
    "KeystoreError",
    "LedgerRecord",
    "Node",
    "NodeError",
    "NodeTimeout",
    "NotHandled",
    "Reverted",
    "Sent",
    "StoreError",
    "Wallet",
]

T = TypeVar("T")

#: Gas a message carries unless told otherwise.
DEFAULT_GAS: Final = 1_000_000
DEFAULT_DEPLOY_GAS: Final = 10_000_000
#: How often a waiting call looks at the store while another process runs the actors.
POLL_INTERVAL: Final = 0.02
#: The file that makes a directory a cluster node's (``missive cluster up`` writes it).
CLUSTER_NODE_CONFIG: Final = "node.toml"
ABI_FILE: Final = "abis.msgpack"

ERROR_SELECTOR: Final = keccak256(b"Error(string)")[:4]
PANIC_SELECTOR: Final = keccak256(b"Panic(uint256)")[:4]
PANIC_CODES: Final = {
    0x01: "assertion failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division or modulo by zero",
    0x21: "invalid enum value",
    0x22: "bad storage byte array",
    0x31: "pop on an empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory",
    0x51: "call to an uninitialised function",
}


# -- errors -------------------------------------------------------------------------------


class NodeError(Exception):
    """The node cannot do what was asked; the text says why."""


class ArgumentError(NodeError, TypeError):
    """Arguments that do not fit the function's ABI (nothing was sent)."""


class UnknownMessage(NodeError, NotFound):
    """No message with that id (or prefix) here."""


class NotHandled(NodeError):
    """The node went idle and the awaited message was still not handled."""


class NodeTimeout(NodeError, TimeoutError):
    """A wait took longer than its ``timeout``."""


class AsyncHazard(NodeError):
    """A deploy refused: the code would change meaning silently under message semantics (``missive check``
    names each place); pass ``accept_async=`` with the finding's kind (or ``kind@offset``) to deploy anyway."""

    def __init__(self, message: str, findings: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.findings = tuple(findings)


class Reverted(NodeError):
    """A message's handler failed: revert (with its decoded reason when there is one) or halt."""

    def __init__(self, what: str, *, reason: str | None, data: bytes, status: str, error: str = "",
                 receipt: Receipt | None = None, message_id: bytes = b"") -> None:
        self.what = what
        self.reason = reason
        self.data = data
        self.status = status
        self.error = error
        self.receipt = receipt
        self.message_id = message_id
        if reason is not None:
            detail = reason
        elif status == "revert":
            detail = f"no reason given (revert data 0x{data.hex()})" if data else "no reason given"
        else:
            detail = error or status
        super().__init__(f"{what} {'reverted' if status == 'revert' else 'failed'}: {detail}")


def revert_reason(data: bytes, abi: Iterable[dict[str, Any]] = ()) -> str | None:
    """The reason in revert data: ``Error(string)`` text, a ``Panic(uint256)`` code explained, or a custom
    error of ``abi`` (``InsufficientBalance(from=0x.., balance=0, needed=5)``); None if none of them fits."""
    try:
        if data[:4] == ERROR_SELECTOR:
            return str(abi_decode(["string"], data[4:])[0])
        if data[:4] == PANIC_SELECTOR:
            code = int(abi_decode(["uint256"], data[4:])[0])
            return f"panic 0x{code:02x} ({PANIC_CODES.get(code, 'unknown panic code')})"
    except (DecodingError, UnicodeDecodeError, OverflowError):
        return None
    if len(data) < 4:
        return None
    for entry in abi:
        if entry.get("type") != "error":
            continue
        inputs = entry.get("inputs", [])
        types = [abi_type(i) for i in inputs]
        if keccak256(f"{entry.get('name', '')}({','.join(types)})".encode())[:4] != data[:4]:
            continue
        try:
            values = abi_decode(types, data[4:])
        except (DecodingError, OverflowError, ValueError):
            continue
        shown = ", ".join((f"{i.get('name')}=" if i.get("name") else "") + _show(v)
                          for i, v in zip(inputs, values, strict=True))
        return f"{entry.get('name', '')}({shown})"
    return None


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


# -- small helpers --------------------------------------------------------------------------


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def _sync(name: str, make: Callable[[], Awaitable[T]]) -> T:
    """Run the coroutine twin of ``name`` to completion with ``trio.run``."""
    if _in_trio():
        raise NodeError(f"{name}() runs its own trio loop; inside trio code use `await ...a{name}()` instead")
    return trio.run(make)


def to_address(value: object, what: str = "address") -> bytes:
    """A 20-byte address from bytes, ``0x`` hex text, or anything with an ``address`` attribute."""
    inner = getattr(value, "address", None)
    if isinstance(inner, bytes) and not isinstance(value, bytes):
        value = inner
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 20:
            raise ArgumentError(f"{what}: an address is 20 bytes, got {len(value)}")
        return bytes(value)
    if isinstance(value, str):
        body = value.strip()
        body = body[2:] if body[:2].lower() == "0x" else body
        if len(body) != 40:
            raise ArgumentError(f"{what}: {value!r} is not an address (need 40 hex digits, got {len(body)})")
        try:
            return bytes.fromhex(body)
        except ValueError:
            raise ArgumentError(f"{what}: {value!r} is not an address (not hex)") from None
    raise ArgumentError(f"{what}: expected an address (bytes, 0x-hex text, account or contract), got {type(value).__name__}")


def to_message_id(value: bytes | str) -> bytes:
    if isinstance(value, str):
        body = value.strip().removeprefix("0x").removeprefix("0X")
        try:
            value = bytes.fromhex(body)
        except ValueError:
            raise ArgumentError(f"{value!r} is not a message id (not hex)") from None
    if len(value) != 32:
        raise ArgumentError(f"a message id is 32 bytes, got {len(value)}")
    return value


def hexstr(data: bytes) -> str:
    return "0x" + data.hex()


# -- ABI ----------------------------------------------------------------------------------------


def abi_type(entry: dict[str, Any]) -> str:
    """The canonical type string of an ABI input/output entry (tuples spelled out)."""
    kind = str(entry.get("type", ""))
    if kind.startswith("tuple"):
        inner = ",".join(abi_type(c) for c in entry.get("components", []))
        return f"({inner}){kind[len('tuple'):]}"
    return kind


def type_str(t: ABIType) -> str:
    """The canonical text of a parsed ABI type."""
    return str(t.to_type_str())  # type: ignore[no-untyped-call]


def parse_type(text: str) -> ABIType:
    """Parse and check one ABI type (``uint`` -> ``uint256``); ArgumentError if it is not one."""
    try:
        parsed: ABIType = parse(normalize(text.strip()))  # type: ignore[no-untyped-call]
        parsed.validate()  # type: ignore[no-untyped-call]
    except Exception as exc:  # eth_abi raises parsimonious and ABITypeError variants
        raise ArgumentError(f"{text.strip()!r} is not an ABI type ({str(exc).splitlines()[0]})") from None
    return parsed


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets, parentheses and double quotes."""
    parts: list[str] = []
    depth, quoted, start = 0, False, 0
    for i, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def parse_signature(text: str) -> tuple[str, list[str], list[str] | None]:
    """``name(t1,t2)`` (optionally followed by ``(r1,r2)`` returns) -> (name, inputs, returns or None).

    A bare ``name`` gives ``(name, [], None)`` with inputs unknown; callers check
    ``"(" in text`` to tell it from a function without parameters.
    """
    text = text.strip()
    if "(" not in text:
        if not text.isidentifier():
            raise ArgumentError(f"{text!r} is not a function name or signature like 'transfer(address,uint256)'")
        return text, [], None
    name, rest = text.split("(", 1)
    name = name.strip()
    if not name.isidentifier():
        raise ArgumentError(f"{text!r}: {name!r} is not a function name")
    depth, end = 1, -1
    for i, char in enumerate(rest):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            end = i
            break
    if end < 0:
        raise ArgumentError(f"{text!r}: unbalanced parentheses")
    inner, tail = rest[:end], rest[end + 1:].strip()
    inputs = [type_str(parse_type(t)) for t in split_top_level(inner)] if inner.strip() else []
    returns: list[str] | None = None
    if tail:
        tail = tail.removeprefix("returns").strip()
        if not (tail.startswith("(") and tail.endswith(")")):
            raise ArgumentError(f"{text!r}: expected return types in parentheses after the parameters")
        body = tail[1:-1]
        returns = [type_str(parse_type(t)) for t in split_top_level(body)] if body.strip() else []
    return name, inputs, returns


def _prepare_value(t: ABIType, value: Any, where: str) -> Any:
    """Turn friendly Python values into what eth_abi encodes (addresses to bytes, hex to bytes)."""
    if t.is_array:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ArgumentError(f"{where}: expected a list for {type_str(t)}, got {type(value).__name__}")
        return [_prepare_value(t.item_type, v, where) for v in value]
    if isinstance(t, TupleType):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != len(t.components):
            raise ArgumentError(f"{where}: expected a tuple of {len(t.components)} values for {type_str(t)}")
        return tuple(_prepare_value(c, v, where) for c, v in zip(t.components, value, strict=True))
    base = getattr(t, "base", "")
    if base == "address":
        return to_address(value, where)
    if base == "bytes" and isinstance(value, str):
        body = value.strip()
        if body[:2].lower() != "0x":
            raise ArgumentError(f"{where}: {type_str(t)} wants bytes or 0x-hex text, got {value!r}")
        try:
            return bytes.fromhex(body[2:])
        except ValueError:
            raise ArgumentError(f"{where}: {value!r} is not hex") from None
    if base == "bool" and isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    return value


def encode_args(types: Sequence[str], args: Sequence[Any], what: str, names: Sequence[str] = ()) -> bytes:
    """ABI-encode ``args``; ArgumentError naming the argument that does not fit."""
    if len(args) != len(types):
        raise ArgumentError(f"{what}: expected {len(types)} argument{'s' if len(types) != 1 else ''}, got {len(args)}")
    prepared = []
    for i, (t, value) in enumerate(zip(types, args, strict=True)):
        label = names[i] if i < len(names) and names[i] else f"#{i + 1}"
        where = f"{what}: argument {label} ({t})"
        v = _prepare_value(parse_type(t), value, where)
        if not is_encodable(t, v):
            raise ArgumentError(f"{where} cannot be {value!r}")
        prepared.append(v)
    try:
        return bytes(abi_encode(list(types), prepared))
    except (EncodingError, TypeError, ValueError) as exc:  # pragma: no cover - is_encodable checked each
        raise ArgumentError(f"{what}: {exc}") from None


def decode_values(types: Sequence[str], data: bytes, what: str) -> Any:
    """Decode return data: None for no outputs, the value for one, a tuple for several."""
    if not types:
        return None
    try:
        values = abi_decode(list(types), data)
    except (DecodingError, OverflowError, ValueError) as exc:
        raise NodeError(f"{what}: cannot decode return data 0x{data.hex()} as ({','.join(types)}): {exc}") from None
    return values[0] if len(values) == 1 else tuple(values)


def decode_log(abi: Sequence[dict[str, Any]], topics: Sequence[int], data: bytes) -> tuple[str, dict[str, Any]] | None:
    """(event name, arguments) of a log, if ``abi`` has an event matching its first topic."""
    if not topics:
        return None
    for entry in abi:
        if entry.get("type") != "event" or entry.get("anonymous"):
            continue
        inputs = entry.get("inputs", [])
        types = [abi_type(i) for i in inputs]
        if int.from_bytes(keccak256(f"{entry.get('name')}({','.join(types)})".encode()), "big") != topics[0]:
            continue
        indexed = [(i, t) for i, t in zip(inputs, types, strict=True) if i.get("indexed")]
        plain = [(i, t) for i, t in zip(inputs, types, strict=True) if not i.get("indexed")]
        if len(indexed) != len(topics) - 1:
            continue
        out: dict[str, Any] = {}
        try:
            for (i, t), topic in zip(indexed, topics[1:], strict=True):
                word = topic.to_bytes(32, "big")
                dynamic = t in ("string", "bytes") or t.endswith("]") or t.startswith("(")
                out[i.get("name", "")] = word if dynamic else abi_decode([t], word)[0]
            values = abi_decode([t for _, t in plain], data) if plain else ()
        except (DecodingError, OverflowError, ValueError):
            return None
        for (i, _), v in zip(plain, values, strict=True):
            out[i.get("name", "")] = v
        return str(entry.get("name", "")), out
    return None


# -- accounts, messages, ledger records --------------------------------------------------------------


class Wallet:
    """An external account whose key is in the node's keystore: it signs what it sends."""

    def __init__(self, node: Node, key: Key) -> None:
        self.node = node
        self.key = key
        self.name = key.name
        self.address = key.address

    @property
    def hex(self) -> str:
        return hexstr(self.address)

    @property
    def balance(self) -> int:
        return self.node.balance(self.address)

    @property
    def nonce(self) -> int:
        account = self.node.account(self.address)
        return account.nonce if account is not None else 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Wallet) and other.address == self.address

    def __hash__(self) -> int:
        return hash(self.address)

    def __repr__(self) -> str:
        return f"<Wallet {self.name or '(unnamed)'} {self.hex}>"


@attrs.frozen
class LedgerRecord:
    """One ledger entry: a genesis account, an accepted message, or a receipt."""

    seq: int
    type: str
    #: genesis: the account; accept/receipt: the message's recipient
    address: bytes = b""
    message_id: bytes = b""
    balance: int = 0
    envelope: Envelope | None = None
    receipt: Receipt | None = None
    #: in a cluster, the node whose ledger holds the record (each node keeps its own)
    node: str = ""
    #: diff/rollback records (a cluster's): what they did, in words (they carry no message)
    detail: str = ""


def special_record(seq: int, record: list[Any], node: str = "") -> LedgerRecord | None:
    """A ``diff`` or ``rollback`` ledger record as a :class:`LedgerRecord` with its :attr:`~LedgerRecord.detail`
    (None for the other kinds, which name a message)."""
    kind = str(record[0])
    if kind == "diff":
        from missive.mailbox.diffs import DiffError, StateDiff

        executor = bytes(record[1])
        try:
            diff = StateDiff.decode(bytes(record[2]))
        except DiffError as exc:
            return LedgerRecord(seq, kind, detail=f"state diff from executor 0x{executor.hex()[:16]}.. ({exc})", node=node)
        version = f" version {diff.version}" if diff.version else ""
        epoch = f" (epoch {diff.epoch})" if diff.epoch else ""
        return LedgerRecord(seq, kind, address=diff.address, node=node,
                            detail=f"state diff of 0x{diff.address.hex()}{version}{epoch} from executor "
                                   f"0x{executor.hex()[:16]}..: {len(diff.receipts)} receipt(s), "
                                   f"{len(diff.messages)} message(s), {len(diff.storage)} slot(s) written")
    if kind == "worker":  # the worker registry (missive.market.workers)
        op, address = str(record[1]), bytes(record[2])
        what = (f"stake {int.from_bytes(record[3], 'big')}, coinbase 0x{bytes(record[4]).hex()}, minimum bid "
                f"{int.from_bytes(record[5], 'big')}" if op == "register" else f"at logical time {record[3]}")
        return LedgerRecord(seq, kind, address=address, node=node, detail=f"worker {op} of 0x{address.hex()}: {what}")
    if kind == "rollback":
        address, position, discarded = bytes(record[1]), int(record[2]), record[5]
        return LedgerRecord(seq, kind, address=address, node=node,
                            detail=f"rollback of 0x{address.hex()} to mailbox position {position}: gives up "
                                   f"{len(discarded)} record(s) another holder's copy replaced")
    return None


class Sent:
    """A message the node has accepted (durable); wait for its handling with ``receipt()``/``reply()``."""

    def __init__(self, node: Node, envelope: Envelope, *, duplicate: bool = False,
                 function: ContractFunction | None = None) -> None:
        self.node = node
        self.envelope = envelope
        self.id = envelope.id
        self.kind = envelope.kind
        self.duplicate = duplicate
        self.function = function

    @property
    def hex(self) -> str:
        return hexstr(self.id)

    @property
    def what(self) -> str:
        if self.function is not None:
            return self.function.signature
        return f"{self.kind.name.lower()} 0x{self.id.hex()[:16]}"

    def __repr__(self) -> str:
        return f"<Sent {self.kind.name.lower()} {self.hex} to {hexstr(self.envelope.recipient)}>"

    # -- receipt ---------------------------------------------------------------------------

    def receipt(self, timeout: float | None = None) -> Receipt:
        """Run the node (or wait for the process running it) until this message is handled."""
        found = self.node._receipt_of(self.envelope)
        return found if found is not None else _sync("receipt", lambda: self.areceipt(timeout))

    async def areceipt(self, timeout: float | None = None) -> Receipt:
        return await self.node._await_receipt(self.envelope, f"{self.what} (message {self.hex}) is not handled yet",
                                              timeout)

    def follow(self, timeout: float | None = None) -> Chain:
        """Wait until the messages this one caused are handled too (see :meth:`Node.afollow`)."""
        return self.node.follow(self.id, timeout)

    async def afollow(self, timeout: float | None = None) -> Chain:
        return await self.node.afollow(self.id, timeout)

    # -- reply -----------------------------------------------------------------------------

    def reply(self, timeout: float | None = None) -> Any:
        """The decoded answer: a query's reply, or a call's return value; raise Reverted on failure."""
        return _sync("reply", lambda: self.areply(timeout))

    async def areply(self, timeout: float | None = None) -> Any:
        if self.envelope.wants_reply:
            reply, receipt = await self.node._await_reply(self.envelope, f"{self.what} (message {self.hex})", timeout)
            if not reply.success:
                raise Reverted(self.what, reason=self.node.explain(reply.payload, reply.sender), data=reply.payload,
                               status=receipt.status, error=receipt.error, receipt=receipt, message_id=self.id)
            data = reply.payload
        else:
            receipt = await self.areceipt(timeout)
            if not receipt.success:
                raise Reverted(self.what, reason=self.node.explain(receipt.output, receipt.recipient),
                               data=receipt.output,
                               status=receipt.status, error=receipt.error, receipt=receipt, message_id=self.id)
            data = receipt.output
            if self.kind is Kind.DEPLOY:
                return self.envelope.recipient
        if self.function is None:
            return data
        return self.function.decode_output(data)


@attrs.define
class Trace:
    """One message of a tree (``Node.trace``): its envelope, its receipt (None while it waits), what it sent."""

    id: bytes
    envelope: Envelope
    receipt: Receipt | None
    children: list[Trace] = attrs.field(factory=list)

    def walk(self) -> Iterator[Trace]:
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def failed(self) -> list[Trace]:
        """The messages of the tree whose handler failed."""
        return [t for t in self.walk() if t.receipt is not None and not t.receipt.success]


class Chain:
    """The messages that one message caused, followed as they are handled.

    On one node the actors run only while a command (or ``missive serve``) runs
    them, so a command that returned once its own message was handled would leave
    the query, the reply and the scheduled tick that message caused waiting for
    the next command.  A chain is what such a command waits for instead.  It is
    followed incrementally: each look visits only the messages not yet seen
    handled, so following a long chain costs one receipt lookup per message.
    """

    def __init__(self, receipt_of: Callable[[bytes], Receipt | None], root: bytes) -> None:
        self._receipt_of = receipt_of
        self.root = root
        self._open: list[bytes] = [root]
        #: messages of the chain (the root excluded) handled so far
        self.handled = 0
        #: those whose handler failed: (message id, receipt)
        self.failed: list[tuple[bytes, Receipt]] = []

    @property
    def unfinished(self) -> tuple[bytes, ...]:
        """Ids of the chain's messages not handled yet (as of the last look)."""
        return tuple(self._open)

    @property
    def ok(self) -> bool:
        """Every message of the chain handled so far succeeded (see :attr:`failed`, :attr:`unfinished`)."""
        return not self.failed

    def __repr__(self) -> str:
        return (f"<Chain of 0x{self.root.hex()[:16]}: {self.handled} handled, {len(self.failed)} failed, "
                f"{len(self._open)} unfinished>")

    def done(self) -> bool:
        """Look again; True once every message of the chain is handled."""
        waiting: list[bytes] = []
        stack = self._open
        while stack:
            message_id = stack.pop()
            receipt = self._receipt_of(message_id)
            if receipt is None:
                waiting.append(message_id)
                continue
            if message_id != self.root:
                self.handled += 1
                if not receipt.success:
                    self.failed.append((message_id, receipt))
            stack.extend(receipt.outgoing)
        self._open = waiting
        return not waiting


# -- contracts --------------------------------------------------------------------------------------


class ContractFunction:
    """One ABI function of a deployed contract; call it to send a call (or a query, for view/pure)."""

    def __init__(self, contract: Contract, entry: dict[str, Any]) -> None:
        self.contract = contract
        self.entry = entry
        self.name = str(entry.get("name", ""))
        self.inputs = [abi_type(i) for i in entry.get("inputs", [])]
        self.input_names = [str(i.get("name", "")) for i in entry.get("inputs", [])]
        self.outputs = [abi_type(o) for o in entry.get("outputs", [])]
        self.mutability = str(entry.get("stateMutability") or ("view" if entry.get("constant") else
                                                             "payable" if entry.get("payable") else "nonpayable"))
        self.signature = f"{self.name}({','.join(self.inputs)})"
        self.selector = keccak256(self.signature.encode())[:4]

    @property
    def is_view(self) -> bool:
        return self.mutability in ("view", "pure")

    @property
    def is_payable(self) -> bool:
        return self.mutability == "payable"

    def __repr__(self) -> str:
        outs = f" -> ({','.join(self.outputs)})" if self.outputs else ""
        return f"<function {self.signature}{outs} [{self.mutability}] of {self.contract!r}>"

    def encode(self, *args: Any) -> bytes:
        """Calldata for ``args``; ArgumentError when they do not fit the ABI."""
        return self.selector + encode_args(self.inputs, args, self.signature, self.input_names)

    def decode_output(self, data: bytes) -> Any:
        return decode_values(self.outputs, data, self.signature)

    def _check_value(self, value: int) -> None:
        if value and not self.is_payable:
            raise ArgumentError(f"{self.signature} is {self.mutability}: it cannot receive value")

    # -- sending -------------------------------------------------------------------------------

    def send(self, *args: Any, sender: object = None, value: int = 0, gas: int | None = None,
             wants_reply: bool = False, bid: int | None = None) -> Sent:
        """Send a ``call`` message (even for a view function); return once it is durable.
        ``bid``: fee per gas (None: the node's ``default_bid``)."""
        self._check_value(value)
        data = self.encode(*args)
        envelope, duplicate = self.contract._node._submit(Kind.CALL, self.contract._address, data, sender=sender,
                                                           value=value, gas=gas, wants_reply=wants_reply, bid=bid)
        return Sent(self.contract._node, envelope, duplicate=duplicate, function=self)

    async def asend(self, *args: Any, sender: object = None, value: int = 0, gas: int | None = None,
                    wants_reply: bool = False, bid: int | None = None) -> Sent:
        self._check_value(value)
        self.encode(*args)  # bad arguments fail here, not in the worker thread
        return await trio.to_thread.run_sync(
            functools.partial(self.send, *args, sender=sender, value=value, gas=gas, wants_reply=wants_reply, bid=bid)
        )

    def query(self, *args: Any, sender: object = None, gas: int | None = None, bid: int | None = None) -> Sent:
        """Send a ``query`` message (read-only run, reply wanted); return once it is durable."""
        data = self.encode(*args)
        envelope, duplicate = self.contract._node._submit(Kind.QUERY, self.contract._address, data, sender=sender,
                                                           value=0, gas=gas, wants_reply=True, bid=bid)
        return Sent(self.contract._node, envelope, duplicate=duplicate, function=self)

    async def aquery(self, *args: Any, sender: object = None, gas: int | None = None, bid: int | None = None) -> Sent:
        self.encode(*args)
        return await trio.to_thread.run_sync(functools.partial(self.query, *args, sender=sender, gas=gas, bid=bid))

    def __call__(self, *args: Any, sender: object = None, value: int = 0, gas: int | None = None,
                 timeout: float | None = None, bid: int | None = None) -> Any:
        """view/pure: query and return the decoded answer.  Otherwise: send a call and return its Sent."""
        if self.is_view:
            if value:
                raise ArgumentError(f"{self.signature} is {self.mutability}: a query cannot carry value")
            if _in_trio():  # say so before anything is sent
                raise NodeError(f"calling {self.signature} waits for its reply; inside trio code use `await ....acall()`")
            sent = self.query(*args, sender=sender, gas=gas, bid=bid)
            return sent.reply(timeout)
        return self.send(*args, sender=sender, value=value, gas=gas, bid=bid)

    async def acall(self, *args: Any, sender: object = None, value: int = 0, gas: int | None = None,
                    timeout: float | None = None) -> Any:
        """The coroutine twin of calling the function."""
        if self.is_view:
            if value:
                raise ArgumentError(f"{self.signature} is {self.mutability}: a query cannot carry value")
            sent = await self.aquery(*args, sender=sender, gas=gas)
            return await sent.areply(timeout)
        return await self.asend(*args, sender=sender, value=value, gas=gas)


class OverloadedFunction:
    """Several ABI functions with one name and different parameter counts: chosen by argument count."""

    def __init__(self, functions: list[ContractFunction]) -> None:
        self.functions = {len(f.inputs): f for f in functions}
        self.name = functions[0].name

    def pick(self, args: Sequence[Any]) -> ContractFunction:
        found = self.functions.get(len(args))
        if found is None:
            options = ", ".join(f.signature for f in self.functions.values())
            raise ArgumentError(f"{self.name}: no overload takes {len(args)} argument(s); there are {options}")
        return found

    def __repr__(self) -> str:
        return f"<overloaded function {' | '.join(f.signature for f in self.functions.values())}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.pick(args)(*args, **kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        return await self.pick(args).acall(*args, **kwargs)

    def send(self, *args: Any, **kwargs: Any) -> Sent:
        return self.pick(args).send(*args, **kwargs)

    async def asend(self, *args: Any, **kwargs: Any) -> Sent:
        return await self.pick(args).asend(*args, **kwargs)

    def query(self, *args: Any, **kwargs: Any) -> Sent:
        return self.pick(args).query(*args, **kwargs)

    async def aquery(self, *args: Any, **kwargs: Any) -> Sent:
        return await self.pick(args).aquery(*args, **kwargs)


class Contract:
    """A deployed contract and its ABI.  ABI functions are attributes (they win over ``address``/``abi``).

    Metadata: ``address`` (bytes), ``abi``, ``deployment`` (the deploy's :class:`Sent`, if this
    process deployed it).  ``contract.function("transfer(address,uint256)")`` picks a function by
    signature (for overloads that share a parameter count).
    """

    def __init__(self, node: Node, address: bytes, abi: list[dict[str, Any]], name: str = "contract",
                 deployment: Sent | None = None) -> None:
        self._node = node
        self._address = address
        self._label = name
        self._abi = abi
        self.address = address
        self.abi = abi
        self.deployment = deployment
        self._by_signature: dict[str, ContractFunction] = {}
        by_name: dict[str, list[ContractFunction]] = {}
        for entry in abi:
            if entry.get("type", "function") == "function" and entry.get("name"):
                function = ContractFunction(self, entry)
                self._by_signature[function.signature] = function
                by_name.setdefault(function.name, []).append(function)
        self._ambiguous: dict[str, list[str]] = {}
        for fname, functions in by_name.items():
            if len(functions) == 1:
                setattr(self, fname, functions[0])
            elif len({len(f.inputs) for f in functions}) == len(functions):
                setattr(self, fname, OverloadedFunction(functions))
            else:
                self._ambiguous[fname] = [f.signature for f in functions]

    @property
    def hex(self) -> str:
        return hexstr(self._address)

    def __repr__(self) -> str:
        return f"<{self._label} at {hexstr(self._address)}>"

    def function_names(self) -> list[str]:
        return sorted({f.name for f in self._by_signature.values()})

    def functions(self) -> list[ContractFunction]:
        """Every ABI function, overloads included."""
        return list(self._by_signature.values())

    def function(self, signature: str) -> ContractFunction:
        """The function with this exact signature, e.g. ``"transfer(address,uint256)"``."""
        name, inputs, _ = parse_signature(signature)
        found = self._by_signature.get(f"{name}({','.join(inputs)})")
        if found is None:
            raise AttributeError(f"{self._label} has no function {signature!r}; it has {', '.join(sorted(self._by_signature)) or 'none'}")
        return found

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        ambiguous = self.__dict__.get("_ambiguous", {}).get(name)
        if ambiguous:
            raise AttributeError(
                f"{name} is overloaded in {self.__dict__.get('_label')} ({', '.join(ambiguous)}); "
                f"pick one with .function('{ambiguous[0]}')"
            )
        names = sorted({f.name for f in self.__dict__.get("_by_signature", {}).values()})
        raise AttributeError(
            f"{self.__dict__.get('_label', 'contract')} has no function {name!r}; functions: {', '.join(names) or '(none: no ABI)'}"
        )

    @property
    def balance(self) -> int:
        return self._node.balance(self._address)

    def storage(self) -> dict[int, int]:
        return self._node.storage(self._address)

    def events(self, receipt: Receipt) -> list[tuple[str, dict[str, Any]]]:
        """The receipt's logs this contract emitted that its ABI names, decoded."""
        out = []
        for address, topics, data in receipt.logs:
            if address == self._address:
                decoded = decode_log(self._abi, topics, data)
                if decoded is not None:
                    out.append(decoded)
        return out


# -- the node -----------------------------------------------------------------------------------------


class Node:
    """A node directory: its ledger store, its keystore, and the actors it runs in-process."""

    def __init__(self, path: Path, store: Store, keystore: Keystore) -> None:
        self.path = path
        self.store = store
        self.keystore = keystore
        self._check = checker(store)
        self._runtime = Runtime(store)
        self._running = False
        #: whether another process (``missive serve``) ran the actors when we last tried to
        self._served_elsewhere = False
        #: set when ``path`` is a cluster node's directory: only its node process may write there
        self.cluster_node = (path / CLUSTER_NODE_CONFIG).exists()
        self._submit_lock = threading.Lock()
        self._default: Wallet | None = None
        self._reply_ids: dict[bytes, bytes] = {}
        #: the fee per gas of messages sent without ``bid=`` (docs/market.md); $MISSIVE_BID, else 0
        self.default_bid = default_bid()

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def init(cls, path: str | os.PathLike[str], *, default_balance: int | None = None,
             encrypt_keys: bool | None = None) -> Node:
        """Create a node directory (error if one is there); with ``default_balance``, a funded "default" account.

        ``encrypt_keys``: whether the keystore encrypts seeds (None: unless ``$MISSIVE_UNENCRYPTED_KEYS``
        is set; see :mod:`missive.keys`)."""
        target = Path(path)
        check_whole(target)  # a damaged or lost ledger is named as such, never started over
        if (target / "data.mdb").exists():
            raise NodeError(f"a Missive node already exists at {target}")
        if target.exists() and not target.is_dir():
            raise NodeError(f"{target} exists and is not a directory")
        if (target / "keystore").exists():
            raise NodeError(f"{target} already holds a keystore; a node is made in a new directory")
        encrypted = not unencrypted_by_default() if encrypt_keys is None else encrypt_keys
        # the passphrase first: nothing is made until the whole node can be
        passphrase = ask_passphrase(target / "keystore", new=True) if encrypted else None
        existed = target.exists()
        store: Store | None = None
        try:
            try:
                store = Store(target, create=True)
            except OSError as exc:
                raise NodeError(f"cannot create a node at {target}: {exc.strerror or exc}") from None
            keystore = Keystore(target, create=True, encrypted=encrypted, passphrase=passphrase)
            node = cls(target, store, keystore)
            if default_balance is not None:
                default = node.new_account("default", balance=default_balance)
                store.set_coinbase(default.address)  # the node is its own worker: its fees go there
        except BaseException:  # (Ctrl-C too) no half-made node is left behind
            if store is not None:
                store.close()
            if not existed:
                shutil.rmtree(target, ignore_errors=True)
            else:  # an empty directory it was given (checked above: no store, no keystore in it)
                shutil.rmtree(target / "keystore", ignore_errors=True)
                for made in ("data.mdb", "lock.mdb", "ledger.key", "missive-ledger"):
                    (target / made).unlink(missing_ok=True)
            raise
        return node

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Node:
        """Open an existing node directory (StoreError naming the path if there is none)."""
        target = Path(path)
        check_whole(target)  # both files checked, and both there, before either is opened
        if not (target / "data.mdb").exists():
            raise NoStore(f"no Missive node at {target} (run `missive init` first)")
        Keystore.check(target)
        if (target / CLUSTER_NODE_CONFIG).exists() and not (target / "keystore" / "data.mdb").exists():
            root = target.parent
            raise NodeError(f"{target} is a node of the cluster at {root}: only its node process opens its store; "
                            f"use the cluster (`--cluster {root}`, `--node {target.name}` for this node's ledger)")
        if not (target / "keystore" / "data.mdb").exists():
            raise KeystoreError(f"no keystore at {target / 'keystore'} (a node directory made by `missive init` has "
                                "one; a cluster member's has none: use --cluster DIR)")
        store = Store(target)
        try:
            keystore = Keystore(target)
        except BaseException:
            store.close()
            raise
        return cls(target, store, keystore)

    def close(self) -> None:
        self.store.close()
        self.keystore.close()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Node {self.path}>"

    @property
    def chain_id(self) -> int:
        """The ledger's id: what CHAINID gives its contracts, and what its external messages are
        signed for (a message signed for another ledger is refused).  Chosen at init, never 1."""
        return self.store.chain_id

    def _writable(self, what: str) -> None:
        """Refuse to write into a cluster node's directory: its node process alone writes its
        ledger and runs its actors (a genesis record or a handled message written beside
        it would be a fork no peer knows of).  Reading it is fine."""
        if self.cluster_node:
            root = self.path.parent
            raise NodeError(f"{self.path} is a node of the cluster at {root}: only its node process writes there; "
                            f"{what} through the cluster instead (`--cluster {root}`)")

    # -- accounts ----------------------------------------------------------------------------

    def new_account(self, name: str = "", balance: int = 0) -> Wallet:
        """A new keystore key and its genesis account holding ``balance`` (the dev faucet)."""
        if not isinstance(balance, int) or isinstance(balance, bool) or balance < 0 or balance >> 256:
            raise ArgumentError(f"balance must be an integer in [0, 2**256), got {balance!r}")
        body = name.strip().removeprefix("0x").removeprefix("0X")
        if name.strip()[:2].lower() == "0x" or (len(body) == 40 and all(c in "0123456789abcdefABCDEF" for c in body)):
            raise ArgumentError(f"account name {name!r} looks like an address; pick another")
        self._writable("create accounts")
        key = self.keystore.new(name)
        self.store.create_account(key.address, key.public_key, balance)
        return Wallet(self, key)

    def wallet(self, name_or_address: object) -> Wallet:
        """The keystore account with this name or address (KeystoreError if unknown)."""
        if isinstance(name_or_address, Wallet):
            return name_or_address
        if isinstance(name_or_address, str):
            return Wallet(self, self.keystore.get(name_or_address))
        return Wallet(self, self.keystore.get(to_address(name_or_address, "sender").hex()))

    def wallets(self) -> list[Wallet]:
        """Keystore accounts, in the order they were created on this node's ledger (then the rest)."""
        keys = {k.address: k for k in self.keystore.all()}
        ordered: list[Wallet] = []
        for _, record in self.store.ledger():
            if record[0] == "genesis" and record[1] in keys:
                ordered.append(Wallet(self, keys.pop(record[1])))
        ordered.extend(Wallet(self, k) for k in keys.values())
        return ordered

    @property
    def default(self) -> Wallet:
        """The sender when none is given: the key named "default", else the first account created."""
        if self._default is None:
            key = self.keystore.find("default")
            if key is not None and key.name == "default":
                self._default = Wallet(self, key)
            else:
                for wallet in self.wallets():
                    if self.account(wallet.address) is not None:
                        self._default = wallet
                        break
            if self._default is None:
                raise NodeError("no accounts on this node yet: create one with node.new_account(name, balance=...)")
        return self._default

    @default.setter
    def default(self, value: object) -> None:
        self._default = self.wallet(value)

    def account(self, address: object) -> Account | None:
        return self.store.account(to_address(address))

    def accounts(self) -> dict[bytes, Account]:
        return dict(self.store.accounts())

    def balance(self, address: object) -> int:
        account = self.account(address)
        return account.balance if account is not None else 0

    # -- ABIs ----------------------------------------------------------------------------------

    def abis(self) -> dict[bytes, tuple[str, list[dict[str, Any]]]]:
        """Registered ABIs: address -> (contract name, ABI), from ``<dir>/abis.msgpack``."""
        path = self.path / ABI_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            data = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        except Exception as exc:
            raise NodeError(f"{path}: corrupt ABI registry ({exc})") from None
        return {bytes(k): (str(v[0]), list(v[1])) for k, v in data.items()}

    def register_abi(self, address: object, abi: list[dict[str, Any]], name: str = "contract") -> None:
        """Remember ``address``'s ABI so ``at(address)`` and the CLI can use it."""
        key = to_address(address)
        with open(self.path / (ABI_FILE + ".lock"), "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            table = {k: [n, a] for k, (n, a) in self.abis().items()}
            table[key] = [name, abi]
            tmp = self.path / (ABI_FILE + f".{os.getpid()}.tmp")
            tmp.write_bytes(cast(bytes, msgpack.packb(table, use_bin_type=True)))
            os.replace(tmp, self.path / ABI_FILE)

    def at(self, address: object, abi: list[dict[str, Any]] | None = None, name: str | None = None) -> Contract:
        """A handle on a deployed contract; the ABI defaults to the one registered at deploy."""
        target = to_address(address)
        account = self.account(target)
        if account is None or not account.is_contract:
            raise NodeError(f"no contract at {hexstr(target)}")
        if abi is None:
            registered = self.abis().get(target)
            if registered is None:
                raise NodeError(f"no ABI known for {hexstr(target)}: pass abi=...")
            name, abi = name or registered[0], registered[1]
        return Contract(self, target, abi, name or "contract")

    # -- sending -------------------------------------------------------------------------------

    def _key(self, sender: object) -> Key:
        return (self.default if sender is None else self.wallet(sender)).key

    def _check_bid(self, bid: int | None) -> int:
        """The fee per gas a message offers: ``bid``, or the node's default."""
        bid = self.default_bid if bid is None else bid
        if not isinstance(bid, int) or isinstance(bid, bool) or bid < 0 or bid >> 256:
            raise ArgumentError(f"bid (fee per gas) must be an integer in [0, 2**256), got {bid!r}")
        return bid

    def _check_message(self, kind: Kind, value: int, gas: int | None) -> int:
        """Validate what the caller chose for a message; return its gas."""
        if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value >> 256:
            raise ArgumentError(f"value must be an integer in [0, 2**256), got {value!r}")
        gas = (DEFAULT_DEPLOY_GAS if kind is Kind.DEPLOY else DEFAULT_GAS) if gas is None else gas
        if not isinstance(gas, int) or isinstance(gas, bool) or not 0 < gas <= MAX_GAS:
            raise ArgumentError(f"gas must be an integer in [1, {MAX_GAS}], got {gas!r}")
        return gas

    def _submit(self, kind: Kind, to: bytes | None, payload: bytes, *, sender: object, value: int,
                gas: int | None, wants_reply: bool, bid: int | None = None) -> tuple[Envelope, bool]:
        """Sign and accept one external message; (envelope, duplicate) once it is durable."""
        key = self._key(sender)
        self._writable("send messages")
        gas = self._check_message(kind, value, gas)
        fee = self._check_bid(bid)
        with self._submit_lock:
            for attempt in range(8):
                account = self.store.account(key.address)
                nonce = account.nonce if account is not None else 0
                recipient = create_address(key.address, nonce) if kind is Kind.DEPLOY else to
                assert recipient is not None
                envelope = Envelope(kind, key.address, recipient, value=value, payload=payload, gas=gas, bid=fee,
                                    nonce=nonce, time=self.store.clock(), wants_reply=wants_reply,
                                    chain_id=self.store.chain_id)
                envelope.validate()
                (result,) = self.store.accept([key.sign(envelope)], self._check)
                if isinstance(result, EnvelopeError):
                    if str(result).startswith("nonce ") and attempt < 7:
                        continue  # another process sent from this account meanwhile: take the next nonce
                    raise result
                return envelope, result.duplicate
        raise AssertionError("unreachable")  # pragma: no cover

    def raise_bid(self, message_id: bytes | str, new_bid: int, *, sender: object = None) -> int:
        """Raise the bid (fee per gas) of a message still waiting to ``new_bid``, signed by ``sender``
        (None: the message's sender if this keystore holds it, else the default account); the
        escrow is topped up from its balance.  Returns the top-up (gas × the raise).  Refused with
        one line (EnvelopeError), nothing changed: a bid not above the current one, a signer other
        than the sender, a message handled or unknown, a balance short of the top-up
        (:mod:`missive.market.raises`; docs/market.md)."""
        from missive.market.raises import sign_raise

        self._writable("raise bids")
        target = self.resolve_id(message_id) if isinstance(message_id, str) else to_message_id(message_id)
        if sender is None:
            found = self.store.message(target)
            if found is not None and self.keystore.find(found[0].sender.hex()) is not None:
                sender = found[0].sender
        key = self._key(sender)
        signature = sign_raise(key.signing_key, self.store.chain_id, target, new_bid)
        return self.store.raise_bid(target, new_bid, key.public_key, signature)

    def worker_op(self, op: str, *, sender: object = None, stake: int = 0, coinbase: object = None,
                  min_bid: int = 0) -> Any:
        """A signed operation on the worker registry (:mod:`missive.market.workers`) by ``sender``'s
        account (None: the default): ``register`` (locks ``stake``; fees to ``coinbase``, default the
        account; refuses bids below ``min_bid`` here), ``unbond``, ``withdraw`` (after the delay).
        Returns the worker's registry entry; refused with one line (EnvelopeError), nothing changed."""
        from missive.market.workers import args_of, digest

        self._writable("change the worker registry")
        key = self._key(sender)
        args = args_of(op, stake, key.address if coinbase is None else to_address(coinbase, "coinbase"), min_bid,
                       self.store.clock())
        signature = bytes(key.signing_key.sign(digest(self.store.chain_id, op, key.address, args)).signature)
        return self.store.worker_op(op, key.address, args, key.public_key, signature)

    def send_many(self, calls: Sequence[tuple[object, object, bytes]], *, value: int = 0,
                  gas: int | None = None, bid: int | None = None) -> list[Sent]:
        """Send many ``call`` messages, each ``(sender, to, data)``, in one group commit.

        One transaction (one fsync) for the lot, which is what makes bulk
        traffic cheap.  Nonces are taken in list order per sender.  If any
        message is refused, none is sent and the error names which one.
        """
        gas = self._check_message(Kind.CALL, value, gas)
        fee = self._check_bid(bid)
        prepared = [(self._key(sender), to_address(to, "recipient"), bytes(data)) for sender, to, data in calls]
        self._writable("send messages")
        with self._submit_lock:
            nonces: dict[bytes, int] = {}
            clock = self.store.clock()
            signed = []
            for key, to, data in prepared:
                if key.address not in nonces:
                    account = self.store.account(key.address)
                    nonces[key.address] = account.nonce if account is not None else 0
                envelope = Envelope(Kind.CALL, key.address, to, value=value, payload=data, gas=gas, bid=fee,
                                    nonce=nonces[key.address], time=clock, chain_id=self.store.chain_id)
                envelope.validate()
                nonces[key.address] += 1
                signed.append(key.sign(envelope))
            results = self.store.accept(signed, self._check, all_or_nothing=True)
        sent = []
        for index, ((envelope, _, _), result) in enumerate(zip(signed, results, strict=True)):
            if isinstance(result, EnvelopeError):
                raise EnvelopeError(f"message {index} of {len(results)} refused, none sent: {result}")
            sent.append(Sent(self, envelope, duplicate=result.duplicate))
        return sent

    def observe(self, observer: Callable[[list[tuple[Envelope, Receipt]]], None]) -> Callable[[], None]:
        """Call ``observer`` with each round's (message, receipt) pairs as this process commits them.

        Returns a function that stops the observation.  The observer runs
        inside the runtime's loop: keep it quick.
        """
        def forward(outcomes: list[tuple[Envelope, Any]]) -> None:
            observer([(envelope, outcome.receipt) for envelope, outcome in outcomes])

        self._runtime.observers.append(forward)

        def stop() -> None:
            if forward in self._runtime.observers:
                self._runtime.observers.remove(forward)

        return stop

    def send(self, to: object, data: bytes = b"", *, value: int = 0, sender: object = None, gas: int | None = None,
             wants_reply: bool = False, bid: int | None = None) -> Sent:
        """Send a raw ``call`` message (calldata ``data``) to ``to``; return once it is durable.
        ``bid``: fee per gas (None: :attr:`default_bid`)."""
        envelope, duplicate = self._submit(Kind.CALL, to_address(to, "recipient"), bytes(data), sender=sender,
                                           value=value, gas=gas, wants_reply=wants_reply, bid=bid)
        return Sent(self, envelope, duplicate=duplicate)

    async def asend(self, to: object, data: bytes = b"", *, value: int = 0, sender: object = None,
                    gas: int | None = None, wants_reply: bool = False) -> Sent:
        return await trio.to_thread.run_sync(
            functools.partial(self.send, to, data, value=value, sender=sender, gas=gas, wants_reply=wants_reply)
        )

    def query(self, to: object, data: bytes, *, sender: object = None, gas: int | None = None,
              bid: int | None = None) -> Sent:
        """Send a raw ``query`` message; ``.reply()`` on the result gives the raw answer bytes."""
        envelope, duplicate = self._submit(Kind.QUERY, to_address(to, "recipient"), bytes(data), sender=sender,
                                           value=0, gas=gas, wants_reply=True, bid=bid)
        return Sent(self, envelope, duplicate=duplicate)

    async def aquery(self, to: object, data: bytes, *, sender: object = None, gas: int | None = None) -> Sent:
        return await trio.to_thread.run_sync(functools.partial(self.query, to, data, sender=sender, gas=gas))

    # -- deploying -----------------------------------------------------------------------------

    def _prepare_deploy(self, source: str | os.PathLike[str] | bytes, args: Sequence[Any],
                        abi: list[dict[str, Any]] | None, name: str | None,
                        value: int, accept_async: Sequence[str] | bool = ()) -> tuple[bytes, list[dict[str, Any]], str]:
        from missive.toolchain.check import check_code, check_contract

        if isinstance(source, (bytes, bytearray)):
            from missive.toolchain.compiler import embedded_runtime

            init_code, abi, name = bytes(source), list(abi or []), name or "contract"
            report = None if accept_async is True else check_code(
                embedded_runtime(init_code) or b"", name=name, abi=abi, init=init_code)
        else:
            from missive.toolchain.compiler import compile_source

            compiled = compile_source(Path(source) if isinstance(source, os.PathLike) else source, name=name)
            init_code = compiled.bytecode
            abi = list(abi) if abi is not None else compiled.abi
            name = name or compiled.name
            report = None if accept_async is True else check_contract(compiled)
        if report is not None and not isinstance(accept_async, bool):
            refusal = report.refusal(accept_async)
            if refusal is not None:
                raise AsyncHazard(refusal, report.unaccepted(accept_async))
        constructor = next((e for e in abi if e.get("type") == "constructor"), None)
        if constructor is None:
            if args:
                raise ArgumentError(f"{name}: the ABI has no constructor, but {len(args)} argument(s) were given")
            encoded = b""
        else:
            inputs = constructor.get("inputs", [])
            encoded = encode_args([abi_type(i) for i in inputs], args, f"{name} constructor",
                                  [str(i.get("name", "")) for i in inputs])
            if value and constructor.get("stateMutability") != "payable" and not constructor.get("payable"):
                raise ArgumentError(f"{name}: the constructor is not payable; it cannot receive value")
        return init_code + encoded, abi, name

    def deploy_message(self, source: str | os.PathLike[str] | bytes, *args: Any, sender: object = None,
                       value: int = 0, gas: int | None = None, abi: list[dict[str, Any]] | None = None,
                       name: str | None = None, accept_async: Sequence[str] | bool = (),
                       bid: int | None = None) -> tuple[Sent, Contract]:
        """Compile, check and send a deploy message without waiting: (its Sent, the future contract).

        Code that would change meaning silently under message semantics (``missive check``) is refused with
        :class:`AsyncHazard` unless ``accept_async`` names each refused finding (by kind or ``kind@offset``);
        ``accept_async=True`` skips the check.
        """
        payload, abi, name = self._prepare_deploy(source, args, abi, name, value, accept_async)
        envelope, duplicate = self._submit(Kind.DEPLOY, None, payload, sender=sender, value=value, gas=gas,
                                           wants_reply=False, bid=bid)
        sent = Sent(self, envelope, duplicate=duplicate)
        self.register_abi(envelope.recipient, abi, name)
        return sent, Contract(self, envelope.recipient, abi, name, deployment=sent)

    def deploy(self, source: str | os.PathLike[str] | bytes, *args: Any, sender: object = None, value: int = 0,
               gas: int | None = None, abi: list[dict[str, Any]] | None = None, name: str | None = None,
               timeout: float | None = None, accept_async: Sequence[str] | bool = (),
               bid: int | None = None) -> Contract:
        """Deploy a contract (``.vy``/``.sol``/artifact/``.bin`` path, Vyper source text, or init code bytes +
        ``abi=``); ``accept_async`` as in :meth:`deploy_message`.

        Runs the node until the deploy is handled; raises :class:`Reverted` if it failed.
        """
        sent, contract = self.deploy_message(source, *args, sender=sender, value=value, gas=gas, abi=abi, name=name,
                                             accept_async=accept_async, bid=bid)
        _check_deployed(sent, sent.receipt(timeout), contract)
        return contract

    async def adeploy(self, source: str | os.PathLike[str] | bytes, *args: Any, sender: object = None,
                      value: int = 0, gas: int | None = None, abi: list[dict[str, Any]] | None = None,
                      name: str | None = None, timeout: float | None = None,
                      accept_async: Sequence[str] | bool = ()) -> Contract:
        sent, contract = await trio.to_thread.run_sync(functools.partial(
            self.deploy_message, source, *args, sender=sender, value=value, gas=gas, abi=abi, name=name,
            accept_async=accept_async))
        _check_deployed(sent, await sent.areceipt(timeout), contract)
        return contract

    # -- running and waiting ----------------------------------------------------------------------

    def is_idle(self) -> bool:
        """Nothing waiting: no pending message and no scheduled one."""
        return not self.store.pending(limit=1) and self.store.next_scheduled() is None

    async def _wait(self, done: Callable[[], bool], what: str, timeout: float | None, *,
                    until_idle: bool = False) -> int:
        """Run the actors (or poll, while another runs them) until ``done()``; return how many we handled."""
        handled = 0
        try:
            with trio.fail_after(timeout) if timeout is not None else contextlib.nullcontext():
                while not done():
                    if self._running:  # another task of this process is running the actors
                        await trio.sleep(POLL_INTERVAL)
                        continue
                    self._writable("run its actors")
                    lock = ExecutorLock(self.path)
                    try:
                        lock.acquire()
                    except NodeBusy:
                        self._served_elsewhere = True
                        await trio.sleep(POLL_INTERVAL)  # another process runs them: watch the store
                        continue
                    self._served_elsewhere = False
                    self._running = True
                    try:
                        handled += await self._runtime.run(until_idle=True, until=done)
                    finally:
                        self._running = False
                        lock.release()
                    if not done() and not until_idle:
                        raise NotHandled(f"the node is idle and {what}")
        except trio.TooSlowError:
            raise NodeTimeout(f"gave up after {timeout} s: {what}") from None
        return handled

    async def arun_until_idle(self, timeout: float | None = None) -> int:
        """Handle every waiting message (and what they send); return how many this process handled."""
        return await self._wait(self.is_idle, "messages are still waiting", timeout, until_idle=True)

    def run_until_idle(self, timeout: float | None = None) -> int:
        return _sync("run_until_idle", lambda: self.arun_until_idle(timeout))

    async def afollow(self, message_id: bytes | str, timeout: float | None = None) -> Chain:
        """Wait until every message that ``message_id`` caused (its replies, the queries and
        calls its handler sent, what those sent, scheduled messages included) is handled, or
        ``timeout`` passes.  Return the chain: ``chain.unfinished`` names what is still
        waiting.  Never raises for an unfinished chain.

        When this process runs the actors (no ``missive serve`` holds the node), it runs
        them until the node is idle, not only until the chain is done: on one node nothing
        else would handle what earlier commands left waiting, and a scheduled message is
        released only when nothing else waits (logical time then jumps to it).
        """
        chain = Chain(self.store.receipt, to_message_id(message_id))

        def done() -> bool:
            return chain.done() and (self._served_elsewhere or self.is_idle())

        with contextlib.suppress(NodeTimeout, NotHandled):
            await self._wait(done, "messages it caused are still waiting", timeout)
        return chain

    def follow(self, message_id: bytes | str, timeout: float | None = None) -> Chain:
        return _sync("follow", lambda: self.afollow(message_id, timeout))

    def _reply_id(self, request_id: bytes, receipt: Receipt) -> bytes:
        found = self._reply_ids.get(request_id)
        if found is None:
            for message_id in reversed(receipt.outgoing):
                message = self.store.message(message_id)
                if message is not None and message[0].kind is Kind.REPLY and message[0].request_id == request_id:
                    found = self._reply_ids[request_id] = message_id
                    break
            else:
                raise NodeError(f"message 0x{request_id.hex()} was handled but sent no reply")
        return found

    def _reply_handled(self, request_id: bytes) -> bool:
        receipt = self.store.receipt(request_id)
        return receipt is not None and self.store.receipt(self._reply_id(request_id, receipt)) is not None

    def _receipt_of(self, envelope: Envelope) -> Receipt | None:
        """The receipt of a message this node accepted, if it is handled (a seam: a cluster asks the recipient's node)."""
        return self.store.receipt(envelope.id)

    async def _await_receipt(self, envelope: Envelope, what: str, timeout: float | None) -> Receipt:
        """Run the actors (or wait for the process running them) until ``envelope`` is handled."""
        await self._wait(lambda: self.store.receipt(envelope.id) is not None, what, timeout)
        found = self.store.receipt(envelope.id)
        assert found is not None
        return found

    async def _await_reply(self, request: Envelope, what: str, timeout: float | None) -> tuple[Envelope, Receipt]:
        """Wait until the reply to ``request`` is in the requester's mailbox; (reply, request's receipt)."""
        request_id = request.id
        await self._wait(lambda: self._reply_handled(request_id), f"no reply to {what} arrived", timeout)
        receipt = self.store.receipt(request_id)
        assert receipt is not None
        message = self.store.message(self._reply_id(request_id, receipt))
        assert message is not None
        return message[0], receipt

    # -- inspecting -----------------------------------------------------------------------------

    def explain(self, data: bytes, address: object = None) -> str | None:
        """Revert data in words: ``Error(string)``, ``Panic(uint256)``, or a custom error from the ABI of
        ``address`` (the contract that reverted) or, failing that, of any contract registered here."""
        abis = self.abis()
        own = abis.get(to_address(address)) if address is not None else None
        reason = revert_reason(data, own[1] if own else ())
        if reason is None and len(data) >= 4:
            reason = revert_reason(data, [e for _, abi in abis.values() for e in abi if e.get("type") == "error"])
        return reason

    def trace(self, message_id: bytes | str) -> Trace:
        """The tree of messages ``message_id`` caused, with each one's receipt (None while not handled)."""
        root = self.resolve_id(message_id) if isinstance(message_id, str) else to_message_id(message_id)
        envelope = self.message(root)
        if envelope is None:
            raise UnknownMessage(f"no message {hexstr(root)} on this {self.scope}")
        top = Trace(root, envelope, self.receipt(root))
        stack = [top]
        while stack:
            current = stack.pop()
            if current.receipt is None:
                continue
            for child_id in current.receipt.outgoing:
                child_envelope = self.message(child_id)
                if child_envelope is None:
                    continue
                child = Trace(child_id, child_envelope, self.receipt(child_id))
                current.children.append(child)
                stack.append(child)
        return top

    def receipt(self, message_id: bytes | str) -> Receipt | None:
        return self.store.receipt(to_message_id(message_id))

    def storage(self, address: object) -> dict[int, int]:
        """An actor's storage slots (slot -> value)."""
        return self.store.storage(to_address(address))

    def replay_check(self, actor: object = None) -> tuple[int, str | None]:
        """Re-execute the ledger (SPEC §5): (receipts checked, the first divergence described, or None)."""
        from missive.actors.replay import replay

        report = replay(self.store, actor=to_address(actor) if actor is not None else None)
        if report.divergence is not None:
            return report.checked, report.divergence.describe()
        return report.checked, None

    def message(self, message_id: bytes | str) -> Envelope | None:
        found = self.store.message(to_message_id(message_id))
        return found[0] if found is not None else None

    #: what "no message ... on this X" names in errors
    scope = "node"

    def resolve_id(self, text: str) -> bytes:
        """A full message id from hex text: the whole id, or a unique prefix of at least 4 bytes."""
        body = text.strip().removeprefix("0x").removeprefix("0X")
        if len(body) > 64 or len(body) < 8 or len(body) % 2:
            raise ArgumentError(f"{text!r} is not a message id (64 hex digits, or an even-length prefix of 8+)")
        try:
            prefix = bytes.fromhex(body)
        except ValueError:
            raise ArgumentError(f"{text!r} is not a message id (not hex)") from None
        matches = self._ids_with_prefix(prefix)
        if not matches:
            raise UnknownMessage(f"no message {text} on this {self.scope}")
        if len(matches) > 1:
            raise ArgumentError(f"message id prefix {text} is ambiguous; give more digits")
        return matches[0]

    def _ids_with_prefix(self, prefix: bytes) -> list[bytes]:
        return self.store.message_ids_with_prefix(prefix)

    def mailbox(self, address: object) -> list[tuple[Envelope, Receipt | None]]:
        """Messages ``address`` has handled, in order, with their receipts."""
        out: list[tuple[Envelope, Receipt | None]] = []
        for message_id in self.store.mailbox(to_address(address)):
            found = self.store.message(message_id)
            if found is not None:
                out.append((found[0], self.store.receipt(message_id)))
        return out

    def pending(self, address: object = None) -> list[Envelope]:
        """Messages waiting to be handled (for one actor, or all), in queue order."""
        out: list[Envelope] = []
        for _, message_id in self.store.pending(to_address(address) if address is not None else None):
            found = self.store.message(message_id)
            if found is not None:
                out.append(found[0])
        return out

    def inbox(self, address: object) -> list[Envelope]:
        """The messages waiting in ``address``'s queue (not handled yet)."""
        return self.pending(address)

    def scheduled_for(self, address: object) -> list[tuple[int, Envelope]]:
        """Scheduled messages to ``address`` not due yet: (logical time, message), soonest first."""
        target = to_address(address)
        return [(due, envelope) for due, envelope in self.scheduled() if envelope.recipient == target]

    def scheduled(self) -> list[tuple[int, Envelope]]:
        out: list[tuple[int, Envelope]] = []
        for due, message_id in self.store.scheduled():
            found = self.store.message(message_id)
            if found is not None:
                out.append((due, found[0]))
        return out

    def ledger_length(self) -> int:
        """How many records the ledger holds (sequence numbers have gaps: the store shares its counter)."""
        with self.store.read() as txn:
            return int(txn.stat(self.store.db["ledger"])["entries"])

    def iter_ledger(self, start: int = 0) -> Iterator[LedgerRecord]:
        for seq, record in self.store.ledger(start):
            yield self._record(seq, record)

    def ledger(self, start: int = 0, limit: int | None = None, *, last: int | None = None) -> list[LedgerRecord]:
        """Ledger records from sequence number ``start`` (at most ``limit``), or the ``last`` N records."""
        if last is not None:
            raw: list[tuple[int, list[Any]]] = []
            with self.store.read() as txn:
                cursor = txn.cursor(db=self.store.db["ledger"])
                if last > 0 and cursor.last():
                    for key, value in cursor.iterprev():
                        seq = int.from_bytes(key, "big")
                        if seq < start or len(raw) >= last:
                            break
                        raw.append((seq, msgpack.unpackb(value)))
            return [self._record(seq, record) for seq, record in reversed(raw)]
        out: list[LedgerRecord] = []
        for record in self.iter_ledger(start):
            if limit is not None and len(out) >= limit:
                break
            out.append(record)
        return out

    def _record(self, seq: int, record: list[Any]) -> LedgerRecord:
        kind = str(record[0])
        if kind == "receipt" and self.store.discarded(seq):
            kind = "discarded"  # a receipt a rollback gave up (the sealed record itself stays as written)
        if kind == "genesis":
            return LedgerRecord(seq, kind, address=record[1], balance=int.from_bytes(record[3], "big"))
        special = special_record(seq, record)
        if special is not None:
            return special
        message_id = bytes(record[1])
        found = self.store.message(message_id)
        envelope = found[0] if found is not None else None
        receipt = self.store.receipt(message_id) if kind == "receipt" else None
        return LedgerRecord(seq, kind, address=envelope.recipient if envelope else b"", message_id=message_id,
                            envelope=envelope, receipt=receipt)


def _check_deployed(sent: Sent, receipt: Receipt, contract: Contract) -> None:
    if not receipt.success:
        raise Reverted(f"deploying {contract._label}", reason=revert_reason(receipt.output, contract.abi),
                       data=receipt.output,
                       status=receipt.status, error=receipt.error, receipt=receipt, message_id=sent.id)
