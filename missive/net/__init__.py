"""Cluster transport: authenticated, encrypted RPC between the nodes of a local cluster.

The stack, bottom to top — each layer only knows the one below it:

1. **frames** (:mod:`missive.net.frames`): TCP is a byte stream, so messages are
   framed as a 4-byte big-endian length plus one msgpack value, with a size
   limit checked from the header and a strict decoder for hostile input.
2. **identity** (:mod:`missive.identity`): a node is its Ed25519 key; the
   node id is the 32-byte verify key.
3. **handshake** (:mod:`missive.net.handshake`): both ends sign a transcript
   of fresh X25519 keys and nonces, proving their ids; the responder refuses
   ids its ``is_allowed`` rejects, the dialler refuses anyone but the id it
   dialled.  Session keys (one per direction) come from the X25519 secret.
4. **secure channel** (:mod:`missive.net.channel`): every message sealed with
   XSalsa20-Poly1305 under a per-direction frame counter, so tampering,
   replay and reordering all fail authentication and close the connection.
5. **rpc** (:mod:`missive.net.rpc`): calls with ids, timeouts and remote
   errors, notifications, handlers, and bounded in-flight work per
   connection (a full connection stops being read: TCP pushes back).
6. **server / peer link** (:mod:`missive.net.transport`): :func:`serve` runs
   each inbound connection in its own task so a bad peer only loses its own
   connection, bounded per key and closed when idle (:class:`Limits`);
   :class:`PeerLink` keeps an outgoing connection alive with backoff and a
   bounded queue.

Everything that can go wrong raises a subclass of :class:`NetError`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:

    from missive.identity import IdentityError, NodeId, NodeIdentity, short_id
    from missive.net.channel import SecureChannel
    from missive.net.errors import (
        CallTimeout,
        ChannelClosed,
        ChannelError,
        ConnectionLost,
        DecryptionFailed,
        FrameError,
        FrameMalformed,
        FrameTooLarge,
        FrameTruncated,
        FrameTypeError,
        HandshakeError,
        NetError,
        NotEncodable,
        ProtocolViolation,
        RemoteError,
        RpcError,
    )
    from missive.net.frames import (
        MAX_FRAME,
        MAX_MESSAGE,
        FrameDecoder,
        FrameReader,
        decode_frame,
        encode_frame,
        read_frame,
    )
    from missive.net.handshake import (
        HANDSHAKE_TIMEOUT,
        PROTOCOL_VERSION,
        IsAllowed,
        allow_any,
        allow_only,
        initiate,
        respond,
    )
    from missive.net.rpc import Handler, Pending, Refused, RpcConnection, open_rpc
    from missive.net.transport import Limits, PeerLink, open_peer_link, serve

#: where each name lives: imported on first use, so a process that needs only the identity (a node's
#: ledger, the CLI) does not pay for the handshake, RPC and transport layers
_WHERE: dict[str, str] = {
    "HANDSHAKE_TIMEOUT": "missive.net.handshake",
    "MAX_FRAME": "missive.net.frames",
    "MAX_MESSAGE": "missive.net.frames",
    "PROTOCOL_VERSION": "missive.net.handshake",
    "CallTimeout": "missive.net.errors",
    "ChannelClosed": "missive.net.errors",
    "ChannelError": "missive.net.errors",
    "ConnectionLost": "missive.net.errors",
    "DecryptionFailed": "missive.net.errors",
    "FrameDecoder": "missive.net.frames",
    "FrameError": "missive.net.errors",
    "FrameMalformed": "missive.net.errors",
    "FrameReader": "missive.net.frames",
    "FrameTooLarge": "missive.net.errors",
    "FrameTruncated": "missive.net.errors",
    "FrameTypeError": "missive.net.errors",
    "Handler": "missive.net.rpc",
    "HandshakeError": "missive.net.errors",
    "IdentityError": "missive.identity",
    "IsAllowed": "missive.net.handshake",
    "Limits": "missive.net.transport",
    "NetError": "missive.net.errors",
    "NodeId": "missive.identity",
    "NodeIdentity": "missive.identity",
    "NotEncodable": "missive.net.errors",
    "Pending": "missive.net.rpc",
    "PeerLink": "missive.net.transport",
    "ProtocolViolation": "missive.net.errors",
    "Refused": "missive.net.rpc",
    "RemoteError": "missive.net.errors",
    "RpcConnection": "missive.net.rpc",
    "RpcError": "missive.net.errors",
    "SecureChannel": "missive.net.channel",
    "allow_any": "missive.net.handshake",
    "allow_only": "missive.net.handshake",
    "decode_frame": "missive.net.frames",
    "encode_frame": "missive.net.frames",
    "initiate": "missive.net.handshake",
    "open_peer_link": "missive.net.transport",
    "open_rpc": "missive.net.rpc",
    "read_frame": "missive.net.frames",
    "respond": "missive.net.handshake",
    "serve": "missive.net.transport",
    "short_id": "missive.identity",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "MAX_FRAME",
    "MAX_MESSAGE",
    "PROTOCOL_VERSION",
    "CallTimeout",
    "ChannelClosed",
    "ChannelError",
    "ConnectionLost",
    "DecryptionFailed",
    "FrameDecoder",
    "FrameError",
    "FrameMalformed",
    "FrameReader",
    "FrameTooLarge",
    "FrameTruncated",
    "FrameTypeError",
    "Handler",
    "HandshakeError",
    "IdentityError",
    "IsAllowed",
    "Limits",
    "NetError",
    "NodeId",
    "NodeIdentity",
    "NotEncodable",
    "Pending",
    "PeerLink",
    "ProtocolViolation",
    "Refused",
    "RemoteError",
    "RpcConnection",
    "RpcError",
    "SecureChannel",
    "allow_any",
    "allow_only",
    "decode_frame",
    "encode_frame",
    "initiate",
    "open_peer_link",
    "open_rpc",
    "read_frame",
    "respond",
    "serve",
    "short_id",
]
