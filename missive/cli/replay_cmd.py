"""``missive replay``: rebuild state from the ledger and check every receipt (SPEC §5)."""

from __future__ import annotations

import argparse
import time

from missive.actors.replay import replay
from missive.cli.common import EXIT_FAILED, EXIT_OK, CliError, make_console
from missive.mailbox.envelope import Envelope
from missive.mailbox.records import Receipt
from missive.mailbox.store import Store, StoreError


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
    p = subparsers.add_parser("replay", help="re-execute the ledger and check every receipt")
    p.add_argument("--dir", default=".missive", help="node directory (default ./.missive)")
    p.add_argument("--actor", help="check only this contract's receipts (0x address)")
    p.add_argument("--until", help="stop after this message id")
    p.add_argument("--trace", action="store_true", help="print every message as it is re-executed")
    p.add_argument("--trust-signatures", action="store_true",
                   help="take the node's word that it checked each external message's signature on acceptance "
                        "(about twice as fast; everything else is still checked)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    console = make_console()
    actor = _hex_bytes(args.actor, 20, "--actor") if args.actor else None
    until = _hex_bytes(args.until, 32, "--until") if args.until else None
    try:
        store = Store(args.dir)
    except StoreError as err:
        raise CliError(str(err)) from None

    def trace(envelope: Envelope, receipt: Receipt) -> None:
        console.print(
            f"#{receipt.position:<5} {envelope.kind.name.lower():9} 0x{envelope.sender.hex()[:8]}.. -> "
            f"0x{envelope.recipient.hex()[:8]}.. {receipt.status:8} gas {receipt.gas_used}"
        )

    with store:
        started = time.perf_counter()
        report = replay(store, actor=actor, until=until, trace=trace if args.trace else None,
                        signatures=not args.trust_signatures)
        elapsed = time.perf_counter() - started
    if report.divergence is not None:
        console.print(f"[red]replay diverged[/red] after {report.checked} checked receipts")
        console.print(report.divergence.describe(), markup=False)
        return EXIT_FAILED
    rate = report.checked / elapsed if elapsed > 0 else 0.0
    where = f", stopped at 0x{report.stopped_at.hex()}" if report.stopped_at else ""
    trusted = " (signatures trusted from admission)" if args.trust_signatures else ""
    console.print(f"replay ok: {report.checked} receipts reproduced in {elapsed:.2f}s ({rate:,.0f}/s){where}{trusted}")
    return EXIT_OK
