"""``missive rpc``: Ethereum JSON-RPC 2.0 over HTTP and WebSocket for an embedded node or a cluster, under trio.

The HTTP server is :mod:`missive.rpc.http`: h11 (HTTP/1.1) and wsproto (WebSocket), the protocol
engines hypercorn and other trio/ASGI servers are built on, driven directly by trio tasks in our own
loop, so the node's runtime (its actors, rounds and group commits are trio tasks) and the endpoint
share one event loop with no asyncio underneath.  Until issue 28's speed work it was hypercorn's trio
worker, whose per-request machinery cost more CPU than the Python API's whole message
(examples/ETHEREUM_TOOLS.md, Speed); :class:`RpcApp` is the application, with no web framework.

Limits, all answered with a JSON-RPC error body and never a traceback:

- the request body: at most ``max_body`` bytes (1 MiB) → HTTP 413, code -32600;
- a batch: at most ``MAX_BATCH`` calls;
- rate: a token bucket per client address (``rate`` requests a second, bursts of twice that)
  → HTTP 429, code -32005; each call of a batch counts;
- malformed JSON → -32700; not a request object → -32600; unknown method → -32601; bad
  parameters → -32602; a failure inside a method is logged and answered -32603 without detail.

It listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from missive.mailbox.envelope import EnvelopeError
from missive.rpc.http import serve_http
from missive.rpc.methods import (
    HANDLED_WAIT,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    LIMIT_EXCEEDED,
    PARSE_ERROR,
    SERVER_ERROR,
    EthApi,
    RpcError,
)

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
MAX_BATCH = 100
DEFAULT_RATE = 500.0
SUBSCRIPTION_POLL = 0.05
MAX_SUBSCRIPTIONS = 100


class RateLimiter:
    """A token bucket per client: ``rate`` a second, at most ``burst`` at once."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, 2 * rate)
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}

    def take(self, client: str, n: int = 1) -> bool:
        if math.isinf(self.rate):
            return True
        now = self.clock()
        tokens, last = self.buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if len(self.buckets) > 10_000:  # forget idle clients rather than grow without bound
            self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < 60}
        if tokens < n:
            self.buckets[client] = (tokens, now)
            return False
        self.buckets[client] = (tokens - n, now)
        return True


def encode(payload: Any) -> bytes:
    """A JSON-RPC answer's bytes (compact)."""
    return json.dumps(payload, separators=(",", ":")).encode()


