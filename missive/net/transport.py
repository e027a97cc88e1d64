"""The top of the stack: a listening server and outgoing peer links.

:func:`serve` accepts TCP connections, runs the responder handshake on each
and then serves RPC on it.  Every connection lives in its own task with its
own error handling: a peer that is unknown, sends garbage, fails decryption
or breaks the protocol loses *its* connection (the reason is logged at
WARNING) and nothing else is affected.  Even a bug in our own per-connection
code is logged and contained, because the listener must outlive any peer.

The doors are bounded so that no one caller can lock the others out (see
:class:`Limits`): handshakes under way are few and time out; each
authenticated key may hold only so many connections, and all ordinary keys
together only so many; a connection with nothing going on is closed after
an idle timeout.  Privileged keys (a cluster's members and its operator) are
counted apart, with a higher limit per key and no idle timeout, so a crowd
of clients never keeps the cluster's own links out.

:class:`PeerLink` keeps one outgoing connection to one known peer.  It
reconnects forever with capped exponential backoff and jitter (so a cluster
restarting together does not reconnect in lock-step), and callers never see
the connection itself: :meth:`PeerLink.call` and :meth:`PeerLink.notify` put
the message on a bounded queue and wait — for the link to come up, for queue
space, for the answer — up to their timeout.  The bounded queue is the
backpressure: when the peer is slow or gone, callers block instead of
memory growing.

Delivery is at most once.  A message still in the queue when a connection
drops goes out on the next connection; a call already sent when it drops
fails with :class:`ConnectionLost`, because we cannot know whether the peer
ran it.  Retrying is the caller's decision.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from missive.identity import NodeId, NodeIdentity, short_id
from missive.net.channel import SecureChannel
from missive.net.errors import (
    CallTimeout,
    ChannelError,
    ConnectionLost,
    FrameTooLarge,
    HandshakeError,
    NetError,
    NotEncodable,
)
from missive.net.frames import MAX_FRAME
from missive.net.handshake import HANDSHAKE_TIMEOUT, IsAllowed, initiate, respond
from missive.net.rpc import CALL_TIMEOUT, ERROR, MAX_IN_FLIGHT, REQUEST, Handler, Pending, RpcConnection

log = logging.getLogger(__name__)

#: Authenticated connections of ordinary (not privileged) keys a server holds at once, all keys together.
MAX_CONNECTIONS = 256
#: Authenticated connections one ordinary key may hold at once.
MAX_PER_KEY = 16
#: Authenticated connections one privileged key (a member, the operator) may hold at once.
MAX_PER_PRIVILEGED_KEY = 128
#: Connections still in the handshake at once (each is bounded by the handshake timeout too).
MAX_HANDSHAKES = 128
#: Seconds an ordinary key's connection may sit idle (nothing received, nothing running) before it is closed.
IDLE_TIMEOUT = 60.0
#: How long a refused connection waits for its first request, to answer it with the reason.
_REFUSAL_GRACE = 1.0
#: A session that lasted at least this long resets the reconnect backoff.
_STABLE_AFTER = 1.0


class Backoff:
    """Reconnect delays: exponential from ``initial``, capped at ``maximum``, with "equal jitter".

    Each delay is drawn uniformly from [d/2, d] for the current step d, so
    links that broke together spread out instead of retrying in lock-step,
    yet never retry sooner than half the step.
    """

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"need 0 < initial <= maximum, got {initial}, {maximum}")
        self.initial = initial
        self.maximum = maximum
        self._step = initial
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The delay before the next attempt; the step then doubles (up to the cap)."""
        delay = self._step / 2 + self._rng.uniform(0, self._step / 2)
        self._step = min(self._step * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._step = self.initial


def _address(stream: trio.SocketStream) -> str:
    try:
        host, port, *_ = stream.socket.getpeername()
    except OSError:
        return "?"
    return f"{host}:{port}"


def _nobody(node_id: NodeId) -> bool:
    return False


@attrs.frozen
class Limits:
    """How many connections a server holds, and for how long; see the module docstring.

    ``is_privileged(node_id)`` picks the keys counted apart (a cluster's members and
    operator): ``max_per_privileged_key`` each, not in ``max_connections``, no idle timeout.
    """

    max_connections: int = MAX_CONNECTIONS
    max_per_key: int = MAX_PER_KEY
    max_per_privileged_key: int = MAX_PER_PRIVILEGED_KEY
    max_handshakes: int = MAX_HANDSHAKES
    idle_timeout: float | None = IDLE_TIMEOUT
    is_privileged: Callable[[NodeId], bool] = _nobody

    def __attrs_post_init__(self) -> None:
        if min(self.max_connections, self.max_per_key, self.max_per_privileged_key, self.max_handshakes) < 1:
            raise ValueError("connection limits must be at least 1")
        if self.idle_timeout is not None and self.idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive (or None: never)")


class _Doors:
    """Who holds which connections right now, and whether one more may come in."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.handshakes = 0
        self.ordinary = 0  # authenticated connections of ordinary keys
        self.per_key: Counter[NodeId] = Counter()

    def refusal(self, node_id: NodeId) -> str | None:
        """Why ``node_id`` may not have one more connection now (None: it may)."""
        if self.limits.is_privileged(node_id):
            if self.per_key[node_id] >= self.limits.max_per_privileged_key:
                return f"key {short_id(node_id)} already has {self.per_key[node_id]} connections"
            return None
        if self.per_key[node_id] >= self.limits.max_per_key:
            return (f"too many connections from key {short_id(node_id)}: "
                    f"{self.limits.max_per_key} is the limit per key")
        if self.ordinary >= self.limits.max_connections:
            return f"server busy: already {self.ordinary} client connections"
        return None

    def enter(self, node_id: NodeId) -> bool:
        """Count a connection in; whether it is an ordinary key's (so it gets the idle timeout)."""
        self.per_key[node_id] += 1
        ordinary = not self.limits.is_privileged(node_id)
        self.ordinary += ordinary
        return ordinary

    def leave(self, node_id: NodeId, ordinary: bool) -> None:
        self.per_key[node_id] -= 1
        if self.per_key[node_id] <= 0:
            del self.per_key[node_id]
        self.ordinary -= ordinary


async def serve(
    identity: NodeIdentity,
    host: str,
    port: int,
    handlers: Mapping[str, Handler],
    is_allowed: IsAllowed,
    *,
    max_frame: int = MAX_FRAME,
    max_in_flight: int = MAX_IN_FLIGHT,
    max_connections: int = MAX_CONNECTIONS,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    limits: Limits | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` and serve ``handlers`` to allowed peers until cancelled.

    ``port`` 0 picks a free port; the bound port is reported through
    ``task_status`` (``port = await nursery.start(serve, ...)``).
    ``is_allowed(node_id)`` decides which authenticated nodes may connect;
    ``limits`` how many connections they may hold and for how long (default
    :class:`Limits` with ``max_connections``).
    Give ``host`` as an address ("127.0.0.1"): a name that resolves to several
    addresses gets one listener each, and with port 0 only the first is kept,
    since each would get a different port.
    """
    doors = _Doors(limits if limits is not None else Limits(max_connections=max_connections))
    listeners = await trio.open_tcp_listeners(port, host=host)
    if port == 0:
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    bound: int = listeners[0].socket.getsockname()[1]
    log.info("node %s listening on %s:%d", short_id(identity.node_id), host, bound)

    async def on_connection(stream: trio.SocketStream) -> None:
        await _serve_connection(stream, identity, handlers, is_allowed, max_frame, max_in_flight, handshake_timeout,
                                doors)

    task_status.started(bound)
    await trio.serve_listeners(on_connection, listeners)


async def _serve_connection(
    stream: trio.SocketStream,
    identity: NodeIdentity,
    handlers: Mapping[str, Handler],
    is_allowed: IsAllowed,
    max_frame: int,
    max_in_flight: int,
    handshake_timeout: float,
    doors: _Doors,
) -> None:
    """One inbound connection, start to end; logs why it ended and never raises (except cancellation)."""
    where = _address(stream)
    try:
        if doors.handshakes >= doors.limits.max_handshakes:
            log.warning("refused connection from %s: already %d handshakes under way", where, doors.handshakes)
            return
        doors.handshakes += 1
        try:
            channel = await respond(
                stream, identity, is_allowed=is_allowed, timeout=handshake_timeout, max_frame=max_frame
            )
        except HandshakeError as exc:
            log.warning("refused connection from %s: %s", where, exc.reason)
            return
        finally:
            doors.handshakes -= 1
        peer = short_id(channel.peer_id)
        refusal = doors.refusal(channel.peer_id)
        if refusal is not None:
            log.warning("refused connection from node %s at %s: %s", peer, where, refusal)
            await _refuse(channel, refusal)
            return
        ordinary = doors.enter(channel.peer_id)
        try:
            log.info("node %s connected from %s", peer, where)
            idle = doors.limits.idle_timeout if ordinary else None
            conn = RpcConnection(channel, handlers, max_in_flight=max_in_flight, idle_timeout=idle)
            try:
                await conn.run()
            except NetError as exc:
                log.warning("dropped connection from node %s at %s: %s", peer, where, exc)
            else:
                log.info("node %s at %s disconnected (%s)", peer, where, conn.closed_reason)
        finally:
            doors.leave(channel.peer_id, ordinary)
    except Exception:
        log.exception("unexpected error serving %s; connection dropped", where)
    finally:
        await trio.aclose_forcefully(stream)


async def _refuse(channel: SecureChannel, reason: str) -> None:
    """Tell a caller refused after its handshake why: its first request (if it sends one
    soon) is answered with ``reason``, so it sees that rather than a bare closed connection."""
    with trio.move_on_after(_REFUSAL_GRACE):
        try:
            message = await channel.receive()
            if isinstance(message, list) and len(message) == 4 and message[0] == REQUEST and type(message[1]) is int:
                await channel.send([ERROR, message[1], reason])
        except ChannelError:
            pass  # it went away: nothing to tell
        except NetError as exc:
            log.debug("refused caller sent something unreadable: %s", exc)


class PeerLink:
    """One outgoing, self-healing connection to a known peer.

    Run :meth:`run` in a nursery (or use :func:`open_peer_link`).  ``handlers``
    optionally serve requests the peer sends back on this connection.
    """

    def __init__(
        self,
        identity: NodeIdentity,
        host: str,
        port: int,
        peer_id: NodeId,
        *,
        handlers: Mapping[str, Handler] | None = None,
        queue_size: int = 128,
        call_timeout: float = CALL_TIMEOUT,
        connect_timeout: float = 5.0,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        max_frame: int = MAX_FRAME,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.identity = identity
        self.host = host
        self.port = port
        self.peer_id = peer_id
        self.handlers = handlers
        self.call_timeout = call_timeout
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_frame = max_frame
        self.max_in_flight = max_in_flight
        self._queue_in, self._queue_out = trio.open_memory_channel[Pending](queue_size)
        self._connection: RpcConnection | None = None
        self._up = trio.Event()
        self._running = False
        #: Successful connections so far (handshake completed).
        self.connects = 0
        #: Why the last connection attempt or session ended, for diagnostics.
        self.last_error: str | None = None

    def __repr__(self) -> str:
        state = "up" if self.connected else "down"
        return f"<PeerLink to {short_id(self.peer_id)} at {self.host}:{self.port} {state}>"

    @property
    def connected(self) -> bool:
        return self._connection is not None

    async def wait_connected(self) -> None:
        """Wait until the link is up (wrap in ``trio.fail_after`` to bound it)."""
        while self._connection is None:
            await self._up.wait()

    # -- sending ---------------------------------------------------------------

    async def call(self, method: str, params: Any = None, *, timeout: float | None = None) -> Any:
        """Call ``method`` on the peer; waits for the link, queue space and the answer.

        Everything together is bounded by ``timeout`` (default ``call_timeout``):
        :class:`CallTimeout` after it.  :class:`RemoteError` if the peer
        answered with an error, :class:`ConnectionLost` if the connection
        dropped after the call was sent.
        """
        return await self._submit(Pending(method, params), timeout)

    async def notify(self, method: str, params: Any = None, *, timeout: float | None = None) -> None:
        """Send a one-way message; returns once it is written to a live connection.

        :class:`CallTimeout` if that did not happen within ``timeout``.
        """
        await self._submit(Pending(method, params, expects_reply=False), timeout)

    async def start(self, method: str, params: Any = None) -> Pending:
        """Queue a call to ``method`` and return it without waiting for the answer
        (``await pending.wait()`` gives it; ``pending.abandon()`` gives up on it).

        For a caller that keeps several calls in flight and needs them sent in
        the order it made them: the link sends its queue in order, on one
        connection at a time.  Waits only for queue space (backpressure).  A
        call still queued when its connection fails is sent on the next one,
        after the ones lost with the old connection: a caller for whom order
        matters has the receiver check it (missive/replicas/delivery.py does).
        """
        pending = Pending(method, params)
        await self._queue_in.send(pending)
        return pending

    async def _submit(self, pending: Pending, timeout: float | None) -> Any:
        limit = self.call_timeout if timeout is None else timeout
        with trio.move_on_after(limit):
            await self._queue_in.send(pending)  # blocks when the queue is full: backpressure
            return await pending.wait()
        pending.abandon()
        raise CallTimeout(pending.method, limit)

    # -- the connection loop -----------------------------------------------------

    async def run(self) -> None:
        """Connect, serve the queue, reconnect on failure; forever, until cancelled."""
        if self._running:
            raise RuntimeError("PeerLink.run() is already running")
        self._running = True
        backoff = Backoff(self.backoff_initial, self.backoff_max)
        quiet = False  # after the first logged failure, repeats of it go to DEBUG
        where = f"{short_id(self.peer_id)} at {self.host}:{self.port}"
        try:
            while True:
                try:
                    conn = await self._connect()
                except (OSError, HandshakeError, trio.TooSlowError) as exc:
                    reason = exc.reason if isinstance(exc, HandshakeError) else (str(exc) or type(exc).__name__)
                    self.last_error = f"connect failed: {reason}"
                    log.log(
                        logging.DEBUG if quiet else logging.WARNING, "link to %s: %s; retrying", where, self.last_error
                    )
                    quiet = True
                except Exception:
                    self.last_error = "connect failed: unexpected error"
                    log.exception("link to %s: unexpected error while connecting; retrying", where)
                else:
                    quiet = False
                    self.connects += 1
                    started = trio.current_time()
                    log.info("link to %s is up", where)
                    try:
                        reason = await self._session(conn)
                    except Exception:
                        log.exception("link to %s: unexpected error; reconnecting", where)
                        reason = "unexpected error"
                    self.last_error = reason
                    log.warning("link to %s lost: %s; reconnecting", where, reason)
                    if trio.current_time() - started >= _STABLE_AFTER:
                        backoff.reset()
                await trio.sleep(backoff.next())
        finally:
            self._running = False

    async def _connect(self) -> RpcConnection:
        with trio.fail_after(self.connect_timeout):
            stream = await trio.open_tcp_stream(self.host, self.port)
        channel = await initiate(
            stream, self.identity, expected_peer=self.peer_id, timeout=self.handshake_timeout, max_frame=self.max_frame
        )
        return RpcConnection(channel, self.handlers, max_in_flight=self.max_in_flight, call_timeout=self.call_timeout)

    async def _session(self, conn: RpcConnection) -> str:
        """Serve one connection until it ends; the reason it ended."""
        reason = "connection closed"
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, conn)
                self._connection = conn
                self._up.set()
                try:
                    await conn.run()
                    reason = conn.closed_reason or reason
                except NetError as exc:
                    reason = str(exc)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._connection = None
            self._up = trio.Event()
            await conn.aclose()
        return reason

    async def _pump(self, conn: RpcConnection) -> None:
        """Move queued messages onto the connection until it fails."""
        async for pending in self._queue_out:
            if pending.abandoned:
                continue
            try:
                await conn.send_request(pending)
            except (NotEncodable, FrameTooLarge) as exc:
                pending.set_error(exc)  # this message's fault; the connection is fine
            except ConnectionLost as exc:
                # The channel is already closed, so run() ends too, with the real reason.
                pending.set_error(exc)
                return


@asynccontextmanager
async def open_peer_link(
    identity: NodeIdentity, host: str, port: int, peer_id: NodeId, **options: Any
) -> AsyncIterator[PeerLink]:
    """A :class:`PeerLink` running in the background for the ``async with`` block."""
    link = PeerLink(identity, host, port, peer_id, **options)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        try:
            yield link
        finally:
            nursery.cancel_scope.cancel()
