"""``missive bid`` (raise the bid of a message still waiting) and ``missive worker`` (the worker
registry): issue 23, docs/market.md."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from missive.cli.common import CliError, make_console
from missive.cli.node_cmds import DEFAULT_DIR, guarded, open_node, operation_group, parse_amount, remote_options
from missive.cli.show import hx


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bid", parents=[remote_options()], help="raise the bid (fee per gas) of a message still waiting",
        description="Raise the bid of message ID (an id or a unique prefix of 8+ hex digits) to FEE per gas, signed "
        "by its sender: the escrow grows by gas × the raise, taken from the sender's balance, and the message moves "
        "up the node's queue (highest bid first, each sender's messages to one recipient still in order). Refused, "
        "nothing changed: a bid not above the current one, a signer other than the sender, a message handled or "
        "unknown, a balance short of the top-up. On a cluster (--cluster D) the raise is a message to the holders "
        "of the message's recipient: it applies when the message runs, or is refunded whole if the message ran "
        "first (--wait says which). docs/market.md.")
    p.add_argument("id", metavar="MSG_ID")
    p.add_argument("fee", type=parse_amount, metavar="NEW_FEE", help="the new fee per gas")
    p.add_argument("--from", dest="sender", metavar="NAME",
                   help="signing account (default: the message's sender if the keystore holds it)")
    p.add_argument("--dir", type=Path, default=None, metavar="D",
                   help=f"node directory (default: $MISSIVE_DIR or ./{DEFAULT_DIR})")
    p.add_argument("--wait", action="store_true",
                   help="on a cluster: wait until the raise is settled (the message ran), and say how")
    p.set_defaults(handler=guarded(run_bid))
    register_workers(subparsers)
    p = subparsers.add_parser(
        "market", parents=[remote_options()],
        help="the execution market: pending work by bid, fees per worker, stakes, slashings",
        description="What the market holds on this node: the messages waiting, by bid (highest first); the fees "
        "each coinbase earned (from the receipts); the workers' stakes and unbonding stakes, and which one this "
        "node executes as; the slashings, with the evidence that caused them and what it found; the coin burned. "
        "On a cluster (--cluster D): its registry actor: workers, stakes, slashings, burned coin. docs/market.md.")
    p.add_argument("--dir", type=Path, default=None, metavar="D",
                   help=f"node directory (default: $MISSIVE_DIR or ./{DEFAULT_DIR})")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="waiting messages shown (default 20)")
    p.set_defaults(handler=guarded(run_market))


def run_bid(args: argparse.Namespace) -> int:
    from missive.node import Node

    node = open_node(args)
    try:
        raise_bid = getattr(node, "raise_bid", None)
        if raise_bid is None:  # pragma: no cover - every local Node has it
            raise CliError("raising a bid works on a node alone for now")
        message_id = node.resolve_id(args.id)
        sender = node.wallet(args.sender) if args.sender else None
        if isinstance(node, Node):
            top_up = raise_bid(message_id, args.fee, sender=sender)
            make_console().print(f"raised {hx(message_id)} to bid {args.fee}: escrow topped up by {top_up}",
                                 markup=False)
            return 0
        escrowed = raise_bid(message_id, args.fee, sender=sender, wait=args.wait)
        if args.wait:
            make_console().print(f"raised {hx(message_id)} to bid {args.fee}: it ran with it ({escrowed} escrowed)",
                                 markup=False)
        else:
            make_console().print(f"raise of {hx(message_id)} to bid {args.fee} sent: {escrowed} escrowed; it applies "
                                 "when the message runs, or is refunded if the message ran first", markup=False)
        return 0
    finally:
        node.close()


def register_workers(subparsers: Any) -> None:
    ops, common = operation_group(
        subparsers, "worker", "the worker registry: register with a stake, status, unbond, withdraw; run jobs",
        "Workers lock a stake (at least the registry's minimum) in the registry, kept on the ledger as "
        "signed records; an unbonded stake can be withdrawn after the unbonding delay (logical time). A node alone "
        "executes as the last worker registered on it: fees go to its coinbase, bids below its minimum are "
        "refused at admission. On a cluster (--cluster D) the registry is an actor: an operation is a message to it, "
        "the stake its value. docs/market.md. `worker run` works on the job board: docs/jobs.md.")
    signer = argparse.ArgumentParser(add_help=False)
    signer.add_argument("--from", dest="sender", metavar="NAME", help="the worker's account (default: 'default')")
    remote = remote_options()
    p = ops.add_parser("register", parents=[common, remote, signer], help="lock a stake and become a worker")
    p.add_argument("--stake", type=parse_amount, required=True, metavar="AMOUNT")
    p.add_argument("--coinbase", default=None, metavar="ADDR", help="where fees go (default: the account)")
    p.add_argument("--min-bid", type=parse_amount, default=0, metavar="FEE", help="bids below it are refused")
    p.set_defaults(handler=guarded(run_worker))
    p = ops.add_parser("accuse", parents=[common, remote, signer],
                       help="submit evidence of a wrong state diff: the executor's pledge is forfeited")
    p.add_argument("evidence", type=Path, metavar="EVIDENCE_FILE",
                   help="the evidence's bytes, as the trust store keeps them (binary, or hex text)")
    p.set_defaults(handler=guarded(run_worker))
    from missive.cli.jobs_cmd import register_worker_run

    register_worker_run(ops, [common, signer])  # issue 25: work on the job board
    for name, text in (("status", "the registry: stakes, unbonding, this node's worker"),
                       ("unbond", "stop backing the worker with its stake; it waits the unbonding delay"),
                       ("withdraw", "take an unbonded stake back once its delay has passed")):
        p = ops.add_parser(name, parents=[common, remote] + ([signer] if name != "status" else []), help=text)
        p.set_defaults(handler=guarded(run_worker), sender=None)


def run_worker(args: argparse.Namespace) -> int:
    from missive.node import Node

    opened = open_node(args)
    console = make_console()
    try:
        if not isinstance(opened, Node):
            return run_cluster_worker(opened, args)
        node = opened
        sender = node.wallet(args.sender) if args.sender else None
        if args.op == "status":
            store = node.store
            own = store.get(None, "meta", b"worker")
            rows = store.workers()
            if not rows:
                console.print("no workers registered", markup=False)
            for address, worker in rows:
                console.print(worker_line(address, worker, "logical time ") +
                              ("  (this node's worker)" if address == own else ""), markup=False)
            console.print(f"logical time now {store.clock()}", markup=False)
            idle = store.idle_reason()
            console.print(idle if idle else "this node executes", markup=False)
            return 0
        if args.op == "accuse":
            slash = node.accuse(read_evidence(args.evidence), sender=sender)
            return say_slashed(slash.executor, slash.reward, slash.burned, f" ({slash.finding})")
        return change_worker(node, args, sender, "locked", "logical time ", "the stake is back in the balance")
    finally:
        opened.close()


def run_cluster_worker(node: Any, args: argparse.Namespace) -> int:
    """``missive worker ... --cluster D``: the operation as a message to the cluster's registry actor."""
    sender = node.wallet(args.sender) if getattr(args, "sender", None) else None
    if args.op == "status":
        show_cluster_workers(node.registry())
        return 0
    if args.op == "accuse":
        slash = node.accuse(read_evidence(args.evidence), sender=sender)
        return say_slashed(slash["executor"], slash["reward"], slash["burned"])
    return change_worker(node, args, sender, "locked in the registry", "unix time ",
                         "the registry sent the stake back")


