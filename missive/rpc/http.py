"""The endpoint's HTTP/1.1 and WebSocket server: **h11** and **wsproto** driven by trio, one task a connection.

Why not a general server: hypercorn's trio worker (h11 underneath too) cost the endpoint about 0.36 ms
of CPU a request before any method ran (ASGI scope and message dicts, a task group and an idle-timeout
task per request, its event classes), more than the Python API's whole cost of a message
(examples/ETHEREUM_TOOLS.md, Speed).  This module keeps the two well-kept protocol engines that such
servers are built on (h11: HTTP/1.1 parsing and framing; wsproto: the WebSocket handshake and frames,
both MIT, python-hyper) and drops the layers between them and the JSON-RPC application.

What it promises, each answered with a JSON body (``app.refusal``) and never a traceback:

- keep-alive and pipelining: requests on one connection are answered in order;
- the request line and headers: at most :data:`MAX_HEADER` bytes → 431 (a malformed request → 400),
  then the connection closes;
- the body: a ``Content-Length`` over ``app.max_body`` is refused before it is read, a chunked body as
  soon as it grows past it → 413; the connection closes after the unread rest is drained for a moment,
  so the client reads the answer instead of a reset;
- time: an idle connection is closed after :data:`KEEP_ALIVE` seconds; a request's line, headers and
  body must arrive within :data:`REQUEST_TIMEOUT` seconds of its first byte (a slowloris client
  holds one task for that long, no more), and at most :data:`MAX_CONNECTIONS` are open at once;
- ``GET`` with ``Upgrade: websocket`` becomes a WebSocket (a bad handshake → 400); a message over
  ``app.max_body`` is cut to ``max_body + 1`` characters, for the application to refuse;
- a connection that breaks, or fails in any way, ends alone: the server goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Protocol

import attrs
import h11
import trio
import wsproto
import wsproto.events as ws_events
import wsproto.utilities

from missive.errors import MissiveError

log = logging.getLogger(__name__)

#: the request line and headers, in bytes
MAX_HEADER = 64 * 1024
#: seconds an idle keep-alive connection stays open
KEEP_ALIVE = 30.0
#: seconds a request (line, headers, body) may take to arrive once it started
REQUEST_TIMEOUT = 30.0
#: connections open at once; one more is closed as soon as it is accepted
MAX_CONNECTIONS = 1024
#: after a refused body, how long and how much of the unread rest is read and dropped before closing
DRAIN_SECONDS = 2.0
DRAIN_BYTES = 16 << 20
RECEIVE = 1 << 16

Receive = Callable[[], Awaitable[str | None]]
SendText = Callable[[str], Awaitable[None]]


class App(Protocol):
    """What the server serves (:class:`missive.rpc.server.RpcApp`)."""

    max_body: int

    async def http(self, method: str, client: str, body: bytes) -> tuple[int, bytes]:
        """The status and JSON body answering one request (``method``: POST, GET, OPTIONS...)."""

    def refusal(self, status: int, message: str) -> bytes:
        """The JSON body of a request the server refused itself (``status``: 400, 413, 431...)."""

    async def websocket(self, client: str, receive: Receive, send: SendText) -> None:
        """Serve one WebSocket: ``receive`` gives each text message, None once the peer is gone."""


class Timeout(MissiveError):
    """A request did not arrive in time (the connection is closed without an answer)."""


class Limits:
    """The server's timeouts and limits (module constants unless a test wants them short)."""

    def __init__(self, *, keep_alive: float = KEEP_ALIVE, request_timeout: float = REQUEST_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS, max_header: int = MAX_HEADER) -> None:
        self.keep_alive = keep_alive
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self.max_header = max_header


HEAD = (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\naccess-control-allow-origin: *\r\n"
        b"access-control-allow-headers: content-type\r\naccess-control-allow-methods: POST, GET, OPTIONS\r\n"
        b"content-length: %d\r\n")
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
PHRASES = {int(status): status.phrase.encode() for status in HTTPStatus}


def response(status: int, payload: bytes, *, close: bool, head: bool = False) -> bytes:
    """A whole response's bytes.  Written here rather than through h11's ``send``: the status line and
    headers are ours and fixed (nothing to validate), and h11's state machine for them cost about as
    much as parsing the request (22 µs of a 45 µs cycle); see :meth:`Connection.run` for keep-alive."""
    data = HEAD % (status, PHRASES.get(status, b""), len(payload)) + (b"connection: close\r\n\r\n" if close else b"\r\n")
    return data if head or status == 204 else data + payload


