"""``missive replay``: rebuild state from the ledger and check every receipt (SPEC §5)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from missive.cli.common import (
    EXIT_DAMAGED,
    EXIT_DISK,
    EXIT_NOT_FOUND,
    EXIT_OK,
    CliError,
    exit_code,
    make_console,
)

if TYPE_CHECKING:  # the ledger and the VM are imported when a replay runs, not by `missive --help`
    from missive.mailbox.envelope import Envelope
    from missive.mailbox.records import Receipt


def _hex_bytes(text: str, size: int, what: str) -> bytes:
    raw = text.lower().removeprefix("0x")
    try:
        value = bytes.fromhex(raw)
    except ValueError:
        raise CliError(f"{what} {text!r} is not hex") from None
    if len(value) != size:
        raise CliError(f"{what} must be {size} bytes, got {len(value)}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "replay", help="re-execute the ledger and check every receipt and every seal",
        description="Rebuild state from the ledger alone: check the store's seal (a signed hash chain, one per "
                    "write transaction) over every ledger record, re-execute every message and compare each "
                    "receipt with the recorded one. Exits non-zero at the first divergence, naming it (expected "
                    "vs got). Client signatures were checked when the node admitted each message and are covered "
                    "by the seals; --check-signatures checks them again (about a third of the speed).")
    p.add_argument("--dir", default=".missive", help="node directory (default ./.missive)")
    p.add_argument("--actor", help="check only this contract's receipts (0x address)")
    p.add_argument("--until", help="stop after this message id")
    p.add_argument("--trace", action="store_true", help="print every message as it is re-executed")
    p.add_argument("--check-signatures", action="store_true",
                   help="also re-verify every external message's Ed25519 signature (for a ledger whose seal key "
                        "you do not trust; about a third of the speed)")
    p.add_argument("--trust-signatures", action="store_true", help=argparse.SUPPRESS)  # the old default's opt-out: now the default
    p.add_argument("--seal-key", metavar="HEX",
                   help="the store's seal public key as you noted it earlier: replay fails if the store's differs")
    p.add_argument("--node", default=None, metavar="HOST:PORT",
                   help="replay this cluster node's ledger, in the node (with --cluster: a member's name works too); "
                        "as the cluster's operator, whose key is in the cluster directory: give it with --cluster "
                        "or --dir")
    p.add_argument("--cluster", type=Path, default=None, metavar="DIR",
                   help="replay every node's ledger of the cluster in DIR, each in its node")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from missive.actors.replay import replay
    from missive.mailbox.disk import DiskFull, StoreError
    from missive.mailbox.store import Store

    console = make_console()
    actor = _hex_bytes(args.actor, 20, "--actor") if args.actor else None
    until = _hex_bytes(args.until, 32, "--until") if args.until else None
    seal_key = _hex_bytes(args.seal_key, 32, "--seal-key") if args.seal_key else None
    if args.check_signatures and args.trust_signatures:
        raise CliError("--check-signatures and --trust-signatures contradict each other")
    if args.node is not None or args.cluster is not None:
        if args.check_signatures or seal_key is not None:
            raise CliError("--check-signatures and --seal-key are for a local node directory (a node replays "
                           "remotely with its defaults)")
        return run_remote(args, actor, until)
    try:
        store = Store(args.dir)
    except StoreError as err:
        raise CliError(str(err), EXIT_DISK if isinstance(err, DiskFull) else exit_code(err)) from None
    from missive.replicas.slashing import check_evidence

    store.evidence_check = check_evidence  # slash records are re-checked, not trusted

    def trace(envelope: Envelope, receipt: Receipt) -> None:
        console.print(
            f"#{receipt.position:<5} {envelope.kind.name.lower():9} 0x{envelope.sender.hex()[:8]}.. -> "
            f"0x{envelope.recipient.hex()[:8]}.. {receipt.status:8} gas {receipt.gas_used}"
        )

    with store:
        if until is not None and store.receipt(until) is None:
            found = store.message(until)
            if found is None:
                raise CliError(f"--until 0x{until.hex()}: no such message on the ledger at {args.dir} "
                               "(see `missive ledger`)", EXIT_NOT_FOUND)
            raise CliError(f"--until 0x{until.hex()}: that message is on the ledger but not handled yet: replay "
                           "stops after a handled message", EXIT_NOT_FOUND)
        started = time.perf_counter()
        report = replay(store, actor=actor, until=until, trace=trace if args.trace else None,
                        check_signatures=args.check_signatures, seal_key=seal_key)
        elapsed = time.perf_counter() - started
        public_key = store.seal_public_key()
    if report.divergence is not None:
        console.print(f"[red]replay diverged[/red] after {report.checked} checked receipts")
        console.print(report.divergence.describe(), markup=False)
        return EXIT_DAMAGED
    rate = report.checked / elapsed if elapsed > 0 else 0.0
    where = f", stopped at 0x{report.stopped_at.hex()}" if report.stopped_at else ""
    signatures = ", every client signature re-checked" if args.check_signatures else ""
    console.print(f"replay ok: {report.checked} receipts reproduced in {elapsed:.2f}s ({rate:,.0f}/s){where}{signatures}")
    if report.sealed is not None:
        last, digest = report.sealed
        key = f"0x{public_key.hex()}" if public_key else "?"
        console.print(f"sealed through ledger record {last}: chain 0x{digest.hex()}, seal key {key}", markup=False)
    return EXIT_OK


def run_remote(args: argparse.Namespace, actor: bytes | None, until: bytes | None) -> int:
    """Each node replays its own ledger where it lives (the ledgers stay put); one line per node."""
    from missive.cluster.remote import RemoteNode
    from missive.node import NodeError

    if args.trace:
        raise CliError("--trace is for a local node directory; a node replays remotely and reports the outcome")
    try:
        # replay is the operator's to ask: its key is in the cluster directory (--cluster, or --dir with --node)
        node = RemoteNode.connect(args.node, args.cluster, Path(args.dir) if args.cluster is None else None)
        try:
            reports = node.replay_nodes(actor, until)
        finally:
            node.close()
    except NodeError as exc:
        raise CliError(str(exc), exit_code(exc)) from None
    if until is not None and not any(report["stopped_at"] or report["divergence"] for report in reports):
        raise CliError(f"--until 0x{until.hex()}: no node in scope has that message handled on its ledger "
                       "(see `missive ledger`)", EXIT_NOT_FOUND)
    console = make_console()
    failed = False
    for report in reports:
        rate = report["checked"] / report["seconds"] if report["seconds"] > 0 else 0.0
        if report["divergence"]:
            failed = True
            console.print(f"[red]{report['name']}: replay diverged[/red] after {report['checked']} checked receipts")
            console.print(report["divergence"], markup=False)
        else:
            where = f", stopped at 0x{bytes(report['stopped_at']).hex()}" if report["stopped_at"] else ""
            console.print(f"{report['name']}: replay ok: {report['checked']} receipts reproduced in "
                          f"{report['seconds']:.2f}s ({rate:,.0f}/s){where}", markup=False)
    if len(reports) > 1 and not failed:
        console.print(f"replay ok on all {len(reports)} nodes: {sum(r['checked'] for r in reports)} receipts", markup=False)
    return EXIT_DAMAGED if failed else EXIT_OK
