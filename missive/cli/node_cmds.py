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

Exit status: 0 done, 1 the message's handler failed (revert reason printed) or a wrong keystore
passphrase, 2 bad input (unknown account, bad address, wrong arguments, unknown function, refused
message), 3 no node in the directory, 4 the node's store or keystore is not whole (damaged,
truncated, foreign, or a ledger gone missing: one line naming the file; nothing was opened or
written), 74 the disk holding the node's store is full or failing (one line naming it; nothing was
written).
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from missive.cli.common import (
    EXIT_DAMAGED,
    EXIT_DISK,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    make_console,
    parse_word,
)

if TYPE_CHECKING:  # the node (and with it the VM) is imported only by the commands that use it
    from eth_abi.grammar import ABIType

    from missive.mailbox.envelope import Envelope
    from missive.mailbox.records import Receipt
    from missive.node import Contract, ContractFunction, Node

DEFAULT_DIR = ".missive"
#: What ``missive init`` gives the "default" account (the dev faucet): 10**6 coins of 10**18.
DEFAULT_FUND = 10**24


def default_dir() -> Path:
    return Path(os.environ.get("MISSIVE_DIR") or DEFAULT_DIR)


def register(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, default=None, metavar="D",
                        help=f"node directory (default: $MISSIVE_DIR or ./{DEFAULT_DIR})")
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument("--node", default=None, metavar="HOST:PORT",
                        help="talk to this cluster node (with --cluster: a member's name such as n2 works too)")
    remote.add_argument("--cluster", type=Path, default=None, metavar="DIR",
                        help="talk to the cluster started in DIR (`missive cluster up --dir DIR`); keys from its keystore")
    sending = argparse.ArgumentParser(add_help=False)
    sending.add_argument("--from", dest="sender", metavar="NAME", help="sending account: name or address (default: 'default')")
    sending.add_argument("--gas", type=parse_word, default=None, metavar="G", help="gas the message carries")
    sending.add_argument("--timeout", type=float, default=None, metavar="S", help="give up waiting after S seconds")

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
    p.set_defaults(handler=guarded(run_account_new))
    p = commands.add_parser("list", parents=[common, remote], help="accounts: names, addresses, balances")
    p.add_argument("--contracts", action="store_true", help="list contracts too")
    p.set_defaults(handler=guarded(run_account_list))

    p = subparsers.add_parser("deploy", parents=[common, remote, sending], help="compile and deploy a contract",
                              description="Compile FILE (.vy, or .bin/.hex init code with a sibling ABI), send a deploy "
                              "message with the constructor ARGS, run the node until it is handled, print the address.")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("args", nargs="*", metavar="ARG", help="constructor arguments")
    p.add_argument("--value", type=parse_amount, default=0, metavar="V", help="value sent with the deploy")
    p.add_argument("--name", default=None, help="contract name (default: the file's stem)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the address")
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


def guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the node's, the ledger's and the compiler's errors into one-line CLI errors."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        import lmdb

        from missive.keys import KeystoreError, WrongPassphrase
        from missive.mailbox.envelope import EnvelopeError
        from missive.mailbox.integrity import Damaged
        from missive.mailbox.records import RecordError
        from missive.mailbox.store import DiskFull, NoStore, StoreError, disk_full
        from missive.node import ArgumentError, NodeError, NodeTimeout, NotHandled, Reverted
        from missive.toolchain.compiler import CompileError, CompileInputError

        try:
            return handler(args)
        except (Reverted, NotHandled, NodeTimeout, CompileError) as exc:
            code = EXIT_USAGE if isinstance(exc, CompileInputError) else EXIT_FAILED
            raise CliError(str(exc), code) from exc
        except DiskFull as exc:  # one line naming the disk; nothing was written
            raise CliError(str(exc), EXIT_DISK) from exc
        except Damaged as exc:  # a store or keystore that is not whole: refused before it was opened
            raise CliError(str(exc), EXIT_DAMAGED) from exc
        except NoStore as exc:
            raise CliError(str(exc), EXIT_NOT_FOUND) from exc
        except WrongPassphrase as exc:
            raise CliError(str(exc), EXIT_FAILED) from exc
        except (ArgumentError, NodeError, EnvelopeError, KeystoreError, StoreError) as exc:
            raise CliError(str(exc)) from exc
        except (RecordError, lmdb.Error, OSError) as exc:  # OSError: e.g. a keystore directory that cannot be made
            full = disk_full(node_dir(args), exc) if not isinstance(exc, RecordError) else None
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


