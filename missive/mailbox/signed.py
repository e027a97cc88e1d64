"""A message as stored and sent: ``[canonical envelope, public key, signature]``, in msgpack.

Encoded and decoded here only: the store keeps messages so, deliveries carry them so, state
diffs carry the records of the messages their receipts sent, and clients submit them so.  A
message's id is the keccak of its canonical envelope (:attr:`Envelope.id`), so
:func:`record_id` reads it without decoding the envelope.

Malformed bytes raise what msgpack and unpacking raise (``ValueError``, ``TypeError``), and a
malformed envelope :class:`~missive.mailbox.envelope.EnvelopeError`: callers name what was wrong.
"""

from __future__ import annotations

from typing import cast

import attrs
import msgpack

from missive.mailbox.envelope import Envelope
from missive.vm.keccak import keccak256


@attrs.frozen
class SignedRecord:
    """A message with its sender's public key and signature (both empty for a message a handler
    sent: its actor has no key, and the commit that made it stands for it)."""

    envelope: Envelope
    public_key: bytes = b""
    signature: bytes = b""

    def encode(self) -> bytes:
        return pack_record(self.envelope, self.public_key, self.signature)

    @classmethod
    def decode(cls, raw: bytes, *, check: bool = True) -> SignedRecord:
        """``check=False``: a record this node stored itself (see :meth:`Envelope.decode`)."""
        canonical, public_key, signature = msgpack.unpackb(raw)
        return cls(Envelope.decode(canonical, check=check), public_key, signature)

    def as_tuple(self) -> tuple[Envelope, bytes, bytes]:
        """(envelope, public key, signature): what admission takes."""
        return self.envelope, self.public_key, self.signature


def pack_record(envelope: Envelope, public_key: bytes = b"", signature: bytes = b"") -> bytes:
    """The stored (and sent) bytes of a message."""
    return cast(bytes, msgpack.packb([envelope.canonical(), public_key, signature]))


def record_canonical(raw: bytes | memoryview) -> bytes:
    """The canonical envelope of the message in a record (what its id hashes, and what clients are sent)."""
    return cast(bytes, msgpack.unpackb(raw)[0])


def record_id(raw: bytes | memoryview) -> bytes:
    """The id of the message in a record (the keccak of its canonical envelope)."""
    return keccak256(record_canonical(raw))


def record_envelope(raw: bytes | memoryview, *, check: bool = False) -> Envelope:
    """The envelope of a record (``check=False`` by default: records this node stored or was given
    in a state diff it checked)."""
    return Envelope.decode(msgpack.unpackb(raw)[0], check=check)
