"""The exceptions of the cluster transport, in one place.

Every failure the network can cause is a :class:`NetError`, so the code that
owns a connection (the server's per-connection task, a peer link) can catch one
type, log the reason and drop *that* connection while everything else goes on.
The subclasses say which layer failed and carry the reason as plain text,
because the reason is what ends up in the log.
"""

from __future__ import annotations

from missive.errors import MissiveError


class NetError(MissiveError):
    """Base of every error raised by ``missive.net``."""


# -- frames -------------------------------------------------------------------


class FrameError(NetError):
    """A frame could not be encoded or decoded; the connection is unusable."""


class FrameTooLarge(FrameError):
    """A frame's declared (or encoded) size is above the limit.

    Raised from the 4-byte header alone, before the body is read, so a peer
    cannot make us buffer more than the limit.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class FrameTruncated(FrameError):
    """The stream ended in the middle of a frame."""

    def __init__(self, have: int, need: int) -> None:
        super().__init__(f"stream ended inside a frame: {have} of {need} bytes received")
        self.have = have
        self.need = need


class FrameMalformed(FrameError):
    """The frame body is not one well-formed, allowed msgpack value."""


class FrameTypeError(FrameError):
    """The frame decoded fine but holds the wrong type of value for its place."""

    def __init__(self, expected: str, got: object) -> None:
        super().__init__(f"expected {expected}, got {type(got).__name__}")
        self.expected = expected
        self.got = type(got).__name__


class NotEncodable(FrameError):
    """A value to send cannot be represented in msgpack (a local bug, not the peer's)."""


# -- handshake ----------------------------------------------------------------


class HandshakeError(NetError):
    """The handshake failed; ``reason`` is a short human-readable explanation.

    Typical reasons: ``"unknown peer <hex>"``, ``"wrong peer: expected <hex>,
    got <hex>"``, ``"bad signature"``, ``"protocol version ..."``,
    ``"timeout"``, ``"malformed hello: ..."``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- secure channel -----------------------------------------------------------


class ChannelError(NetError):
    """The secure channel is broken (or was closed) and cannot be used again."""


class ChannelClosed(ChannelError):
    """The peer closed the connection cleanly, between two frames."""


class DecryptionFailed(ChannelError):
    """A frame failed authentication: tampered, replayed, reordered or forged."""


# -- rpc ----------------------------------------------------------------------


class RpcError(NetError):
    """Base of the errors seen by the caller of :meth:`RpcConnection.call`."""


class RemoteError(RpcError):
    """The peer answered the call with an error (handler raised, unknown method...)."""

    def __init__(self, method: str, message: str) -> None:
        super().__init__(f"{method}: {message}")
        self.method = method
        self.message = message


class CallTimeout(RpcError):
    """No answer within the call's time limit (the call may still have run remotely)."""

    def __init__(self, method: str, timeout: float) -> None:
        super().__init__(f"{method}: no answer within {timeout:g} s")
        self.method = method
        self.timeout = timeout


class ConnectionLost(RpcError):
    """The connection ended while the call was outstanding; it may or may not have run."""


class ProtocolViolation(RpcError):
    """The (authenticated) peer sent a message that is not valid RPC; we hang up."""
