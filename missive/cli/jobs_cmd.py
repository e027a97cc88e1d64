"""``missive job submit|status|list|check`` and ``missive worker run``: the job board (issue 25,
docs/jobs.md)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from missive.cli.common import EXIT_FAILED, CliError, make_console
from missive.cli.node_cmds import guarded, open_node, operation_group, parse_amount


def register(subparsers: Any) -> None:
    ops, common = operation_group(
        subparsers, "job", "the job board: post stateless jobs, follow them, re-check their results",
        "Stateless jobs for registered workers, kept on the ledger as signed records (docs/jobs.md): "
        "the bid is escrowed for each worker (or, --pay tickets, paid by a lottery ticket per accepted result from the "
        "poster's deposit at the ticket broker), a taker pledges part of its stake, and the result is verified by "
        "redundancy (redundant:N), by trust (trust[:T]) or by a Groth16 proof checked on the ledger (zk). "
        "A node alone, for now.")
    p = ops.add_parser("submit", parents=[common], help="post a job",
                       description="Post PROGRAM (Vyper, Solidity or hex: stateless EVM code; or a .circom circuit, "
                       "compiled and set up with circom2 and snarkjs, or a .zok one with zokrates-js: `missive "
                       "toolchain install`) with its input. "
                       "Code input: 0x calldata, or a signature and its arguments (--input 'f(uint256)' --input 7). "
                       "Circuit input: name=value per public input, in the circuit's order. Refused, nothing "
                       "changed: code that touches storage or sends messages, a program or input too big, a bid "
                       "escrow above the balance, a ticket-paid job without a ticket deposit of bid × N.")
    p.add_argument("program", type=Path, metavar="PROGRAM")
    p.add_argument("--input", action="append", default=[], metavar="VALUE", help="the job's input (repeatable)")
    p.add_argument("--bid", type=parse_amount, required=True, metavar="B", help="paid to each accepted worker")
    p.add_argument("--verify", required=True, metavar="HOW", help="redundant:N | trust | trust:T | zk")
    p.add_argument("--gas", type=parse_amount, default=None, metavar="G", help="gas for one run (default 1,000,000)")
    p.add_argument("--pledge", type=parse_amount, default=None, metavar="P",
                   help="stake a taker locks, lost on a wrong result (default: the bid)")
    p.add_argument("--answer-within", type=int, default=600, metavar="S",
                   help="seconds a taker has to answer before the poster may expire it (default 600)")
    p.add_argument("--pay", choices=("ledger", "tickets"), default="ledger",
                   help="ledger: the bid escrowed now and paid on the ledger (one-off jobs); tickets: one lottery "
                   "ticket per accepted result, face value bid × N, from the poster's deposit at the ticket broker "
                   "(streams of small jobs; `missive job pay` signs them)")
    p.add_argument("--win-prob", default="1/100", metavar="1/N",
                   help="with --pay tickets: each ticket wins with probability 1/N (default 1/100)")
    p.add_argument("--from", dest="sender", metavar="NAME", help="the poster's account (default: 'default')")
    p.set_defaults(handler=guarded(run_submit), node=None, cluster=None)
    p = ops.add_parser("pay", parents=[common], help="sign the lottery tickets owed for accepted ticket-paid results",
                       description="The poster's side of ticket-paid jobs: for every accepted result of its jobs "
                       "posted with --pay tickets and not paid yet, sign one ticket (off the ledger, under the "
                       "commitment the worker named in its take) and drop it for the worker. --watch repeats.")
    p.add_argument("--from", dest="sender", metavar="NAME", help="the poster's account (default: 'default')")
    p.add_argument("--watch", action="store_true", help="keep paying as results are accepted (Ctrl-C stops)")
    p.add_argument("--poll", type=float, default=0.5, metavar="S", help="seconds between passes (default 0.5)")
    p.set_defaults(handler=guarded(run_pay), node=None, cluster=None)
    for name, text in (("status", "a job's life: posted, taken, results, verification, payment, penalties"),
                       ("check", "re-check a job's accepted result off the ledger (re-run the code, or verify the "
                                 "proof in Python); exit 1 if it does not hold")):
        p = ops.add_parser(name, parents=[common], help=text)
        p.add_argument("id", metavar="ID", help="a job id, or a unique prefix of 8+ hex digits")
        p.set_defaults(handler=guarded(run_job), node=None, cluster=None)
    p = ops.add_parser("list", parents=[common], help="every job on the board, one line each")
    p.set_defaults(handler=guarded(run_job), node=None, cluster=None)
    for name, text in (("cancel", "take back a job nobody has taken: its escrow returns"),
                       ("expire", "end the wait for takers silent past their time to answer: they lose their "
                                  "pledge; the job opens again, or (redundant, results being revealed) is decided "
                                  "by re-running the program")):
        p = ops.add_parser(name, parents=[common], help=text)
        p.add_argument("id", metavar="ID", help="a job id, or a unique prefix of 8+ hex digits")
        p.add_argument("--from", dest="sender", metavar="NAME", help="the poster's account (default: 'default')")
        p.set_defaults(handler=guarded(run_poster_op), node=None, cluster=None)


def register_worker_run(ops: Any, parents: list[argparse.ArgumentParser]) -> None:
    """``missive worker run``, beside the registry's commands."""
    p = ops.add_parser("run", parents=parents, help="take jobs worth its while and answer them",
                       description="Watch the job board as a registered worker: take open jobs bidding at least "
                       "--min-bid whose pledge the stake covers, run them off the ledger (the VM for code, the "
                       "prover for circuits) and answer (commit then reveal for redundant jobs). Runs until "
                       "Ctrl-C; --once stops when nothing more can be done now.")
    p.add_argument("--min-bid", type=parse_amount, default=0, metavar="B",
                   help="take no job bidding less (for a ticket-paid job: the ticket's expected value)")
    p.add_argument("--no-tickets", action="store_true", help="take no job paid by lottery tickets")
    p.add_argument("--max-unpaid", type=int, default=16, metavar="N",
                   help="take no more ticket-paid jobs of a poster with N of them unpaid or in hand (default 16)")
    p.add_argument("--min-win-prob", default="1/1000000", metavar="1/N",
                   help="take no ticket-paid job whose tickets win less often than this (default 1/1000000)")
    p.add_argument("--once", action="store_true", help="one pass: stop when nothing more can be done now")
    p.add_argument("--poll", type=float, default=0.5, metavar="S", help="seconds between passes (default 0.5)")
    p.add_argument("--lie", action="store_true", help=argparse.SUPPRESS)  # demos and tests: a wrong answer
    p.set_defaults(handler=guarded(run_worker_run), node=None, cluster=None)


