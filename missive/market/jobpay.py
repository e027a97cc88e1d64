"""Paying jobs by lottery tickets (issue 25 item 4; docs/jobs.md, "Paid by tickets"): the rules
the board, the poster's node and the worker share.

A job posted with win probability 1/N pays each accepted worker one ticket of face value
``bid × N`` winning with probability ``(2**256 // N) / 2**256`` (below 1/N by less than 2**-256),
so a ticket is worth the bid in expectation and about one accepted job in N reaches the ledger
as a redemption.  A ticket is **bound to the job**: it carries the commitment the worker named
in its ``take`` record, ``keccak256(secret)`` with ``secret = keccak256(the worker's signature of
"missive job ticket" ‖ job id)`` (Ed25519 signatures are deterministic, so the worker can always
make it again and no one else can).  Each job has its own commitment, so a ticket for one job is
never taken as the payment of another, and one commitment sees exactly one ticket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from missive.market.tickets.broker import Payer
from missive.market.tickets.ticket import ONE, SignedTicket, TicketError, commitment_of
from missive.vm.keccak import keccak256

if TYPE_CHECKING:
    from missive.market.jobs import Job

#: the longest odds a job may offer (1 in a million)
MAX_ODDS: Final = 1_000_000
#: what the worker signs to make its secret for one job
SECRET_TAG: Final = b"missive job ticket"


def parse_odds(text: str) -> int:
    """``--win-prob 1/N`` (or ``1``) -> N; TicketError naming what is wrong."""
    head, sep, tail = text.strip().partition("/")
    if head.strip() == "1" and (not sep or tail.strip().isdigit()):
        odds = int(tail) if sep else 1
        if 1 <= odds <= MAX_ODDS:
            return odds
    raise TicketError(f"a job ticket's win probability is 1/N with N from 1 to {MAX_ODDS:,}, not {text!r}")


def win_threshold(odds: int) -> int:
    """The ticket's ``win_prob`` (a threshold out of 2**256) for odds 1/N."""
    return ONE // odds if odds > 1 else ONE - 1


def face_value(bid: int, odds: int) -> int:
    """What a winning job ticket pays: the bid divided by the win probability."""
    return bid * odds


def secret_of(signature: bytes) -> bytes:
    """The worker's secret for one job, from its signature of :data:`SECRET_TAG` ‖ job id."""
    return keccak256(b"job ticket secret" + signature)


def funding_refusal(payer: Payer | None, bid: int, odds: int) -> str | None:
    """Why a poster's broker holdings cannot back a ticket-paid job (None: they can): a deposit
    of at least one winning ticket, a reserve backing its workers, no unlock, no default."""
    if not 1 <= odds <= MAX_ODDS:
        return f"the win probability is 1/N with N from 1 to {MAX_ODDS:,}, not 1/{odds}"
    face = face_value(bid, odds)
    if payer is None or not payer.held:
        return (f"no deposit at the ticket broker (fund one of at least the face value {face}: "
                "`missive tickets fund --deposit D --reserve R`)")
    if payer.unlock_at:
        return "its ticket funds are unlocking: fund again to cancel the unlock"
    if payer.in_default:
        return "it overspent its ticket deposit (in default): no new tickets until its reserve is burned"
    if payer.deposit < face:
        return f"its ticket deposit {payer.deposit} is below one winning ticket's face value {face} (bid × N)"
    if not payer.reserve or not payer.recipients:
        return "no ticket reserve backing its workers (`missive tickets fund --reserve R --recipient WORKER`)"
    return None


def take_refusal(payer: Payer | None, worker: bytes) -> str | None:
    """Why ``worker`` may not take a ticket-paid job of this payer (None: it may)."""
    if payer is None or payer.unlock_at or payer.in_default or not payer.held:
        return "the poster's ticket funds are gone, unlocking or in default"
    if worker not in payer.recipients:
        return "the poster's ticket reserve does not back it (the poster names its workers when it funds the reserve)"
    return None


def ticket_refusal(job: Job, job_id: bytes, worker: bytes, signed: SignedTicket, commitment: bytes) -> str | None:
    """What the worker checks beyond the ticket checks: the ticket pays this job's acceptance."""
    ticket = signed.ticket
    taker = job.taker(worker)
    short = f"job 0x{job_id.hex()[:16]}"
    if not job.by_tickets:
        return f"{short} is paid on the ledger, not by tickets"
    if taker is None or not taker.verdict.startswith("accepted"):
        return f"{short} has not accepted a result of 0x{worker.hex()}"
    if ticket.payer != job.poster:
        return f"the ticket is signed by 0x{ticket.payer.hex()}, not the job's poster 0x{job.poster.hex()}"
    if ticket.commitment != commitment or taker.pay_to != commitment:
        return f"the ticket does not carry the commitment 0x{worker.hex()} named for {short}"
    if ticket.face_value != face_value(job.bid, job.odds) or ticket.win_prob != win_threshold(job.odds):
        return (f"the ticket pays {ticket.face_value} at another probability or face value than {short}'s "
                f"{face_value(job.bid, job.odds)} at 1/{job.odds}")
    return None


__all__ = ["MAX_ODDS", "SECRET_TAG", "commitment_of", "face_value", "funding_refusal", "parse_odds", "secret_of",
           "take_refusal", "ticket_refusal", "win_threshold"]
