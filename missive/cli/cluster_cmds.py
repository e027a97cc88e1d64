"""``missive cluster up | status | down``: a local cluster of node processes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from missive.cli.common import EXIT_FAILED, EXIT_OK, CliError, exit_code, make_console, parse_seconds

DEFAULT_DIR = Path(".missive-cluster")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("cluster", help="run a local cluster of nodes on 127.0.0.1")
    commands = parser.add_subparsers(dest="cluster_command", metavar="COMMAND")
    commands.required = True
    up = commands.add_parser("up", help="start N node processes and wait until they see each other")
    up.add_argument("--nodes", type=int, default=None,
                    help="how many nodes (default 4; an existing cluster restarts with its own number)")
    up.add_argument("--replicas", type=int, default=None,
                    help="nodes holding each actor: its executor plus copies kept by state diffs (default 1; an "
                    "existing cluster keeps its own)")
    up.add_argument("--failover-timeout", type=parse_seconds, default=2.0, metavar="SECONDS",
                    help="silence after which a node counts as down and the next holder of its actors takes over (default 2)")
    up.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"cluster directory (default {DEFAULT_DIR})")
    up.set_defaults(handler=run_up)
    start = commands.add_parser("start", help="restart a node that is down; it catches up from its peers before serving")
    start.add_argument("name", help="the node's name (n1, n2, ...)")
    start.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    start.set_defaults(handler=run_start)
    status = commands.add_parser("status", help="every node: up/down, actors, backlog, messages/s, peers")
    status.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    status.set_defaults(handler=run_status)
    down = commands.add_parser("down", help="stop every node cleanly")
    down.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    down.set_defaults(handler=run_down)


def _guard(fn: Any) -> Any:
    from missive.cluster.client import ClusterError
    from missive.cluster.config import ConfigError

    try:
        return fn()
    except (ClusterError, ConfigError) as exc:
        raise CliError(str(exc), exit_code(exc, EXIT_FAILED)) from None


def run_up(args: argparse.Namespace) -> int:
    from missive.cluster import launcher

    console = make_console()
    nodes, _ = _guard(lambda: launcher.check_shape(args.dir, args.nodes, args.replicas))
    with console.status(f"starting {nodes} nodes in {args.dir}..."):
        states = _guard(lambda: launcher.up(args.dir, args.nodes, replicas=args.replicas,
                                            failover_timeout=args.failover_timeout))
    show(states)
    console.print(f"funded account `default` in the keystore at {args.dir}; stop with `missive cluster down --dir {args.dir}`",
                  markup=False)
    return EXIT_OK


def run_start(args: argparse.Namespace) -> int:
    from missive.cluster import launcher

    with make_console().status(f"starting {args.name}; it catches up from its peers..."):
        _guard(lambda: launcher.start(args.dir, args.name))
    show(_guard(lambda: launcher.status(args.dir)))
    return EXIT_OK


def run_status(args: argparse.Namespace) -> int:
    from missive.cluster import launcher

    states = _guard(lambda: launcher.status(args.dir))
    show(states)
    return EXIT_OK if all(s.get("up") for s in states) else EXIT_FAILED


def run_down(args: argparse.Namespace) -> int:
    from missive.cluster import launcher

    console = make_console()
    stopped = _guard(lambda: launcher.down(args.dir, say=lambda text: console.print(text, markup=False)))
    console.print(f"stopped {', '.join(stopped)}", markup=False)
    return EXIT_OK


def show(states: list[dict[str, Any]]) -> None:
    table = Table()
    for column in ("node", "address", "state", "actors", "copies", "backlog", "standby", "outbound", "diffs out",
                   "handled", "msg/s", "peers", "id"):
        table.add_column(column)
    for s in states:
        if not s.get("up"):
            table.add_row(s["name"], f"127.0.0.1:{s['port']}", "[red]down[/]", *[""] * 10)
            continue
        # ✓ connected and up in this node's view; ✗ down (its actors run elsewhere); · connected, not yet up
        peers = " ".join(f"{name}{'✓' if name in s['up'] else '·' if ok else '✗'}" for name, ok in sorted(s["peers"].items()))
        state = "[green]up[/]" if s["serving"] else "[yellow]catching up[/]"
        table.add_row(s["name"], f"127.0.0.1:{s['port']}", state, str(s["actors"]), str(s["replicas_held"]),
                      str(s["backlog"]), str(s["standby"]), str(s["outbound"]), str(s["replicating"]), str(s["handled"]),
                      f"{s['rate']:.0f}", peers, s["id"].hex()[:16])
    console = make_console()
    console.print(table)
    chain_ids = sorted({int(s["chain_id"]) for s in states if s.get("up") and "chain_id" in s})
    if chain_ids:  # one, unless a node was given another's store
        console.print(f"chain id {', '.join(map(str, chain_ids))} (CHAINID; what clients sign messages for)",
                      markup=False)
