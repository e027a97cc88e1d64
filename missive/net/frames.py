"""Length-prefixed msgpack frames: the bottom of the transport stack.

A frame is a 4-byte big-endian body length followed by a body that is exactly
one msgpack value.  TCP is a byte stream, so something has to say where one
message ends; a length prefix does it without scanning and lets the reader
refuse an oversized frame from its header, *before* buffering the body, so a
hostile peer can make us hold at most ``max_size`` bytes.

Decoding is the first thing that touches bytes from the network, so
:func:`unpack` is deliberately strict: text must be UTF-8, map keys must be
strings or bytes (``strict_map_key``), extension types (including msgpack's
timestamp) are refused, every length is capped by the body size, a body must
hold exactly one value and nesting depth is bounded by msgpack's own stack
limit.  Every failure becomes a named :class:`FrameError` subclass.

The module has a sans-IO core (:class:`FrameDecoder`, fed bytes, yields
bodies) and a thin trio wrapper (:class:`FrameReader`), so the parsing can be
tested and fuzzed without sockets.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import trio

from missive.net.errors import FrameMalformed, FrameTooLarge, FrameTruncated, FrameTypeError, NotEncodable

#: Largest application message we intend to carry (a batch of envelopes, say).
MAX_MESSAGE = 1 << 20
#: Default limit on a frame body: one message plus room for the RPC envelope,
#: the msgpack bin header and the 16-byte MAC that encryption adds.
MAX_FRAME = MAX_MESSAGE + 64 * 1024

HEADER = struct.Struct(">I")
#: Bytes read from the socket per receive call.
_CHUNK = 64 * 1024


def pack(obj: object) -> bytes:
    """msgpack-encode ``obj`` (bytes stay bin, str stays str); :class:`NotEncodable` if impossible."""
    try:
        data: bytes = msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise NotEncodable(f"cannot encode {type(obj).__name__} as msgpack: {exc}") from exc
    return data


def unpack(body: bytes) -> Any:
    """Decode one msgpack value from untrusted ``body``; :class:`FrameMalformed` otherwise."""
    limit = len(body)
    try:
        return msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=limit,
            max_bin_len=limit,
            max_array_len=limit,
            max_map_len=limit,
            max_ext_len=0,  # no extension types at all, not even timestamps
        )
    except msgpack.ExtraData as exc:
        raise FrameMalformed("frame body holds more than one msgpack value") from exc
    except (ValueError, TypeError) as exc:  # every msgpack format error is a ValueError
        detail = str(exc) or type(exc).__name__
        raise FrameMalformed(f"malformed msgpack: {detail}") from exc


def expect_bytes(obj: object) -> bytes:
    """``obj`` if it is ``bytes``, else :class:`FrameTypeError` (for ciphertext frames)."""
    if not isinstance(obj, bytes):
        raise FrameTypeError("bytes", obj)
    return obj


def expect_dict(obj: object) -> dict[str, Any]:
    """``obj`` if it is a map, else :class:`FrameTypeError` (for handshake messages)."""
    if not isinstance(obj, dict):
        raise FrameTypeError("a map", obj)
    return obj


def frame_body(body: bytes, max_size: int = MAX_FRAME) -> bytes:
    """Prefix an already-encoded ``body`` with its length, enforcing ``max_size``."""
    if len(body) > max_size:
        raise FrameTooLarge(len(body), max_size)
    return HEADER.pack(len(body)) + body


def encode_frame(obj: object, max_size: int = MAX_FRAME) -> bytes:
    """One wire frame carrying ``obj``: 4-byte big-endian length + msgpack body.

    Raises :class:`FrameTooLarge` rather than producing a frame the peer would
    refuse, and :class:`NotEncodable` for values msgpack cannot carry.
    """
    return frame_body(pack(obj), max_size)


def decode_frame(data: bytes, max_size: int = MAX_FRAME) -> Any:
    """Decode exactly one complete frame (header + body) from ``data``."""
    decoder = FrameDecoder(max_size)
    decoder.feed(data)
    body = decoder.next_body()
    if body is None:
        need = HEADER.size + (HEADER.unpack_from(data)[0] if len(data) >= HEADER.size else 0)
        raise FrameTruncated(len(data), max(need, HEADER.size))
    if decoder.buffered:
        raise FrameMalformed(f"{decoder.buffered} bytes after the frame")
    return unpack(body)


class FrameDecoder:
    """Incremental, sans-IO frame splitter: :meth:`feed` bytes, take bodies with :meth:`next_body`.

    The size check happens as soon as the header is complete, so an oversize
    frame is refused without waiting for (or storing) its body.
    """

    def __init__(self, max_size: int = MAX_FRAME) -> None:
        if not 0 < max_size < 1 << 32:
            raise ValueError(f"max_size must be in 1..2**32-1, not {max_size}")
        self.max_size = max_size
        self._buffer = bytearray()
        self._need: int | None = None  # body length once the header is read

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a body."""
        return len(self._buffer)

    @property
    def pending(self) -> tuple[int, int]:
        """(bytes held, bytes needed) for the frame in progress; (0, 0) between frames."""
        if self._need is None:
            return (len(self._buffer), HEADER.size) if self._buffer else (0, 0)
        return HEADER.size + len(self._buffer), HEADER.size + self._need

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer += data

    def next_body(self) -> bytes | None:
        """The next complete frame body, or ``None`` if more bytes are needed."""
        if self._need is None:
            if len(self._buffer) < HEADER.size:
                return None
            (size,) = HEADER.unpack_from(self._buffer)
            if size > self.max_size:
                raise FrameTooLarge(size, self.max_size)
            del self._buffer[: HEADER.size]
            self._need = size
        if len(self._buffer) < self._need:
            return None
        body = bytes(self._buffer[: self._need])
        del self._buffer[: self._need]
        self._need = None
        return body


