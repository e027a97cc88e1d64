"""The message envelope: what travels, what is signed, what the ledger stores.

An envelope's **id** is the keccak-256 of its canonical msgpack encoding (a
fixed-order array of its fields, format version first), so the same message
has the same id on every node and a duplicate delivery is recognised by id
alone.  The signature of an external message is over that id and is not part
of it; internal messages (sent by a handler) carry no signature, they are
vouched for by the receipt of the run that produced them (``parent``).
"""

from __future__ import annotations

import functools
from typing import Any, Final

import attrs
import msgpack

from missive.errors import MissiveError
from missive.mailbox.packing import packb
from missive.vm.keccak import keccak256
from missive.vm.types import MessageKind

#: Version of the envelope's canonical encoding (and of the on-disk records).  2: envelopes carry
#: the chain id an external message is signed for and the origin (the external account at the
#: root of the message tree); receipts and accounts carry block.timestamp (seconds).
FORMAT_VERSION: Final = 2
#: The largest payload a message may carry (init code + constructor args fit easily).
MAX_PAYLOAD: Final = 128 * 1024
MAX_GAS: Final = 30_000_000


#: SPEC §1 message kinds: the VM's enum (one for the VM and the ledger; integers on the wire)
Kind = MessageKind


_KINDS = {int(kind): kind for kind in Kind}


class EnvelopeError(MissiveError, ValueError):
    """A message that cannot be accepted; the text names what is wrong."""


