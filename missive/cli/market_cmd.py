"""``missive bid`` (raise the bid of a message still waiting) and ``missive worker`` (the worker
registry): issue 23, docs/market.md."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from missive.cli.common import CliError, make_console
from missive.cli.node_cmds import DEFAULT_DIR, guarded, open_node, operation_group, parse_amount
from missive.cli.show import hx


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
    register_workers(subparsers)


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


def register_workers(subparsers: Any) -> None:
    ops, common = operation_group(
        subparsers, "worker", "the worker registry: register with a stake, status, unbond, withdraw; run jobs",
        "Workers lock a stake (at least the registry's minimum) in the registry, kept on the ledger as "
        "signed records; an unbonded stake can be withdrawn after the unbonding delay (logical time). A node alone "
        "executes as the last worker registered on it: fees go to its coinbase, bids below its minimum are "
        "refused at admission. docs/market.md. `worker run` works on the job board: docs/jobs.md.")
    signer = argparse.ArgumentParser(add_help=False)
    signer.add_argument("--from", dest="sender", metavar="NAME", help="the worker's account (default: 'default')")
    p = ops.add_parser("register", parents=[common, signer], help="lock a stake and become a worker")
    p.add_argument("--stake", type=parse_amount, required=True, metavar="AMOUNT")
    p.add_argument("--coinbase", default=None, metavar="ADDR", help="where fees go (default: the account)")
    p.add_argument("--min-bid", type=parse_amount, default=0, metavar="FEE", help="bids below it are refused")
    p.set_defaults(handler=guarded(run_worker), node=None, cluster=None)
    from missive.cli.jobs_cmd import register_worker_run

    register_worker_run(ops, [common, signer])  # issue 25: work on the job board
    for name, text in (("status", "the registry: stakes, unbonding, this node's worker"),
                       ("unbond", "stop backing the worker with its stake; it waits the unbonding delay"),
                       ("withdraw", "take an unbonded stake back once its delay has passed")):
        p = ops.add_parser(name, parents=[common] + ([signer] if name != "status" else []), help=text)
        p.set_defaults(handler=guarded(run_worker), node=None, cluster=None, sender=None)


def run_worker(args: argparse.Namespace) -> int:
    from missive.node import Node

    opened = open_node(args)
    console = make_console()
    try:
        if not isinstance(opened, Node):
            raise CliError("the worker registry works on a node directory (--dir) for now, not on a cluster")
        node = opened
        sender = node.wallet(args.sender) if args.sender else None
        if args.op == "status":
            store = node.store
            own = store.get(None, "meta", b"worker")
            rows = store.workers()
            if not rows:
                console.print("no workers registered", markup=False)
            for address, worker in rows:
                line = (f"{hx(address)}  stake {worker.stake}  coinbase {hx(worker.coinbase)}  "
                        f"min bid {worker.min_bid}")
                if worker.unbonding:
                    line += f"  unbonding {worker.unbonding} until logical time {worker.release_at}"
                console.print(line + ("  (this node's worker)" if address == own else ""), markup=False)
            console.print(f"logical time now {store.clock()}", markup=False)
            return 0
        if args.op == "register":
            coinbase = node.resolve_address(args.coinbase, "coinbase") if args.coinbase else None
            worker = node.worker_op("register", sender=sender, stake=args.stake, coinbase=coinbase,
                                    min_bid=args.min_bid)
            console.print(f"registered: stake {worker.stake} locked, fees to {hx(worker.coinbase)}, "
                          f"minimum bid {worker.min_bid}", markup=False)
        elif args.op == "unbond":
            worker = node.worker_op("unbond", sender=sender)
            console.print(f"unbonding {worker.unbonding}: withdraw from logical time {worker.release_at}",
                          markup=False)
        else:
            node.worker_op("withdraw", sender=sender)
            console.print("withdrawn: the stake is back in the balance", markup=False)
        return 0
    finally:
        opened.close()