@attrs.frozen
class Head:
    """What the server needs from a request's headers, read in one pass."""

    size: int  # the target and headers, in bytes
    length: int | None  # Content-Length (h11 has already refused a malformed or conflicting one)
    keep_alive: bool  # HTTP/1.1 without Connection: close, as h11 decides it
    websocket: bool  # GET with Upgrade: websocket

    @classmethod
    def of(cls, request: h11.Request) -> Head:
        size, length, close, upgrade = len(request.target), None, request.http_version < b"1.1", False
        for name, value in request.headers:
            size += len(name) + len(value) + 4
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = close or b"close" in value.lower()
            elif name == b"upgrade":
                upgrade = b"websocket" in value.lower()
        return cls(size, length, not close, upgrade and request.method == b"GET")


class Connection:
    """One client connection: HTTP requests in order, or one WebSocket after an upgrade."""

    def __init__(self, app: App, stream: trio.SocketStream, limits: Limits) -> None:
        self.app = app
        self.stream = stream
        self.limits = limits
        self.h11 = self._parser()
        #: whether an answer to the current request has begun (then an error can only close)
        self.answering = False
        try:
            self.client = str(stream.socket.getpeername()[0])
        except OSError:
            self.client = "?"

    async def run(self) -> None:
        try:
            while await self._one():
                # h11 parses each request with a parser of its own, handed what arrived after the last
                # one (pipelined requests): our responses do not go through h11's send, so its state
                # for our side never reaches DONE, and start_next_cycle would refuse
                data, closed = self.h11.trailing_data
                self.h11 = self._parser()
                self.answering = False
                if data:
                    self.h11.receive_data(data)
                if closed:
                    self.h11.receive_data(b"")  # (h11's word for the end of the stream)
        except h11.RemoteProtocolError as exc:
            await self._refuse(exc.error_status_hint, f"bad HTTP request: {exc}")
        except (Timeout, trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def _parser(self) -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header)

    async def _event(self, deadline: float) -> object:
        """The next h11 event, reading from the socket until ``deadline`` (then :class:`Timeout`)."""
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            with trio.move_on_at(deadline):
                self.h11.receive_data(await self.stream.receive_some(RECEIVE))
                continue
            raise Timeout

    async def _one(self) -> bool:
        """Read and answer one request; whether the connection goes on."""
        event = await self._event(trio.current_time() + self.limits.keep_alive)
        if not isinstance(event, h11.Request):
            return False  # the client closed (h11.ConnectionClosed) between requests
        deadline = trio.current_time() + self.limits.request_timeout
        head = Head.of(event)
        if head.size > self.limits.max_header:  # (h11 only limits a head that arrives in parts)
            await self._refuse(431, f"request line and headers over the {self.limits.max_header}-byte limit")
            return False
        if head.websocket:
            await self._websocket(event, deadline)
            return False
        limit = self.app.max_body
        if head.length is not None and head.length > limit:
            await self._refuse(413, f"request body over the {limit}-byte limit")
            return False
        if self.h11.they_are_waiting_for_100_continue:
            await self.stream.send_all(CONTINUE)
        body = bytearray()
        while True:
            part = await self._event(deadline)
            if isinstance(part, h11.Data):
                body += part.data
                if len(body) > limit:
                    await self._refuse(413, f"request body over the {limit}-byte limit")
                    return False
            elif isinstance(part, h11.EndOfMessage):
                break
            else:
                return False  # the client went away halfway through its body: nothing to answer
        status, payload = await self.app.http(event.method.decode("ascii", "replace"), self.client, bytes(body))
        self.answering = True
        await self.stream.send_all(response(status, payload, close=not head.keep_alive, head=event.method == b"HEAD"))
        return head.keep_alive

    async def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` and close: what the client still sends is read and dropped for a moment."""
        if self.answering:
            return  # an answer had begun: all there is left to do is close
        self.answering = True
        try:
            await self.stream.send_all(response(status, self.app.refusal(status, message), close=True))
            await self.stream.send_eof()
            with trio.move_on_after(DRAIN_SECONDS):
                dropped = 0
                while dropped < DRAIN_BYTES:
                    data = await self.stream.receive_some(RECEIVE)
                    if not data:
                        break
                    dropped += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    async def _websocket(self, request: h11.Request, deadline: float) -> None:
        while not isinstance(await self._event(deadline), (h11.EndOfMessage, h11.ConnectionClosed)):
            pass  # (a body on an upgrade request is read and ignored)
        if self.h11.their_state is h11.CLOSED:
            return
        ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        try:
            ws.initiate_upgrade_connection(list(request.headers), request.target)
            events = list(ws.events())
        except wsproto.utilities.RemoteProtocolError as exc:
            await self._refuse(400, f"bad WebSocket handshake: {exc}")
            return
        if not events or not isinstance(events[0], ws_events.Request):
            await self._refuse(400, "bad WebSocket handshake")
            return
        await self.stream.send_all(ws.send(ws_events.AcceptConnection()))
        session = WebSocket(ws, self.stream, self.app.max_body)
        trailing, _closed = self.h11.trailing_data
        if trailing:
            ws.receive_data(trailing)
        await self.app.websocket(self.client, session.receive, session.send)
        await session.close()


class WebSocket:
    """Text messages in and out of one accepted WebSocket (pings answered, fragments joined)."""

    def __init__(self, ws: wsproto.WSConnection, stream: trio.SocketStream, max_message: int) -> None:
        self.ws = ws
        self.stream = stream
        self.max_message = max_message
        self.lock = trio.Lock()  # the application's pushes and our pongs share the socket
        self.closed = False
        self.parts: list[str] = []
        self.size = 0

    async def _send_bytes(self, data: bytes) -> None:
        if data:
            async with self.lock:
                await self.stream.send_all(data)

    async def send(self, text: str) -> None:
        if self.closed:
            raise trio.ClosedResourceError("the WebSocket is closed")
        await self._send_bytes(self.ws.send(ws_events.Message(data=text)))

    async def receive(self) -> str | None:
        """The next whole text message (bytes decoded as UTF-8), or None once the peer is gone."""
        while not self.closed:
            for event in self.ws.events():
                found = await self._handle(event)
                if found is not None:
                    return found
            if self.closed:
                break
            try:
                data = await self.stream.receive_some(RECEIVE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self.closed = True
                break
            try:
                self.ws.receive_data(data)
            except wsproto.utilities.RemoteProtocolError:
                self.closed = True  # a frame that breaks the protocol: the connection ends
        return None

    async def _handle(self, event: ws_events.Event) -> str | None:
        if isinstance(event, ws_events.Message):
            part = event.data if isinstance(event.data, str) else bytes(event.data).decode("utf-8", "replace")
            if self.size <= self.max_message:  # past the limit the rest is dropped: max + 1 tells the app
                part = part[:self.max_message + 1 - self.size]
                self.parts.append(part)
                self.size += len(part)
            if not event.message_finished:
                return None
            text = "".join(self.parts)
            self.parts, self.size = [], 0
            return text
        if isinstance(event, ws_events.Ping):
            await self._send_bytes(self.ws.send(event.response()))
        elif isinstance(event, ws_events.CloseConnection):
            self.closed = True
            await self._send_bytes(self.ws.send(event.response()))
        return None

    async def close(self) -> None:
        if self.ws.state is wsproto.connection.ConnectionState.OPEN:
            try:
                await self._send_bytes(self.ws.send(ws_events.CloseConnection(code=1000)))
            except (wsproto.utilities.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        self.closed = True


class Server:
    """Accepts connections and runs each in its own task; nothing a connection does stops the server."""

    def __init__(self, app: App, limits: Limits | None = None) -> None:
        self.app = app
        self.limits = limits or Limits()
        self.open = 0

    async def connection(self, stream: trio.SocketStream) -> None:
        try:
            if self.open >= self.limits.max_connections:
                return  # (closed at once, below)
            self.open += 1
            try:
                await Connection(self.app, stream, self.limits).run()
            finally:
                self.open -= 1
        except Exception:  # a bug met by one connection is logged; the others and the server go on
            log.exception("HTTP connection from %s failed", _peer(stream))
        finally:
            await trio.aclose_forcefully(stream)


def _peer(stream: trio.SocketStream) -> str:
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return "?"


def url_of(listener: trio.SocketListener) -> str:
    host, port = listener.socket.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve_http(app: App, host: str, port: int, *, limits: Limits | None = None,
                     task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` on ``host``:``port`` (0: a free port) until cancelled; ``task_status.started``
    gets the URLs listened on."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    server = Server(app, limits)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, server.connection, listeners)
        task_status.started([url_of(listener) for listener in listeners])

