"""The cluster transport (missive.net): frames, identity, handshake, secure channel, RPC, peer links.

Network tests use real TCP sockets on 127.0.0.1; each one runs under a
``trio.fail_after`` (see ``net_support.trio_test``) and closes what it opens.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import stat
from pathlib import Path
from typing import Any

import msgpack
import nacl.public
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from net_support import HANDLERS, HOST, ListRecords, meddling_proxy, msgpack_values, running_server, trio_test

from missive.net import (
    CallTimeout,
    ChannelClosed,
    ChannelError,
    ConnectionLost,
    DecryptionFailed,
    FrameDecoder,
    FrameMalformed,
    FrameReader,
    FrameTooLarge,
    FrameTruncated,
    FrameTypeError,
    HandshakeError,
    IdentityError,
    NodeId,
    NodeIdentity,
    NotEncodable,
    PeerLink,
    RemoteError,
    SecureChannel,
    allow_any,
    allow_only,
    decode_frame,
    encode_frame,
    initiate,
    open_peer_link,
    open_rpc,
    read_frame,
    respond,
)
from missive.net.frames import HEADER, expect_bytes, unpack
from missive.net.handshake import PROTOCOL_VERSION
from missive.net.transport import Backoff


async def wait_for_log(net_log: ListRecords, text: str, level: int = logging.WARNING) -> str:
    """The first log message at ``level`` or above containing ``text`` (polls; bounded by the test's timeout)."""
    while True:
        for message in net_log.messages(level):
            if text in message:
                return message
        await trio.sleep(0.01)


# -- frames ----------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(msgpack_values, min_size=1, max_size=5),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
)
def test_frames_roundtrip_through_incremental_decoder(values: list[Any], cuts: list[int]) -> None:
    wire = b"".join(encode_frame(v) for v in values)
    for v in values:
        assert decode_frame(encode_frame(v)) == v
    decoder = FrameDecoder()
    got = []
    edges = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    for start, end in zip(edges, edges[1:], strict=False):  # feed in arbitrary pieces
        decoder.feed(wire[start:end])
        while (body := decoder.next_body()) is not None:
            got.append(unpack(body))
    assert got == values
    assert decoder.buffered == 0


@trio_test(5)
async def test_frame_reader_and_read_frame_over_a_stream() -> None:
    send, receive = trio.testing.memory_stream_pair()
    await send.send_all(encode_frame({"a": 1}) + encode_frame([b"x", "y"]) + encode_frame(None))
    await send.aclose()
    reader = FrameReader(receive)
    assert await reader.receive() == {"a": 1}
    assert await reader.receive() == [b"x", "y"]
    assert await reader.receive_body() == b"\xc0"
    assert await reader.receive_body() is None  # clean end between frames

    send, receive = trio.testing.memory_stream_pair()
    await send.send_all(encode_frame(7) + encode_frame(8))
    assert await read_frame(receive) == 7
    assert await read_frame(receive) == 8  # read_frame never reads past its frame


def test_oversize_frame_is_refused_from_its_header() -> None:
    decoder = FrameDecoder(max_size=100)
    decoder.feed(HEADER.pack(101))  # no body at all: the header is enough
    with pytest.raises(FrameTooLarge) as info:
        decoder.next_body()
    assert (info.value.size, info.value.limit) == (101, 100)
    assert "101" in str(info.value) and "100" in str(info.value)
    with pytest.raises(FrameTooLarge):
        encode_frame(b"x" * 200, max_size=100)  # the sender refuses too
    decoder = FrameDecoder(max_size=100)
    decoder.feed(HEADER.pack(100) + bytes(100))
    assert decoder.next_body() == bytes(100)  # exactly at the limit is fine


@trio_test(5)
async def test_truncated_frames_are_named() -> None:
    frame = encode_frame(b"hello world")
    for cut in (2, 4, len(frame) - 1):
        send, receive = trio.testing.memory_stream_pair()
        await send.send_all(frame[:cut])
        await send.aclose()
        with pytest.raises(FrameTruncated) as info:
            await FrameReader(receive).receive_body()
        assert info.value.have == cut
        send, receive = trio.testing.memory_stream_pair()
        await send.send_all(frame[:cut])
        await send.aclose()
        with pytest.raises(FrameTruncated):
            await read_frame(receive)
        with pytest.raises(FrameTruncated):
            decode_frame(frame[:cut])


