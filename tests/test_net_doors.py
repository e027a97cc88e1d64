"""The server's doors (issue 20): connection limits per key, idle timeouts, bounded handshakes,
and handler errors answered and logged as bad requests.  Real sockets on 127.0.0.1.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
from net_support import HANDLERS, HOST, ListRecords, running_server, trio_test

from missive.net import (
    ConnectionLost,
    Limits,
    NodeId,
    NodeIdentity,
    Refused,
    RemoteError,
    RpcConnection,
    allow_any,
    initiate,
    open_rpc,
)


@asynccontextmanager
async def connected(port: int, identity: NodeIdentity, server: NodeIdentity) -> AsyncIterator[RpcConnection]:
    channel = await initiate(await trio.open_tcp_stream(HOST, port), identity, expected_peer=server.node_id)
    async with open_rpc(channel) as conn:
        yield conn


async def answer(port: int, identity: NodeIdentity, server: NodeIdentity) -> str:
    """What the server says to one ``echo`` on a new connection as ``identity``: "hi" or its refusal."""
    async with connected(port, identity, server) as conn:
        try:
            return str(await conn.call("echo", "hi", timeout=5))
        except RemoteError as exc:
            return exc.message


async def holds(conn: RpcConnection) -> bool:
    """Whether the server answers on ``conn`` (False: it refused or closed the connection)."""
    try:
        return await conn.call("echo", "hi", timeout=5) == "hi"
    except (RemoteError, ConnectionLost):
        return False


@trio_test(20)
async def test_one_key_cannot_take_every_connection(net_log: ListRecords) -> None:
    server, greedy, other, member = (NodeIdentity.generate() for _ in range(4))
    limits = Limits(max_connections=8, max_per_key=4, idle_timeout=None,
                    is_privileged=lambda node_id: node_id == member.node_id)
    async with running_server(server, allow_any, limits=limits) as port, AsyncExitStack() as stack:
        greedy_conns = [await stack.enter_async_context(connected(port, greedy, server)) for _ in range(6)]
        answered = [await holds(conn) for conn in greedy_conns]
        assert answered == [True] * 4 + [False] * 2  # the key's limit, not the server's
        refusal = await answer(port, greedy, server)
        assert refusal == f"too many connections from key {greedy.node_id[:8].hex()}: 4 is the limit per key"
        # everybody else still gets in, and gets answers
        other_conn = await stack.enter_async_context(connected(port, other, server))
        assert await other_conn.call("whoami") == other.node_id
        # fill the ordinary pool with other keys: one more ordinary key is turned away...
        for _ in range(3):
            filler = NodeIdentity.generate()
            assert await holds(await stack.enter_async_context(connected(port, filler, server)))
        assert await answer(port, NodeIdentity.generate(), server) == "server busy: already 8 client connections"
        # ...but a privileged key (a cluster member) is counted apart
        member_conn = await stack.enter_async_context(connected(port, member, server))
        assert await member_conn.call("whoami") == member.node_id
    refusals = [m for m in net_log.messages(logging.WARNING) if "refused connection" in m]
    assert any("4 is the limit per key" in m for m in refusals)


@trio_test(20)
async def test_an_idle_connection_is_closed_and_a_busy_one_is_not(net_log: ListRecords) -> None:
    server, client, member = (NodeIdentity.generate() for _ in range(3))
    limits = Limits(idle_timeout=0.3, is_privileged=lambda node_id: node_id == member.node_id)
    async with running_server(server, allow_any, limits=limits) as port:
        async with connected(port, client, server) as conn:
            assert await conn.call("echo", 1) == 1
            # a request running longer than the idle timeout keeps the connection
            assert await conn.call("sleep", 0.6) == "slept"
            assert await conn.call("echo", 2) == 2
            await trio.sleep(0.8)  # idle: closed by the server
            with pytest.raises(ConnectionLost):
                await conn.call("echo", 3, timeout=5)
        async with connected(port, member, server) as conn:  # members are never idle-closed
            await trio.sleep(0.8)
            assert await conn.call("echo", 4) == 4
    assert any("disconnected (idle for 0.3 s)" in m for m in net_log.messages(logging.INFO))


@trio_test(20)
async def test_half_open_handshakes_are_bounded_and_time_out(net_log: ListRecords) -> None:
    server, client = NodeIdentity.generate(), NodeIdentity.generate()
    limits = Limits(max_handshakes=2)
    async with running_server(server, allow_any, limits=limits, handshake_timeout=0.5) as port:
        silent = [await trio.open_tcp_stream(HOST, port) for _ in range(2)]  # connect, never say hello
        await trio.sleep(0.1)
        with pytest.raises(Exception):  # noqa: B017 - turned away at once: no handshake slot left
            with trio.fail_after(2):
                await initiate(await trio.open_tcp_stream(HOST, port), client, expected_peer=server.node_id)
        assert any("2 handshakes under way" in m for m in net_log.messages(logging.WARNING))
        for stream in silent:  # the handshake timeout frees the slots
            with trio.fail_after(3):
                assert await stream.receive_some(100) == b""
            await stream.aclose()
        async with connected(port, client, server) as conn:
            assert await conn.call("echo", "in") == "in"


async def bad_types(peer: NodeId, params: Any) -> Any:
    return params["address"] + 1  # a caller sending junk makes this fail, not the handler's author


async def refusing(peer: NodeId, params: Any) -> Any:
    raise Refused("refusing: address must be 20 bytes, not 19")


async def buggy(peer: NodeId, params: Any) -> Any:
    raise ZeroDivisionError("a real bug")


@trio_test(10)
async def test_bad_requests_are_one_line_and_only_bugs_get_a_traceback(net_log: ListRecords) -> None:
    server, client = NodeIdentity.generate(), NodeIdentity.generate()
    handlers = {**HANDLERS, "bad_types": bad_types, "refusing": refusing, "buggy": buggy}
    async with running_server(server, allow_any, handlers) as port, connected(port, client, server) as conn:
        with pytest.raises(RemoteError) as info:
            await conn.call("refusing")
        assert info.value.message == "refusing: address must be 20 bytes, not 19"  # exactly the handler's line
        for junk, expected in (([1], "TypeError: "), ({}, "KeyError: missing 'address'"),
                               ({"address": "x"}, "TypeError: ")):
            with pytest.raises(RemoteError) as info:
                await conn.call("bad_types", junk)
            assert info.value.message.startswith(expected) and "\n" not in info.value.message
        with pytest.raises(RemoteError, match="ZeroDivisionError: a real bug"):
            await conn.call("buggy")
        assert await conn.call("echo", "still here") == "still here"
    records = [r for r in net_log.records if r.name == "missive.net.rpc"]
    bad = [r for r in records if "bad_types" in r.getMessage() or "refusing" in r.getMessage()]
    assert len(bad) == 4 and all(r.exc_info is None and r.levelno == logging.INFO for r in bad)
    (bug,) = [r for r in records if "buggy" in r.getMessage()]
    assert bug.levelno == logging.ERROR and bug.exc_info is not None  # a bug keeps its traceback
