"""On-disk records other than envelopes: accounts and receipts (msgpack, versioned)."""

from __future__ import annotations

from typing import Any, final

import msgpack

from missive.errors import MissiveError
from missive.mailbox.envelope import FORMAT_VERSION, int_bytes
from missive.mailbox.packing import packb
from missive.vm.types import ValueFields


class RecordError(MissiveError, ValueError):
    pass


def unpack(raw: object, what: str, n: int) -> list[Any]:
    """The fields of a versioned record; ``raw`` may be anything a peer sent (see Envelope.decode)."""
    try:
        fields = msgpack.unpackb(raw, raw=False)
    except Exception as exc:
        raise RecordError(f"corrupt {what} record: {exc}") from None
    if not isinstance(fields, list) or len(fields) != n + 1:
        raise RecordError(f"corrupt {what} record: expected {n} fields")
    if fields[0] != FORMAT_VERSION:
        raise RecordError(f"{what} record format {fields[0]!r} is not supported (this node reads {FORMAT_VERSION})")
    return fields[1:]


def _check_types(fields: list[Any], types: tuple[type, ...], what: str) -> None:
    """Refuse a decoded record whose fields are not of the types its class declares.

    Records also come from peers.  A corrupt one is a RecordError, never a
    half-typed object, and the same in both builds (compiled, the class would
    raise TypeError on a wrong type as it is built).
    """
    for i, (value, expected) in enumerate(zip(fields, types, strict=True)):
        if not isinstance(value, expected):
            raise RecordError(f"corrupt {what} record: field {i} is {type(value).__name__}, not {expected.__name__}")


_ACCOUNT_TYPES = (bytes, int, bytes, int, int, bytes, bytes, int)
_RECEIPT_TYPES = (bytes, bytes, int, str, int, bytes, bytes, list, list, list, int, int, str, bytes, bytes, bytes)


@final
class Account(ValueFields):
    """An account's committed state (storage slots live in their own table).

    Immutable (read-only properties) and compared by value, but a plain class
    rather than attrs: mypyc compiles this module into native classes, which
    cost a tenth as much to build and read (the handler builds one per message,
    replay one more per accepted message).  :meth:`replace` stands in for
    ``attrs.evolve``.
    """

    def __init__(self, balance: int = 0, nonce: int = 0, code_hash: bytes = b"", handled: int = 0, clock: int = 0,
                 state_root: bytes = bytes(32), public_key: bytes = b"", timestamp: int = 0) -> None:
        self._balance = balance
        self._nonce = nonce
        self._code_hash = code_hash
        self._handled = handled
        self._clock = clock
        self._state_root = state_root
        self._public_key = public_key
        self._timestamp = timestamp

    @property
    def balance(self) -> int:
        return self._balance

    @property
    def nonce(self) -> int:
        """External accounts: the next message nonce; contracts: the CREATE nonce."""
        return self._nonce

    @property
    def code_hash(self) -> bytes:
        return self._code_hash

    @property
    def handled(self) -> int:
        """How many messages this account has handled (its mailbox length)."""
        return self._handled

    @property
    def clock(self) -> int:
        """Lamport clock of the actor."""
        return self._clock

    @property
    def state_root(self) -> bytes:
        """Hash chain over the actor's state changes (see actors.handler)."""
        return self._state_root

    @property
    def public_key(self) -> bytes:
        """Ed25519 public key of an external account."""
        return self._public_key

    @property
    def timestamp(self) -> int:
        """block.timestamp (seconds) of the last message the account handled: the next is never less."""
        return self._timestamp

    @property
    def is_contract(self) -> bool:
        return bool(self._code_hash)

    def debited(self, value: int) -> Account:
        """The account once one of its own messages is accepted: the value leaves, the nonce moves on.

        Admission and replay both take this step for every external message.
        """
        return Account(self._balance - value, self._nonce + 1, self._code_hash, self._handled, self._clock,
                       self._state_root, self._public_key, self._timestamp)

    def credited(self, amount: int) -> Account:
        """The account once a fee or a refund of ``amount`` reaches it (the market: see
        :mod:`missive.market.fees`); nothing else moves."""
        return Account(self._balance + amount, self._nonce, self._code_hash, self._handled, self._clock,
                       self._state_root, self._public_key, self._timestamp)

    def encode(self) -> bytes:
        return packb([FORMAT_VERSION, int_bytes(self._balance), self._nonce, self._code_hash, self._handled,
                      self._clock, self._state_root, self._public_key, self._timestamp])

    @classmethod
    def decode(cls, raw: object) -> Account:
        f = unpack(raw, "account", 8)
        _check_types(f, _ACCOUNT_TYPES, "account")
        return Account(int.from_bytes(f[0], "big"), f[1], f[2], f[3], f[4], f[5], f[6], f[7])

    def fields(self) -> dict[str, object]:
        return {
            "balance": self._balance,
            "nonce": self._nonce,
            "code_hash": self._code_hash,
            "handled": self._handled,
            "clock": self._clock,
            "state_root": self._state_root,
            "public_key": self._public_key,
            "timestamp": self._timestamp,
        }



