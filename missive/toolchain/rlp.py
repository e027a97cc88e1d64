"""A tiny RLP encoder, just enough to hash logs the way Ethereum test vectors do.

The conformance vectors fingerprint the logs a run emitted as
``keccak256(rlp([[address, [topic, ...], data], ...]))``.  Pulling in a full
RLP library for that one hash is not worth a dependency, and an encoder is a
dozen lines; decoding is never needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

#: What can be encoded: byte strings, non-negative integers (big-endian, minimal,
#: zero is the empty string, as Ethereum encodes scalars) and nested lists.
Item: TypeAlias = "bytes | bytearray | int | Sequence[Item]"


def _length_prefix(length: int, short_base: int) -> bytes:
    """Header for a payload of ``length`` bytes (0x80/0xc0 families)."""
    if length < 56:
        return bytes([short_base + length])
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([short_base + 55 + len(size)]) + size


def encode(item: Item) -> bytes:
    """RLP-encode ``item``.

    Raises ``TypeError`` for anything but bytes, non-negative ints and
    sequences of those (a ``str`` is refused: its byte form would be a guess).
    """
    if isinstance(item, (bytes, bytearray)):
        data = bytes(item)
        if len(data) == 1 and data[0] < 0x80:
            return data
        return _length_prefix(len(data), 0x80) + data
    if isinstance(item, bool):
        raise TypeError("RLP: refusing to encode a bool; pass an int")
    if isinstance(item, int):
        if item < 0:
            raise ValueError("RLP: negative integers have no encoding")
        return encode(item.to_bytes((item.bit_length() + 7) // 8, "big"))
    if isinstance(item, str):
        raise TypeError("RLP: refusing to encode a str; pass bytes")
    if isinstance(item, Sequence):
        payload = b"".join(encode(sub) for sub in item)
        return _length_prefix(len(payload), 0xC0) + payload
    raise TypeError(f"RLP: cannot encode {type(item).__name__}")