def _local(args: argparse.Namespace) -> Any:
    from missive.node import Node

    opened = open_node(args)
    if not isinstance(opened, Node):  # pragma: no cover - open_node gives a Node without --node/--cluster
        opened.close()
        raise CliError("the job board works on a node directory (--dir) for now, not on a cluster")
    return opened


def run_submit(args: argparse.Namespace) -> int:
    from missive.node.jobs import DEFAULT_JOB_GAS, submit

    if not args.program.is_file():
        raise CliError(f"{args.program}: no such file", 3)
    from missive.market.jobpay import parse_odds

    odds = parse_odds(args.win_prob) if args.pay == "tickets" else 0
    node = _local(args)
    try:
        job_id = submit(node, args.program, args.input, bid=args.bid, verify=args.verify,
                        gas=args.gas if args.gas is not None else DEFAULT_JOB_GAS, pledge=args.pledge,
                        sender=node.wallet(args.sender) if args.sender else None, window=args.answer_within,
                        odds=odds)
        console = make_console()
        console.print(f"posted job 0x{job_id.hex()}", markup=False)
        console.print(f"follow it: missive job status {job_id.hex()[:16]}", markup=False)
        return 0
    finally:
        node.close()


def _names(node: Any) -> dict[bytes, str]:
    return {wallet.address: wallet.name for wallet in node.wallets() if wallet.name}


def _named(text: str, names: dict[bytes, str]) -> str:
    for address, name in names.items():
        text = text.replace(f"0x{address.hex()}", name)
    return text


def _resolve(node: Any, text: str) -> bytes:
    from missive.mailbox.jobboard import jobs

    wanted = text.lower().removeprefix("0x")
    if len(wanted) < 8 or any(c not in "0123456789abcdef" for c in wanted):
        raise CliError(f"{text!r} is not a job id (64 hex digits, or a unique prefix of 8 or more)")
    found = [job_id for job_id, _ in jobs(node.store) if job_id.hex().startswith(wanted)]
    if not found:
        raise CliError(f"no job {text} on this node", 3)
    if len(found) > 1:
        raise CliError(f"{text} names {len(found)} jobs: give more digits")
    return found[0]


def run_pay(args: argparse.Namespace) -> int:
    """``missive job pay``: the poster's node signs the tickets its accepted results are owed."""
    from missive.node.jobtickets import pay

    node = _local(args)
    console = make_console()
    try:
        names = _names(node)
        while True:
            lines = pay(node, node.wallet(args.sender) if args.sender else None)
            for line in lines:
                console.print(_named(line, names), markup=False)
            if not args.watch:
                if not lines:
                    console.print("no ticket owed: every accepted ticket-paid result is paid", markup=False)
                return 0
            time.sleep(args.poll)
    finally:
        node.close()


def run_poster_op(args: argparse.Namespace) -> int:
    """``missive job cancel|expire ID``, signed by the poster."""
    from missive.mailbox.jobboard import job

    node = _local(args)
    try:
        job_id = _resolve(node, args.id)
        node.job_op(args.op, [job_id], sender=node.wallet(args.sender) if args.sender else None)
        found = job(node.store, job_id)
        assert found is not None
        make_console().print(f"job {job_id.hex()[:16]}: {_named(found[0].history[-1], _names(node))}", markup=False)
        return 0
    finally:
        node.close()