def credit_encoded(raw: object, amount: int) -> bytes:
    """``Account.decode(raw).credited(amount).encode()``, without building the two Accounts.

    Why: a commit credits each fee and refund to its account (the market), up to one account
    per handled message, and decoding and re-encoding whole accounts was most of that cost."""
    f = unpack(raw, "account", 8)
    _check_types(f, _ACCOUNT_TYPES, "account")
    f[0] = int_bytes(int.from_bytes(f[0], "big") + amount)
    return packb([FORMAT_VERSION, *f])


#: one LOG record of a receipt: (emitting address, topics, data)
LogRecord = tuple[bytes, tuple[int, ...], bytes]


@final
class Receipt(ValueFields):
    """What handling one message did (SPEC §1): enough to check a replay bit for bit.

    Immutable and compared by value, a plain class for mypyc like
    :class:`Account` (built and encoded for every message handled or
    replayed).  :meth:`replace` stands in for ``attrs.evolve``.
    """

    def __init__(
        self,
        message_id: bytes,
        recipient: bytes,
        position: int,
        status: str,
        gas_used: int,
        output: bytes,
        state_root: bytes,
        logs: tuple[LogRecord, ...],
        outgoing: tuple[bytes, ...],
        code_reads: tuple[tuple[bytes, bytes], ...],
        time: int,
        error: str = "",
        timestamp: int = 0,
        fee: int = 0,
        refund: int = 0,
        coinbase: bytes = b"",
    ) -> None:
        self._message_id = message_id
        self._recipient = recipient
        self._position = position
        self._status = status
        self._gas_used = gas_used
        self._output = output
        self._state_root = state_root
        self._logs = logs
        self._outgoing = outgoing
        self._code_reads = code_reads
        self._time = time
        self._error = error
        self._timestamp = timestamp
        self._fee = fee
        self._refund = refund
        self._coinbase = coinbase

    @property
    def message_id(self) -> bytes:
        return self._message_id

    @property
    def recipient(self) -> bytes:
        return self._recipient

    @property
    def position(self) -> int:
        """Position of the message in the recipient's mailbox (0-based)."""
        return self._position

    @property
    def status(self) -> str:
        return self._status

    @property
    def gas_used(self) -> int:
        return self._gas_used

    @property
    def output(self) -> bytes:
        return self._output

    @property
    def state_root(self) -> bytes:
        return self._state_root

    @property
    def logs(self) -> tuple[LogRecord, ...]:
        return self._logs

    @property
    def outgoing(self) -> tuple[bytes, ...]:
        return self._outgoing

    @property
    def code_reads(self) -> tuple[tuple[bytes, bytes], ...]:
        """Code of other accounts the handler read: (address, code hash)."""
        return self._code_reads

    @property
    def time(self) -> int:
        """Logical time the handler ran at."""
        return self._time

    @property
    def timestamp(self) -> int:
        """block.timestamp the handler ran at: seconds of the executing node's clock, recorded so replay sees it."""
        return self._timestamp

    @property
    def error(self) -> str:
        return self._error

    @property
    def fee(self) -> int:
        """Coin the run paid the executing worker: its own gas (not what it forwarded) times the bid."""
        return self._fee

    @property
    def refund(self) -> int:
        """Coin of the message's escrow returned to the payer (tx.origin): gas nobody used, times the bid."""
        return self._refund

    @property
    def coinbase(self) -> bytes:
        """The account the fee went to (the executing worker's coinbase); b"" when the fee is 0."""
        return self._coinbase

    @property
    def success(self) -> bool:
        return self._status == "success"

    def encode(self) -> bytes:
        # The record's fields after its format version, as ``pack`` would lay them out; built in
        # one list because every handled message is encoded (tuples pack as msgpack arrays too).
        return packb(
            [
                FORMAT_VERSION,
                self._message_id,
                self._recipient,
                self._position,
                self._status,
                self._gas_used,
                self._output,
                self._state_root,
                [[a, [int_bytes(x) for x in t], d] for a, t, d in self._logs] if self._logs else (),
                self._outgoing,
                self._code_reads,
                self._time,
                self._timestamp,
                self._error,
                int_bytes(self._fee),
                int_bytes(self._refund),
                self._coinbase,
            ]
        )

    @classmethod
    def decode(cls, raw: object) -> Receipt:
        f = unpack(raw, "receipt", 16)
        _check_types(f, _RECEIPT_TYPES, "receipt")
        return Receipt(
            message_id=f[0],
            recipient=f[1],
            position=f[2],
            status=f[3],
            gas_used=f[4],
            output=f[5],
            state_root=f[6],
            logs=tuple((a, tuple(int.from_bytes(x, "big") for x in t), d) for a, t, d in f[7]),
            outgoing=tuple(f[8]),
            code_reads=tuple((a, h) for a, h in f[9]),
            time=f[10],
            timestamp=f[11],
            error=f[12],
            fee=int.from_bytes(f[13], "big"),
            refund=int.from_bytes(f[14], "big"),
            coinbase=f[15],
        )

    def fields(self) -> dict[str, object]:
        return {
            "message_id": self._message_id,
            "recipient": self._recipient,
            "position": self._position,
            "status": self._status,
            "gas_used": self._gas_used,
            "output": self._output,
            "state_root": self._state_root,
            "logs": self._logs,
            "outgoing": self._outgoing,
            "code_reads": self._code_reads,
            "time": self._time,
            "timestamp": self._timestamp,
            "error": self._error,
            "fee": self._fee,
            "refund": self._refund,
            "coinbase": self._coinbase,
        }


    def differences(self, other: Receipt) -> list[str]:
        """Field-by-field differences, for replay's report (expected=self, got=other)."""
        out = []
        theirs = other.fields()
        for name, a in self.fields().items():
            b = theirs[name]
            if a != b:
                out.append(f"{name}: {difference(a, b)}")
        return out


