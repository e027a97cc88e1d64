"""The secure channel: encrypted, authenticated, ordered msgpack messages over a trio stream.

After the handshake each direction has its own 32-byte key.  Every message is
msgpack-encoded, sealed with ``SecretBox`` (XSalsa20-Poly1305) and sent as a
frame whose body is the ciphertext (a msgpack bin).  The nonce is never sent:
both ends count the frames of each direction, and frame *n* is sealed with
nonce *n*.  So a replayed, dropped, reordered or tampered frame fails
authentication at the receiver, which then closes the connection — there is
no way to resynchronise, and a peer (or a middlebox) that corrupts the stream
is not worth keeping.

Separate keys per direction mean the two counters can never produce the same
(key, nonce) pair, which XSalsa20-Poly1305 requires.
"""

from __future__ import annotations

from typing import Any

import nacl.exceptions
import nacl.secret
import trio

from missive.identity import NodeId, short_id
from missive.net.errors import ChannelClosed, ChannelError, DecryptionFailed, FrameError, FrameTooLarge
from missive.net.frames import MAX_FRAME, FrameReader, expect_bytes, frame_body, pack, unpack

#: Poly1305 tag (16) + the largest msgpack bin header (5).
_SEAL_OVERHEAD = nacl.secret.SecretBox.MACBYTES + 5
_NONCE_SIZE = nacl.secret.SecretBox.NONCE_SIZE
_MAX_COUNTER = (1 << 64) - 1


def _nonce(counter: int) -> bytes:
    return counter.to_bytes(8, "big") + bytes(_NONCE_SIZE - 8)


class SecureChannel(trio.abc.AsyncResource):
    """A duplex channel of msgpack values, sealed per direction; made by the handshake.

    ``send`` may be called from many tasks (a lock keeps frames whole and
    counters in order); ``receive`` is meant for one reader task.  Any failure
    — broken socket, bad frame, failed authentication — closes the channel and
    every later call raises :class:`ChannelError`.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        reader: FrameReader,
        *,
        peer_id: NodeId,
        send_key: bytes,
        receive_key: bytes,
        max_frame: int = MAX_FRAME,
    ) -> None:
        self.stream = stream
        self.peer_id = peer_id
        self.max_frame = max_frame
        self._reader = reader
        self._send_box = nacl.secret.SecretBox(send_key)
        self._receive_box = nacl.secret.SecretBox(receive_key)
        self._send_counter = 0
        self._receive_counter = 0
        self._send_lock = trio.Lock()
        self._receive_lock = trio.Lock()
        self._closed_because: str | None = None

    def __repr__(self) -> str:
        state = f"closed: {self._closed_because}" if self._closed_because else "open"
        return f"<SecureChannel peer={short_id(self.peer_id)} {state}>"

    @property
    def closed(self) -> bool:
        return self._closed_because is not None

    @property
    def max_message(self) -> int:
        """Largest encoded message (msgpack bytes) that fits in one frame."""
        return self.max_frame - _SEAL_OVERHEAD

    async def send(self, obj: object) -> None:
        """Encrypt and send one msgpack value.

        Raises :class:`~missive.net.errors.NotEncodable` or
        :class:`FrameTooLarge` *before* sending anything (the channel stays
        usable), :class:`ChannelError` if the channel is or becomes broken.
        If the send is cancelled half-way the stream holds a partial frame,
        so the channel is closed.
        """
        plaintext = pack(obj)
        if len(plaintext) > self.max_message:
            raise FrameTooLarge(len(plaintext) + _SEAL_OVERHEAD, self.max_frame)
        async with self._send_lock:
            self._check_open()
            if self._send_counter >= _MAX_COUNTER:
                await self._close_because("send counter exhausted")
                raise ChannelError("send counter exhausted")
            sealed = self._send_box.encrypt(plaintext, _nonce(self._send_counter)).ciphertext
            self._send_counter += 1
            frame = frame_body(pack(sealed), self.max_frame)
            try:
                await self.stream.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                reason = f"send failed: {exc or type(exc).__name__}"
                await self._close_because(reason)
                raise ChannelError(reason) from exc
            except BaseException:
                # Cancelled (or worse) mid-frame: the byte stream is now garbage.
                await self._close_because("send interrupted")
                raise

    async def receive(self) -> Any:
        """The next message from the peer.

        Raises :class:`ChannelClosed` when the peer closed cleanly,
        :class:`DecryptionFailed` for a frame that fails authentication,
        :class:`FrameError` for a bad frame, :class:`ChannelError` if the
        socket broke; in every case the channel is closed first.
        """
        async with self._receive_lock:
            self._check_open()
            try:
                body = await self._reader.receive_body()
                if body is None:
                    raise ChannelClosed("peer closed the connection")
                sealed = expect_bytes(unpack(body))
            except (FrameError, ChannelClosed) as exc:
                await self._close_because(str(exc))
                raise
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                # If the channel was closed meanwhile (a failed send, say), that is the real reason.
                reason = self._closed_because or f"receive failed: {exc or type(exc).__name__}"
                await self._close_because(reason)
                raise ChannelError(reason) from exc
            try:
                plaintext = self._receive_box.decrypt(sealed, _nonce(self._receive_counter))
            except nacl.exceptions.CryptoError as exc:
                reason = f"frame {self._receive_counter} failed authentication (tampered, replayed or out of order)"
                await self._close_because(reason)
                raise DecryptionFailed(reason) from exc
            self._receive_counter += 1
            try:
                return unpack(plaintext)
            except FrameError:
                await self._close_because("undecodable message")
                raise

    @property
    def closed_reason(self) -> str | None:
        """Why the channel closed (the first failure, or "closed locally"); ``None`` while open."""
        return self._closed_because

    async def aclose(self) -> None:
        """Close the connection (idempotent)."""
        if self._closed_because is None:
            self._closed_because = "closed locally"
        await self.stream.aclose()

    # -- internals -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed_because is not None:
            raise ChannelError(f"channel to {short_id(self.peer_id)} is closed ({self._closed_because})")

    async def _close_because(self, reason: str) -> None:
        """Record why the channel died (first reason wins) and close the socket at once."""
        if self._closed_because is None:
            self._closed_because = reason
        await trio.aclose_forcefully(self.stream)