def int_bytes(value: int) -> bytes:
    """A 256-bit quantity as msgpack carries it: big-endian, no leading zeros (canonical)."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def bytes_int(raw: object, name: str) -> int:
    if not isinstance(raw, bytes) or len(raw) > 32 or raw[:1] == b"\x00":
        raise EnvelopeError(f"{name} must be a canonical big-endian integer of at most 32 bytes")
    return int.from_bytes(raw, "big")


@attrs.frozen(slots=False)  # slots off so that ``id`` can be cached on the instance
class Envelope:
    kind: Kind
    sender: bytes
    recipient: bytes
    value: int = 0
    payload: bytes = b""
    gas: int = 1_000_000
    bid: int = 0
    #: external: the account's message counter; internal: position in the parent's outbox
    nonce: int = 0
    #: Lamport time of the send
    time: int = 0
    #: for reply and bounce: the id of the request they answer
    request_id: bytes = b""
    #: for replies: whether the request succeeded
    success: bool = True
    #: for call/query: whether the sender wants a reply
    wants_reply: bool = False
    #: id of the message whose handling sent this one (b"" for external messages)
    parent: bytes = b""
    #: for scheduled messages: the logical time before which it is not delivered
    not_before: int = 0
    #: external messages: the id of the ledger (CHAINID) they are signed for, so that a message
    #: signed for one ledger is refused by every other; internal messages: 0
    chain_id: int = 0
    #: internal messages: the external account at the root of the message tree (tx.origin);
    #: external messages: b"" (their sender is the origin)
    origin: bytes = b""

    @property
    def is_external(self) -> bool:
        return not self.parent

    @property
    def root_account(self) -> bytes:
        """tx.origin of the handler run this message causes: the external account at the root of its tree."""
        return self.origin or self.sender

    def canonical(self) -> bytes:
        return packb(
            [
                FORMAT_VERSION,
                int(self.kind),
                self.sender,
                self.recipient,
                int_bytes(self.value),
                self.payload,
                self.gas,
                int_bytes(self.bid),
                self.nonce,
                self.time,
                self.request_id,
                self.success,
                self.wants_reply,
                self.parent,
                self.not_before,
                self.chain_id,
                self.origin,
            ]
        )

    @functools.cached_property
    def id(self) -> bytes:
        """keccak256 of the canonical encoding; computed once per envelope (the handler,
        the receipt and the commit all need it)."""
        return keccak256(self.canonical())

    @classmethod
    def decode(cls, raw: object, *, check: bool = True) -> Envelope:
        """Parse a canonical encoding; raise EnvelopeError naming the problem.

        ``raw`` comes from peers too, so it is typed ``object``: whatever it
        is, anything but a canonical encoding is an EnvelopeError, the same in
        the pure-Python and the mypyc-compiled build (a ``bytes`` parameter
        would make the compiled one raise TypeError for a non-bytes first).

        ``check=False`` skips :meth:`validate`, for envelopes read back from the
        node's own store, which validated them on the way in (the runtime reads
        every message it handles, and the check is a fifth of that cost).
        """
        try:
            fields: Any = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        except Exception as exc:
            raise EnvelopeError(f"malformed envelope: not msgpack ({exc})") from None
        if not isinstance(fields, list) or len(fields) != 17:
            if isinstance(fields, list) and fields[:1] == [1]:
                raise EnvelopeError("envelope format version 1 is not supported (this node reads "
                                    f"{FORMAT_VERSION}: envelopes now name their chain id and origin)")
            raise EnvelopeError("malformed envelope: expected an array of 17 fields")
        if fields[0] != FORMAT_VERSION:
            raise EnvelopeError(f"envelope format version {fields[0]!r} is not supported (this node reads {FORMAT_VERSION})")
        (_, kind_code, sender, recipient, value, payload, gas, bid, nonce, time, request_id, success, wants_reply,
         parent, not_before, chain_id, origin) = fields
        try:
            kind = _KINDS.get(kind_code) if type(kind_code) is int else None
            if kind is None:
                raise EnvelopeError(f"malformed envelope: {kind_code!r} is not a message kind")
            # positional, in field order: this runs for every message handled or replayed
            envelope = cls(kind, sender, recipient, bytes_int(value, "value"), payload, gas, bytes_int(bid, "bid"),
                           nonce, time, request_id, success, wants_reply, parent, not_before, chain_id, origin)
        except EnvelopeError:
            raise
        except (ValueError, TypeError) as exc:
            raise EnvelopeError(f"malformed envelope: {exc}") from None
        if check:
            envelope.validate()
        return envelope

    def validate(self) -> None:
        """Check types and bounds; raise EnvelopeError naming the first bad field."""
        for name in ("sender", "recipient"):
            v = getattr(self, name)
            if not isinstance(v, bytes) or len(v) != 20:
                raise EnvelopeError(f"{name} must be a 20-byte address")
        for name, bits in (("value", 256), ("bid", 256), ("gas", 64), ("nonce", 64), ("time", 64), ("not_before", 64),
                           ("chain_id", 64)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v >> bits:
                raise EnvelopeError(f"{name} must be an integer in [0, 2**{bits})")
        if not isinstance(self.payload, bytes):
            raise EnvelopeError("payload must be bytes")
        if len(self.payload) > MAX_PAYLOAD:
            raise EnvelopeError(f"payload of {len(self.payload)} bytes exceeds the {MAX_PAYLOAD}-byte limit")
        if self.gas > MAX_GAS:
            raise EnvelopeError(f"gas {self.gas} exceeds the per-message limit {MAX_GAS}")
        for name in ("request_id", "parent"):
            v = getattr(self, name)
            if not isinstance(v, bytes) or len(v) not in (0, 32):
                raise EnvelopeError(f"{name} must be empty or a 32-byte message id")
        if not isinstance(self.origin, bytes) or len(self.origin) not in (0, 20):
            raise EnvelopeError("origin must be empty or a 20-byte address")
        if self.parent and self.chain_id:
            raise EnvelopeError("an internal message names no chain id (its parent's receipt vouches for it)")
        if not self.parent and self.origin:
            raise EnvelopeError("an external message names no origin (its sender is the origin)")
        if not isinstance(self.success, bool) or not isinstance(self.wants_reply, bool):
            raise EnvelopeError("success and wants_reply must be booleans")
        if self.kind is Kind.RAISE and (self.parent or self.value or self.wants_reply):
            raise EnvelopeError("a raise is an account's own message and carries no value and asks for no reply")
        if self.kind in (Kind.REPLY, Kind.BOUNCE) and len(self.request_id) != 32:
            raise EnvelopeError(f"a {self.kind.name.lower()} must name the request it answers")