def _deep(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"


@pytest.mark.parametrize(
    "body,why",
    [
        (b"\xc1", "the never-used byte"),
        (msgpack.packb(1) + msgpack.packb(2), "two values in one frame"),
        (b"\xa2\xff\xfe", "invalid UTF-8 in a str"),
        (msgpack.packb(msgpack.ExtType(5, b"ab")), "an extension type"),
        (msgpack.packb(msgpack.Timestamp(1, 0)), "a timestamp (also an extension)"),
        (b"\x81\x01\x02", "an int map key"),
        (b"\xdd\xff\xff\xff\xff", "an array claiming 4 billion items"),
        (b"\xc6\x7f\xff\xff\xff", "a bin claiming 2 GiB"),
        (_deep(100_000), "nesting 100,000 deep"),
        (b"", "an empty body"),
        (b"\x92\x01", "a truncated array"),
    ],
)
def test_malformed_bodies_raise_frame_malformed(body: bytes, why: str) -> None:
    with pytest.raises(FrameMalformed):
        decode_frame(HEADER.pack(len(body)) + body)


def test_wrong_type_and_unencodable_values_are_named() -> None:
    with pytest.raises(FrameTypeError, match="expected bytes, got str"):
        expect_bytes(unpack(msgpack.packb("text")))
    with pytest.raises(NotEncodable):
        encode_frame(object())
    with pytest.raises(NotEncodable):
        encode_frame(2**70)


# -- identity --------------------------------------------------------------------------------------


def test_identity_file_roundtrip_and_refusals(tmp_path: Path) -> None:
    identity = NodeIdentity.generate()
    path = identity.save(tmp_path / "node" / "identity")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = NodeIdentity.load(path)
    assert loaded.node_id == identity.node_id and len(loaded.node_id) == 32
    assert loaded.sign(b"m") == identity.sign(b"m")
    assert NodeIdentity.load_or_generate(path).node_id == identity.node_id
    assert NodeIdentity.load_or_generate(tmp_path / "fresh").node_id != identity.node_id
    assert identity.seed.hex() not in repr(identity)

    (tmp_path / "v9").write_bytes(msgpack.packb({"format": 9, "seed": bytes(32)}))
    (tmp_path / "junk").write_bytes(b"\xc1\xc1")
    for name, text in (("v9", "format 9"), ("junk", "not an identity"), ("missing", "cannot read")):
        with pytest.raises(IdentityError, match=text):
            NodeIdentity.load(tmp_path / name)


# -- handshake and secure channel (in memory) ------------------------------------------------------


async def _handshake(
    client: NodeIdentity, server: NodeIdentity, *, expected: NodeId | None = None, allowed: set[NodeId] | None = None
) -> tuple[SecureChannel | HandshakeError, SecureChannel | HandshakeError]:
    """Both sides of a handshake over an in-memory stream: each side's channel, or its error."""
    left, right = trio.testing.memory_stream_pair()
    out: dict[str, SecureChannel | HandshakeError] = {}

    async def side(name: str, run: Any) -> None:
        try:
            out[name] = await run()
        except HandshakeError as exc:
            out[name] = exc

    async with trio.open_nursery() as nursery:
        policy = allow_only(allowed if allowed is not None else {client.node_id})
        nursery.start_soon(side, "server", lambda: respond(right, server, is_allowed=policy))
        nursery.start_soon(side, "client", lambda: initiate(left, client, expected_peer=expected))
    return out["client"], out["server"]


async def _pair(client: NodeIdentity, server: NodeIdentity) -> tuple[SecureChannel, SecureChannel]:
    a, b = await _handshake(client, server, expected=server.node_id)
    assert isinstance(a, SecureChannel) and isinstance(b, SecureChannel), (a, b)
    return a, b


@trio_test(5)
async def test_handshake_authenticates_both_ends_and_channel_carries_messages() -> None:
    a, b = NodeIdentity.generate(), NodeIdentity.generate()
    client, server = await _pair(a, b)
    assert client.peer_id == b.node_id and server.peer_id == a.node_id
    await client.send({"hello": [1, 2, b"\x00"]})
    assert await server.receive() == {"hello": [1, 2, b"\x00"]}
    await server.send("back")
    assert await client.receive() == "back"
    big = b"\xab" * (client.max_message - 10)
    await client.send(big)  # the largest message still fits one frame
    assert await server.receive() == big
    with pytest.raises(FrameTooLarge):
        await client.send(big + bytes(100))
    await client.send("still usable")  # a refused send sends nothing and breaks nothing
    assert await server.receive() == "still usable"
    await client.aclose()
    with pytest.raises(ChannelClosed):
        await server.receive()


@trio_test(5)
async def test_initiator_refuses_a_peer_other_than_the_one_it_dialled() -> None:
    a, b, c = (NodeIdentity.generate() for _ in range(3))
    client, server = await _handshake(a, b, expected=c.node_id)
    assert isinstance(client, HandshakeError) and isinstance(server, HandshakeError)
    assert client.reason == f"wrong peer: expected {c.node_id.hex()}, got {b.node_id.hex()}"
    assert "closed" in server.reason  # the server only sees the dialler hang up


@trio_test(5)
async def test_responder_refuses_unknown_peers() -> None:
    a, b = NodeIdentity.generate(), NodeIdentity.generate()
    client, server = await _handshake(a, b, allowed=set())
    assert isinstance(server, HandshakeError) and server.reason == f"unknown peer {a.node_id.hex()}"
    assert isinstance(client, HandshakeError)


async def _hostile_initiator(stream: trio.abc.Stream, claimed_id: bytes, version: int = PROTOCOL_VERSION) -> None:
    """Send a well-formed hello claiming ``claimed_id``, then an auth signed by some other key."""
    eph = nacl.public.PrivateKey.generate()
    hello = {
        "version": version,
        "role": "initiator",
        "id": claimed_id,
        "eph": bytes(eph.public_key),
        "nonce": os.urandom(32),
    }
    await stream.send_all(encode_frame(hello))
    reader = FrameReader(stream)
    await reader.receive()  # hello_r
    await reader.receive()  # auth_r
    await stream.send_all(encode_frame({"sig": NodeIdentity.generate().sign(b"whatever")}))


@trio_test(5)
async def test_responder_refuses_a_bad_signature_and_a_wrong_version() -> None:
    victim, server = NodeIdentity.generate(), NodeIdentity.generate()
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_hostile_initiator, left, victim.node_id)
        with pytest.raises(HandshakeError, match="bad signature"):
            await respond(right, server, is_allowed=allow_only({victim.node_id}))

    left, right = trio.testing.memory_stream_pair()
    await left.send_all(encode_frame({"version": 2, "role": "initiator"}))
    with pytest.raises(HandshakeError, match="protocol version: peer speaks 2, we speak 1"):
        await respond(right, server, is_allowed=allow_any)


