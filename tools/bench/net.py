"""Benchmark the cluster transport (missive.net) over loopback.

A server node and a client node talk over 127.0.0.1 through the full stack
(handshake, XSalsa20-Poly1305 sealing, msgpack frames, RPC).  By default the
server runs in a child process, so the two ends do not share a CPU core or
a trio loop; ``--same-process`` runs both as tasks of one trio loop instead.
Figures are wall-clock (the network path includes the kernel, so CPU time
would hide part of the cost):

* rtt: sequential ``echo`` calls with a 64-byte payload, one at a time, on a
  bare RpcConnection and on a PeerLink (which adds its queue) — p50/p99;
* calls/s: 64 tasks calling ``echo`` concurrently through one PeerLink;
* notify/s: one-way 64-byte messages, pipelined on one connection, counted
  as handled by the server (the last call waits until all were handled);
* bulk: concurrent 256 KiB echo calls, MiB/s each way.

Run: ``PYTHONPATH=. python tools/bench/net.py [--quick] [--same-process] [--out FILE]``.
Prints a table and writes JSON (default tools/bench/results/net.json).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from missive.net import (  # noqa: E402
    NodeId,
    NodeIdentity,
    allow_only,
    initiate,
    open_peer_link,
    open_rpc,
    serve,
)

HOST = "127.0.0.1"
SMALL = bytes(64)
BULK = bytes(256 * 1024)


def server_handlers() -> dict[str, Callable[[NodeId, Any], Awaitable[Any]]]:
    """echo, plus a notification counter and a call that waits for the count to reach N."""
    count = 0
    reached = trio.Condition()

    async def echo(peer: NodeId, params: Any) -> Any:
        return params

    async def tick(peer: NodeId, params: Any) -> None:
        nonlocal count
        count += 1
        async with reached:
            reached.notify_all()

    async def wait_count(peer: NodeId, target: int) -> int:
        nonlocal count
        async with reached:
            while count < target:
                await reached.wait()
        seen, count = count, 0
        return seen

    return {"echo": echo, "tick": tick, "wait_count": wait_count}


# -- server side -----------------------------------------------------------------------------------


def serve_main(identity_path: Path, client_hex: str) -> None:
    """Child-process entry point: serve until killed, printing the port first."""
    identity = NodeIdentity.load(identity_path)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                serve, identity, HOST, 0, server_handlers(), allow_only({bytes.fromhex(client_hex)})
            )
            print(port, flush=True)

    trio.run(main)


# -- client side -----------------------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def round_trips(call: Callable[[str, Any], Awaitable[Any]], n: int) -> list[float]:
    """Seconds per ``echo`` call, ``n`` of them after 200 to warm up."""
    for _ in range(200):
        await call("echo", SMALL)
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        await call("echo", SMALL)
        samples.append(time.perf_counter() - t)
    return samples


async def measure(client: NodeIdentity, server_id: NodeId, port: int, n: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}

    # Round trips on a bare connection.
    channel = await initiate(await trio.open_tcp_stream(HOST, port), client, expected_peer=server_id)
    async with open_rpc(channel) as conn:
        samples = await round_trips(conn.call, n)
        figures["rtt_p50_us"] = percentile(samples, 0.50) * 1e6
        figures["rtt_p99_us"] = percentile(samples, 0.99) * 1e6
        figures["rtt_mean_us"] = statistics.fmean(samples) * 1e6

        # Pipelined one-way messages on the same connection.
        messages = n * 10
        t = time.perf_counter()
        for _ in range(messages):
            await conn.notify("tick", SMALL)
        assert await conn.call("wait_count", messages, timeout=120) == messages
        figures["notify_per_s"] = messages / (time.perf_counter() - t)
        figures["notify_messages"] = messages

    async with open_peer_link(client, HOST, port, server_id, queue_size=256) as link:
        with trio.fail_after(10):
            await link.wait_connected()
        samples = await round_trips(link.call, n)
        figures["link_rtt_p50_us"] = percentile(samples, 0.50) * 1e6
        figures["link_rtt_p99_us"] = percentile(samples, 0.99) * 1e6

        concurrency, total = 64, n * 4

        async def caller(calls: int, payload: bytes) -> None:
            for _ in range(calls):
                await link.call("echo", payload, timeout=60)

        t = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(caller, total // concurrency, SMALL)
        figures["calls_per_s"] = (total // concurrency * concurrency) / (time.perf_counter() - t)
        figures["calls_concurrency"] = concurrency

        bulk_calls, bulk_tasks = max(64, n // 20), 8
        t = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(bulk_tasks):
                nursery.start_soon(caller, bulk_calls // bulk_tasks, BULK)
        elapsed = time.perf_counter() - t
        figures["bulk_mib_per_s"] = (bulk_calls // bulk_tasks * bulk_tasks) * len(BULK) / elapsed / (1 << 20)
    figures["rtt_calls"] = n
    return figures


def run(n: int, same_process: bool) -> dict[str, Any]:
    server, client = NodeIdentity.generate(), NodeIdentity.generate()
    if same_process:

        async def both() -> dict[str, Any]:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(serve, server, HOST, 0, server_handlers(), allow_only({client.node_id}))
                figures = await measure(client, server.node_id, port, n)
                nursery.cancel_scope.cancel()
            return figures

        return trio.run(both)

    with tempfile.TemporaryDirectory() as tmp:
        identity_path = server.save(Path(tmp) / "server.identity")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(identity_path), client.node_id.hex()],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert child.stdout is not None
            port = int(child.stdout.readline())
            return trio.run(measure, client, server.node_id, port, n)
        finally:
            child.terminate()
            child.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=5_000, help="sequential round trips per figure")
    parser.add_argument("--quick", action="store_true", help="1,000 calls (a smoke run)")
    parser.add_argument("--same-process", action="store_true", help="server and client as tasks of one trio loop")
    parser.add_argument("--out", type=Path, default=_common.RESULTS / "net.json")
    parser.add_argument("--serve", nargs=2, metavar=("IDENTITY", "CLIENT_ID"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve_main(Path(args.serve[0]), args.serve[1])
        return 0

    calls = 1_000 if args.quick else args.calls
    figures = run(calls, args.same_process)
    figures["mode"] = "same process" if args.same_process else "two processes"
    figures["machine"] = _common.machine_info()

    table = Table(title=f"missive.net over loopback ({figures['mode']}, {calls:,} calls per latency figure)")
    for column in ("figure", "value"):
        table.add_column(column)
    table.add_row("RPC round trip, 64 B, p50 / p99", f"{figures['rtt_p50_us']:,.0f} / {figures['rtt_p99_us']:,.0f} µs")
    table.add_row(
        "PeerLink round trip, 64 B, p50 / p99",
        f"{figures['link_rtt_p50_us']:,.0f} / {figures['link_rtt_p99_us']:,.0f} µs",
    )
    table.add_row(f"PeerLink calls/s ({figures['calls_concurrency']} concurrent)", f"{figures['calls_per_s']:,.0f}")
    table.add_row("one-way messages/s (pipelined, handled)", f"{figures['notify_per_s']:,.0f}")
    table.add_row("bulk echo, 256 KiB calls", f"{figures['bulk_mib_per_s']:,.0f} MiB/s each way")
    Console().print(table)
    path = _common.write_json(args.out, figures)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