def open_node(args: argparse.Namespace) -> Node:
    """The node directory (``--dir``), or a cluster (``--node``/``--cluster``) behind the same API."""
    from missive.node import Node

    if is_remote(args):
        from missive.cluster.remote import RemoteNode

        keys = args.dir if args.dir is not None else (None if args.cluster is not None else default_dir())
        return RemoteNode.connect(args.node, args.cluster, keys)
    return Node.open(node_dir(args))


def hx(data: bytes) -> str:
    return "0x" + data.hex()


def short(message_id: bytes) -> str:
    """A message id shortened for tables; ``missive receipt`` takes it back as a prefix."""
    return "0x" + message_id.hex()[:16]


def resolve_address(node: Node, text: str, what: str = "address") -> bytes:
    """``0x`` + 40 hex digits, or the name of a keystore account."""
    from missive.node import ArgumentError, to_address

    body = text.strip()
    if body[:2].lower() == "0x" or (len(body) == 40 and all(c in "0123456789abcdefABCDEF" for c in body)):
        return to_address(body, what)
    key = node.keystore.find(body)
    if key is None:
        raise ArgumentError(f"{what} {text!r}: not an address (0x + 40 hex digits) nor an account name (see `missive account list`)")
    return key.address


def sender_of(node: Node, args: argparse.Namespace) -> object:
    return node.wallet(args.sender) if args.sender else None


def parse_amount(text: str) -> int:
    """argparse ``type=`` for amounts: decimal, ``0x`` hex, underscores, ``1e18``; 256 bits, not negative."""
    try:
        value = parse_text_int(text, "amount")
    except CliError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount (decimal, 0x-hex or 1e18)") from exc
    if value < 0 or value >> 256:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount in [0, 2**256)")
    return value


def parse_text_int(text: str, where: str) -> int:
    cleaned = text.strip().replace("_", "")
    try:
        if cleaned.lower().lstrip("-").startswith("0x"):
            negative = cleaned.startswith("-")
            value = int(cleaned.lstrip("-")[2:], 16)
            value = -value if negative else value
        elif "e" in cleaned.lower() or "." in cleaned:
            exact = Decimal(cleaned)
            if exact != exact.to_integral_value():
                raise ValueError
            value = int(exact)
        else:
            value = int(cleaned, 10)
    except (ValueError, InvalidOperation):
        raise CliError(f"{where}: {text!r} is not an integer (decimal, 0x-hex or 1e18)") from None
    return value


def parse_text_value(node: Node, t: ABIType, text: str, where: str) -> Any:
    """One CLI argument as the Python value for ABI type ``t``."""
    from eth_abi.grammar import TupleType

    from missive.node import split_top_level, type_str

    text = text.strip()
    if t.is_array or isinstance(t, TupleType):
        opening, closing = ("[", "]") if t.is_array else ("(", ")")
        if not (text.startswith(opening) and text.endswith(closing)):
            raise CliError(f"{where}: {type_str(t)} is written {opening}a,b,...{closing}, got {text!r}")
        inner = text[1:-1].strip()
        items = split_top_level(inner) if inner else []
        if t.is_array:
            return [parse_text_value(node, t.item_type, item, where) for item in items]
        assert isinstance(t, TupleType)
        if len(items) != len(t.components):
            raise CliError(f"{where}: {type_str(t)} has {len(t.components)} fields, got {len(items)}")
        return tuple(parse_text_value(node, c, item, where) for c, item in zip(t.components, items, strict=True))
    base = getattr(t, "base", "")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if base in ("uint", "int"):
        return parse_text_int(text, where)
    if base == "address":
        return resolve_address(node, text, where)
    if base == "bool":
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise CliError(f"{where}: {text!r} is not a bool (true/false)")
    if base == "bytes":
        if text[:2].lower() != "0x":
            raise CliError(f"{where}: {type_str(t)} is written as 0x-hex, got {text!r}")
        try:
            return bytes.fromhex(text[2:])
        except ValueError:
            raise CliError(f"{where}: {text!r} is not hex") from None
    if base == "string":
        return text
    raise CliError(f"{where}: arguments of type {type_str(t)} are not supported on the command line")


