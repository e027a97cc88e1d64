"""Commands against a node directory: ``init``, ``account``, ``deploy``, ``send``, ``query``,
``inbox``, ``ledger``, ``receipt``.

Every command takes ``--dir D`` (default ``$MISSIVE_DIR`` or ``./.missive``).  Contract
arguments are given as text and parsed per ABI type: integers (decimal, ``0x`` hex,
underscores, ``1e18``), addresses (``0x`` + 40 hex digits, or a keystore account name),
``true``/``false``, ``0x`` hex for bytes, text for strings, ``[a,b]`` for arrays and ``(a,b)``
for tuples.  A function is named by its signature (``'transfer(address,uint256)'``), or
by its name alone when the contract's ABI is known (``deploy`` records it in
``<dir>/abis.msgpack``).

Against a cluster (``missive cluster up``), the client commands take ``--cluster DIR``
(keys from DIR's keystore, any live node) and/or ``--node HOST:PORT`` (or a member's name
with ``--cluster``): the node forwards each request to the node executing the actor.  Each
node keeps its own ledger: ``ledger`` shows the named node's, or every node's in turn.

Exit status (the README's table): 0 done, 1 the message's handler failed (revert reason
printed) or a wrong keystore passphrase, 2 bad input (bad address, wrong arguments, refused
message), 3 not found (no node, unknown key, message or function), 4 the node's store or keystore
is not whole (one line naming the file; nothing was opened or written), 74 the disk is full or
failing, 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from missive.cli.common import (
    EXIT_DISK,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CliError,
    exit_code,
    make_console,
    parse_seconds,
    parse_word,
)
from missive.cli.show import (
    called_function,
    describe_payload,
    envelope_line,
    failed_error,
    hx,
    outcome_words,
    pending_words,
    short,
    show_outcome,
    trace_json,
    trace_line,
)

if TYPE_CHECKING:  # the node (and with it the VM) is imported only by the commands that use it
    from missive.node import NodeAPI

DEFAULT_DIR = ".missive"
#: How long ``deploy``/``send``/``query`` wait, without ``--timeout``, for the messages their message
#: caused (on one node they run only while a command or ``missive serve`` runs the actors).
FOLLOW_SECONDS = 10.0
#: What ``missive init`` gives the "default" account (the dev faucet): 10**6 coins of 10**18.
DEFAULT_FUND = 10**24


def default_dir() -> Path:
    return Path(os.environ.get("MISSIVE_DIR") or DEFAULT_DIR)


def remote_options() -> argparse.ArgumentParser:
    """The ``--node`` and ``--cluster`` options of a command that talks to a cluster too (a parent parser)."""
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument("--node", default=None, metavar="HOST:PORT",
                        help="talk to this cluster node (with --cluster: a member's name such as n2 works too)")
    remote.add_argument("--cluster", type=Path, default=None, metavar="DIR",
                        help="talk to the cluster started in DIR (`missive cluster up --dir DIR`); keys from its keystore")
    return remote


def register(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, default=None, metavar="D",
                        help=f"node directory (default: $MISSIVE_DIR or ./{DEFAULT_DIR})")
    remote = remote_options()
    sending = argparse.ArgumentParser(add_help=False)
    sending.add_argument("--from", dest="sender", metavar="NAME", help="sending account: name or address (default: 'default')")
    sending.add_argument("--gas", type=parse_word, default=None, metavar="G", help="gas the message carries")
    sending.add_argument("--bid", type=parse_word, default=None, metavar="FEE",
                         help="fee per gas offered: gas × FEE is escrowed, the gas used × FEE paid to the worker, the "
                              "rest refunded (default: $MISSIVE_BID, else 0; docs/market.md)")
    sending.add_argument("--timeout", type=parse_seconds, default=None, metavar="S",
                         help="give up waiting after S seconds (for the messages it caused too; without it, they are "
                         f"waited for up to {FOLLOW_SECONDS:g} s)")

    p = subparsers.add_parser("init", parents=[common], help="create a node directory with a funded default account",
                              description="Create a node directory (error if one exists) and a funded account "
                              "named 'default' (the dev faucet).")
    p.add_argument("--fund", type=parse_amount, default=DEFAULT_FUND, metavar="AMOUNT",
                   help=f"balance of the default account (default {DEFAULT_FUND})")
    p.add_argument("--unencrypted-keys", action="store_true",
                   help="keep the account seeds unencrypted (tests, throw-away nodes; also $MISSIVE_UNENCRYPTED_KEYS=1). "
                        "Otherwise they are encrypted under a passphrase: $MISSIVE_PASSPHRASE, or asked for")
    p.set_defaults(handler=guarded(run_init))

    account = subparsers.add_parser("account", help="create and list accounts (keys in <dir>/keystore)")
    commands = account.add_subparsers(dest="account_command", metavar="COMMAND")
    commands.required = True
    p = commands.add_parser("new", parents=[common, remote], help="new key and genesis account")
    p.add_argument("name", nargs="?", default="", metavar="NAME", help="a name to refer to it by")
    p.add_argument("--fund", type=parse_amount, default=0, metavar="AMOUNT", help="starting balance (dev faucet; default 0)")
    p.add_argument("--kind", choices=("ed25519", "eth"), default="ed25519",
                   help="ed25519 (Missive's own, the default) or eth: a secp256k1 key whose Ethereum transactions "
                   "`missive rpc` takes")
    p.set_defaults(handler=guarded(run_account_new))
    p = commands.add_parser("import", parents=[common], help="keep an Ethereum private key (secp256k1) in the keystore",
                            description="Import an Ethereum account's private key (64 hex digits) read from FILE "
                            "('-': standard input; never from the command line) into the keystore.")
    p.add_argument("name", nargs="?", default="", metavar="NAME", help="a name to refer to it by")
    p.add_argument("--key-file", required=True, metavar="FILE", help="file holding the private key in hex ('-': stdin)")
    p.add_argument("--fund", type=parse_amount, default=0, metavar="AMOUNT",
                   help="starting balance of an account new to the ledger (dev faucet; default 0)")
    p.set_defaults(handler=guarded(run_account_import))
    p = commands.add_parser("list", parents=[common, remote], help="accounts: names, addresses, balances")
    p.add_argument("--contracts", action="store_true", help="list contracts too")
    p.set_defaults(handler=guarded(run_account_list))

    p = subparsers.add_parser("deploy", parents=[common, remote, sending], help="compile, check and deploy a contract",
                              description="Compile FILE (.vy, .sol, a Foundry/Hardhat .json artifact, or .bin/.hex "
                              "init or runtime code with a sibling ABI), check it as `missive check` does (code that "
                              "would change meaning silently is refused unless --accept-async names the finding), send "
                              "a deploy message with the constructor ARGS, run the node until it is handled, print the "
                              "address.")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("args", nargs="*", metavar="ARG", help="constructor arguments")
    p.add_argument("--value", type=parse_amount, default=0, metavar="V", help="value sent with the deploy")
    p.add_argument("--name", default=None, help="contract name (default: the file's stem)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the address")
    p.add_argument("--accept-async", action="append", default=[], metavar="FINDING",
                   help="deploy although `missive check` finds this (a kind such as empty-return-as-success, or "
                   "kind@offset; repeat or comma-separate for several)")
    p.set_defaults(handler=guarded(run_deploy))

    p = subparsers.add_parser("send", parents=[common, remote, sending], help="sign and send a call message",
                              description="Send a call to ADDR; print the message id once it is durable, then (unless "
                              "--no-wait) run the node until it is handled and print the outcome.")
    p.add_argument("address", metavar="ADDR", help="the contract")
    p.add_argument("function", metavar="FUNCTION", help="'name(types)', or a name when the ABI is known")
    p.add_argument("args", nargs="*", metavar="ARG")
    p.add_argument("--value", type=parse_amount, default=0, metavar="V", help="value carried by the message")
    p.add_argument("--no-wait", action="store_true", help="return once the message is durable")
    p.set_defaults(handler=guarded(run_send))

    p = subparsers.add_parser("query", parents=[common, remote, sending], help="query a contract and print the answer",
                              description="Send a query (read-only run) to ADDR, run the node until the reply arrives, "
                              "print the decoded answer.")
    p.add_argument("address", metavar="ADDR")
    p.add_argument("function", metavar="FUNCTION", help="'name(types)', or a name when the ABI is known")
    p.add_argument("args", nargs="*", metavar="ARG")
    p.add_argument("--returns", default=None, metavar="TYPES", help="return types, e.g. uint256 or 'uint256,address'")
    p.set_defaults(handler=guarded(run_query))

    p = subparsers.add_parser("inbox", parents=[common, remote], help="messages waiting for an account or contract")
    p.add_argument("address", metavar="ADDR", help="address, or an account name")
    p.add_argument("--handled", action="store_true", help="show the handled messages (the mailbox) instead")
    p.set_defaults(handler=guarded(run_inbox))

    p = subparsers.add_parser("ledger", parents=[common, remote], help="the ledger's records: genesis, accept, receipt")
    p.add_argument("--limit", type=parse_word, default=None, metavar="N", help="only the last N records (with --start: the first N from it)")
    p.add_argument("--start", type=parse_word, default=None, metavar="SEQ", help="start at record SEQ")
    p.set_defaults(handler=guarded(run_ledger))

    p = subparsers.add_parser("receipt", parents=[common, remote], help="a message and its receipt",
                              description="Show a message and its receipt. ID: the message id or a unique prefix "
                              "(8+ hex digits). Exit status 1 if its handler failed.")
    p.add_argument("id", metavar="ID")
    p.set_defaults(handler=guarded(run_receipt))

    p = subparsers.add_parser("trace", parents=[common, remote], help="the tree of messages one message caused",
                              description="Show the message ID and every message it caused (calls, queries, replies, "
                              "bounces, scheduled ticks, deploys), each with its receipt: status, gas, decoded revert "
                              "(Error(string), Panic(uint256), custom errors from the ABI). Exit status 1 if any failed.")
    p.add_argument("id", metavar="ID", help="message id or a unique prefix (8+ hex digits)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=guarded(run_trace))

    p = subparsers.add_parser("serve", parents=[common], help="run the node's actors until stopped (Ctrl-C)",
                              description="Keep the actors of one node directory running: messages sent with "
                              "--no-wait, by other processes, or scheduled for later are handled as they come. "
                              "Without it, a node's actors run only while a command runs them.")
    p.set_defaults(handler=guarded(run_serve))


def run_serve(args: argparse.Namespace) -> int:
    import trio

    from missive.actors.runtime import Runtime
    from missive.actors.serve import interrupted, serve

    if is_remote(args):
        raise CliError("a cluster's nodes run their actors themselves; `missive serve` is for one node's directory")
    from missive.node import Node

    where = node_dir(args)
    node = Node.open(where)  # refuses, with one line, what is not a node
    try:
        node.ensure_writable("run its actors")
    finally:
        node.close()
    console = make_console(stderr=True)
    running: list[Runtime] = []

    def ready() -> None:
        console.print(f"serving the actors of {where} (Ctrl-C stops; other commands may send meanwhile)", markup=False)

    def report(total: int) -> None:
        console.print(f"handled {total} message(s)", markup=False)

    try:
        trio.run(functools.partial(serve, where, ready=ready, report=report, runtime_out=running))
    except BaseException as exc:
        if not interrupted(exc):
            raise
        handled = running[0].handled_total if running else 0
        console.print(f"missive: interrupted; stopped after handling {handled} message(s) (every committed round "
                      "is kept)", markup=False)
        return EXIT_INTERRUPTED
    return EXIT_OK


def guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the node's, the ledger's and the compiler's errors into one-line CLI errors."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        import lmdb

        from missive.errors import MissiveError
        from missive.mailbox.disk import disk_full
        from missive.mailbox.records import RecordError

        try:
            return handler(args)
        except CliError:
            raise
        except MissiveError as exc:
            if isinstance(exc, RecordError):  # a ledger record that does not decode: the node's data, not the input
                raise CliError(f"cannot read the node at {node_dir(args)}: {exc}", EXIT_FAILED) from exc
            # by kind: failed 1 (a revert, a wait given up, a compiler error, a wrong passphrase), not found 3,
            # damaged 4, a full disk 74 (one line naming it; nothing was written); any other, refused input 2
            raise CliError(str(exc), exit_code(exc)) from exc
        except (lmdb.Error, OSError) as exc:  # OSError: e.g. a keystore directory that cannot be made
            full = disk_full(node_dir(args), exc)
            if full is not None:  # the keystore's own writes, say
                raise CliError(str(full), EXIT_DISK) from exc
            if isinstance(exc, OSError):
                raise CliError(str(exc)) from exc
            raise CliError(f"cannot read the node at {node_dir(args)}: {exc}", EXIT_FAILED) from exc

    return run


# -- shared ----------------------------------------------------------------------------------------


def node_dir(args: argparse.Namespace) -> Path:
    return args.dir if getattr(args, "dir", None) is not None else default_dir()


def is_remote(args: argparse.Namespace) -> bool:
    return getattr(args, "node", None) is not None or getattr(args, "cluster", None) is not None


def operation_group(subparsers: Any, name: str, help: str, description: str) -> tuple[Any, argparse.ArgumentParser]:
    """A command with operations (``missive worker register``, ``missive tickets fund``...): its
    required sub-parsers, and the ``--dir`` option they all take, as a parent parser."""
    group = subparsers.add_parser(name, help=help, description=description)
    ops = group.add_subparsers(dest="op", metavar="OP")
    ops.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, default=None, metavar="D",
                        help=f"node directory (default: $MISSIVE_DIR or ./{DEFAULT_DIR})")
    return ops, common


def open_node(args: argparse.Namespace) -> NodeAPI:
    """The node directory (``--dir``), or a cluster (``--node``/``--cluster``) behind the same API."""
    from missive.node import Node

    if is_remote(args):
        from missive.cluster.remote import RemoteNode

        keys = args.dir if args.dir is not None else (None if args.cluster is not None else default_dir())
        return RemoteNode.connect(args.node, args.cluster, keys)
    return Node.open(node_dir(args))


def sender_of(node: NodeAPI, args: argparse.Namespace) -> object:
    return node.wallet(args.sender) if args.sender else None


def parse_amount(text: str) -> int:
    """argparse ``type=`` for amounts: decimal, ``0x`` hex, underscores, ``1e18``; 256 bits, not negative."""
    from missive.node.errors import ArgumentError
    from missive.node.values import parse_text_int

    try:
        value = parse_text_int(text, "amount")
    except ArgumentError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount (decimal, 0x-hex or 1e18)") from exc
    if value < 0 or value >> 256:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount in [0, 2**256)")
    return value


def finish_chain(node: NodeAPI, message_id: bytes, args: argparse.Namespace, started: float, *, quiet: bool = False,
                 stderr: bool = False) -> None:
    """Wait (within the time limit) for the messages ``message_id`` caused; say what they did and,
    plainly, what is still waiting and how to run it."""
    limit = FOLLOW_SECONDS if args.timeout is None else max(0.0, args.timeout - (time.monotonic() - started))
    chain = node.follow(message_id, limit)
    console = make_console(stderr=stderr)
    if chain.handled and not quiet:
        failed = f", {len(chain.failed)} failed" if chain.failed else ""
        console.print(f"caused:    {chain.handled} message(s) handled{failed}", markup=False)
        for failed_id, receipt in chain.failed[:3]:
            console.print(f"  failed:  {hx(failed_id)}  {outcome_words(receipt, node)}", markup=False)
        if chain.failed:
            console.print(f"  the whole tree: `missive trace {short(message_id)}`", markup=False)
    if chain.unfinished:
        waiting = chain.unfinished
        shown = ", ".join(pending_words(node, m) for m in waiting[:3]) + (", ..." if len(waiting) > 3 else "")
        how = ("the cluster runs them" if is_remote(args) else
               f"they run with the next command on this node, or keep its actors running: `missive serve --dir "
               f"{node_dir(args)}`")
        make_console(stderr=True).print(
            f"pending:   {len(waiting)} message(s) it caused not handled after {limit:g} s ({shown}); {how}",
            markup=False)
    elif not is_remote(args) and not node.is_idle():
        make_console(stderr=True).print(
            f"pending:   other messages wait on this node after {limit:g} s (`missive inbox`); they run with the next "
            f"command on this node, or keep its actors running: `missive serve --dir {node_dir(args)}`", markup=False)


# -- init, account --------------------------------------------------------------------------------------


def run_init(args: argparse.Namespace) -> int:
    from missive.node import Node

    path = node_dir(args)
    node = Node.init(path, default_balance=args.fund, encrypt_keys=False if args.unencrypted_keys else None)
    try:
        wallet = node.default
        console = make_console()
        console.print(f"created a Missive node in {path}", markup=False)
        console.print(f"default account {wallet.hex} (balance {args.fund})", markup=False)
        console.print("account keys encrypted under your passphrase" if node.keystore.encrypted
                      else "account keys stored unencrypted (a development node)", markup=False)
        console.print(f"chain id {node.chain_id} (CHAINID; messages signed for this ledger are refused by others)",
                      markup=False)
    finally:
        node.close()
    return EXIT_OK


def run_account_new(args: argparse.Namespace) -> int:
    from missive.node.values import looks_like_address

    name = args.name.strip()
    if name and looks_like_address(name):
        raise CliError(f"account name {name!r} looks like an address; pick another")
    if args.name and not name:
        raise CliError("account name is blank")
    if getattr(args, "kind", "ed25519") == "eth" and is_remote(args):
        raise CliError("Ethereum accounts on a cluster are not supported yet: make one on a node directory (--dir)")
    node = open_node(args)
    try:
        if getattr(args, "kind", "ed25519") == "ed25519":
            wallet = node.new_account(name, balance=args.fund)
        else:
            from missive.node import Node

            assert isinstance(node, Node)  # (refused on a cluster above)
            wallet = node.new_eth_account(name, balance=args.fund)
        kind = " (Ethereum, secp256k1)" if getattr(args, "kind", "ed25519") == "eth" else ""
        make_console().print(f"account {name or '(unnamed)'} {wallet.hex}{kind} (balance {args.fund})", markup=False)
    finally:
        node.close()
    return EXIT_OK


def run_account_import(args: argparse.Namespace) -> int:
    import sys

    from missive.keys import eth_private_key
    from missive.node import Node

    name = args.name.strip()
    if name and (name[:2].lower() == "0x" or len(name) == 40 and all(c in "0123456789abcdefABCDEF" for c in name)):
        raise CliError(f"account name {name!r} looks like an address; pick another")
    node = Node.open(node_dir(args))  # (no node there: said before a key is asked for)
    try:
        try:
            text = sys.stdin.read() if args.key_file == "-" else Path(args.key_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read the key file {args.key_file}: {exc}") from None
        private_key = eth_private_key(text)
        wallet = node.new_eth_account(name, balance=args.fund, private_key=private_key)
        account = node.account(wallet.address)
        make_console().print(f"account {name or '(unnamed)'} {wallet.hex} (Ethereum, secp256k1) imported (balance "
                             f"{account.balance if account else 0})", markup=False)
    finally:
        node.close()
    return EXIT_OK


def run_account_list(args: argparse.Namespace) -> int:
    node = open_node(args)
    try:
        console = make_console()
        rows: list[tuple[str, str, str, str, str]] = [("name", "address", "balance", "nonce", "handled")]
        for wallet in node.wallets():
            account = node.account(wallet.address)
            if account is None:
                rows.append((wallet.name or "-", wallet.hex, "(not on the ledger)", "", ""))
            else:
                rows.append((wallet.name or "-", wallet.hex, str(account.balance), str(account.nonce), str(account.handled)))
        if args.contracts:
            abis = node.abis()
            for address, account in sorted(node.accounts().items()):
                if account.is_contract:
                    label = f"[{abis[address][0]}]" if address in abis else "[contract]"
                    rows.append((label, hx(address), str(account.balance), str(account.nonce), str(account.handled)))
        if len(rows) == 1:
            console.print("no accounts (create one with `missive account new NAME`)", markup=False)
            return EXIT_OK
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for row in rows:
            console.print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), markup=False)
    finally:
        node.close()
    return EXIT_OK


# -- deploy, send, query ------------------------------------------------------------------------------


def run_deploy(args: argparse.Namespace) -> int:
    from missive.node.abi import abi_type, parse_text_args
    from missive.toolchain.compiler import compile_source

    node = open_node(args)
    try:
        sender = sender_of(node, args)
        compiled = compile_source(args.file, name=args.name)
        accepted = check_before_deploy(compiled, args.accept_async, quiet=args.quiet)
        constructor = next((e for e in compiled.abi if e.get("type") == "constructor"), None)
        inputs = constructor.get("inputs", []) if constructor else []
        values = parse_text_args([abi_type(i) for i in inputs], [str(i.get("name", "")) for i in inputs],
                                 args.args, f"{compiled.name} constructor", node.resolve_address)
        sent, contract = node.deploy_message(compiled.bytecode, *values, sender=sender, value=args.value, gas=args.gas,
                                             abi=compiled.abi, name=compiled.name, accept_async=accepted, bid=args.bid)
        console = make_console()
        if not args.quiet:
            console.print(f"message   {sent.hex}", markup=False)
        started = time.monotonic()
        receipt = sent.receipt(args.timeout)
        if not receipt.success:
            raise failed_error(f"deploying {compiled.name}", receipt, node)
        if args.quiet:
            console.print(contract.hex, markup=False)
        else:
            console.print(f"deployed  {compiled.name} at {contract.hex}", markup=False)
            console.print(f"gas used  {receipt.gas_used}", markup=False)
        finish_chain(node, sent.id, args, started, quiet=args.quiet)
    finally:
        node.close()
    return EXIT_OK


def check_before_deploy(compiled: Any, accepted: list[str], *, quiet: bool) -> bool:
    """``missive check``'s findings: refuse (exit 2) those not accepted, say which were accepted.
    Returns True: the code is checked, the node need not check it again."""
    from missive.toolchain.check import check_contract

    report = check_contract(compiled)
    refusal = report.refusal(accepted)
    if refusal is not None:
        raise CliError(refusal)
    if report.refused and not quiet:
        names = ", ".join(f.name for f in report.refused)
        make_console(stderr=True).print(f"accepted:  {names} (--accept-async): its meaning changes as `missive check "
                                        f"{compiled.source_path or ''}` says", markup=False)
    return True


def run_send(args: argparse.Namespace) -> int:
    from missive.node.abi import parse_text_args
    from missive.node.contract import resolve_function

    node = open_node(args)
    try:
        sender = sender_of(node, args)
        address = node.resolve_address(args.address, "ADDR")
        fn, _ = resolve_function(node, address, args.function, len(args.args), view=False)
        values = parse_text_args(fn.inputs, fn.input_names, args.args, fn.signature, node.resolve_address)
        sent = fn.send(*values, sender=sender, value=args.value, gas=args.gas, bid=args.bid)
        console = make_console()
        console.print(f"message   {sent.hex}", markup=False)
        console.file.flush()
        if args.no_wait:
            return EXIT_OK
        started = time.monotonic()
        receipt = sent.receipt(args.timeout)
        show_outcome(node, receipt, fn)
        if not receipt.success:
            raise failed_error(fn.signature, receipt, node)
        finish_chain(node, sent.id, args, started)
    finally:
        node.close()
    return EXIT_OK


def run_query(args: argparse.Namespace) -> int:
    from missive.node.abi import format_value, parse_returns, parse_text_args
    from missive.node.contract import resolve_function

    node = open_node(args)
    try:
        sender = sender_of(node, args)
        address = node.resolve_address(args.address, "ADDR")
        returns = parse_returns(args.returns)
        fn, known = resolve_function(node, address, args.function, len(args.args), view=True, returns=returns)
        values = parse_text_args(fn.inputs, fn.input_names, args.args, fn.signature, node.resolve_address)
        sent = fn.query(*values, sender=sender, gas=args.gas, bid=args.bid)
        raw = not known
        if raw:
            sent.function = None  # outputs unknown: print the reply's bytes
        started = time.monotonic()
        answer = sent.reply(args.timeout)
        console = make_console()
        if raw:
            console.print(hx(answer), markup=False)
        elif isinstance(answer, tuple) and len(fn.outputs) > 1:
            for item in answer:
                console.print(format_value(item), markup=False)
        elif fn.outputs:
            console.print(format_value(answer), markup=False)
        finish_chain(node, sent.id, args, started, stderr=True)  # stdout is the answer alone
    finally:
        node.close()
    return EXIT_OK


# -- inbox, ledger, receipt -----------------------------------------------------------------------------


def run_inbox(args: argparse.Namespace) -> int:
    from missive.node import Node

    node = open_node(args)
    try:
        address = node.resolve_address(args.address, "ADDR")
        abis = node.abis()
        console = make_console()
        if args.handled:
            mailbox = node.mailbox(address)
            console.print(f"{len(mailbox)} handled message(s) for {hx(address)}", markup=False)
            for position, (envelope, receipt) in enumerate(mailbox):
                status = receipt.status if receipt is not None else "?"
                console.print(f"{position:>5}  {short(envelope.id)}  {status:<8} {envelope_line(node, envelope, abis)}",
                              markup=False)
            return EXIT_OK
        pending = node.inbox(address)
        console.print(f"{len(pending)} message(s) waiting for {hx(address)}", markup=False)
        for envelope in pending:
            console.print(f"  {short(envelope.id)}  {envelope_line(node, envelope, abis)}  gas {envelope.gas}", markup=False)
        if isinstance(node, Node):  # (a cluster's nodes do not list their schedules yet)
            scheduled = node.scheduled_for(address)
            if scheduled:
                console.print(f"{len(scheduled)} scheduled message(s), not due yet (logical time now "
                              f"{node.clock()}):", markup=False)
            for due, envelope in scheduled:
                console.print(f"  {short(envelope.id)}  at t={due}  {envelope_line(node, envelope, abis)}", markup=False)
    finally:
        node.close()
    return EXIT_OK


def run_ledger(args: argparse.Namespace) -> int:
    node = open_node(args)
    try:
        if args.start is not None:
            records = node.ledger(args.start, args.limit)
        else:
            records = node.ledger(last=args.limit) if args.limit is not None else node.ledger()
        console = make_console()
        total = node.ledger_length()
        if not records:
            console.print(f"no ledger records in that range ({total} in all)", markup=False)
            return EXIT_OK
        abis = node.abis()
        for record in records:
            head = f"{record.node}#{record.seq:<6} {record.type:<8}"
            if record.type == "genesis":
                console.print(f"{head} account {hx(record.address)}  balance {record.balance}", markup=False)
                continue
            if record.detail:  # a cluster's state diff or rollback: no message of its own
                console.print(f"{head} {record.detail}", markup=False)
                continue
            envelope = record.envelope
            if envelope is None:
                console.print(f"{head} {short(record.message_id)} (message missing)", markup=False)
                continue
            line = f"{head} {short(record.message_id)}  {envelope_line(node, envelope, abis)}"
            if record.receipt is not None:
                r = record.receipt
                line += f"  -> {r.status}, gas {r.gas_used}"
                if r.outgoing:
                    line += f", sent {len(r.outgoing)}"
            console.print(line, markup=False)
        if len(records) < total:
            console.print(f"({len(records)} of {total} records)", markup=False)
    finally:
        node.close()
    return EXIT_OK


def run_receipt(args: argparse.Namespace) -> int:
    from missive.mailbox.envelope import Kind

    node = open_node(args)
    try:
        message_id = node.resolve_id(args.id)
        envelope = node.message(message_id)
        assert envelope is not None
        abis = node.abis()
        console = make_console()
        console.print(f"message:   {hx(message_id)}", markup=False)
        console.print(f"kind:      {envelope.kind.name.lower()}", markup=False)
        console.print(f"from:      {hx(envelope.sender)}", markup=False)
        console.print(f"to:        {hx(envelope.recipient)}", markup=False)
        if envelope.value:
            console.print(f"value:     {envelope.value}", markup=False)
        console.print(f"payload:   {describe_payload(node, envelope, abis)}", markup=False)
        console.print(f"gas limit: {envelope.gas}", markup=False)
        if envelope.parent:
            console.print(f"sent by:   handling of {hx(envelope.parent)}", markup=False)
        if envelope.kind is Kind.REPLY and not envelope.success and envelope.payload:
            reason = node.explain(envelope.payload, envelope.sender)
            if reason is not None:
                console.print(f"answer:    the request failed: {reason}", markup=False)
        receipt = node.receipt(message_id)
        if receipt is None:
            console.print("status:    pending (not handled yet)", markup=False)
            return EXIT_OK
        console.print(f"position:  {receipt.position} in the mailbox of {hx(receipt.recipient)}", markup=False)
        when = datetime.datetime.fromtimestamp(receipt.timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        console.print(f"time:      block.timestamp {receipt.timestamp} ({when}), block.number {receipt.time} "
                      "(the actor's logical time)", markup=False)
        show_outcome(node, receipt, called_function(node, envelope, abis))
        return EXIT_OK if receipt.success else EXIT_FAILED
    finally:
        node.close()


def run_trace(args: argparse.Namespace) -> int:
    from missive.node import Trace

    node = open_node(args)
    try:
        root = node.trace(args.id)
        abis = node.abis()
        items = list(root.walk())
        failed = root.failed
        pending = [t for t in items if t.receipt is None]
        if args.json:
            from missive.cli.common import print_json

            print_json({"root": trace_json(node, root, abis), "messages": len(items), "failed": len(failed),
                        "pending": len(pending)})
            return EXIT_FAILED if failed else EXIT_OK
        console = make_console()  # lines drawn by hand: a rich Tree would crop them at the terminal's width
        console.print(trace_line(node, root, abis), markup=False, style="red" if root in failed else None)
        todo: list[tuple[Trace, str, bool]] = [(c, "", i == len(root.children) - 1)
                                               for i, c in reversed(list(enumerate(root.children)))]
        while todo:
            item, indent, last = todo.pop()
            console.print(f"{indent}{'└── ' if last else '├── '}{trace_line(node, item, abis)}", markup=False,
                          style="red" if item in failed else None)
            deeper = indent + ("    " if last else "│   ")
            todo.extend((c, deeper, i == len(item.children) - 1) for i, c in reversed(list(enumerate(item.children))))
        console.print(f"{len(items)} message(s): {len(items) - len(failed) - len(pending)} succeeded, {len(failed)} "
                      f"failed, {len(pending)} pending", markup=False)
        return EXIT_FAILED if failed else EXIT_OK
    finally:
        node.close()
