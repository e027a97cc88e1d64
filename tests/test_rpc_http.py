"""The endpoint's own HTTP/1.1 + WebSocket server (missive/rpc/http.py, h11 and wsproto on trio) at the edges
a general server used to cover: pipelined requests, a slowloris client, a half-sent body, an oversized
header or body, Expect: 100-continue, bad and good WebSocket upgrades, too many connections.  The server
runs the real JSON-RPC application (RpcApp) over a small method table, on a real socket on 127.0.0.1,
with short timeouts; every test ends by checking the server still answers."""

from __future__ import annotations

import functools
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import h11
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from missive.rpc.http import Limits, serve_http
from missive.rpc.server import RpcApp

MAX_BODY = 4096


class Methods:
    """What RpcApp asks of the Ethereum methods: here two of them."""

    async def call(self, method: str, params: object) -> Any:
        if method == "eth_chainId":
            return "0x7"
        if method == "echo":
            return params
        from missive.rpc.methods import METHOD_NOT_FOUND, RpcError

        raise RpcError(METHOD_NOT_FOUND, f"the method {method} does not exist/is not available")


@pytest.fixture()
def server(caplog: pytest.LogCaptureFixture) -> Iterator[tuple[str, int]]:
    app = RpcApp(Methods(), max_body=MAX_BODY, rate=float("inf"))  # type: ignore[arg-type]
    limits = Limits(keep_alive=1.0, request_timeout=1.0, max_connections=3, max_header=8192)
    ready = threading.Event()
    where: dict[str, Any] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            where["scope"], where["token"] = nursery.cancel_scope, trio.lowlevel.current_trio_token()
            where["urls"] = await nursery.start(functools.partial(serve_http, app, "127.0.0.1", 0, limits=limits))
            ready.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert ready.wait(10)
    host, port = where["urls"][0].removeprefix("http://").rsplit(":", 1)
    try:
        yield host, int(port)
        assert answers(host, int(port)), "the server stopped answering"
        failures = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert failures == [], failures  # hostile input is answered, never a logged failure
    finally:
        trio.from_thread.run_sync(where["scope"].cancel, trio_token=where["token"])
        thread.join(10)
        assert not thread.is_alive()