def parse_text_args(node: Node, types: list[str], names: list[str], texts: list[str], what: str) -> list[Any]:
    from missive.node import parse_type

    if len(texts) != len(types):
        plural = "s" if len(types) != 1 else ""
        raise CliError(f"{what}: expected {len(types)} argument{plural} ({', '.join(types) or 'none'}), got {len(texts)}")
    values = []
    for i, (t, text) in enumerate(zip(types, texts, strict=True)):
        label = names[i] if i < len(names) and names[i] else f"#{i + 1}"
        values.append(parse_text_value(node, parse_type(t), text, f"{what}: argument {label} ({t})"))
    return values


def resolve_function(node: Node, address: bytes, text: str, nargs: int, *, view: bool,
                     returns: list[str] | None = None) -> tuple[ContractFunction, bool]:
    """The function to call, from an explicit signature or by name from the registered ABI,
    and whether its return types are known."""
    from missive.node import Contract, parse_signature

    name, inputs, sig_returns = parse_signature(text)
    registered = node.abis().get(address)
    contract: Contract | None = Contract(node, address, registered[1], registered[0]) if registered else None
    if "(" in text:
        signature = f"{name}({','.join(inputs)})"
        known = contract._by_signature.get(signature) if contract is not None else None
        if known is not None and returns is None and sig_returns is None:
            return known, True
        outputs = returns if returns is not None else sig_returns
        if outputs is None and known is not None:
            outputs = known.outputs
        entry = {
            "type": "function",
            "name": name,
            "inputs": [{"name": "", "type": t} for t in inputs],
            "outputs": [{"name": "", "type": t} for t in outputs or []],
            "stateMutability": known.mutability if known is not None else ("view" if view else "payable"),
        }
        label = contract._label if contract is not None else "contract"
        return Contract(node, address, [entry], label).function(signature), outputs is not None
    if contract is None:
        raise CliError(f"no ABI known for {hx(address)}: give the signature with types, e.g. '{name}(address,uint256)'")
    candidates = [f for f in contract._by_signature.values() if f.name == name]
    if not candidates:
        raise CliError(f"{contract._label} at {hx(address)} has no function {name!r}; functions: {', '.join(contract.function_names())}")
    fitting = [f for f in candidates if len(f.inputs) == nargs] or candidates
    if len(fitting) > 1:
        raise CliError(f"{name} is overloaded ({', '.join(f.signature for f in fitting)}); give the full signature")
    fn = fitting[0]
    if returns is not None:
        fn.outputs = returns
    return fn, True


def parse_returns(text: str | None) -> list[str] | None:
    from missive.node import parse_type, split_top_level, type_str

    if text is None:
        return None
    body = text.strip()
    if body.startswith("(") and body.endswith(")") and len(split_top_level(body[1:-1])) > 1:
        body = body[1:-1]
    return [type_str(parse_type(t)) for t in split_top_level(body)] if body else []


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray)):
        return hx(bytes(value))
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(format_value(v) for v in value) + ")"
    return str(value)


