"""Hostile input against a live node: it must drop the offender and keep serving everyone else.

One server runs for the whole module in its own thread (see
``net_support.ThreadedNode``); hypothesis throws garbage bytes, malformed
frames, junk handshakes and, from an authenticated peer, junk messages at it.
After every example a legitimate client must still get an answer, the
server thread must be alive, and nothing may have reached the server's
"unexpected error" path (ERROR log): every hostile case has to be a
*handled* failure with a logged reason.  Each example runs under its own
``trio.fail_after``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import nacl.public
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from net_support import HOST, ListRecords, ThreadedNode, msgpack_values

from missive.net import FrameReader, HandshakeError, NetError, NodeIdentity, encode_frame, initiate, open_rpc
from missive.net.frames import HEADER

SERVER = NodeIdentity.generate()
FRIEND = NodeIdentity.generate()  # allowed to connect
EXAMPLE_TIMEOUT = 5.0

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[ThreadedNode, ListRecords]]:
    records = ListRecords()
    logger = logging.getLogger("missive.net")
    old_level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    live = ThreadedNode(SERVER, {FRIEND.node_id}, handshake_timeout=1.0).start()
    try:
        yield live, records
    finally:
        live.stop()
        logger.removeHandler(records)
        logger.setLevel(old_level)


def run(fn: Any, *args: Any) -> Any:
    async def main() -> Any:
        with trio.fail_after(EXAMPLE_TIMEOUT):
            return await fn(*args)

    return trio.run(main)


async def send_raw(port: int, data: bytes, wait_for_close: bool = False) -> None:
    """Open a connection, send ``data``, half-close; optionally wait until the server hangs up."""
    async with await trio.open_tcp_stream(HOST, port) as stream:
        try:
            await stream.send_all(data)
            await stream.send_eof()
            if wait_for_close:
                while await stream.receive_some(65536):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the server already hung up on us: fine


async def legit_call(port: int) -> Any:
    stream = await trio.open_tcp_stream(HOST, port)
    channel = await initiate(stream, FRIEND, expected_peer=SERVER.node_id)
    async with open_rpc(channel) as conn:
        return await conn.call("echo", {"ok": True}, timeout=EXAMPLE_TIMEOUT)


def assert_still_serving(node: tuple[ThreadedNode, ListRecords]) -> None:
    live, records = node
    assert live.alive, live.failure
    assert run(legit_call, live.port) == {"ok": True}
    errors = records.messages(logging.ERROR)
    assert not errors, errors  # hostile input must never reach the "unexpected error" path


# -- unauthenticated junk --------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=4096))
def test_garbage_bytes(node: tuple[ThreadedNode, ListRecords], data: bytes) -> None:
    run(send_raw, node[0].port, data, True)
    assert_still_serving(node)


frame_like = st.one_of(
    st.binary(max_size=600).map(lambda body: HEADER.pack(len(body)) + body),  # honest length, random body
    st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=200)).map(
        lambda t: HEADER.pack(t[0]) + t[1]
    ),  # lying length
    msgpack_values.map(encode_frame),  # well-formed msgpack of the wrong shape
)


@FUZZ
@given(frames=st.lists(frame_like, min_size=1, max_size=4))
def test_malformed_frames(node: tuple[ThreadedNode, ListRecords], frames: list[bytes]) -> None:
    run(send_raw, node[0].port, b"".join(frames), True)
    assert_still_serving(node)


LOW_ORDER = [
    bytes(32),
    b"\x01" + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
]


def _ephemeral() -> bytes:
    return bytes(nacl.public.PrivateKey.generate().public_key)


JUNK_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "version": st.one_of(st.integers(), st.text(max_size=5), st.none()),
    "role": st.one_of(st.sampled_from(["responder", "INITIATOR"]), st.text(max_size=10), st.integers()),
    "id": st.one_of(st.just(SERVER.node_id), st.binary(max_size=40), st.integers()),
    "eph": st.one_of(st.sampled_from(LOW_ORDER), st.binary(max_size=40), st.none()),
    "nonce": st.one_of(st.binary(max_size=40), st.none()),
    "extra": msgpack_values,
}


@st.composite
def hello_fields(draw: st.DrawFn) -> dict[str, Any]:
    """A hello that is valid, or valid but for one or two fields (changed or missing).

    Starting from a valid hello lets the fuzzer reach the later checks
    (unknown peer, low-order keys, the signature) instead of always failing
    the first field it looks at.
    """
    hello: dict[str, Any] = {
        "version": 1,
        "role": "initiator",
        "id": draw(st.sampled_from([FRIEND.node_id, NodeIdentity.generate().node_id])),  # allowed or unknown
        "eph": _ephemeral(),
        "nonce": draw(st.binary(min_size=32, max_size=32)),
    }
    for field in draw(st.lists(st.sampled_from(sorted(JUNK_FIELDS)), max_size=2, unique=True)):
        if draw(st.booleans()) and field in hello:
            del hello[field]
        else:
            hello[field] = draw(JUNK_FIELDS[field])
    return hello


auth_like = st.one_of(
    st.fixed_dictionaries({"sig": st.binary(max_size=80)}),
    st.builds(lambda: {"sig": NodeIdentity.generate().sign(b"anything")}),
    msgpack_values,
)


async def junk_handshake(port: int, hello: dict[str, Any], auth: Any, then: bytes) -> None:
    async with await trio.open_tcp_stream(HOST, port) as stream:
        try:
            await stream.send_all(encode_frame(hello))
            reader = FrameReader(stream)
            with trio.move_on_after(1.5):  # the server may reply with its hello + auth, or hang up
                await reader.receive_body()
            await stream.send_all(encode_frame(auth) + then)
            await stream.send_eof()
            while await stream.receive_some(65536):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, NetError):
            pass


@FUZZ
@given(hello=hello_fields(), auth=auth_like, then=st.binary(max_size=200))
def test_junk_handshakes(node: tuple[ThreadedNode, ListRecords], hello: dict[str, Any], auth: Any, then: bytes) -> None:
    run(junk_handshake, node[0].port, hello, auth, then)
    assert_still_serving(node)


@settings(max_examples=20, deadline=None, database=None)
@given(hello=hello_fields())
def test_junk_handshake_from_the_dialling_side(hello: dict[str, Any]) -> None:
    """A hostile *server* cannot crash a dialler either: it gets a HandshakeError, nothing else."""

    async def scenario() -> None:
        async def hostile(stream: trio.SocketStream) -> None:
            async with stream:
                try:
                    await FrameReader(stream).receive_body()
                    await stream.send_all(encode_frame({**hello, "role": hello.get("role", "responder")}))
                except (trio.BrokenResourceError, OSError, NetError):
                    pass

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, hostile, 0)
            port = listeners[0].socket.getsockname()[1]
            with pytest.raises(HandshakeError):
                await initiate(
                    await trio.open_tcp_stream(HOST, port), FRIEND, expected_peer=SERVER.node_id, timeout=1.0
                )
            nursery.cancel_scope.cancel()

    run(scenario)


# -- authenticated junk ----------------------------------------------------------------------------

rpc_like = st.one_of(
    msgpack_values,
    st.tuples(st.integers(-2, 5), st.integers(), st.text(max_size=10), msgpack_values).map(list),
    st.tuples(st.sampled_from([1, 2]), st.integers(0, 10), msgpack_values).map(list),
    st.tuples(st.just(3), st.sampled_from(["echo", "fail", "nope"]), msgpack_values).map(list),
)


async def authenticated_junk(port: int, messages: list[Any], raw_tail: bytes) -> None:
    stream = await trio.open_tcp_stream(HOST, port)
    channel = await initiate(stream, FRIEND, expected_peer=SERVER.node_id)
    async with channel:
        try:
            for message in messages:
                await channel.send(message)
            await stream.send_all(raw_tail)  # bytes after the sealed frames: never valid ciphertext
            await stream.send_eof()
            while True:
                await channel.receive()  # drain replies until the server hangs up
        except (NetError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the server hung up on us, as it should


@FUZZ
@given(messages=st.lists(rpc_like, max_size=6), raw_tail=st.binary(max_size=300))
def test_junk_from_an_authenticated_peer(
    node: tuple[ThreadedNode, ListRecords], messages: list[Any], raw_tail: bytes
) -> None:
    run(authenticated_junk, node[0].port, messages, raw_tail)
    assert_still_serving(node)


# -- many idle connections -------------------------------------------------------------------------


def test_idle_connections_do_not_block_others(node: tuple[ThreadedNode, ListRecords]) -> None:
    """50 connections that never say a word: a real peer is still served at once, and they time out."""

    async def scenario() -> None:
        port = node[0].port
        streams = [await trio.open_tcp_stream(HOST, port) for _ in range(50)]
        try:
            with trio.fail_after(1.0):
                assert await legit_call(port) == {"ok": True}
            with trio.fail_after(3.0):  # handshake_timeout is 1 s
                for stream in streams:
                    assert await stream.receive_some(10) == b""
        finally:
            for stream in streams:
                await stream.aclose()

    run(scenario)
    assert_still_serving(node)
