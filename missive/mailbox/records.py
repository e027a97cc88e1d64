"""On-disk records other than envelopes: accounts and receipts (msgpack, versioned)."""

from __future__ import annotations

from typing import Any

import attrs
import msgpack

from missive.mailbox.envelope import FORMAT_VERSION, int_bytes
from missive.mailbox.packing import packb


class RecordError(ValueError):
    pass


def pack(fields: list[Any]) -> bytes:
    return packb([FORMAT_VERSION, *fields])


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


@attrs.frozen
class Account:
    """An account's committed state (storage slots live in their own table)."""

    balance: int = 0
    #: external accounts: next message nonce; contracts: CREATE nonce
    nonce: int = 0
    code_hash: bytes = b""
    #: how many messages this account has handled (its mailbox length)
    handled: int = 0
    #: Lamport clock of the actor
    clock: int = 0
    #: hash chain over the actor's state changes (see actors.handler)
    state_root: bytes = bytes(32)
    #: Ed25519 public key of an external account
    public_key: bytes = b""

    @property
    def is_contract(self) -> bool:
        return bool(self.code_hash)

    def encode(self) -> bytes:
        return pack([int_bytes(self.balance), self.nonce, self.code_hash, self.handled, self.clock, self.state_root, self.public_key])

    @classmethod
    def decode(cls, raw: object) -> Account:
        f = unpack(raw, "account", 7)
        return cls(int.from_bytes(f[0], "big"), *f[1:])


@attrs.frozen
class Receipt:
    """What handling one message did (SPEC §1): enough to check a replay bit for bit."""

    message_id: bytes
    recipient: bytes
    #: position of the message in the recipient's mailbox (0-based)
    position: int
    status: str
    gas_used: int
    output: bytes
    state_root: bytes
    logs: tuple[tuple[bytes, tuple[int, ...], bytes], ...]
    outgoing: tuple[bytes, ...]
    #: code of other accounts the handler read: (address, code hash)
    code_reads: tuple[tuple[bytes, bytes], ...]
    #: logical time the handler ran at
    time: int
    error: str = ""

    @property
    def success(self) -> bool:
        return self.status == "success"

    def encode(self) -> bytes:
        # The record's fields after its format version, as ``pack`` would lay them out; built in
        # one list because every handled message is encoded (tuples pack as msgpack arrays too).
        return packb(
            [
                FORMAT_VERSION,
                self.message_id,
                self.recipient,
                self.position,
                self.status,
                self.gas_used,
                self.output,
                self.state_root,
                [[a, [int_bytes(x) for x in t], d] for a, t, d in self.logs] if self.logs else (),
                self.outgoing,
                self.code_reads,
                self.time,
                self.error,
            ]
        )

    @classmethod
    def decode(cls, raw: object) -> Receipt:
        f = unpack(raw, "receipt", 12)
        return cls(
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
            error=f[11],
        )

    def differences(self, other: Receipt) -> list[str]:
        """Field-by-field differences, for replay's report (expected=self, got=other)."""
        out = []
        for field in attrs.fields(Receipt):
            a, b = getattr(self, field.name), getattr(other, field.name)
            if a != b:
                out.append(f"{field.name}: expected {_show(a)}, got {_show(b)}")
        return out


def _show(v: object) -> str:
    if isinstance(v, bytes):
        return "0x" + v.hex() if v else "0x"
    return repr(v)
