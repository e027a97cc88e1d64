"""``missive vm ...``: run bytecode on Missive's VM directly, and check it against public vectors.

``vm exec`` is the quickest way to see what one handler run does — including
the messages that CALL/STATICCALL/CREATE turned into, which is where Missive
differs from Ethereum.  ``vm conformance`` runs the Ethereum test vectors.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from missive.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    make_console,
    parse_address,
    parse_int,
    parse_word,
    print_json,
    read_hex_argument,
)

if TYPE_CHECKING:  # the VM is imported only by the commands that run it
    from missive.vm.types import ExecutionResult, Log, OutgoingMessage


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape  # (rich's pieces: imported when used)

    return rich_escape(text)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("vm", help="run bytecode on the VM; run conformance vectors")
    commands = parser.add_subparsers(dest="vm_command", metavar="COMMAND")
    commands.required = True

    exe = commands.add_parser(
        "exec",
        help="run bytecode once and show what it did",
        description="Run CODE as the handler of one message and show status, return data, gas, "
        "storage writes, logs and outgoing messages. Exit status: 0 success, 1 revert/halt, 2 bad input.",
    )
    exe.add_argument(
        "--code", required=True, metavar="0xHEX|@FILE", help="runtime bytecode (@file: hex, or .vy source)"
    )
    exe.add_argument("--calldata", default="0x", metavar="0xHEX|@FILE", help="message payload (default: empty)")
    exe.add_argument("--gas", type=parse_int, default=10_000_000, metavar="N", help="gas limit (default 10_000_000)")
    exe.add_argument("--value", type=parse_word, default=0, metavar="V", help="value carried by the message")
    exe.add_argument(
        "--balance", type=parse_word, default=None, metavar="B", help="actor balance incl. value (default: V)"
    )
    exe.add_argument("--nonce", type=parse_int, default=0, metavar="N", help="actor nonce")
    exe.add_argument("--address", type=parse_address, default=bytes(20), metavar="A", help="the actor's address")
    exe.add_argument("--caller", type=parse_address, default=bytes(20), metavar="C", help="the message's sender")
    exe.add_argument("--static", action="store_true", help="read-only run (as for a query message)")
    exe.add_argument(
        "--storage",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VAL",
        help="initial storage slots (decimal or 0x-hex), repeatable",
    )
    exe.add_argument("--json", action="store_true", help="print one JSON object")
    exe.set_defaults(handler=run_exec)

    conf = commands.add_parser(
        "conformance",
        help="run Ethereum test vectors against the VM",
        description="Run legacy VMTest and state-test vectors (files, or directories walked for *.json). "
        "Default: the project's ../shared/conformance. Exit status 1 if any vector failed.",
    )
    conf.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="vector files or directories")
    conf.add_argument("--verbose", "-v", action="store_true", help="list every case, not only failures")
    conf.add_argument("--json", action="store_true", help="print one JSON object with every result")
    conf.set_defaults(handler=run_conformance)


# --------------------------------------------------------------------------
# vm exec


def parse_storage(items: list[str]) -> dict[int, int]:
    storage: dict[int, int] = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep:
            raise CliError(f"--storage {item!r}: expected KEY=VALUE")
        try:
            storage[parse_word(key)] = parse_word(val)
        except argparse.ArgumentTypeError as exc:
            raise CliError(f"--storage {item!r}: {exc}") from exc
    return storage


def _word(value: int) -> str:
    return f"0x{value:x}"


def log_json(log: Log) -> dict[str, Any]:
    return {
        "address": "0x" + log.address.hex(),
        "topics": ["0x" + t.to_bytes(32, "big").hex() for t in log.topics],
        "data": "0x" + log.data.hex(),
    }


def message_json(msg: OutgoingMessage) -> dict[str, Any]:
    data: dict[str, Any] = {
        "index": msg.index,
        "kind": msg.kind.name.lower(),
        "sender": "0x" + msg.sender.hex(),
        "recipient": "0x" + msg.recipient.hex(),
        "value": msg.value,
        "gas": msg.gas,
        "wants_reply": msg.wants_reply,
        "payload": "0x" + msg.payload.hex(),
        "message_id": "0x" + msg.message_id.hex(),
    }
    if msg.deploy_address:
        data["deploy_address"] = "0x" + msg.deploy_address.hex()
    if msg.salt is not None:
        data["salt"] = _word(msg.salt)
    if msg.delay:
        data["delay"] = msg.delay
    return data


def result_json(result: ExecutionResult) -> dict[str, Any]:
    return {
        "status": result.status.value,
        "success": result.success,
        "error": result.error,
        "output": "0x" + result.output.hex(),
        "gas_used": result.gas_used,
        "gas_refund": result.gas_refund,
        "storage_writes": {_word(k): _word(v) for k, v in sorted(result.storage_writes.items())},
        "logs": [log_json(log) for log in result.logs],
        "messages": [message_json(m) for m in result.outbox],
        "balance": result.balance,
        "nonce": result.nonce,
        "code_reads": ["0x" + a.hex() for a in result.code_reads],
    }


def run_exec(args: argparse.Namespace) -> int:
    code = read_hex_argument("--code", args.code)
    calldata = read_hex_argument("--calldata", args.calldata)
    storage = parse_storage(args.storage)
    balance = args.balance if args.balance is not None else args.value
    if balance < args.value:
        raise CliError(f"--balance {balance} is below --value {args.value} (the balance includes the incoming value)")
    from missive.vm import BlockContext, execute

    try:
        result = execute(
            code,
            address=args.address,
            caller=args.caller,
            value=args.value,
            data=calldata,
            gas=args.gas,
            storage=storage,
            balance=balance,
            nonce=args.nonce,
            block=BlockContext(origin=args.caller),
            is_static=args.static,
        )
    except ValueError as exc:  # execute() refuses malformed arguments this way
        raise CliError(str(exc)) from exc
    if args.json:
        print_json(result_json(result))
    else:
        show_result(result)
    return EXIT_OK if result.success else EXIT_FAILED


def show_result(result: ExecutionResult) -> None:
    from rich.table import Table

    console = make_console()
    if result.success:
        status = "[bold green]success[/]"
    elif result.status.value == "revert":
        status = "[bold yellow]revert[/]"
    else:
        status = f"[bold red]{escape(result.status.value)}[/]"
    if result.error and result.error != result.status.value:
        status += f": {escape(result.error)}"
    console.print(f"status:       {status}")
    console.print(f"return data:  0x{result.output.hex()} ({len(result.output)} bytes)", markup=False)
    console.print(f"gas used:     {result.gas_used} (refund counter {result.gas_refund})", markup=False)
    console.print(f"balance:      {result.balance}   nonce: {result.nonce}", markup=False)
    if result.storage_writes:
        table = Table(title="storage writes", title_justify="left", show_edge=False)
        table.add_column("slot", overflow="fold")
        table.add_column("value", overflow="fold")
        for key, val in sorted(result.storage_writes.items()):
            table.add_row(_word(key), _word(val))
        console.print(table)
    else:
        console.print("storage writes: none", markup=False)
    if result.logs:
        console.print(f"logs ({len(result.logs)}):", markup=False)
        for i, log in enumerate(result.logs):
            topics = ", ".join(_word(t) for t in log.topics)
            console.print(
                f"  [{i}] LOG{len(log.topics)} address=0x{log.address.hex()} topics=[{topics}] data=0x{log.data.hex()}",
                markup=False,
            )
    else:
        console.print("logs: none", markup=False)
    if result.outbox:
        console.print(f"outgoing messages ({len(result.outbox)}):", markup=False)
        for msg in result.outbox:
            line = (
                f"  [{msg.index}] {msg.kind.name.lower()} to 0x{msg.recipient.hex()} value={msg.value} gas={msg.gas}"
                f" wants_reply={'yes' if msg.wants_reply else 'no'} id=0x{msg.message_id.hex()}"
            )
            if msg.deploy_address:
                line += f" deploy_address=0x{msg.deploy_address.hex()}"
            if msg.salt is not None:
                line += f" salt={_word(msg.salt)}"
            if msg.delay:
                line += f" delay={msg.delay}"
            console.print(line, markup=False)
            console.print(f"      payload 0x{msg.payload.hex()}", markup=False)
    else:
        console.print("outgoing messages: none", markup=False)
    if result.code_reads:
        console.print("code read from: " + ", ".join("0x" + a.hex() for a in result.code_reads), markup=False)


# --------------------------------------------------------------------------
# vm conformance


def run_conformance(args: argparse.Namespace) -> int:
    from missive.toolchain.conformance import (
        CaseResult,
        ConformanceError,
        Outcome,
        Summary,
        default_vectors_dir,
        iter_cases,
        run_case,
    )

    paths: list[Path] = args.paths
    if not paths:
        default = default_vectors_dir()
        if not default.is_dir():
            raise CliError(f"no PATH given and the default vectors directory {default} does not exist")
        paths = [default]
    try:
        from missive.vm import execute

        cases = list(iter_cases(paths))
    except ConformanceError as exc:
        raise CliError(str(exc)) from exc
    if not cases:
        raise CliError("no test vectors (*.json) found in " + ", ".join(str(p) for p in paths))

    console = make_console()
    err_console = make_console(stderr=True)
    results: list[CaseResult] = []

    def report(result: CaseResult, out: Any) -> None:
        if result.outcome is Outcome.FAILED:
            out.print(f"[bold red]FAIL[/] {escape(result.name)}  [dim]({escape(str(result.case.path))})[/]")
            for line in result.differences:
                out.print(f"    - {line}", markup=False)
        elif args.verbose:
            style = {"passed": "green", "xfailed": "yellow", "xpassed": "yellow"}[result.outcome.value]
            label = result.outcome.value.upper().removesuffix("ED")
            extra = f"  ({escape(result.explanation)})" if result.outcome is not Outcome.PASSED else ""
            out.print(f"[{style}]{label}[/] {escape(result.name)}{extra}")

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=args.json or not err_console.is_terminal,
        # No redirection: results belong on stdout even when only stderr is a terminal.
        redirect_stdout=False,
        redirect_stderr=False,
    )
    # With both streams on the terminal, print through the bar's console so lines
    # appear above the bar instead of tearing it; otherwise straight to stdout.
    out = err_console if (not progress.disable and console.is_terminal) else console
    started = time.perf_counter()
    with progress:
        task = progress.add_task("conformance", total=len(cases))
        for case in cases:
            progress.update(task, description=escape(case.name[:60]))
            result = run_case(case, execute=execute)
            results.append(result)
            if not args.json:
                report(result, out)
            progress.advance(task)
    summary = Summary(results=tuple(results), duration=time.perf_counter() - started)

    if args.json:
        print_json(summary.to_json())
        return EXIT_OK if summary.ok else EXIT_FAILED
    for result in results:
        if result.outcome in (Outcome.XFAILED, Outcome.XPASSED):
            console.print(
                f"{result.outcome.value}: {result.name} — known: {result.case.xfail}"
                + (f" [{'; '.join(result.differences)}]" if result.differences else ""),
                markup=False,
            )
    extra = []
    if summary.xfailed:
        extra.append(f"{summary.xfailed} xfailed")
    if summary.xpassed:
        extra.append(f"{summary.xpassed} xpassed")
    console.print(
        f"{len(results)} cases in {summary.duration:.2f}s" + (f" ({', '.join(extra)})" if extra else ""), markup=False
    )
    # The contract with scripts: the last line is exactly "N passed, M failed".
    console.print(summary.line, markup=False, style="bold red" if summary.failed else "bold green")
    return EXIT_OK if summary.ok else EXIT_FAILED