def run_job(args: argparse.Namespace) -> int:
    from missive.mailbox.jobboard import job, jobs, reputations

    node = _local(args)
    console = make_console()
    try:
        names = _names(node)
        if args.op == "list":
            rows = jobs(node.store)
            if not rows:
                console.print("no jobs on the board", markup=False)
            for job_id, entry in rows:
                paid = f" by tickets at 1/{entry.odds}" if entry.by_tickets else ""
                console.print(f"{job_id.hex()[:16]}  {entry.kind:<3}  {entry.mode:<9}  {entry.status:<9}  bid "
                              f"{entry.bid} × {entry.n}{paid}  takers {len(entry.takers)}  by "
                              f"{_named(f'0x{entry.poster.hex()}', names)}", markup=False)
            return 0
        job_id = _resolve(node, args.id)
        found = job(node.store, job_id)
        assert found is not None
        entry, program, data = found
        if args.op == "check":
            return _check(console, entry, program, data)
        console.print(f"job 0x{job_id.hex()}", markup=False)
        console.print(f"  {entry.kind} program of {len(program)} bytes, input {len(data)} bytes, gas {entry.gas}; "
                      f"status {entry.status}, escrow {entry.escrow}", markup=False)
        if entry.by_tickets:
            from missive.node.jobtickets import ticket_status

            console.print(f"  {_named(ticket_status(node, job_id, entry), names)}", markup=False)
        for line in entry.history:
            console.print(f"  - {_named(line, names)}", markup=False)
        if entry.outcome is not None:
            console.print(f"  result: {_outcome(entry, entry.outcome)}", markup=False)
        scores = reputations(node.store)
        for taker in entry.takers:
            good, bad = scores.get(taker.worker, (0, 0))
            console.print(f"  worker {_named(f'0x{taker.worker.hex()}', names)}: {taker.verdict or 'working'} "
                          f"(record on this board: {good} accepted, {bad} rejected)", markup=False)
        return 0
    finally:
        node.close()


def _outcome(entry: Any, outcome: bytes) -> str:
    if entry.kind == "zk":
        from missive.market.zk.bundle import outputs_of

        return f"outputs {outputs_of(outcome)} (Groth16 proof verified on the ledger)"
    from missive.market.jobrun import decode_result

    status, output = decode_result(outcome)
    return f"{status} 0x{output.hex()}"


def _check(console: Any, entry: Any, program: bytes, data: bytes) -> int:
    if entry.outcome is None:
        raise CliError(f"the job is {entry.status}: no accepted result to check yet", EXIT_FAILED)
    if entry.kind == "zk":
        from missive.market.zk.bundle import check_off_ledger
        from missive.market.zk.groth16 import ProofRejected

        try:
            check_off_ledger(program, data, entry.outcome)
        except ProofRejected as exc:
            raise CliError(f"the accepted proof does not verify in Python: {exc}", EXIT_FAILED) from None
        console.print(f"the proof verifies (Missive's BN254 in Python): {_outcome(entry, entry.outcome)}",
                      markup=False)
        return 0
    from missive.market.jobrun import run_program

    rerun = run_program(program, data, entry.gas)
    if rerun != entry.outcome:
        raise CliError(f"re-running the program gives {_outcome(entry, rerun)}, not the accepted result", EXIT_FAILED)
    console.print(f"re-running the program gives the accepted result: {_outcome(entry, rerun)}", markup=False)
    return 0


def run_worker_run(args: argparse.Namespace) -> int:
    from missive.market.jobpay import parse_odds
    from missive.node.jobs import work
    from missive.node.jobtickets import earnings, owed

    max_odds = parse_odds(args.min_win_prob)
    node = _local(args)
    console = make_console()
    try:
        worker = node.wallet(args.sender) if args.sender else node.default
        entry = node.store.worker(worker.address)
        if entry is None or not entry.stake:
            raise CliError(f"{worker.name or worker.address.hex()} is not a registered worker: run "
                           "`missive worker register --stake AMOUNT` first")
        tickets = "no ticket-paid jobs" if args.no_tickets else f"tickets winning at least 1/{max_odds}"
        console.print(f"working as {worker.name or '0x' + worker.address.hex()} (stake {entry.stake}, min bid "
                      f"{args.min_bid}, {tickets})", markup=False)
        names = _names(node)

        def summary() -> tuple[str, bool]:
            """The worker's ticket earnings and the accepted jobs still owed a ticket; whether any."""
            mine, waiting = earnings(node, worker), owed(node, worker)
            return f"{mine.line()}; {waiting} accepted job(s) still owed a ticket", bool(mine.jobs or waiting)

        said = summary()[0]
        try:
            while True:
                for line in work(node, worker, min_bid=args.min_bid, lie=args.lie, tickets=not args.no_tickets,
                                 max_odds=max_odds, max_unpaid=args.max_unpaid):
                    console.print(_named(line, names), markup=False)
                line, anything = summary()
                if line != said and anything:
                    console.print(line, markup=False)
                said = line
                if args.once:
                    return 0
                time.sleep(args.poll)
        finally:
            if not args.once and summary()[1]:  # stopped by Ctrl-C: where the worker stands
                console.print(summary()[0], markup=False)
    finally:
        node.close()
