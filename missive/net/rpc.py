"""Request/response multiplexing over one secure channel.

Messages are msgpack lists, tagged by an integer kind::

    [0, id, method, params]   request (expects a response with the same id)
    [1, id, result]           response: success
    [2, id, message]          response: error (handler raised, unknown method, ...)
    [3, method, params]       notification (no response)

Both ends of a connection may call and serve; ids are per caller, and the
kind tells requests from responses, so the two directions never collide.

Backpressure: at most ``max_in_flight`` requests and notifications run at
once per connection.  When they are all busy the reader *stops reading*; the
kernel's receive buffer fills, TCP's window closes and the peer's sends
block.  Nothing is queued without bound and no message is dropped.

A consequence to keep in mind: responses travel on the same stream as
requests, so if both ends saturate each other with calls *on one
connection* they can stall until call timeouts fire.  The peer-link design
(:mod:`missive.net.transport`) uses one connection per direction — my calls
go out on the link I dialled, yours on the one you dialled — which keeps the
flow acyclic.

Failures are contained: an unknown method or a handler exception becomes an
error response (the connection stays up); a message that is not valid RPC
(:class:`ProtocolViolation`) or any channel failure ends the connection, and
every call still waiting on it fails with :class:`ConnectionLost`.

A handler's exception is either the caller's fault or ours, and is logged
accordingly.  :class:`Refused` (a handler turning a request away on purpose:
bad parameters, a key that may not do this) and the errors bad parameters
cause in handler code (``TypeError``, ``ValueError``, ``KeyError``,
``PermissionError``...) are *bad requests*: answered with one line, logged
with one line and no traceback, since anyone can send junk and a log full of
tracebacks hides the real problems.  Anything else is a bug in the handler:
answered likewise, but logged at ERROR with its traceback.

Idle connections: with ``idle_timeout`` set, a connection on which nothing
has arrived for that long and no request is being handled or awaited is
closed (a server's defence against clients that hold connections open).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from missive.errors import MissiveError
from missive.identity import NodeId, short_id
from missive.net.channel import SecureChannel
from missive.net.errors import (
    CallTimeout,
    ChannelClosed,
    ChannelError,
    ConnectionLost,
    FrameTooLarge,
    NetError,
    NotEncodable,
    ProtocolViolation,
    RemoteError,
)

log = logging.getLogger(__name__)

REQUEST, RESULT, ERROR, NOTIFY = 0, 1, 2, 3

#: A handler gets the caller's authenticated node id and the params; its return
#: value (any msgpack-able value) is the result.
Handler = Callable[[NodeId, Any], Awaitable[Any]]

CALL_TIMEOUT = 10.0
MAX_IN_FLIGHT = 64
#: Error messages sent back to a caller are cut to this many characters.
_MAX_ERROR_TEXT = 1000


class Pending:
    """One outgoing call (or notification) on its way: the caller waits on it.

    Separate from the connection so a :class:`~missive.net.transport.PeerLink`
    can queue it while no connection exists yet.
    """

    def __init__(self, method: str, params: Any = None, *, expects_reply: bool = True) -> None:
        self.method = method
        self.params = params
        self.expects_reply = expects_reply
        #: Set when the caller gave up (timeout); a queued call is then skipped.
        self.abandoned = False
        self._done = trio.Event()
        self._result: Any = None
        self._error: BaseException | None = None
        self._forget: Callable[[], None] | None = None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def set_result(self, value: Any) -> None:
        if not self.done:
            self._result = value
            self._done.set()

    def set_error(self, error: BaseException) -> None:
        if not self.done:
            self._error = error
            self._done.set()

    async def wait(self) -> Any:
        """The result, or raise the error (:class:`RemoteError`, :class:`ConnectionLost`...)."""
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result

    def abandon(self) -> None:
        """The caller stopped waiting: skip it if still queued, forget its id if sent."""
        self.abandoned = True
        if self._forget is not None:
            self._forget()
            self._forget = None


class Refused(MissiveError):
    """A handler turns a request away on purpose (bad parameters, a caller not allowed to do this).

    The caller gets exactly this text, so write it for them: one line saying
    what was wrong.  Logged at INFO in one line, without a traceback: a
    refusal is the handler working, not failing.
    """


class NotAllowed(Refused, PermissionError):
    """The caller's key may not make this request."""


