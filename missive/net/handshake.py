"""The handshake: both ends prove their Ed25519 identity and agree on session keys.

Three messages, each one plaintext frame (a msgpack map)::

    initiator -> responder   hello_i = {version, role, id, eph, nonce}
    responder -> initiator   hello_r = {version, role, id, eph, nonce}, auth_r = {sig}
    initiator -> responder   auth_i  = {sig}

``id`` is the sender's node id (Ed25519 verify key), ``eph`` a fresh X25519
public key and ``nonce`` 32 random bytes.  The *transcript* is a BLAKE2b hash
of both hello frames exactly as sent (length prefixes included, so the split
between them is unambiguous).  Each side signs ``context || role ||
transcript`` with its long-term key:

* the signature binds the ephemeral keys to the identity, so a
  man-in-the-middle cannot swap in its own ephemeral key;
* the role in the signed message stops a reflection (sending a node's own
  signature back to it);
* the random nonces and ephemeral keys make every transcript unique, so an
  old signature cannot be replayed into a new session.

The session keys are BLAKE2b of the X25519 shared secret keyed by the
transcript, with a different personalisation per direction, giving forward
secrecy (ephemeral keys are discarded) and one key per direction (see
:mod:`missive.net.channel` for why).

The responder checks the initiator's id with ``is_allowed`` as soon as the
first hello arrives, so an unknown peer is turned away before we spend a
signature on it.  The initiator can insist on the id it meant to dial.
Until the peer is authenticated frames are limited to
:data:`HANDSHAKE_MAX_FRAME` bytes and the whole exchange to a timeout, so an
anonymous connection costs little.  Every failure closes the stream and
raises :class:`HandshakeError` with a reason for the log.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import attrs
import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.public
import trio

from missive.identity import NODE_ID_SIZE, NodeId, NodeIdentity, short_id, verify
from missive.net.channel import SecureChannel
from missive.net.errors import FrameError, HandshakeError
from missive.net.frames import MAX_FRAME, FrameReader, expect_dict, frame_body, pack, unpack

PROTOCOL_VERSION = 1
#: Seconds a handshake may take from connect to keys.
HANDSHAKE_TIMEOUT = 5.0
#: Frame limit before the peer is authenticated (a hello is ~150 bytes).
HANDSHAKE_MAX_FRAME = 4096

_CONTEXT = b"missive-net/1 handshake auth\x00"
_INITIATOR = "initiator"
_RESPONDER = "responder"

#: Decides whether a node id may connect to us (or be connected to).
IsAllowed = Callable[[NodeId], bool]


def allow_any(node_id: NodeId) -> bool:
    """An ``is_allowed`` that admits every authenticated peer (tests, open clusters)."""
    return True


def allow_only(node_ids: set[NodeId] | frozenset[NodeId]) -> IsAllowed:
    """An ``is_allowed`` that admits exactly ``node_ids`` (the cluster's membership)."""
    allowed = frozenset(node_ids)
    return allowed.__contains__


@attrs.frozen
class _Hello:
    node_id: NodeId
    ephemeral: bytes
    body: bytes  # exactly as on the wire, for the transcript


def _make_hello(identity: NodeIdentity, role: str, ephemeral: nacl.public.PrivateKey) -> _Hello:
    body = pack(
        {
            "version": PROTOCOL_VERSION,
            "role": role,
            "id": identity.node_id,
            "eph": bytes(ephemeral.public_key),
            "nonce": os.urandom(32),
        }
    )
    return _Hello(identity.node_id, bytes(ephemeral.public_key), body)


def _parse_hello(body: bytes, role: str) -> _Hello:
    try:
        hello = expect_dict(unpack(body))
    except FrameError as exc:
        raise HandshakeError(f"malformed hello: {exc}") from exc
    version = hello.get("version")
    if version != PROTOCOL_VERSION:
        raise HandshakeError(f"protocol version: peer speaks {_quote(version)}, we speak {PROTOCOL_VERSION}")
    if hello.get("role") != role:
        raise HandshakeError(f"malformed hello: role {_quote(hello.get('role'))}, expected {role!r}")
    for field, size in (("id", NODE_ID_SIZE), ("eph", 32), ("nonce", 32)):
        value = hello.get(field)
        if not isinstance(value, bytes) or len(value) != size:
            raise HandshakeError(f"malformed hello: {field!r} must be {size} bytes")
    return _Hello(hello["id"], hello["eph"], body)


def _quote(value: object) -> str:
    """A peer-supplied value for a log line: repr'd (no raw control characters) and short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _transcript(hello_i: _Hello, hello_r: _Hello) -> bytes:
    data = frame_body(hello_i.body, HANDSHAKE_MAX_FRAME) + frame_body(hello_r.body, HANDSHAKE_MAX_FRAME)
    return nacl.hash.blake2b(data, digest_size=32, person=b"missive-hs-v1", encoder=nacl.encoding.RawEncoder)


def _signed_message(role: str, transcript: bytes) -> bytes:
    return _CONTEXT + role.encode() + b"\x00" + transcript


def _auth(identity: NodeIdentity, role: str, transcript: bytes) -> bytes:
    return pack({"sig": identity.sign(_signed_message(role, transcript))})


def _check_auth(body: bytes, peer: _Hello, role: str, transcript: bytes) -> None:
    try:
        auth = expect_dict(unpack(body))
    except FrameError as exc:
        raise HandshakeError(f"malformed auth: {exc}") from exc
    signature = auth.get("sig")
    if not isinstance(signature, bytes) or not verify(peer.node_id, _signed_message(role, transcript), signature):
        raise HandshakeError(f"bad signature from {short_id(peer.node_id)}")


def _session_keys(ephemeral: nacl.public.PrivateKey, peer: _Hello, transcript: bytes) -> tuple[bytes, bytes]:
    """(initiator->responder key, responder->initiator key)."""
    try:
        shared = nacl.bindings.crypto_scalarmult(bytes(ephemeral), peer.ephemeral)
    except nacl.exceptions.RuntimeError as exc:  # low-order point: the shared secret would be zero
        raise HandshakeError("bad ephemeral key") from exc

    def derive(person: bytes) -> bytes:
        return nacl.hash.blake2b(
            shared, digest_size=32, key=transcript, person=person, encoder=nacl.encoding.RawEncoder
        )

    return derive(b"missive-i2r-v1"), derive(b"missive-r2i-v1")


async def _next_body(reader: FrameReader, what: str) -> bytes:
    try:
        body = await reader.receive_body()
    except FrameError as exc:
        raise HandshakeError(f"bad {what} frame: {exc}") from exc
    if body is None:
        raise HandshakeError(f"peer closed the connection before its {what}")
    return body


async def _guarded(
    stream: trio.abc.Stream, timeout: float, steps: Callable[[], Awaitable[SecureChannel]]
) -> SecureChannel:
    """Run the handshake ``steps`` with a timeout; on any failure close ``stream`` and raise HandshakeError."""
    try:
        with trio.fail_after(timeout):
            return await steps()
    except trio.TooSlowError:
        await trio.aclose_forcefully(stream)
        raise HandshakeError(f"timeout after {timeout:g} s") from None
    except HandshakeError:
        await trio.aclose_forcefully(stream)
        raise
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        await trio.aclose_forcefully(stream)
        raise HandshakeError(f"connection failed: {exc or type(exc).__name__}") from exc
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


async def initiate(
    stream: trio.abc.Stream,
    identity: NodeIdentity,
    *,
    expected_peer: NodeId | None = None,
    is_allowed: IsAllowed | None = None,
    timeout: float = HANDSHAKE_TIMEOUT,
    max_frame: int = MAX_FRAME,
) -> SecureChannel:
    """Run the dialling side of the handshake on ``stream``; the authenticated channel.

    ``expected_peer`` is the id we meant to reach: anyone else is refused
    ("wrong peer").  ``is_allowed`` optionally vets the responder further.
    """
    reader = FrameReader(stream, HANDSHAKE_MAX_FRAME)

    async def steps() -> SecureChannel:
        ephemeral = nacl.public.PrivateKey.generate()
        mine = _make_hello(identity, _INITIATOR, ephemeral)
        await stream.send_all(frame_body(mine.body, HANDSHAKE_MAX_FRAME))
        theirs = _parse_hello(await _next_body(reader, "hello"), _RESPONDER)
        if expected_peer is not None and theirs.node_id != expected_peer:
            raise HandshakeError(f"wrong peer: expected {expected_peer.hex()}, got {theirs.node_id.hex()}")
        _vet(is_allowed, theirs.node_id)
        transcript = _transcript(mine, theirs)
        _check_auth(await _next_body(reader, "auth"), theirs, _RESPONDER, transcript)
        send_key, receive_key = _session_keys(ephemeral, theirs, transcript)
        await stream.send_all(frame_body(_auth(identity, _INITIATOR, transcript), HANDSHAKE_MAX_FRAME))
        return _open(stream, reader, theirs.node_id, send_key, receive_key, max_frame)

    return await _guarded(stream, timeout, steps)


async def respond(
    stream: trio.abc.Stream,
    identity: NodeIdentity,
    *,
    is_allowed: IsAllowed,
    timeout: float = HANDSHAKE_TIMEOUT,
    max_frame: int = MAX_FRAME,
) -> SecureChannel:
    """Run the accepting side of the handshake on ``stream``; the authenticated channel.

    Peers for which ``is_allowed(node_id)`` is false are refused with
    ``"unknown peer <hex>"`` right after their hello.
    """
    reader = FrameReader(stream, HANDSHAKE_MAX_FRAME)

    async def steps() -> SecureChannel:
        theirs = _parse_hello(await _next_body(reader, "hello"), _INITIATOR)
        _vet(is_allowed, theirs.node_id)
        ephemeral = nacl.public.PrivateKey.generate()
        mine = _make_hello(identity, _RESPONDER, ephemeral)
        transcript = _transcript(theirs, mine)
        receive_key, send_key = _session_keys(ephemeral, theirs, transcript)
        reply = frame_body(mine.body, HANDSHAKE_MAX_FRAME) + frame_body(
            _auth(identity, _RESPONDER, transcript), HANDSHAKE_MAX_FRAME
        )
        await stream.send_all(reply)
        _check_auth(await _next_body(reader, "auth"), theirs, _INITIATOR, transcript)
        return _open(stream, reader, theirs.node_id, send_key, receive_key, max_frame)

    return await _guarded(stream, timeout, steps)


def _vet(is_allowed: IsAllowed | None, node_id: NodeId) -> None:
    if is_allowed is None:
        return
    try:
        allowed = is_allowed(node_id)
    except Exception as exc:  # a broken policy must refuse, not crash the listener
        raise HandshakeError(f"is_allowed failed for {node_id.hex()}: {exc!r}") from exc
    if not allowed:
        raise HandshakeError(f"unknown peer {node_id.hex()}")


def _open(
    stream: trio.abc.Stream, reader: FrameReader, peer_id: NodeId, send_key: bytes, receive_key: bytes, max_frame: int
) -> SecureChannel:
    reader.decoder.max_size = max_frame  # the peer is authenticated: full-size frames from now on
    return SecureChannel(
        stream, reader, peer_id=peer_id, send_key=send_key, receive_key=receive_key, max_frame=max_frame
    )