def describe_payload(node: Node, envelope: Envelope, abis: dict[bytes, tuple[str, list[dict[str, Any]]]]) -> str:
    """``transfer(0x.., 10)`` when the recipient's ABI knows the selector, else the payload's size."""
    from eth_abi.abi import decode as abi_decode
    from eth_abi.exceptions import DecodingError

    from missive.mailbox.envelope import Kind
    from missive.node import Contract

    payload = envelope.payload
    if envelope.kind in (Kind.REPLY, Kind.BOUNCE):
        ok = "" if envelope.kind is Kind.BOUNCE else ("success, " if envelope.success else "failed, ")
        return f"answers {short(envelope.request_id)} ({ok}{len(payload)} bytes)"
    if envelope.kind is Kind.DEPLOY:
        return f"init code {len(payload)} bytes"
    registered = abis.get(envelope.recipient)
    if registered is not None and len(payload) >= 4:
        for fn in Contract(node, envelope.recipient, registered[1], registered[0])._by_signature.values():
            if fn.selector == payload[:4]:
                try:
                    values = abi_decode(fn.inputs, payload[4:])
                except (DecodingError, OverflowError, ValueError):
                    break
                return f"{fn.name}({', '.join(format_value(v) for v in values)})"
    if not payload:
        return "no payload"
    return f"selector {hx(payload[:4])}, {len(payload)} bytes" if len(payload) >= 4 else f"payload {hx(payload)}"


def show_outcome(node: Node, receipt: Receipt, fn: ContractFunction | None) -> None:
    """Status, gas, decoded result or revert reason, events and sent messages of a receipt."""
    from missive.node import decode_log, revert_reason

    console = make_console()
    status = receipt.status + (f" ({receipt.error})" if receipt.error and receipt.error != receipt.status else "")
    console.print(f"status:    {status}", markup=False)
    console.print(f"gas used:  {receipt.gas_used}", markup=False)
    if receipt.success:
        if receipt.output:
            if fn is not None and fn.outputs:
                try:
                    shown = format_value(fn.decode_output(receipt.output))
                except Exception:
                    shown = hx(receipt.output)
            else:
                shown = hx(receipt.output)
            console.print(f"result:    {shown}", markup=False)
    else:
        reason = revert_reason(receipt.output)
        if reason is not None:
            console.print(f"reason:    {reason}", markup=False)
        elif receipt.output:
            console.print(f"revert data: {hx(receipt.output)}", markup=False)
    abis = node.abis()
    for address, topics, data in receipt.logs:
        decoded = decode_log(abis[address][1], topics, data) if address in abis else None
        if decoded is not None:
            args = ", ".join(f"{k}={format_value(v)}" for k, v in decoded[1].items())
            console.print(f"event:     {decoded[0]}({args})", markup=False)
        else:
            console.print(f"log:       {hx(address)} topics {[hex(t) for t in topics]} data {hx(data)}", markup=False)
    for message_id in receipt.outgoing:
        message = node.message(message_id)
        if message is not None:
            console.print(f"sent:      {message.kind.name.lower()} to {hx(message.recipient)} "
                          f"{describe_payload(node, message, abis)}  id {hx(message_id)}", markup=False)


def failed_error(fn_label: str, receipt: Receipt) -> CliError:
    from missive.node import Reverted, revert_reason

    err = Reverted(fn_label, reason=revert_reason(receipt.output), data=receipt.output, status=receipt.status,
                   error=receipt.error, receipt=receipt)
    return CliError(str(err), EXIT_FAILED)


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
    finally:
        node.close()
    return EXIT_OK


