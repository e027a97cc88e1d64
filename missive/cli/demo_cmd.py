"""``missive demo``: the scenario of :mod:`missive.demo`, shown live in the terminal.

Each round the runtime commits is printed as it happens: one line per handled
message (kind, who → whom, what, outcome, what it sent and logged).  The bulk
phase shows a progress bar instead, then the final state and the checks.

``--cluster`` runs the same scenario (:func:`missive.demo.run_demo`, given a
:class:`~missive.cluster.remote.RemoteNode`) on a local cluster started for the
occasion and stopped at the end, also on Ctrl-C or error.  Each line then says
which node executed the handler, and a message that crossed from one node to
another is marked with where it came from.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from missive.cli.common import EXIT_FAILED, EXIT_OK, CliError, make_console, parse_seconds

if TYPE_CHECKING:  # rich's pieces are imported by the demo when it runs, not by `missive --help`
    from rich.console import Console
    from rich.progress import Progress

KIND_STYLE = {"deploy": "magenta", "call": "cyan", "query": "blue", "reply": "green", "bounce": "yellow",
              "scheduled": "bright_magenta"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="contract actors messaging each other on a fresh embedded store, shown live",
        description="Deploys a token, an escrow and a ticker on a fresh node, drives traffic through "
                    "calls, queries, replies, bounces and scheduled messages, shows each message as it "
                    "is handled, then the final state, the conservation checks and a full replay.",
    )
    parser.add_argument("--dir", type=Path, default=None,
                        help="node directory to create and keep (must not exist yet); default: a temporary one")
    parser.add_argument("--messages", type=int, default=2000, help="transfers in the traffic phase (default 2000)")
    parser.add_argument("--senders", type=int, default=20, help="accounts sending them (default 20)")
    parser.add_argument("--pace", type=parse_seconds, default=0.3,
                        help="seconds to pause between scenes so the flow can be followed (default 0.3)")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the traffic")
    parser.add_argument("--cluster", action="store_true",
                        help="run on a fresh local cluster of node processes (stopped at the end)")
    parser.add_argument("--nodes", type=int, default=3, help="nodes in the --cluster (default 3)")
    parser.add_argument("--jobs", action="store_true",
                        help="the job board's two scenes instead (docs/jobs.md): a + b proved with a zk-SNARK and "
                        "verified on the ledger; an image classified by three workers, one of which lies")
    parser.set_defaults(handler=run_demo_command)


class TerminalView:
    """Renders the demo's events with rich."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.names: dict[bytes, str] = {}
        self.node: Any = None
        self.round_number = 0
        self._progress: Progress | None = None
        self._task: Any = None
        self._namer: Any = None
        #: on a cluster: handled messages, and how many crossed from one node to another
        self.handled = 0
        self.crossed = 0

    def begin(self, node: Any, names: dict[bytes, str]) -> None:
        self.node, self.names = node, names

    def step(self, number: int, title: str, explanation: str) -> None:
        self._namer = None  # contracts may have been deployed since
        self.console.print()
        self.console.rule(f"[bold]{number}. {title}", align="left")
        self.console.print(explanation, style="dim")

    def round(self, pairs: list[Any]) -> None:
        from missive.demo import describe, function_namer, shown, stage_name
        from missive.node import decode_log, revert_reason

        node = self.node
        if self._namer is None:
            self._namer = function_namer(node, self.names)
        self.round_number += 1
        abis = node.abis()
        node_of = getattr(node, "node_of", None)  # a cluster: where each actor runs
        for envelope, receipt in pairs:
            kind = envelope.kind.name.lower()
            line = describe(envelope, receipt, self.names, self._namer, node.message)
            if receipt.success:
                outcome = "[green]✓[/]"
            else:
                reason = revert_reason(receipt.output) or receipt.error or receipt.status
                outcome = f"[red]✗ {escape(reason)}[/]"
            where = f"[dim]round {self.round_number:>3}[/]"
            if node_of is not None:
                here, there = node_of(envelope.recipient), node_of(envelope.sender)
                self.handled += 1
                self.crossed += here != there
                hop = f"[bold yellow]{there}⇒{here}[/]" if here != there else f"[dim]   {here}[/]"
                where = f"{where} {hop:<6}"
            if envelope.bid:  # the market: what the run paid, and to whom
                paid = self.names.get(receipt.coinbase, "0x" + receipt.coinbase.hex()[:8])
                outcome += f"  [dim]bid {envelope.bid}: fee {receipt.fee} → {escape(paid)}[/]"
            self.console.print(f"{where}  [{KIND_STYLE.get(kind, 'white')}]{kind:<9}[/] {escape(line)}  {outcome}")
            for address, topics, data in receipt.logs:
                decoded = decode_log(abis[address][1], topics, data) if address in abis else None
                if decoded is not None:
                    args = ", ".join(f"{k}={stage_name(v) if k == 'stage' else shown(v, self.names)}"
                                     for k, v in decoded[1].items())
                    self.console.print(f"{'':25}[dim]event[/] {escape(decoded[0])}({escape(args)})")
            for message_id in receipt.outgoing:
                sent = node.message(message_id)
                if sent is not None:
                    whom = self.names.get(sent.recipient, "0x" + sent.recipient.hex()[:8])
                    what = "reply" if sent.kind.name == "REPLY" else sent.kind.name.lower()
                    self.console.print(f"{'':25}[dim]sends[/] {what} → {escape(whom)}")

    def note(self, text: str) -> None:
        self.console.print(text, markup=False)

    def bulk_start(self, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("handled"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                  console=self.console, transient=True)
        self._progress.start()
        self._task = self._progress.add_task("traffic", total=total)

    def bulk_advance(self, handled: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=handled)

    def bulk_done(self, handled: int, seconds: float) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        rate = handled / seconds if seconds else 0.0
        self.console.print(f"handled {handled} messages in {seconds:.2f} s: [bold]{rate:,.0f} messages/s[/] "
                           "(signed, admitted, executed and durably committed)")


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def run_demo_command(args: argparse.Namespace) -> int:
    from missive.demo import DemoError, run_demo
    from missive.node import NodeError

    if args.messages < 0 or args.senders < 2:
        raise CliError("--messages must be >= 0 and --senders >= 2")
    if args.jobs:
        return run_jobs_demo_command(args)
    if args.cluster:
        return run_cluster_demo(args)
    if args.dir is not None and args.dir.exists() and any(args.dir.iterdir()):
        raise CliError(f"{args.dir} is not empty; the demo needs a fresh directory")
    console = make_console()
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="missive-demo-"))
    view = TerminalView(console)
    console.print(f"[bold]Missive demo[/]: contract actors on a fresh embedded store at {workdir}")
    try:
        result = run_demo(workdir, view, bulk=args.messages, senders=args.senders, pace=args.pace, seed=args.seed)
    except (DemoError, NodeError) as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    show_final(console, result)
    if args.dir is not None:
        console.print(f"\nThe node is kept at {args.dir}; look around with "
                      f"`missive ledger --dir {args.dir}` or `missive inbox --dir {args.dir} ADDR`.")
    ok = result.supply_conserved and result.native_conserved and result.replay_problem is None
    return EXIT_OK if ok else EXIT_FAILED