def request(body: bytes, *, method: bytes = b"POST", headers: list[tuple[bytes, bytes]] | None = None) -> bytes:
    head = [(b"host", b"x"), (b"content-type", b"application/json")]
    if headers is None:
        headers = [(b"content-length", b"%d" % len(body))]
    lines = [method + b" / HTTP/1.1"] + [name + b": " + value for name, value in head + headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def call(ident: int, method: str = "eth_chainId", params: Any = None) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": ident, "method": method, "params": params or []}).encode()


def read_responses(sock: socket.socket, count: int, timeout: float = 10,
                   methods: list[str] | None = None) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` responses read with an h11 client (status, headers, body); fewer if the server closes.
    ``methods``: those of the requests answered (POST unless said: a HEAD answer has no body)."""
    sock.settimeout(timeout)
    methods = methods or ["POST"] * count
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=methods[0], target="/", headers=[("host", "x"), ("content-length", "0")]))
    client.send(h11.EndOfMessage())
    out: list[tuple[int, dict[str, str], bytes]] = []
    status, headers, body = 0, {}, b""
    while len(out) < count:
        try:
            event = client.next_event()
        except h11.RemoteProtocolError:  # the server closed without (the rest of) an answer
            break
        if event is h11.NEED_DATA:
            client.receive_data(sock.recv(65536))
            continue
        if isinstance(event, h11.ConnectionClosed):
            break
        elif isinstance(event, h11.Response):
            status, headers, body = event.status_code, {k.decode(): v.decode() for k, v in event.headers}, b""
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            out.append((status, headers, body))
            if client.our_state is h11.MUST_CLOSE or client.their_state is h11.MUST_CLOSE:
                break
            client.start_next_cycle()
            method = methods[len(out)] if len(out) < len(methods) else "POST"
            client.send(h11.Request(method=method, target="/", headers=[("host", "x"), ("content-length", "0")]))
            client.send(h11.EndOfMessage())
    return out


def connect(host: str, port: int) -> socket.socket:
    return socket.create_connection((host, port), timeout=10)


def answers(host: str, port: int) -> bool:
    with connect(host, port) as sock:
        sock.sendall(request(call(1)))
        (status, _, body), = read_responses(sock, 1)
        return status == 200 and json.loads(body)["result"] == "0x7"


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds (whatever it says first)."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_pipelined_requests_are_answered_in_order_on_one_connection(server: tuple[str, int]) -> None:
    with connect(*server) as sock:
        sock.sendall(b"".join(request(call(i, "echo", [i])) for i in range(5)))
        found = read_responses(sock, 5)
        assert [json.loads(body)["result"] for _, _, body in found] == [[i] for i in range(5)]
        sock.sendall(request(call(9)))  # and the connection stays open for more
        assert json.loads(read_responses(sock, 1)[0][2])["id"] == 9


def test_a_slowloris_client_is_cut_off_and_others_are_served_meanwhile(server: tuple[str, int]) -> None:
    slow = connect(*server)
    slow.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    for _ in range(3):  # dribbling headers does not keep it alive past the request timeout
        assert answers(*server)
        slow.sendall(b"X-A: b\r\n")
        time.sleep(0.2)
    assert closed_by_server(slow, 5) and time.monotonic() - started < 5
    slow.close()


def test_an_idle_keep_alive_connection_is_closed(server: tuple[str, int]) -> None:
    with connect(*server) as sock:
        sock.sendall(request(call(1)))
        assert read_responses(sock, 1)[0][0] == 200
        assert closed_by_server(sock, 5)


def test_a_half_sent_body_is_not_answered_and_changes_nothing(server: tuple[str, int]) -> None:
    with connect(*server) as sock:  # the client stops halfway and waits: the request times out
        sock.sendall(request(b'{"jsonrpc"', headers=[(b"content-length", b"100")]))
        assert read_responses(sock, 1) == []
    with connect(*server) as sock:  # the client stops halfway and closes its side: a 400 at most
        sock.sendall(request(b'{"jsonrpc"', headers=[(b"content-length", b"100")]))
        sock.shutdown(socket.SHUT_WR)
        assert all(status == 400 for status, _, _ in read_responses(sock, 1))


def test_an_oversized_header_gets_431_and_a_json_error(server: tuple[str, int]) -> None:
    with connect(*server) as sock:
        sock.sendall(request(call(1), headers=[(b"x-big", b"a" * 20_000), (b"content-length", b"40")]))
        (status, headers, body), = read_responses(sock, 1)
        assert status == 431 and headers["connection"] == "close"
        assert json.loads(body)["error"]["code"] == -32600


def test_garbage_gets_400_and_a_json_error(server: tuple[str, int]) -> None:
    with connect(*server) as sock:
        sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        (status, _, body), = read_responses(sock, 1)
        assert status == 400 and "bad HTTP request" in json.loads(body)["error"]["message"]


def test_a_body_over_the_limit_is_refused_before_it_is_read(server: tuple[str, int]) -> None:
    with connect(*server) as sock:  # a declared length over the limit: 413 at once, the body never read
        sock.sendall(request(b"", headers=[(b"content-length", b"%d" % (10 * MAX_BODY))]))
        (status, headers, body), = read_responses(sock, 1)
        assert status == 413 and json.loads(body)["error"]["code"] == -32600 and headers["connection"] == "close"
    with connect(*server) as sock:  # a chunked body growing past it: 413, then the connection closes
        chunk = b"%x\r\n%s\r\n" % (MAX_BODY, b"1" * MAX_BODY)
        sock.sendall(request(chunk * 2, headers=[(b"transfer-encoding", b"chunked")]))
        assert read_responses(sock, 1)[0][0] == 413


def test_expect_100_continue_is_honoured(server: tuple[str, int]) -> None:
    body = call(4)
    with connect(*server) as sock:
        sock.sendall(request(b"", headers=[(b"content-length", b"%d" % len(body)), (b"expect", b"100-continue")]))
        sock.settimeout(10)
        assert sock.recv(100).startswith(b"HTTP/1.1 100 ")
        sock.sendall(body)
        (status, _, answer), = read_responses(sock, 1)
        assert status == 200 and json.loads(answer)["id"] == 4


def test_other_methods(server: tuple[str, int]) -> None:
    with connect(*server) as sock:
        sock.sendall(request(b"", method=b"OPTIONS") + request(b"", method=b"GET") + request(b"", method=b"HEAD"))
        (options, cors, empty), (get, _, refusal), (head, _, nothing) = read_responses(
            sock, 3, methods=["OPTIONS", "GET", "HEAD"])
        assert (options, empty, cors["access-control-allow-origin"]) == (204, b"", "*")
        assert get == 405 and json.loads(refusal)["error"]["code"] == -32600
        assert (head, nothing) == (405, b"")


def test_too_many_connections_are_closed_at_once(server: tuple[str, int]) -> None:
    held = [connect(*server) for _ in range(3)]
    time.sleep(0.2)
    with connect(*server) as extra:
        assert closed_by_server(extra, 5)
    held.pop().close()
    time.sleep(0.2)
    with connect(*server) as sock:
        sock.sendall(request(call(2)))
        assert read_responses(sock, 1)[0][0] == 200
    for sock in held:
        sock.close()


def test_bad_websocket_upgrades_get_400(server: tuple[str, int]) -> None:
    for headers in ([(b"upgrade", b"websocket"), (b"connection", b"upgrade")],  # no key, no version
                    [(b"upgrade", b"websocket"), (b"connection", b"upgrade"), (b"sec-websocket-version", b"13")]):
        with connect(*server) as sock:
            sock.sendall(request(b"", method=b"GET", headers=headers))
            (status, _, body), = read_responses(sock, 1)
            assert status == 400 and "WebSocket" in json.loads(body)["error"]["message"]


def test_websocket_calls_fragments_and_oversized_messages(server: tuple[str, int]) -> None:
    ws_client = pytest.importorskip("websockets.sync.client")
    with ws_client.connect(f"ws://{server[0]}:{server[1]}", max_size=None) as ws:
        ws.send(call(1).decode())
        assert json.loads(ws.recv(timeout=10))["result"] == "0x7"
        text = call(2, "echo", ["x" * 100]).decode()
        ws.send([text[:10], text[10:50], text[50:]])  # one message in three frames
        assert json.loads(ws.recv(timeout=10))["result"] == ["x" * 100]
        ws.send("y" * (3 * MAX_BODY))
        assert "byte limit" in json.loads(ws.recv(timeout=10))["error"]["message"]
        ws.send("{broken")
        assert json.loads(ws.recv(timeout=10))["error"]["code"] == -32700
        ws.ping()
        ws.send(call(3).decode())
        assert json.loads(ws.recv(timeout=10))["id"] == 3


def test_a_client_that_says_close_or_speaks_http_1_0_gets_its_answer_then_the_connection_closes(
        server: tuple[str, int]) -> None:
    body = call(5)
    for head in (b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n", b"POST / HTTP/1.0\r\n"):
        with connect(*server) as sock:
            sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            sock.settimeout(10)
            answer = b""
            while chunk := sock.recv(65536):  # read until the server closes
                answer += chunk
            status_line, _, rest = answer.partition(b"\r\n")
            assert status_line == b"HTTP/1.1 200 OK" and b"connection: close" in rest
            assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["id"] == 5


HTTPISH = st.lists(st.sampled_from([b"POST / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n",
                                    b"Content-Length: 5\r\n", b"Content-Length: -1\r\n", b"Transfer-Encoding: chunked\r\n",
                                    b"Upgrade: websocket\r\n", b"Connection: upgrade\r\n", b"Expect: 100-continue\r\n",
                                    b"5\r\nhello\r\n0\r\n\r\n", b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}',
                                    b"\x00\xff", b" \t", b"\n"]), max_size=12).map(b"".join)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.one_of(st.binary(max_size=300), HTTPISH))
def test_any_bytes_then_a_close_leave_the_server_answering(server: tuple[str, int], data: bytes) -> None:
    """Whatever a client sends before closing its side, the server answers what it can, closes, and
    logs no failure (the fixture checks that, and that it still answers, after the examples)."""
    with connect(*server) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        for status, _, _ in read_responses(sock, 5):
            assert status in (200, 204, 400, 405, 413, 431)
        assert closed_by_server(sock, 5)
