"""``missive bid``: raise the bid of a message still waiting (issue 23; docs/market.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from missive.cli.common import CliError, make_console
from missive.cli.node_cmds import DEFAULT_DIR, guarded, hx, open_node, parse_amount


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bid", help="raise the bid (fee per gas) of a message still waiting",
        description="Raise the bid of message ID (an id or a unique prefix of 8+ hex digits) to FEE per gas, signed "
        "by its sender: the escrow grows by gas × the raise, taken from the sender's balance, and the message moves "
        "up the node's queue (highest bid first, each sender's messages to one recipient still in order). Refused, "
        "nothing changed: a bid not above the current one, a signer other than the sender, a message handled or "
        "unknown, a balance short of the top-up. A node alone only, for now.")
    p.add_argument("id", metavar="MSG_ID")
    p.add_argument("fee", type=parse_amount, metavar="NEW_FEE", help="the new fee per gas")
    p.add_argument("--from", dest="sender", metavar="NAME",
                   help="signing account (default: the message's sender if the keystore holds it)")
    p.add_argument("--dir", type=Path, default=None, metavar="D",
                   help=f"node directory (default: $MISSIVE_DIR or ./{DEFAULT_DIR})")
    p.set_defaults(handler=guarded(run_bid), node=None, cluster=None)


def run_bid(args: argparse.Namespace) -> int:
    node = open_node(args)
    try:
        raise_bid = getattr(node, "raise_bid", None)
        if raise_bid is None:  # pragma: no cover - every local Node has it
            raise CliError("raising a bid works on a node alone for now")
        message_id = node.resolve_id(args.id)
        top_up = raise_bid(message_id, args.fee, sender=node.wallet(args.sender) if args.sender else None)
        make_console().print(f"raised {hx(message_id)} to bid {args.fee}: escrow topped up by {top_up}", markup=False)
        return 0
    finally:
        node.close()