#: values up to this many bytes (or characters) are shown whole in a difference; longer ones around
#: the first byte (or item) that differs
SHOWN_WHOLE = 64
#: bytes shown either side of the first differing byte
CONTEXT = 8


def _show(v: object) -> str:
    if isinstance(v, bytes):
        return "0x" + v.hex() if v else "0x"
    text = repr(v)
    return text if len(text) <= 4 * SHOWN_WHOLE else text[:4 * SHOWN_WHOLE] + f"... ({len(text)} characters)"


def difference(expected: object, got: object) -> str:
    """How ``got`` differs from ``expected``, pointing at the first differing byte or item.

    Short values are shown whole; two long byte strings (a contract's code, say) are not printed
    whole but around the first byte where they differ, with their lengths; two sequences are
    compared item by item and the first differing item is described the same way.
    """
    if isinstance(expected, bytes) and isinstance(got, bytes):
        if len(expected) <= SHOWN_WHOLE and len(got) <= SHOWN_WHOLE:
            return f"expected {_show(expected)}, got {_show(got)}"
        at = next((i for i in range(min(len(expected), len(got))) if expected[i] != got[i]),
                  min(len(expected), len(got)))
        start = max(0, at - CONTEXT)
        before = "..." if start else ""

        def window(data: bytes) -> str:
            end = min(len(data), at + CONTEXT + 1)
            return f"{before}0x{data[start:end].hex()}{'...' if end < len(data) else ''}"

        sizes = (f"{len(expected)} bytes" if len(expected) == len(got)
                 else f"expected {len(expected)} bytes, got {len(got)}")
        return (f"first differs at byte {at} ({sizes}): expected {window(expected)}, got {window(got)} "
                f"(from byte {start})")
    if isinstance(expected, (list, tuple)) and isinstance(got, (list, tuple)):
        for i in range(min(len(expected), len(got))):
            if expected[i] != got[i]:
                count = "" if len(expected) == len(got) else f"; expected {len(expected)} items, got {len(got)}"
                return f"item {i}: {difference(expected[i], got[i])}{count}"
        return f"expected {len(expected)} items, got {len(got)} (the first {min(len(expected), len(got))} agree)"
    return f"expected {_show(expected)}, got {_show(got)}"