def run_jobs_demo_command(args: argparse.Namespace) -> int:
    """``missive demo --jobs`` (issue 25): :mod:`missive.node.jobs_demo` on a fresh node."""
    from missive.errors import MissiveError
    from missive.node.jobs_demo import run_jobs_demo

    if args.cluster:
        raise CliError("--jobs runs on a node alone: the job board is not on a cluster yet")
    if args.dir is not None and args.dir.exists() and any(args.dir.iterdir()):
        raise CliError(f"{args.dir} is not empty; the demo needs a fresh directory")
    console = make_console()
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="missive-demo-jobs-"))
    try:
        result = run_jobs_demo(workdir, console.print)
    except MissiveError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return EXIT_OK if result.conserved and result.replay_problem is None else EXIT_FAILED


def show_final(console: Console, result: Any) -> None:
    from rich.table import Table

    console.print()
    console.rule("[bold]Final state", align="left")
    balances = Table(title="balances", title_justify="left")
    balances.add_column("account")
    balances.add_column("DEMO tokens", justify="right")
    balances.add_column("native coin (wei)", justify="right")
    for name, native in result.native_balances.items():
        tokens = result.token_balances.get(name)
        if not name.startswith("sender"):
            balances.add_row(name, f"{tokens:,}" if tokens is not None else "-", f"{native:,}")
    senders = {k: v for k, v in result.token_balances.items() if k.startswith("sender")}
    if senders:
        balances.add_row(f"{len(senders)} senders", f"{sum(senders.values()):,}", "0")
    console.print(balances)
    deals = Table(title="escrow deals", title_justify="left")
    for column in ("deal", "buyer", "seller", "token", "amount", "stage"):
        deals.add_column(column)
    for deal in result.deals:
        deals.add_row(*(str(deal[c]) for c in ("deal", "buyer", "seller", "token", "amount", "stage")))
    console.print(deals)
    console.print(f"ticker ran at logical times {result.ticks}")
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(result.messages_by_kind.items()))
    statuses = ", ".join(f"{n} {k}" for k, n in sorted(result.receipts_by_status.items()))
    console.print(f"ledger: {result.ledger_records} records; handled {kinds}; receipts {statuses}")

    def check(ok: bool, text: str) -> str:
        return f"[green]✓[/] {text}" if ok else f"[red]✗ {text}[/]"

    console.print(check(result.supply_conserved, "token supply conserved (sum of balances = 1,000,000)"))
    console.print(check(result.native_conserved, "native coin conserved (balances + value in flight = genesis)"))
    replayed = f"replay from the ledger alone re-executed {result.replay_checked} messages, every receipt matches"
    console.print(check(result.replay_problem is None, replayed if result.replay_problem is None
                        else f"replay diverged: {result.replay_problem}"))


