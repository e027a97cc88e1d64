"""``missive tickets``: probabilistic payments (issue 24; docs/tickets.md).

fund / unlock / withdraw (the payer, at the broker on the ledger); commitment (the recipient hands
one to a payer); issue (the payer signs a ticket, off the ledger: its hex on stdout); check (the
recipient checks a ticket and learns whether it wins); redeem (the recipient's winners go on the
ledger); status (deposits, reserves, allowances, redeemed tickets, pending unlocks, penalties).
"""

from __future__ import annotations

import argparse
from typing import Any

from missive.cli.common import CliError, make_console
from missive.cli.node_cmds import guarded, open_node, operation_group, parse_amount
from missive.cli.show import hx


def _probability(text: str) -> int:
    from missive.market.tickets.ticket import TicketError, probability

    try:
        return probability(text)
    except TicketError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: Any) -> None:
    ops, common = operation_group(
        subparsers, "tickets", "lottery-ticket payments: fund, issue, check, redeem, status",
        "Probabilistic payments: a payer funds a deposit and a penalty reserve at the ticket broker "
        "(signed ledger records) and signs tickets off the ledger; each ticket pays its face value with its win "
        "probability; only winners go on the ledger. A node alone only, for now. docs/tickets.md.")
    payer = argparse.ArgumentParser(add_help=False)
    payer.add_argument("--from", dest="sender", metavar="NAME", help="the payer's account (default: 'default')")
    recipient = argparse.ArgumentParser(add_help=False)
    recipient.add_argument("--as", dest="sender", metavar="NAME", help="the recipient's account (default: 'default')")

    def add(name: str, parents: list[argparse.ArgumentParser], text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = ops.add_parser(name, parents=[common, *parents], help=text, description=text)
        p.set_defaults(handler=guarded(run_tickets), node=None, cluster=None)
        return p

    p = add("fund", [payer], "move coin from the payer's balance into its deposit and its penalty reserve; "
            "cancels a pending unlock")
    p.add_argument("--deposit", type=parse_amount, default=0, metavar="D", help="pays winning tickets")
    p.add_argument("--reserve", type=parse_amount, default=0, metavar="R",
                   help="backs the recipients if the deposit runs short (then it is frozen and what they do not "
                   "draw is burned)")
    p.add_argument("--recipient", dest="recipients", action="append", metavar="ADDR",
                   help="a recipient the reserve backs (repeat; default: as before, or the registered workers)")
    add("unlock", [payer], "start the unlock delay; withdraw after it")
    add("withdraw", [payer], "take the deposit (and the reserve, unless in default) back, after the unlock delay")
    p = add("commitment", [recipient], "the commitment (hash of a secret) to hand to a payer")
    p.add_argument("payer", metavar="PAYER", help="the payer's address or account name")
    p = add("issue", [payer], "sign a ticket off the ledger; prints its hex")
    p.add_argument("--to", dest="recipient", required=True, metavar="ADDR", help="the recipient")
    p.add_argument("--commitment", required=True, metavar="HEX", help="the recipient's commitment")
    p.add_argument("--face-value", type=parse_amount, required=True, metavar="V")
    p.add_argument("--win-prob", type=_probability, required=True, metavar="P", help="such as 1/1000 or 0.001")
    p.add_argument("--expiry", type=parse_amount, default=None, metavar="T",
                   help="logical time it expires at (default: the longest allowed)")
    p = add("check", [recipient], "check a ticket as its recipient and take it; says whether it wins (exit 0 "
            "either way; a refused ticket exits 2 with the reason)")
    p.add_argument("ticket", metavar="TICKET", help="the ticket's hex (as `issue` prints it)")
    p = add("redeem", [recipient], "put the recipient's winning tickets on the ledger, then rotate its secret")
    p.add_argument("--payer", default=None, metavar="ADDR", help="only this payer's tickets")
    add("status", [], "deposits, reserves, allowances, redeemed tickets, pending unlocks and penalties")


def _address(node: Any, text: str, what: str) -> bytes:
    return bytes(node.resolve_address(text, what))


def run_tickets(args: argparse.Namespace) -> int:
    from missive.node import Node

    opened = open_node(args)
    console = make_console()

    def say(text: str) -> None:
        console.print(text, markup=False)

    try:
        if not isinstance(opened, Node):
            raise CliError("the ticket broker works on a node directory (--dir) for now, not on a cluster")
        node = opened
        tickets = node.tickets
        sender = node.wallet(args.sender) if getattr(args, "sender", None) else None
        if args.op == "fund":
            recipients = [_address(node, r, "recipient") for r in args.recipients] if args.recipients else None
            p = tickets.fund(args.deposit, args.reserve, recipients, sender=sender)
            say(f"funded: deposit {p.deposit}, reserve {p.reserve} backing {len(p.recipients)} recipient(s)")
        elif args.op == "unlock":
            p = tickets.unlock(sender=sender)
            say(f"unlocking: withdraw from logical time {p.unlock_at} (now {node.store.clock()})")
        elif args.op == "withdraw":
            before = node.store.account(node._key(sender).address)
            tickets.withdraw(sender=sender)
            after = node.store.account(node._key(sender).address)
            back = (after.balance if after else 0) - (before.balance if before else 0)
            say(f"withdrawn: {back} back in the balance")
        elif args.op == "commitment":
            print(tickets.commitment(_address(node, args.payer, "payer"), recipient=sender).hex())
        elif args.op == "issue":
            try:
                commitment = bytes.fromhex(args.commitment.removeprefix("0x"))
            except ValueError:
                raise CliError(f"a commitment is 32 bytes of hex, not {args.commitment!r}") from None
            signed = tickets.issue(_address(node, args.recipient, "recipient"), commitment, args.face_value,
                                   args.win_prob, expiry=args.expiry, sender=sender)
            print(signed.hex())
        elif args.op == "check":
            checked = tickets.check(args.ticket, recipient=sender)
            say(f"ticket {hx(checked.ticket_hash)} taken: {'WINS (redeem it)' if checked.wins else 'loses'}")
        elif args.op == "redeem":
            payer = _address(node, args.payer, "payer") if args.payer else None
            results = tickets.redeem(recipient=sender, payer=payer)
            if not results:
                say("no winning tickets to redeem")
            for signed, outcome in results:
                if isinstance(outcome, Exception):
                    say(f"ticket {hx(signed.ticket.hash())} refused: {outcome}")
                else:
                    d, r = outcome.paid
                    say(f"ticket {hx(signed.ticket.hash())} paid {d + r}" + (f" ({r} from the reserve)" if r else ""))
            if any(isinstance(outcome, Exception) for _, outcome in results):
                return 1
        else:
            _status(node, say)
        return 0
    finally:
        opened.close()


def _status(node: Any, say: Any) -> None:
    status = node.tickets.status()
    if not status["payers"]:
        say("no payers at the ticket broker")
    for address, p in status["payers"]:
        line = f"payer {hx(address)}  deposit {p.deposit}  reserve {p.reserve}  redeemed {p.redeemed} ({p.paid} paid)"
        if p.unlock_at:
            line += f"  unlocking: withdraw from logical time {p.unlock_at}"
        if p.in_default:
            line += f"  IN DEFAULT since logical time {p.defaulted - 1} (reserve frozen; the rest burns)"
        if p.burned:
            line += f"  burned {p.burned}"
        say(line)
        for recipient in p.recipients:
            say(f"  recipient {hx(recipient)}  allowance {p.allowance(recipient)}")
    say(f"burned in all {status['burned']}; used tickets kept {status['used']}; logical time now {status['clock']}")


__all__ = ["register"]