def run_account_new(args: argparse.Namespace) -> int:
    name = args.name.strip()
    if name and (name[:2].lower() == "0x" or len(name) == 40 and all(c in "0123456789abcdefABCDEF" for c in name)):
        raise CliError(f"account name {name!r} looks like an address; pick another")
    if args.name and not name:
        raise CliError("account name is blank")
    node = open_node(args)
    try:
        wallet = node.new_account(name, balance=args.fund)
        make_console().print(f"account {name or '(unnamed)'} {wallet.hex} (balance {args.fund})", markup=False)
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
    from missive.node import abi_type
    from missive.toolchain.compiler import compile_source

    node = open_node(args)
    try:
        sender = sender_of(node, args)
        compiled = compile_source(args.file, name=args.name)
        constructor = next((e for e in compiled.abi if e.get("type") == "constructor"), None)
        inputs = constructor.get("inputs", []) if constructor else []
        values = parse_text_args(node, [abi_type(i) for i in inputs], [str(i.get("name", "")) for i in inputs],
                                 args.args, f"{compiled.name} constructor")
        sent, contract = node.deploy_message(compiled.bytecode, *values, sender=sender, value=args.value, gas=args.gas,
                                             abi=compiled.abi, name=compiled.name)
        console = make_console()
        if not args.quiet:
            console.print(f"message   {sent.hex}", markup=False)
        receipt = sent.receipt(args.timeout)
        if not receipt.success:
            raise failed_error(f"deploying {compiled.name}", receipt)
        if args.quiet:
            console.print(contract.hex, markup=False)
        else:
            console.print(f"deployed  {compiled.name} at {contract.hex}", markup=False)
            console.print(f"gas used  {receipt.gas_used}", markup=False)
    finally:
        node.close()
    return EXIT_OK


def run_send(args: argparse.Namespace) -> int:
    node = open_node(args)
    try:
        sender = sender_of(node, args)
        address = resolve_address(node, args.address, "ADDR")
        fn, _ = resolve_function(node, address, args.function, len(args.args), view=False)
        values = parse_text_args(node, fn.inputs, fn.input_names, args.args, fn.signature)
        sent = fn.send(*values, sender=sender, value=args.value, gas=args.gas)
        console = make_console()
        console.print(f"message   {sent.hex}", markup=False)
        console.file.flush()
        if args.no_wait:
            return EXIT_OK
        receipt = sent.receipt(args.timeout)
        show_outcome(node, receipt, fn)
        if not receipt.success:
            raise failed_error(fn.signature, receipt)
    finally:
        node.close()
    return EXIT_OK


def run_query(args: argparse.Namespace) -> int:
    node = open_node(args)
    try:
        sender = sender_of(node, args)
        address = resolve_address(node, args.address, "ADDR")
        returns = parse_returns(args.returns)
        fn, known = resolve_function(node, address, args.function, len(args.args), view=True, returns=returns)
        values = parse_text_args(node, fn.inputs, fn.input_names, args.args, fn.signature)
        sent = fn.query(*values, sender=sender, gas=args.gas)
        raw = not known
        if raw:
            sent.function = None  # outputs unknown: print the reply's bytes
        answer = sent.reply(args.timeout)
        console = make_console()
        if raw:
            console.print(hx(answer), markup=False)
        elif isinstance(answer, tuple) and len(fn.outputs) > 1:
            for item in answer:
                console.print(format_value(item), markup=False)
        elif fn.outputs:
            console.print(format_value(answer), markup=False)
    finally:
        node.close()
    return EXIT_OK


# -- inbox, ledger, receipt -----------------------------------------------------------------------------


def envelope_line(node: Node, envelope: Envelope, abis: dict[bytes, tuple[str, list[dict[str, Any]]]]) -> str:
    parts = [f"{envelope.kind.name.lower():<9}", f"from {hx(envelope.sender)}", f"to {hx(envelope.recipient)}"]
    if envelope.value:
        parts.append(f"value {envelope.value}")
    parts.append(describe_payload(node, envelope, abis))
    return "  ".join(parts)


def run_inbox(args: argparse.Namespace) -> int:
    node = open_node(args)
    try:
        address = resolve_address(node, args.address, "ADDR")
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
        receipt = node.receipt(message_id)
        if receipt is None:
            console.print("status:    pending (not handled yet)", markup=False)
            return EXIT_OK
        console.print(f"position:  {receipt.position} in the mailbox of {hx(receipt.recipient)}", markup=False)
        fn = None
        registered = abis.get(envelope.recipient)
        if registered is not None and len(envelope.payload) >= 4:
            from missive.node import Contract

            contract = Contract(node, envelope.recipient, registered[1], registered[0])
            fn = next((f for f in contract._by_signature.values() if f.selector == envelope.payload[:4]), None)
        show_outcome(node, receipt, fn)
        return EXIT_OK if receipt.success else EXIT_FAILED
    finally:
        node.close()
