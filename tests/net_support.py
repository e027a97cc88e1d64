"""Shared helpers for the transport tests: time-bounded trio tests, servers, a meddling proxy.

pytest-trio is not a dependency, so async tests are plain functions wrapped
by :func:`trio_test`, which runs them under ``trio.run`` inside a
``trio.fail_after``: a hung test fails in seconds instead of hanging CI.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio
from hypothesis import strategies as st

from missive.net import FrameDecoder, Handler, IsAllowed, NodeId, NodeIdentity, allow_only, serve
from missive.net.frames import HEADER

HOST = "127.0.0.1"

#: Any value msgpack carries unchanged (lists, not tuples; no NaN, which is not equal to itself).
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=50)
    | st.binary(max_size=50),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=10) | st.binary(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


def trio_test(timeout: float = 10.0) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., None]]:
    """Run an async test function under ``trio.run``, failing after ``timeout`` seconds."""

    def wrap(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
        @functools.wraps(fn)
        def test(*args: Any, **kwargs: Any) -> None:
            async def main() -> None:
                with trio.fail_after(timeout):
                    await fn(*args, **kwargs)

            trio.run(main)

        return test

    return wrap


async def echo(peer: NodeId, params: Any) -> Any:
    return params


async def whoami(peer: NodeId, params: Any) -> bytes:
    return peer


async def fail(peer: NodeId, params: Any) -> None:
    raise ValueError("boom")


async def sleep(peer: NodeId, params: Any) -> str:
    await trio.sleep(params)
    return "slept"


HANDLERS: dict[str, Handler] = {"echo": echo, "whoami": whoami, "fail": fail, "sleep": sleep}


@asynccontextmanager
async def running_server(
    identity: NodeIdentity,
    is_allowed: IsAllowed,
    handlers: Mapping[str, Handler] = HANDLERS,
    *,
    port: int = 0,
    **options: Any,
) -> AsyncIterator[int]:
    """Serve in the background for the block; yields the bound port; cancelled at the end."""
    async with trio.open_nursery() as nursery:
        bound: int = await nursery.start(
            functools.partial(serve, identity, HOST, port, handlers, is_allowed, **options)
        )
        try:
            yield bound
        finally:
            nursery.cancel_scope.cancel()


def frames_of(data: bytes) -> list[bytes]:
    """Split a byte string into whole frames (header included)."""
    decoder = FrameDecoder(1 << 31)
    decoder.feed(data)
    out = []
    while (body := decoder.next_body()) is not None:
        out.append(HEADER.pack(len(body)) + body)
    return out


Meddle = Callable[[int, bytes], list[bytes]]


@asynccontextmanager
async def meddling_proxy(target_port: int, meddle: Meddle) -> AsyncIterator[int]:
    """A TCP proxy to ``target_port`` that passes client->server frames through ``meddle``.

    ``meddle(index, frame)`` gets each whole frame the client sends (0 is the
    hello, 1 the handshake auth, 2 the first encrypted frame...) and returns
    the frames to forward instead (none to drop it, two to replay it...).
    Server->client bytes pass untouched.
    """

    async def forward_frames(src: trio.SocketStream, dst: trio.SocketStream) -> None:
        decoder = FrameDecoder(1 << 31)
        index = 0
        while data := await src.receive_some(65536):
            decoder.feed(data)
            while (body := decoder.next_body()) is not None:
                for frame in meddle(index, HEADER.pack(len(body)) + body):
                    await dst.send_all(frame)
                index += 1

    async def forward_bytes(src: trio.SocketStream, dst: trio.SocketStream) -> None:
        while data := await src.receive_some(65536):
            await dst.send_all(data)

    async def handle(client: trio.SocketStream) -> None:
        async with client, await trio.open_tcp_stream(HOST, target_port) as server:
            try:
                async with trio.open_nursery() as nursery:

                    async def one_way(
                        fn: Callable[..., Awaitable[None]], src: trio.SocketStream, dst: trio.SocketStream
                    ) -> None:
                        await fn(src, dst)
                        nursery.cancel_scope.cancel()  # either side closing ends the proxied connection

                    nursery.start_soon(one_way, forward_frames, client, server)
                    nursery.start_soon(one_way, forward_bytes, server, client)
            except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host=HOST))
        try:
            yield listeners[0].socket.getsockname()[1]
        finally:
            nursery.cancel_scope.cancel()


class ListRecords(logging.Handler):
    """Collects log records (from any thread) for assertions."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock:
            self.records.append(record)

    def messages(self, level: int = logging.DEBUG) -> list[str]:
        with self._lock:
            return [r.getMessage() for r in self.records if r.levelno >= level]


class ThreadedNode:
    """A live server in its own thread and trio loop, for tests driven from synchronous code.

    Hypothesis examples are synchronous, so the fuzz tests keep one server up
    for the whole module and throw every example at it.
    """

    def __init__(self, identity: NodeIdentity, allowed: set[NodeId], **options: Any) -> None:
        self.identity = identity
        self.port = 0
        self.failure: BaseException | None = None
        self._options = options
        self._allowed = allowed
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread = threading.Thread(target=self._thread_main, name="net-test-node", daemon=True)

    def start(self, timeout: float = 10.0) -> ThreadedNode:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("test node did not start")
        if self.failure is not None:
            raise RuntimeError("test node failed to start") from self.failure
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.failure is None

    def stop(self, timeout: float = 10.0) -> None:
        if self._token is not None and self._scope is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("test node did not stop")

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # recorded for the test to report
            self.failure = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            self._scope = scope
            async with trio.open_nursery() as nursery:
                self.port = await nursery.start(
                    functools.partial(
                        serve, self.identity, HOST, 0, HANDLERS, allow_only(self._allowed), **self._options
                    )
                )
                self._ready.set()