def say_slashed(executor: bytes, reward: int, burned: int, finding: str = "") -> int:
    """What an accusation did, in one line (either registry)."""
    make_console().print(f"slashed {hx(executor)}: {reward + burned} forfeited, {reward} to the accuser, {burned} "
                         f"burned; it is deregistered{finding}", markup=False)
    return 0


def change_worker(node: Any, args: argparse.Namespace, sender: object, locked: str, clock: str, back: str) -> int:
    """``register``, ``unbond`` or ``withdraw`` through either registry (``node.worker_op``), said in one line."""
    console = make_console()
    if args.op == "register":
        coinbase = node.resolve_address(args.coinbase, "coinbase") if args.coinbase else None
        worker = node.worker_op("register", sender=sender, stake=args.stake, coinbase=coinbase, min_bid=args.min_bid)
        console.print(f"registered: stake {worker.stake} {locked}, fees to {hx(worker.coinbase)}, "
                      f"minimum bid {worker.min_bid}", markup=False)
    elif args.op == "unbond":
        worker = node.worker_op("unbond", sender=sender)
        console.print(f"unbonding {worker.unbonding}: withdraw from {clock}{worker.release_at}", markup=False)
    else:
        node.worker_op("withdraw", sender=sender)
        console.print(f"withdrawn: {back}", markup=False)
    return 0


def worker_line(address: bytes, worker: Any, clock: str) -> str:
    """One worker of a registry, as ``missive worker status`` shows it (``clock``: what its times count)."""
    line = f"{hx(address)}  stake {worker.stake}  coinbase {hx(worker.coinbase)}  min bid {worker.min_bid}"
    if worker.unbonding:
        line += f"  unbonding {worker.unbonding} until {clock}{worker.release_at}"
    if worker.slashed:
        line += f"  slashed {worker.slashed}"
    return line