class _UnknownMethod(Refused):
    """A request named a method nobody handles (answered with an error, not logged loudly)."""


#: Exceptions that, raised by a handler, mean the request was bad (its parameters did not
#: fit what the handler expects, or the caller may not do this), not that the handler broke.
BAD_REQUEST_ERRORS: tuple[type[Exception], ...] = (
    TypeError, ValueError, KeyError, IndexError, PermissionError, OverflowError, NetError)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, Refused):
        text = str(exc)
    elif isinstance(exc, RemoteError):  # a peer's answer to a request forwarded there: passed on as it is
        text = exc.message
    elif isinstance(exc, KeyError) and len(exc.args) == 1:
        text = f"KeyError: missing {exc.args[0]!r}"  # str(KeyError) is just the key: say what is wrong
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return (text.splitlines() or [""])[0][:_MAX_ERROR_TEXT]


class RpcConnection:
    """Calls, notifications and request handling over one :class:`SecureChannel`.

    Run :meth:`run` in a task (or use :func:`open_rpc`); it reads until the
    connection ends.  :meth:`call` and :meth:`notify` may be used from any
    number of tasks meanwhile.
    """

    def __init__(
        self,
        channel: SecureChannel,
        handlers: Mapping[str, Handler] | None = None,
        *,
        max_in_flight: int = MAX_IN_FLIGHT,
        call_timeout: float = CALL_TIMEOUT,
        idle_timeout: float | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive (or None: never)")
        self.channel = channel
        #: Seconds without traffic or work after which :meth:`run` closes the connection (None: never).
        self.idle_timeout = idle_timeout
        self._last_active = 0.0  # trio time of the last message received or request finished
        self.handlers: Mapping[str, Handler] = handlers or {}
        self.call_timeout = call_timeout
        self.max_in_flight = max_in_flight
        self._slots = trio.Semaphore(max_in_flight)
        self._ids = itertools.count(1)
        self._pending: dict[int, Pending] = {}
        self._cancel = trio.CancelScope()
        self._closed_reason: str | None = None
        self._finished = trio.Event()
        self._started = False
        self._closing = False

    def __repr__(self) -> str:
        state = f"closed: {self._closed_reason}" if self._closed_reason else "open"
        return f"<RpcConnection peer={short_id(self.peer_id)} {state}>"

    @property
    def peer_id(self) -> NodeId:
        return self.channel.peer_id

    @property
    def closed_reason(self) -> str | None:
        return self._closed_reason

    @property
    def in_flight(self) -> int:
        """Incoming requests/notifications being handled right now."""
        return self.max_in_flight - self._slots.value

    # -- caller side -----------------------------------------------------------

    async def call(self, method: str, params: Any = None, *, timeout: float | None = None) -> Any:
        """Call ``method`` on the peer and return its result.

        Raises :class:`RemoteError` if the peer answered with an error,
        :class:`CallTimeout` after ``timeout`` seconds (default
        ``call_timeout``), :class:`ConnectionLost` if the connection ended
        first, and :class:`NotEncodable` / :class:`FrameTooLarge` if
        ``params`` cannot be sent.  A timeout while the send itself is
        blocked (the peer is not reading) closes the connection, since half
        a frame may have gone out.
        """
        limit = self.call_timeout if timeout is None else timeout
        pending = Pending(method, params)
        with trio.move_on_after(limit):
            await self.send_request(pending)
            return await pending.wait()
        pending.abandon()
        raise CallTimeout(method, limit)

    async def notify(self, method: str, params: Any = None) -> None:
        """Send a one-way notification; returns once it is written to the socket."""
        self._check_open()
        try:
            await self.channel.send([NOTIFY, method, params])
        except ChannelError as exc:
            raise ConnectionLost(self._lost_text(str(exc))) from exc

    async def send_request(self, pending: Pending) -> None:
        """Send ``pending`` as a request; its result arrives through ``pending``.

        The low-level half of :meth:`call`, for callers that queue calls
        (a peer link).  Notifications (``expects_reply=False``) are sent and
        resolved at once.
        """
        try:
            await self._send_request(pending)
        except BaseException as exc:
            # Whatever happened, whoever waits on ``pending`` must not wait forever.
            pending.set_error(exc if isinstance(exc, NetError) else ConnectionLost(self._lost_text("send interrupted")))
            raise

    async def _send_request(self, pending: Pending) -> None:
        if not pending.expects_reply:
            await self.notify(pending.method, pending.params)
            pending.set_result(None)
            return
        self._check_open()
        call_id = next(self._ids)
        self._pending[call_id] = pending

        def forget() -> None:
            self._pending.pop(call_id, None)

        pending._forget = forget
        try:
            await self.channel.send([REQUEST, call_id, pending.method, pending.params])
        except (NotEncodable, FrameTooLarge):
            self._pending.pop(call_id, None)
            raise  # nothing was sent; the channel is intact
        except ChannelError as exc:
            self._pending.pop(call_id, None)
            raise ConnectionLost(self._lost_text(str(exc))) from exc
        except BaseException:
            self._pending.pop(call_id, None)
            raise

    # -- reading and serving ---------------------------------------------------

    async def run(self) -> None:
        """Read and dispatch messages until the connection ends.

        Returns normally when the peer closes cleanly or :meth:`aclose` is
        called; raises a :class:`NetError` saying why otherwise (bad frame,
        failed decryption, protocol violation...).  Either way the channel
        is closed, handlers still running are cancelled and waiting calls
        fail with :class:`ConnectionLost`.
        """
        if self._started:
            raise RuntimeError("RpcConnection.run() called twice")
        self._started = True
        reason = "closed locally"
        error: NetError | None = None
        self._last_active = trio.current_time()
        try:
            with self._cancel:
                async with trio.open_nursery() as handlers:
                    if self.idle_timeout is not None:
                        handlers.start_soon(self._close_when_idle, self.idle_timeout)
                    try:
                        await self._read_loop(handlers)
                    except ChannelClosed:
                        reason = "peer closed the connection"
                    except NetError as exc:
                        if self._closing:  # our own aclose() broke the read: not a failure
                            reason = "closed locally"
                        else:
                            reason, error = str(exc), exc
                    finally:
                        handlers.cancel_scope.cancel()
        finally:
            self._shut(reason)
            await trio.aclose_forcefully(self.channel)
            self._finished.set()
        if error is not None:
            raise error

    async def aclose(self) -> None:
        """End the connection: stop reading, cancel handlers, close the channel."""
        self._closing = True
        self._shut("closed locally")
        self._cancel.cancel()
        await trio.aclose_forcefully(self.channel)

    async def wait_closed(self) -> None:
        """Wait until :meth:`run` has finished."""
        await self._finished.wait()

    async def _close_when_idle(self, timeout: float) -> None:
        """Close the connection once it has been idle for ``timeout`` s: nothing received, no
        request being handled, no call of ours awaiting its answer.  A client holding a
        connection it does not use would otherwise keep one of the server's slots forever."""
        while True:
            idle_for = trio.current_time() - self._last_active
            busy = self.in_flight > 0 or bool(self._pending)
            if not busy and idle_for >= timeout:
                self._shut(f"idle for {timeout:g} s")
                self._closing = True
                self._cancel.cancel()
                return
            # busy: finishing updates _last_active, so look again a little later
            await trio.sleep(timeout / 4 if busy else timeout - idle_for)

    async def _read_loop(self, handlers: trio.Nursery) -> None:
        while True:
            message = await self.channel.receive()
            self._last_active = trio.current_time()
            if not isinstance(message, list) or not message or type(message[0]) is not int:
                raise ProtocolViolation(f"not an rpc message: {_describe(message)}")
            kind = message[0]
            if kind == REQUEST and len(message) == 4 and type(message[1]) is int and isinstance(message[2], str):
                # Backpressure: with every slot busy we stop reading right here.
                await self._slots.acquire()
                handlers.start_soon(self._serve, message[1], message[2], self._begin(message[2], message[3]))
            elif kind == NOTIFY and len(message) == 3 and isinstance(message[1], str):
                await self._slots.acquire()
                handlers.start_soon(self._serve, None, message[1], self._begin(message[1], message[2]))
            elif kind in (RESULT, ERROR) and len(message) == 3 and type(message[1]) is int:
                self._resolve(kind, message[1], message[2])
            else:
                raise ProtocolViolation(f"malformed rpc message of kind {kind}: {_describe(message)}")

    def _resolve(self, kind: int, call_id: int, value: Any) -> None:
        pending = self._pending.pop(call_id, None)
        if pending is None:
            log.debug("response to unknown or abandoned call %d from %s", call_id, short_id(self.peer_id))
            return
        pending._forget = None
        if kind == RESULT:
            pending.set_result(value)
        elif isinstance(value, str):
            pending.set_error(RemoteError(pending.method, value))
        else:
            pending.set_error(ProtocolViolation(f"error response with a {type(value).__name__} message"))

    def _begin(self, method: str, params: Any) -> Awaitable[Any] | BaseException:
        """Call the handler for ``method``, here in the read loop: what it does before its
        first ``await`` happens in the order the requests arrived.

        An ``async def`` handler does nothing until awaited, so for it this only
        makes the coroutine.  A plain function that returns an awaitable runs its
        synchronous part now: that is how a handler takes its place in a line
        (say, a write queue) in arrival order, which the tasks that then await
        the rest would not give (trio runs newly started tasks in no fixed order).
        """
        handler = self.handlers.get(method)
        if handler is None:
            return _UnknownMethod(f"unknown method {method!r}")
        try:
            return handler(self.peer_id, params)
        except Exception as exc:  # answered (and logged) by _serve, like one raised after an await
            return exc

    async def _serve(self, call_id: int | None, method: str, work: Awaitable[Any] | BaseException) -> None:
        """Finish one handler (:meth:`_begin` started it) and send its answer; never raises
        (except cancellation)."""
        try:
            try:
                if isinstance(work, BaseException):
                    raise work
                reply = [RESULT, call_id, await work]
            except Exception as exc:
                self._log_failure(method, exc)
                reply = [ERROR, call_id, _error_text(exc)]
            if call_id is not None:
                await self._reply(reply)
        finally:
            self._slots.release()
            self._last_active = trio.current_time()

    def _log_failure(self, method: str, exc: Exception) -> None:
        """Log a handler's exception once: one line for a bad request (the caller's doing, and
        anyone may send junk), the traceback only for what can only be a bug in the handler."""
        who = short_id(self.peer_id)
        if isinstance(exc, _UnknownMethod):
            log.debug("%s called unknown method %r", who, method)
        elif isinstance(exc, NetError):  # the handler asked another node, which failed or refused
            log.info("%s request from %s failed on the way: %s", method, who, _error_text(exc))
        elif isinstance(exc, (Refused, *BAD_REQUEST_ERRORS)):
            level = logging.WARNING if isinstance(exc, PermissionError) else logging.INFO
            log.log(level, "bad %s request from %s: %s", method, who, _error_text(exc))
        else:
            log.error("handler %r (called by %s) failed unexpectedly: a bug", method, who, exc_info=exc)

    async def _reply(self, reply: list[Any]) -> None:
        try:
            try:
                await self.channel.send(reply)
            except (NotEncodable, FrameTooLarge) as exc:
                await self.channel.send([ERROR, reply[1], f"result cannot be sent: {exc}"[:_MAX_ERROR_TEXT]])
        except ChannelError:
            pass  # the connection is gone; the reader reports why

    # -- internals -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed_reason is not None:
            raise ConnectionLost(self._lost_text(self._closed_reason))

    def _lost_text(self, reason: str) -> str:
        return f"connection to {short_id(self.peer_id)} lost: {reason}"

    def _shut(self, reason: str) -> None:
        if self._closed_reason is None:
            self._closed_reason = reason
        pending, self._pending = self._pending, {}
        for call in pending.values():
            call._forget = None
            call.set_error(ConnectionLost(self._lost_text(self._closed_reason)))


def _describe(message: Any) -> str:
    text = repr(message)
    return text if len(text) <= 80 else text[:77] + "..."


@asynccontextmanager
async def open_rpc(
    channel: SecureChannel,
    handlers: Mapping[str, Handler] | None = None,
    *,
    max_in_flight: int = MAX_IN_FLIGHT,
    call_timeout: float = CALL_TIMEOUT,
) -> AsyncIterator[RpcConnection]:
    """An :class:`RpcConnection` whose reader runs in the background for the ``async with`` block.

    A connection failure is logged (WARNING) and shows up as
    :class:`ConnectionLost` on calls; it is not raised out of the block.
    """
    conn = RpcConnection(channel, handlers, max_in_flight=max_in_flight, call_timeout=call_timeout)

    async def reader() -> None:
        try:
            await conn.run()
        except NetError as exc:
            log.warning("connection to %s ended: %s", short_id(conn.peer_id), exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        try:
            yield conn
        finally:
            await conn.aclose()
