"""``missive cluster up | status | down``: a local cluster of node processes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from missive.cli.common import EXIT_FAILED, EXIT_OK, CliError, exit_code, make_console, parse_seconds
from missive.market.defaults import DEFAULT_UNBOND_SECONDS

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
    up.add_argument("--unbond-seconds", type=int, default=DEFAULT_UNBOND_SECONDS, metavar="S",
                    help="a new cluster's worker registry: how long an unbonded stake waits before it can be withdrawn "
                    f"(default {DEFAULT_UNBOND_SECONDS}; docs/market.md)")
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
                                            failover_timeout=args.failover_timeout,
                                            unbond_seconds=args.unbond_seconds))
    show(states)
    console.print(f"funded account `default` in the keystore at {args.dir}; each node registered as a worker in the "
                  f"registry (`missive worker status --cluster {args.dir}`); stop with `missive cluster down --dir "
                  f"{args.dir}`", markup=False)
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


#: the width `cluster status` keeps to (a terminal's default, and what a pipe gets)
WIDTH = 80


def status_lines(states: list[dict[str, Any]]) -> list[str]:
    """``cluster status`` as plain lines of at most :data:`WIDTH` columns (a few per node), so it reads
    the same in a narrow terminal and through a pipe (a table of 13 columns needed about 140)."""
    import textwrap

    lines: list[str] = []
    for s in states:
        address = f"127.0.0.1:{s['port']}"
        if not s.get("up"):
            lines.append(f"{s['name']:<4} {address:<16} down")
            continue
        state = "up" if s["serving"] else "catching up"
        if s.get("joining"):
            state += ", joining"
        epoch = f"  epoch {s['epoch']}" if "epoch" in s else ""
        lines.append(f"{s['name']:<4} {address:<16} {state}{epoch}  id 0x{s['id'].hex()[:16]}")
        lines.append(f"     actors {s['actors']}  copies {s['replicas_held']}  handled {s['handled']}  "
                     f"msg/s {s['rate']:.0f}")
        lines.append(f"     waiting: backlog {s['backlog']}  standby {s['standby']}  outbound {s['outbound']}  "
                     f"diffs out {s['replicating']}")
        # ✓ connected and up in this node's view; ✗ down (its actors run elsewhere); · connected, not yet up
        peers = " ".join(f"{name}{'✓' if name in s['up'] else '·' if ok else '✗'}"
                         for name, ok in sorted(s["peers"].items()))
        lines.extend(textwrap.wrap(f"peers: {peers or '(none)'}", WIDTH, initial_indent="     ",
                                   subsequent_indent="            ", break_on_hyphens=False))
    if any(s.get("up") for s in states):
        lines.append("(peers: ✓ up in that node's view, · connected but not yet up, ✗ down)")
    chain_ids = sorted({int(s["chain_id"]) for s in states if s.get("up") and "chain_id" in s})
    if chain_ids:  # one, unless a node was given another's store
        lines.append(f"chain id {', '.join(map(str, chain_ids))} (CHAINID; what clients sign messages for)")
    return lines


def show(states: list[dict[str, Any]]) -> None:
    console = make_console()
    for line in status_lines(states):
        console.print(line, markup=False, highlight=False)