def show_cluster_workers(shown: dict[str, Any]) -> None:
    console = make_console()
    if not shown["workers"]:
        console.print("no workers registered", markup=False)
    for address, worker in shown["workers"]:
        console.print(worker_line(address, worker, "unix time "), markup=False)
    held = shown["holdings"]
    console.print(f"the registry holds {shown['balance']}: stakes {held['stakes']}, unbonding {held['unbonding']}, "
                  f"burned {held['burned']}; unbonding takes {shown['unbond_seconds']} s", markup=False)


def cluster_market_view(node: Any, limit: int) -> dict[str, Any]:
    """``missive market --cluster D``: the messages waiting on every node, highest bid first; the
    fees each coinbase earned, from the receipt records of every node's ledger (each message once:
    a run a rollback gave up and another holder redid counts by its last receipt); the registry
    actor (workers, slashings, burned coin)."""
    shown = node.registry()
    from missive.mailbox.envelope import Kind  # here: `missive --help` imports no VM
    from missive.market.raises import raised_bids

    everything = node.pending()
    raised = raised_bids(everything)  # raise messages (a cluster's) count in the bid of what they raise
    waiting = sorted((e for e in everything if e.kind is not Kind.RAISE),
                     key=lambda envelope: -raised.get(envelope.id, envelope.bid))  # stable: each bid's oldest first
    pending = [{"id": "0x" + e.id.hex(), "bid": raised.get(e.id, e.bid), "raised": e.id in raised,
                "sender": "0x" + e.sender.hex(), "recipient": "0x" + e.recipient.hex(), "gas": e.gas}
               for e in waiting[:limit]]
    last: dict[bytes, Any] = {}
    for record in node.iter_ledger():
        if record.type == "receipt" and record.receipt is not None:
            last[record.receipt.message_id] = record.receipt
    fees: dict[str, dict[str, int]] = {}
    for receipt in last.values():
        if receipt.fee:
            earned = fees.setdefault("0x" + receipt.coinbase.hex(), {"fees": 0, "runs": 0})
            earned["fees"] += receipt.fee
            earned["runs"] += 1
    return {"waiting": len(waiting), "pending": pending, "fees": fees,
            "workers": [{"address": "0x" + a.hex(), "stake": w.stake, "unbonding": w.unbonding,
                         "release_at": w.release_at, "coinbase": "0x" + w.coinbase.hex(), "min_bid": w.min_bid,
                         "slashed": w.slashed} for a, w in shown["workers"]],
            "slashes": [{"executor": "0x" + s["executor"].hex(), "accuser": "0x" + s["accuser"].hex(),
                         "reward": s["reward"], "burned": s["burned"], "evidence": "0x" + s["evidence"].hex()}
                        for s in shown["slashes"]],
            "burned": shown["holdings"]["burned"], "registry_balance": shown["balance"],
            "unbond_seconds": shown["unbond_seconds"]}