@pytest.mark.parametrize(
    "point",
    [bytes(32), b"\x01" + bytes(31), bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")],
)
@trio_test(5)
async def test_responder_refuses_a_low_order_ephemeral_key(point: bytes) -> None:
    """A key whose shared secret is all zeros would give a session key anyone can compute."""
    client, server = NodeIdentity.generate(), NodeIdentity.generate()
    left, right = trio.testing.memory_stream_pair()
    hello = {"version": 1, "role": "initiator", "id": client.node_id, "eph": point, "nonce": bytes(32)}
    await left.send_all(encode_frame(hello))
    with pytest.raises(HandshakeError, match="bad ephemeral key"):
        await respond(right, server, is_allowed=allow_any)


@trio_test(5)
async def test_initiator_refuses_an_impostor_responder() -> None:
    """A server presenting the expected id without its key fails the signature check."""
    client, real = NodeIdentity.generate(), NodeIdentity.generate()
    left, right = trio.testing.memory_stream_pair()

    async def impostor() -> None:
        reader = FrameReader(right)
        await reader.receive()
        eph = nacl.public.PrivateKey.generate()
        hello = {
            "version": 1,
            "role": "responder",
            "id": real.node_id,
            "eph": bytes(eph.public_key),
            "nonce": bytes(32),
        }
        await right.send_all(encode_frame(hello) + encode_frame({"sig": NodeIdentity.generate().sign(b"x")}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(impostor)
        with pytest.raises(HandshakeError, match="bad signature"):
            await initiate(left, client, expected_peer=real.node_id)


# -- live server: handshake failures, tampering ----------------------------------------------------


@trio_test(10)
async def test_server_refuses_unknown_peer_logs_why_and_keeps_serving(net_log: ListRecords) -> None:
    server, friend, stranger = (NodeIdentity.generate() for _ in range(3))
    async with running_server(server, allow_only({friend.node_id})) as port:
        stream = await trio.open_tcp_stream(HOST, port)
        with pytest.raises(HandshakeError):
            await initiate(stream, stranger, expected_peer=server.node_id)
        assert f"unknown peer {stranger.node_id.hex()}" in await wait_for_log(net_log, "refused connection")
        async with open_peer_link(friend, HOST, port, server.node_id) as link:
            assert await link.call("whoami") == friend.node_id


@trio_test(10)
async def test_server_times_out_a_silent_handshake(net_log: ListRecords) -> None:
    server = NodeIdentity.generate()
    async with running_server(server, allow_any, handshake_timeout=0.2) as port:
        async with await trio.open_tcp_stream(HOST, port) as stream:
            assert await stream.receive_some(100) == b""  # closed on us, without a word
        assert "timeout" in await wait_for_log(net_log, "refused connection")


def _nth(n: int, action: str) -> Any:
    def meddle(index: int, frame: bytes) -> list[bytes]:
        if index == n and action == "tamper":
            return [frame[:-1] + bytes([frame[-1] ^ 1])]
        if index == n and action == "replay":
            return [frame, frame]
        if index == n and action == "drop":
            return []
        return [frame]

    return meddle


@pytest.mark.parametrize("action", ["tamper", "replay", "drop"])
@trio_test(10)
async def test_tampered_replayed_or_dropped_frames_close_the_connection(action: str, net_log: ListRecords) -> None:
    server, client = NodeIdentity.generate(), NodeIdentity.generate()
    async with running_server(server, allow_any) as port, meddling_proxy(port, _nth(2, action)) as proxy_port:
        channel = await initiate(await trio.open_tcp_stream(HOST, proxy_port), client, expected_peer=server.node_id)
        async with open_rpc(channel) as conn:
            # Frame 2 (the notification) is the first encrypted one; after a drop, frame 3 is out of order.
            await conn.notify("echo", "first")
            with pytest.raises(ConnectionLost):
                await conn.call("echo", "second", timeout=5)
        reason = await wait_for_log(net_log, "dropped connection")
        assert "failed authentication" in reason
        async with open_peer_link(client, HOST, port, server.node_id) as link:
            assert await link.call("echo", "after") == "after"  # the server is still up


@trio_test(10)
async def test_channel_receive_reports_tampering_as_decryption_failed() -> None:
    a, b = NodeIdentity.generate(), NodeIdentity.generate()
    client, server = await _pair(a, b)
    raw_client = client.stream
    # Send a frame that is valid msgpack bytes but was sealed by nobody.
    await raw_client.send_all(encode_frame(os.urandom(40)))
    with pytest.raises(DecryptionFailed, match="frame 0 failed authentication"):
        await server.receive()
    assert server.closed
    with pytest.raises(ChannelError, match="closed"):
        await server.receive()


# -- rpc ---------------------------------------------------------------------------------------------


@trio_test(10)
async def test_rpc_results_remote_errors_unknown_methods_timeouts_and_notifications() -> None:
    server, client = NodeIdentity.generate(), NodeIdentity.generate()
    seen: list[Any] = []
    got_note = trio.Event()

    async def note(peer: NodeId, params: Any) -> None:
        seen.append((peer, params))
        got_note.set()

    async with running_server(server, allow_any, {**HANDLERS, "note": note}) as port:
        channel = await initiate(await trio.open_tcp_stream(HOST, port), client, expected_peer=server.node_id)
        async with open_rpc(channel) as conn:
            assert await conn.call("echo", {"k": [1, b"2"]}) == {"k": [1, b"2"]}
            assert await conn.call("whoami") == client.node_id
            with pytest.raises(RemoteError) as info:
                await conn.call("fail")
            assert (info.value.method, info.value.message) == ("fail", "ValueError: boom")
            with pytest.raises(RemoteError, match="unknown method 'nope'"):
                await conn.call("nope", 1)
            with pytest.raises(CallTimeout):
                await conn.call("sleep", 5, timeout=0.1)
            with pytest.raises(FrameTooLarge):
                await conn.call("echo", bytes(2 << 20))  # refused locally; nothing sent
            with pytest.raises(NotEncodable):
                await conn.call("echo", {1.5j})
            await conn.notify("note", "fire and forget")
            await got_note.wait()
            assert seen == [(client.node_id, "fire and forget")]
            assert await conn.call("echo", "still up") == "still up"  # none of the above broke the connection


@trio_test(10)
async def test_rpc_protocol_violation_closes_only_that_connection(net_log: ListRecords) -> None:
    server, client = NodeIdentity.generate(), NodeIdentity.generate()
    async with running_server(server, allow_any) as port:
        channel = await initiate(await trio.open_tcp_stream(HOST, port), client, expected_peer=server.node_id)
        await channel.send("not rpc at all")
        with pytest.raises(ChannelClosed):
            await channel.receive()
        assert "not an rpc message" in await wait_for_log(net_log, "dropped connection")
        async with open_peer_link(client, HOST, port, server.node_id) as link:
            assert await link.call("echo", 1) == 1


@trio_test(15)
async def test_backpressure_a_busy_server_stops_reading_and_the_sender_blocks() -> None:
    server, client = NodeIdentity.generate(), NodeIdentity.generate()
    gate = trio.Event()
    running = 0
    most = 0
    done = 0

    async def work(peer: NodeId, params: Any) -> None:
        nonlocal running, most, done
        running += 1
        most = max(most, running)
        await gate.wait()
        running -= 1
        done += 1

    async with running_server(server, allow_any, {"work": work}, max_in_flight=2) as port:
        channel = await initiate(await trio.open_tcp_stream(HOST, port), client, expected_peer=server.node_id)
        async with open_rpc(channel) as conn:
            sent = 0
            payload = bytes(256 * 1024)

            async def sender() -> None:
                nonlocal sent
                for _ in range(200):  # 50 MiB: far more than the socket buffers hold
                    await conn.notify("work", payload)
                    sent += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
                await trio.sleep(0.5)
                stalled_at = sent
                await trio.sleep(0.3)
                assert sent == stalled_at < 200, "the sender was never pushed back"
                assert most == 2 and running == 2
                gate.set()  # the sender resumes by itself
            while done < 200:  # every message is handled once the gate opens, none lost
                await trio.sleep(0.01)
    assert most == 2  # never more than max_in_flight at a time


# -- peer links ------------------------------------------------------------------------------------


def test_backoff_grows_is_capped_and_jittered() -> None:
    backoff = Backoff(0.1, 1.0, random.Random(7))
    delays = [backoff.next() for _ in range(12)]
    steps = [0.1, 0.2, 0.4, 0.8] + [1.0] * 8
    assert all(step / 2 <= d <= step for d, step in zip(delays, steps, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule
    backoff.reset()
    assert backoff.next() <= 0.1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


@trio_test(20)
async def test_peer_link_waits_for_the_server_and_recovers_after_a_restart(net_log: ListRecords) -> None:
    server, client = NodeIdentity.generate(), NodeIdentity.generate()
    port = _free_port()
    link = PeerLink(client, HOST, port, server.node_id, backoff_initial=0.02, backoff_max=0.2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        results: list[Any] = []

        async def early_call() -> None:
            results.append(await link.call("echo", "queued while down", timeout=5))

        nursery.start_soon(early_call)
        await trio.sleep(0.2)  # a few refused connection attempts
        assert not link.connected and "connect failed" in (link.last_error or "")

        async with running_server(server, allow_any, port=port):
            with trio.fail_after(3):
                while not results:
                    await trio.sleep(0.01)
            assert results == ["queued while down"] and link.connects == 1

        # server gone: calls wait (bounded) and time out
        with pytest.raises((CallTimeout, ConnectionLost)):
            await link.call("echo", "nobody home", timeout=0.3)
        await wait_for_log(net_log, "lost")

        async with running_server(server, allow_any, port=port):
            assert await link.call("echo", "back", timeout=5) == "back"
            assert link.connects == 2
        nursery.cancel_scope.cancel()


@trio_test(10)
async def test_peer_link_never_talks_to_the_wrong_node() -> None:
    server, impostor, client = (NodeIdentity.generate() for _ in range(3))
    async with running_server(impostor, allow_any) as port:
        async with open_peer_link(client, HOST, port, server.node_id, backoff_initial=0.02, backoff_max=0.1) as link:
            with pytest.raises(CallTimeout):
                await link.call("echo", 1, timeout=0.3)
            assert link.connects == 0 and "wrong peer" in (link.last_error or "")