def error_response(code: int, message: str, ident: Any = None, data: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": ident, "error": error}


class RpcApp:
    """The application: POST / with a JSON-RPC request or batch, or a WebSocket (:mod:`missive.rpc.http` serves it)."""

    def __init__(self, api: EthApi, *, max_body: int = MAX_BODY, rate: float = DEFAULT_RATE) -> None:
        self.api = api
        self.max_body = max_body
        self.limiter = RateLimiter(rate)
        self.requests = 0

    async def handle_one(self, request: object) -> dict[str, Any] | None:
        if not isinstance(request, dict):
            return error_response(INVALID_REQUEST, "invalid request: expected a JSON object")
        ident = request.get("id")
        if not (ident is None or isinstance(ident, (str, int, float)) and not isinstance(ident, bool)):
            return error_response(INVALID_REQUEST, "invalid request: id must be a string, a number or null")
        method = request.get("method")
        if request.get("jsonrpc") != "2.0" or not isinstance(method, str):
            return error_response(INVALID_REQUEST, 'invalid request: expected {"jsonrpc": "2.0", "method": ...}',
                                  ident)
        notification = "id" not in request
        try:
            result = await self.api.call(method, request.get("params"))
        except RpcError as err:
            response = {"jsonrpc": "2.0", "id": ident, "error": err.as_json()}
        except EnvelopeError as err:
            response = error_response(SERVER_ERROR, str(err), ident)
        except trio.Cancelled:
            raise
        except Exception:
            log.exception("internal error in %s", method)
            response = error_response(INTERNAL_ERROR, f"internal error in {method} (logged by the node)", ident)
        else:
            response = {"jsonrpc": "2.0", "id": ident, "result": result}
        return None if notification else response

    async def handle_body(self, body: bytes, client: str, *, limited: bool = True) -> tuple[int, Any]:
        try:
            request = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            return 200, error_response(PARSE_ERROR, f"parse error: {str(exc)[:200]}")
        calls = len(request) if isinstance(request, list) else 1
        if limited and not self.limiter.take(client, max(1, calls)):
            return 429, error_response(LIMIT_EXCEEDED, "request rate limit exceeded: slow down")
        self.requests += calls
        if isinstance(request, list):
            if not request:
                return 200, error_response(INVALID_REQUEST, "invalid request: empty batch")
            if len(request) > MAX_BATCH:
                return 200, error_response(INVALID_REQUEST, f"invalid request: a batch of more than {MAX_BATCH} calls")
            responses = [r for r in [await self.handle_one(item) for item in request] if r is not None]
            return 200, responses if responses else None
        return 200, await self.handle_one(request)

    def refusal(self, status: int, message: str) -> bytes:
        """The body of a request the HTTP server refused itself (:mod:`missive.rpc.http`)."""
        return encode(error_response(LIMIT_EXCEEDED if status == 429 else INVALID_REQUEST, message))

    async def http(self, method: str, client: str, body: bytes) -> tuple[int, bytes]:
        """One HTTP request: its status and JSON body (an OPTIONS preflight: an empty one)."""
        if method == "OPTIONS":
            return 204, b""
        if method != "POST":
            return 405, encode(error_response(INVALID_REQUEST, "JSON-RPC is served by POST"))
        status, payload = await self.handle_body(body, client)
        return status, b"" if payload is None else encode(payload)

    async def websocket(self, client: str, receive: Callable[[], Awaitable[str | None]],
                        send: Callable[[str], Awaitable[None]]) -> None:
        """JSON-RPC over a WebSocket: every method, plus ``eth_subscribe`` (``newHeads``, ``logs``)
        and ``eth_unsubscribe``.  Notifications come from the block index, looked at every
        ``SUBSCRIPTION_POLL`` seconds while the connection has subscriptions."""
        subscriptions: dict[str, dict[str, Any]] = {}

        async def push(payload: Any) -> None:
            await send(encode(payload).decode())

        async def notify() -> None:
            while True:
                await trio.sleep(SUBSCRIPTION_POLL)
                if not subscriptions:
                    continue
                for ident, entry in list(subscriptions.items()):
                    for result in await self.api.subscription_changes(entry):
                        await push({"jsonrpc": "2.0", "method": "eth_subscription",
                                    "params": {"subscription": ident, "result": result}})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(notify)
            while True:
                text = await receive()
                if text is None:
                    break
                if len(text) > self.max_body:
                    await push(error_response(INVALID_REQUEST, f"message over the {self.max_body}-byte limit"))
                    continue
                try:
                    request = json.loads(text)
                except (ValueError, RecursionError) as exc:
                    await push(error_response(PARSE_ERROR, f"parse error: {str(exc)[:200]}"))
                    continue
                if not self.limiter.take(client, len(request) if isinstance(request, list) else 1):
                    await push(error_response(LIMIT_EXCEEDED, "request rate limit exceeded: slow down"))
                    continue
                if isinstance(request, dict) and request.get("method") in ("eth_subscribe", "eth_unsubscribe"):
                    await push(await self.subscription_call(request, subscriptions))
                    continue
                _, answer = await self.handle_body(text.encode(), client, limited=False)
                if answer is not None:
                    await push(answer)
            nursery.cancel_scope.cancel()

    async def subscription_call(self, request: dict[str, Any], subscriptions: dict[str, dict[str, Any]]) -> dict[str, Any]:
        ident = request.get("id")
        params = request.get("params") or []
        try:
            if not isinstance(params, list) or not params:
                raise RpcError(INVALID_PARAMS, "expected parameters")
            if request["method"] == "eth_unsubscribe":
                return {"jsonrpc": "2.0", "id": ident, "result": subscriptions.pop(str(params[0]), None) is not None}
            if len(subscriptions) >= MAX_SUBSCRIPTIONS:
                raise RpcError(LIMIT_EXCEEDED, f"at most {MAX_SUBSCRIPTIONS} subscriptions a connection")
            entry = await self.api.subscription(params[0], params[1] if len(params) > 1 else None)
        except RpcError as err:
            return {"jsonrpc": "2.0", "id": ident, "error": err.as_json()}
        name = "0x" + os.urandom(16).hex()
        subscriptions[name] = entry
        return {"jsonrpc": "2.0", "id": ident, "result": name}


async def run_actors(node: Any, api_wake: list[Callable[[], None]], backend: Any = None, *,
                     poll_interval: float = 0.005) -> None:
    """Run the embedded node's actors for as long as the endpoint serves (as ``missive serve``
    does), or, while another process serves them, just watch the store.

    With ``backend`` (a :class:`~missive.rpc.backend.LocalBackend` whose writer runs), the rounds
    commit through that writer, and what its transactions admit is handled in them
    (:meth:`~missive.actors.runtime.Runtime.round_in_transaction`: one fsync admits and handles a
    transaction); each durable round tells the backend (its waits for a receipt wake at once)."""

    from missive.actors.runtime import ExecutorLock, NodeBusy

    lock = ExecutorLock(node.path)
    while True:
        try:
            lock.acquire()
        except NodeBusy:
            await trio.sleep(0.5)  # `missive serve` runs them: receipts appear in the store
            continue
        break
    runtime = node._runtime  # the node's own: its waits (missive_waitForTree) see the same rounds
    node._running = True
    api_wake.append(runtime.wake)
    writer = backend.writer if backend is not None else None
    committer = runtime.committer

    def durable(_outcomes: object) -> None:
        runtime.wake()  # what the round sent may be work here (a round run in a transaction wakes nobody)
        backend.rounds_done()

    if writer is not None:
        async def commit(outcomes: list[Any]) -> None:
            await writer.write(functools.partial(node.store.commit, outcomes))

        runtime.committer = commit
        writer.last = runtime.round_in_transaction
        runtime.observers.append(durable)
    try:
        await runtime.run(until_idle=False, poll_interval=poll_interval)
    finally:
        if writer is not None:
            writer.last = None
            runtime.committer = committer
            runtime.observers.remove(durable)
        node._running = False
        lock.release()


async def serve(node: Any, *, host: str = "127.0.0.1", port: int = 8545, rate: float = DEFAULT_RATE,
                max_body: int = MAX_BODY, version: str = "", cluster: Any = None, signers: Any = (),
                handled_wait: float = HANDLED_WAIT, nonce_queue: int = 0,
                task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``node`` (an embedded node, whose actors run here too) or, with ``cluster`` (a
    :class:`~missive.rpc.backend.ClusterBackend`), a cluster, until cancelled;
    ``task_status.started`` gets the bound addresses."""
    from missive.mailbox.writer import GroupWriter
    from missive.rpc.backend import LocalBackend

    wakes: list[Callable[[], None]] = []

    def wake() -> None:
        for w in wakes:
            w()

    backend = cluster if cluster is not None else LocalBackend(node)
    api = EthApi(backend, wake=wake, version=version, signers=signers, handled_wait=handled_wait,
                 nonce_queue=nonce_queue)
    app = RpcApp(api, max_body=max_body, rate=rate)
    try:
        async with trio.open_nursery() as outer:
            writer: trio.CancelScope | None = None
            if isinstance(backend, LocalBackend):
                # every write of the endpoint's node through one writer (see missive/rpc/backend.py)
                backend.writer = GroupWriter(node.store)
                writer = await outer.start(_outlive, backend.writer.run)
            try:
                async with trio.open_nursery() as nursery:
                    if isinstance(backend, LocalBackend):
                        nursery.start_soon(run_actors, node, wakes, backend)
                    await backend.refresh()  # the blocks made while no endpoint ran, before the first request
                    binds = await nursery.start(functools.partial(serve_http, app, host, port))
                    task_status.started(binds)
            finally:
                if writer is not None:
                    writer.cancel()  # the actors and the requests have stopped: nothing more to write
    finally:
        backend.close()


async def _outlive(run: Callable[[], Awaitable[None]],
                   task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED) -> None:
    """Run ``run`` (the writer) shielded until the scope handed back is cancelled: on a stop (Ctrl-C),
    the round or admission being written still gets its transaction instead of a "writer stopped"
    error, and the writer ends only once nothing can ask it for one."""
    with trio.CancelScope(shield=True) as scope:
        task_status.started(scope)
        await run()