class FrameReader:
    """Reads frame bodies from a trio stream, with buffering.

    The handshake and then the secure channel read through the *same* reader,
    because bytes of the first encrypted frame may arrive in the same TCP
    segment as the last handshake frame and must not be lost.
    """

    def __init__(self, stream: trio.abc.ReceiveStream, max_size: int = MAX_FRAME) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(max_size)

    async def receive_body(self) -> bytes | None:
        """The next frame body; ``None`` on a clean end of stream between frames.

        Raises :class:`FrameTooLarge` from the header, :class:`FrameTruncated`
        if the stream ends inside a frame.
        """
        while True:
            body = self.decoder.next_body()
            if body is not None:
                return body
            data = await self.stream.receive_some(_CHUNK)
            if not data:
                have, need = self.decoder.pending
                if have:
                    raise FrameTruncated(have, need)
                return None
            self.decoder.feed(data)

    async def receive(self) -> Any:
        """The next frame's decoded value; :class:`FrameTruncated` on end of stream."""
        body = await self.receive_body()
        if body is None:
            raise FrameTruncated(0, HEADER.size)
        return unpack(body)


async def read_frame(stream: trio.abc.ReceiveStream, max_size: int = MAX_FRAME) -> Any:
    """Read exactly one frame from ``stream`` without reading past it, and decode it.

    Unbuffered (it asks the stream for exactly the bytes it needs), so it can be
    mixed with other readers of the same stream; use :class:`FrameReader` for
    a sequence of frames.
    """
    header = await _read_exactly(stream, HEADER.size, 0, HEADER.size)
    (size,) = HEADER.unpack(header)
    if size > max_size:
        raise FrameTooLarge(size, max_size)
    body = await _read_exactly(stream, size, HEADER.size, HEADER.size + size)
    return unpack(body)


async def _read_exactly(stream: trio.abc.ReceiveStream, count: int, before: int, total: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = await stream.receive_some(count - len(data))
        if not chunk:
            raise FrameTruncated(before + len(data), total)
        data += chunk
    return bytes(data)