def read_evidence(path: Path) -> bytes:
    """The bytes of an evidence file: binary as the trust store keeps them, or their hex as text."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read the evidence file {path}: {exc.strerror or exc}") from None
    text = raw.strip()
    if text[:2] in (b"0x", b"0X"):
        text = text[2:]
    try:
        return bytes.fromhex(text.decode("ascii")) if text else raw
    except (UnicodeDecodeError, ValueError):
        return raw


def market_view(node: Any, limit: int) -> dict[str, Any]:
    """What ``missive market`` shows, as plain data (``--json`` prints it)."""
    store = node.store
    waiting = []
    for _, message_id in store.pending():
        found = store.message(message_id, check=False)
        if found is not None:
            envelope = found[0]
            waiting.append({"id": "0x" + message_id.hex(), "bid": store.bid(message_id, envelope),
                            "raised": store.bid(message_id, envelope) != envelope.bid,
                            "sender": "0x" + envelope.sender.hex(), "recipient": "0x" + envelope.recipient.hex(),
                            "gas": envelope.gas})
    waiting.sort(key=lambda m: -m["bid"])  # stable: each bid's oldest first
    fees: dict[str, dict[str, int]] = {}
    for _, record in store.ledger():
        if record[0] == "receipt":
            receipt = store.receipt(bytes(record[1]))
            if receipt is not None and receipt.fee:
                earned = fees.setdefault("0x" + receipt.coinbase.hex(), {"fees": 0, "runs": 0})
                earned["fees"] += receipt.fee
                earned["runs"] += 1
    own = store.get(None, "meta", b"worker")
    workers = [{"address": "0x" + address.hex(), "stake": w.stake, "unbonding": w.unbonding,
                "release_at": w.release_at, "coinbase": "0x" + w.coinbase.hex(), "min_bid": w.min_bid,
                "slashed": w.slashed, "this_node": address == own} for address, w in store.workers()]
    slashes = [{"evidence": "0x" + evidence.hex(), "executor": "0x" + executor.hex(), "accuser": "0x" + accuser.hex(),
                "reward": reward, "burned": burned, "finding": finding}
               for evidence, (executor, accuser, reward, burned, finding) in store.slashes()]
    return {"waiting": len(waiting), "pending": waiting[:limit], "fees": fees, "workers": workers,
            "slashes": slashes, "burned": store.burned(), "executes": store.idle_reason() is None,
            "idle_reason": store.idle_reason(), "clock": store.clock()}


def run_market(args: argparse.Namespace) -> int:
    from missive.node import Node

    opened = open_node(args)
    try:
        if not isinstance(opened, Node):
            cluster_view = cluster_market_view(opened, max(0, args.limit))
            if args.json:
                print(json.dumps(cluster_view, indent=2))
            else:
                show_cluster_market(cluster_view)
            return 0
        view = market_view(opened, max(0, args.limit))
        if args.json:
            print(json.dumps(view, indent=2))
            return 0
        show_market(view)
        return 0
    finally:
        opened.close()


def show_work_and_fees(view: dict[str, Any]) -> None:
    """The waiting messages by bid and the fees per coinbase (a node alone's view or a cluster's)."""
    from rich.table import Table

    console = make_console()
    pending = Table(title=f"waiting: {view['waiting']} message(s), highest bid first (served so, each sender's "
                          "messages to one recipient in order)", title_justify="left")
    for column in ("message", "bid", "gas", "sender", "recipient"):
        pending.add_column(column, overflow="fold")
    for m in view["pending"]:
        pending.add_row(m["id"][:18] + "..", f"{m['bid']}" + (" (raised)" if m["raised"] else ""), str(m["gas"]),
                        m["sender"][:12] + "..", m["recipient"][:12] + "..")
    console.print(pending)
    fees = Table(title="fees earned, per coinbase (from the receipts)", title_justify="left")
    for column in ("coinbase", "fees", "runs paid"):
        fees.add_column(column, overflow="fold")
    for coinbase, earned in sorted(view["fees"].items(), key=lambda item: -item[1]["fees"]):
        fees.add_row(coinbase, str(earned["fees"]), str(earned["runs"]))
    console.print(fees)


def show_market(view: dict[str, Any]) -> None:
    from rich.table import Table  # (here: `missive send` and the others start without it)

    console = make_console()
    show_work_and_fees(view)
    workers = Table(title=f"workers (logical time now {view['clock']})", title_justify="left")
    for column in ("worker", "stake", "unbonding", "coinbase", "min bid", "slashed", ""):
        workers.add_column(column, overflow="fold")
    for w in view["workers"]:
        unbonding = f"{w['unbonding']} until {w['release_at']}" if w["unbonding"] else "0"
        workers.add_row(w["address"], str(w["stake"]), unbonding, w["coinbase"], str(w["min_bid"]),
                        str(w["slashed"]), "this node's" if w["this_node"] else "")
    console.print(workers)
    if view["slashes"]:
        slashes = Table(title=f"slashings (burned in total: {view['burned']})", title_justify="left")
        for column in ("executor", "accuser", "to the accuser", "burned", "evidence (keccak256)", "what it proved"):
            slashes.add_column(column, overflow="fold")
        for s in view["slashes"]:
            slashes.add_row(s["executor"], s["accuser"], str(s["reward"]), str(s["burned"]), s["evidence"][:18] + "..",
                            s["finding"])
        console.print(slashes)
    else:
        console.print("slashings: none", markup=False)
    console.print(view["idle_reason"] or "this node executes (its worker has a stake)", markup=False)


def show_cluster_market(view: dict[str, Any]) -> None:
    from rich.table import Table

    console = make_console()
    show_work_and_fees(view)
    workers = Table(title=f"workers in the cluster's registry (it holds {view['registry_balance']}; unbonding takes "
                          f"{view['unbond_seconds']} s)", title_justify="left")
    for column in ("worker", "stake", "unbonding", "coinbase", "min bid", "slashed"):
        workers.add_column(column, overflow="fold")
    for w in view["workers"]:
        unbonding = f"{w['unbonding']} until {w['release_at']}" if w["unbonding"] else "0"
        workers.add_row(w["address"], str(w["stake"]), unbonding, w["coinbase"], str(w["min_bid"]), str(w["slashed"]))
    console.print(workers)
    if view["slashes"]:
        slashes = Table(title=f"slashings (burned in total: {view['burned']})", title_justify="left")
        for column in ("executor", "accuser", "to the accuser", "burned", "evidence (keccak256)"):
            slashes.add_column(column, overflow="fold")
        for s in view["slashes"]:
            slashes.add_row(s["executor"], s["accuser"], str(s["reward"]), str(s["burned"]), s["evidence"][:18] + "..")
        console.print(slashes)
    else:
        console.print("slashings: none", markup=False)
    console.print("each cluster node serves highest bid first; `missive bid ID FEE --cluster D` raises a bid "
                  "(docs/market.md)", markup=False)