def run_cluster_demo(args: argparse.Namespace) -> int:
    """The same scenario on a local cluster: up, run through a RemoteNode, down whatever happens."""
    from missive.cluster import launcher
    from missive.cluster.client import ClusterError
    from missive.cluster.remote import RemoteNode
    from missive.demo import DemoError, run_demo
    from missive.node import NodeError

    if args.nodes < 1:
        raise CliError("--nodes must be at least 1")
    if args.dir is not None and args.dir.exists() and any(args.dir.iterdir()):
        raise CliError(f"{args.dir} is not empty; the demo needs a fresh directory")
    console = make_console()
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="missive-demo-cluster-"))
    view = TerminalView(console)
    started = False
    try:
        with console.status(f"starting {args.nodes} node processes in {workdir}..."):
            # two holders per actor (when there are two nodes): the slashing scene needs a copy that re-executes
            states = launcher.up(workdir, args.nodes, replicas=min(2, args.nodes),
                                 encrypt_keys=False)  # the demo's keys are throw-away
            started = True
        nodes = ", ".join(f"{s['name']} (127.0.0.1:{s['port']})" for s in states)
        console.print(f"[bold]Missive demo[/] on a local cluster: {escape(nodes)}")
        console.print("Each line names the node that ran the handler; [bold yellow]n1⇒n2[/] marks a message "
                      "that crossed from n1 (where its sender runs) to n2.", style="dim")
        result = run_demo(workdir, view, bulk=args.messages, senders=args.senders, pace=args.pace, seed=args.seed,
                          node=RemoteNode.connect(cluster=workdir))
        slashing = None
        if args.nodes >= 2:
            from missive.cli.demo_slashing import slashing_scene

            view.step(11, "Slashing", "A node that lies in its state diffs is caught by the holders that re-execute "
                      "them, accused in the worker registry, and loses its pledge.")
            slashing = slashing_scene(workdir, lambda text: console.print(f"  {escape(text)}"), args.pace)
    except (DemoError, NodeError, ClusterError) as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    finally:
        if started or (workdir / launcher.CLUSTER_FILE).exists():
            with console.status("stopping the cluster..."):
                launcher.down(workdir)
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    show_final(console, result)
    console.print(f"{view.crossed} of the {view.handled} messages shown crossed between nodes; "
                  f"the cluster is stopped" + (f", its directories kept in {args.dir}" if args.dir else ""))
    ok = result.supply_conserved and result.native_conserved and result.replay_problem is None
    if slashing is not None:
        held = slashing["holdings"]
        fine = (slashing["worker_after"].stake == 0 and slashing["transfer"] and slashing["distrusted"]
                and slashing["registry_balance"] == held["stakes"] + held["unbonding"] + held["burned"])
        shown = (f"slashing: {slashing['liar']} lost its pledge of {slashing['stake_before'].stake}; the registry "
                 f"holds {slashing['registry_balance']} = stakes {held['stakes']} + burned {held['burned']}")
        console.print(f"[green]✓[/] {escape(shown)}" if fine else f"[red]✗ {escape(shown)}[/]")
        ok = ok and fine
    return EXIT_OK if ok else EXIT_FAILED
