"""Jobs paid by lottery tickets, off the ledger (issue 25 item 4; docs/jobs.md, "Paid by tickets").

**Where a ticket is made: the poster's node.**  The board records, on the ledger, that a
ticket-paid job accepted a worker's result and that the worker is owed one ticket; the poster's
node (:func:`pay`, ``missive job pay``) signs that ticket with the poster's key, off the ledger,
and drops it for the worker.  On a node alone (the board and the broker work on one for now) the
drop box is the node directory's ``tickets/jobs/<worker>/<job>.ticket``; the poster keeps the
jobs it has paid in ``tickets/<poster>.jobs-paid`` (written after the drop: a crash between the
two makes a second ticket for the job, which the worker refuses, never a missing one).

**How the poster obtains the worker's commitment: from the worker's take record.**  A take of a
ticket-paid job carries ``keccak256(secret)`` for a secret the worker makes from its own
signature of the job id (:func:`missive.market.jobpay.secret_of`), fixed before the ticket is
signed, so neither side can steer the draw; the ledger holds it, so the poster needs nothing
else from the worker.

**The worker** (:func:`collect`, each pass of ``missive worker run``) checks each ticket in its
drop box off the ledger (the broker's checks and the recipient's, and that it pays this job's
acceptance: :func:`missive.market.jobpay.ticket_refusal`), keeps the winners, redeems them on
the ledger, and counts its earnings in ``tickets/<worker>.jobs``: the bids of the jobs paid
(expected), the face value won and the coin redeemed (actual).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import msgpack

from missive.mailbox import broker as ledger
from missive.mailbox.jobboard import jobs as read_jobs
from missive.market.jobpay import SECRET_TAG, face_value, secret_of, ticket_refusal, win_threshold
from missive.market.tickets import Effect, SignedTicket, TicketError, commitment_of
from missive.market.tickets.recipient import write_private

if TYPE_CHECKING:
    from missive.market.jobs import Job
    from missive.node.embedded import Node


def _read(path: Path, default: Any) -> Any:
    if not path.exists():
        return default
    try:
        return msgpack.unpackb(path.read_bytes())
    except Exception as exc:  # any damage: one line naming the file
        raise TicketError(f"cannot read {path}: {type(exc).__name__}") from None


def drop_box(node: Node, worker: bytes) -> Path:
    return node.path / "tickets" / "jobs" / worker.hex()


def job_secret(node: Node, worker: object, job_id: bytes) -> bytes:
    """``worker``'s secret for a job's ticket (the same every time: Ed25519 signs deterministically)."""
    key = node._key(worker)
    return secret_of(bytes(key.signing_key.sign(SECRET_TAG + job_id).signature))


def job_commitment(node: Node, worker: object, job_id: bytes) -> bytes:
    """What ``worker`` names in its take of a ticket-paid job."""
    return commitment_of(job_secret(node, worker, job_id))


# -- the poster's side -------------------------------------------------------------------------


def pay(node: Node, poster: object = None) -> list[str]:
    """Sign and drop one ticket for every accepted, ticket-paid result of ``poster``'s jobs not
    paid yet; what it did, one line each."""
    key = node._key(poster)
    record = node.path / "tickets" / f"{key.address.hex()}.jobs-paid"
    paid = {bytes(entry) for entry in _read(record, [])}
    done: list[str] = []
    for job_id, job in read_jobs(node.store):
        if job.poster != key.address or not job.by_tickets:
            continue
        for taker in job.takers:
            if not taker.verdict.startswith("accepted") or job_id + taker.worker in paid:
                continue
            signed = node.tickets.issue(taker.worker, taker.pay_to, face_value(job.bid, job.odds),
                                        win_threshold(job.odds), sender=key.address)
            box = drop_box(node, taker.worker)
            box.mkdir(parents=True, exist_ok=True)
            (box / f"{job_id.hex()}.ticket").write_text(signed.encode().hex() + "\n")
            paid.add(job_id + taker.worker)
            write_private(record, sorted(paid))
            done.append(f"job {job_id.hex()[:16]}: a ticket to 0x{taker.worker.hex()} (face value "
                        f"{signed.ticket.face_value} at 1/{job.odds}, nonce {signed.ticket.nonce})")
    return done


def ticket_status(node: Node, job_id: bytes, job: Job) -> str:
    """A ticket-paid job's payment, as this node knows it: the tickets owed, and (when it holds
    the poster's record) the ones its poster has signed."""
    from missive.market.jobpay import face_value

    accepted = [t.worker for t in job.takers if t.verdict.startswith("accepted")]
    text = (f"paid by lottery tickets: face value {face_value(job.bid, job.odds)} at 1/{job.odds} each "
            f"(expected value: the bid {job.bid}); {len(accepted)} owed")
    record = node.path / "tickets" / f"{job.poster.hex()}.jobs-paid"
    if record.exists():
        paid = {bytes(entry) for entry in _read(record, [])}
        signed = [w for w in accepted if job_id + w in paid]
        text += f", {len(signed)} signed by the poster's node" + (
            f" (to {', '.join(f'0x{w.hex()}' for w in signed)})" if signed else "")
    return text


# -- the worker's side -------------------------------------------------------------------------


@attrs.frozen
class Earnings:
    """A worker's ticket earnings from jobs: what it was paid in expectation and in coin."""

    #: job ids whose ticket it took
    jobs: tuple[bytes, ...] = ()
    #: the bids of those jobs: the tickets' expected value
    expected: int = 0
    #: winning tickets among them and their face value
    won: int = 0
    won_value: int = 0
    #: coin the broker paid for them
    redeemed: int = 0
    #: hashes of the winning tickets not redeemed yet
    pending: tuple[bytes, ...] = ()

    def line(self) -> str:
        return (f"ticket earnings: {len(self.jobs)} job(s) paid by ticket, expected {self.expected}; "
                f"{self.won} won (face value {self.won_value}), {self.redeemed} redeemed")


def _earnings_path(node: Node, worker: bytes) -> Path:
    return node.path / "tickets" / f"{worker.hex()}.jobs"


def earnings(node: Node, worker: object = None) -> Earnings:
    address = node._key(worker).address
    raw = _read(_earnings_path(node, address), None)
    if raw is None:
        return Earnings()
    jobs, expected, won, won_value, redeemed, pending = raw
    return Earnings(tuple(bytes(j) for j in jobs), expected, won, won_value, redeemed, tuple(bytes(p) for p in pending))


def _save(node: Node, worker: bytes, e: Earnings) -> None:
    write_private(_earnings_path(node, worker), [list(e.jobs), e.expected, e.won, e.won_value, e.redeemed, list(e.pending)])


def unpaid(node: Node, worker: object, *, working: bool = False) -> Counter[bytes]:
    """By poster: ticket-paid jobs that accepted ``worker``'s result whose ticket it has not taken
    yet, the credit it is giving (``working``: with the ones it is still working on)."""
    address = node._key(worker).address
    paid = set(earnings(node, address).jobs)
    return Counter(job.poster for job_id, job in read_jobs(node.store)
                   if job.by_tickets and job_id not in paid and (t := job.taker(address)) is not None
                   and (t.verdict.startswith("accepted") or (working and not t.verdict and job.status != "done")))


def owed(node: Node, worker: object, poster: bytes | None = None) -> int:
    """Accepted ticket-paid jobs of ``poster`` (or any) still owing ``worker`` its ticket."""
    counts = unpaid(node, worker)
    return sum(counts.values()) if poster is None else counts[poster]


def _take(node: Node, worker: object, address: bytes, path: Path, mine: Earnings) -> tuple[Earnings, str]:
    from missive.mailbox.jobboard import job as read_job

    try:
        job_id = bytes.fromhex(path.stem)
        if len(job_id) != 32:
            raise ValueError
    except ValueError:
        raise TicketError(f"{path.name}: not named after a job id") from None
    short = f"job {job_id.hex()[:16]}"
    if job_id in mine.jobs:
        raise TicketError(f"{short} is paid by a ticket already: a second one is refused")
    found = read_job(node.store, job_id)
    if found is None:
        raise TicketError(f"no {short} on this ledger")
    from missive.node.tickets import to_ticket

    signed: SignedTicket = to_ticket(path.read_text())
    commitment = job_commitment(node, worker, job_id)
    if (why := ticket_refusal(found[0], job_id, address, signed, commitment)) is not None:
        raise TicketError(why)
    store = node.store
    checked = node.tickets.recipient(worker).take_bound(signed, job_secret(node, worker, job_id),
                                                        chain_id=store.chain_id, clock=store.clock(),
                                                        payer=ledger.payer(store, signed.ticket.payer))
    face = signed.ticket.face_value
    mine = attrs.evolve(mine, jobs=(*mine.jobs, job_id), expected=mine.expected + found[0].bid,
                        won=mine.won + checked.wins, won_value=mine.won_value + (face if checked.wins else 0),
                        pending=(*mine.pending, checked.ticket_hash) if checked.wins else mine.pending)
    return mine, f"{short}: ticket taken (face value {face} at 1/{found[0].odds}): " + (
        "it wins" if checked.wins else "no win")


def collect(node: Node, worker: object = None) -> list[str]:
    """Take the tickets in ``worker``'s drop box and redeem the winners of its job tickets; what
    it did, one line each.  A refused ticket is moved aside (``.refused``) with its reason said."""
    address = node._key(worker).address
    box = drop_box(node, address)
    mine = earnings(node, address)
    done: list[str] = []
    for path in sorted(box.glob("*.ticket")) if box.exists() else []:
        try:
            mine, line = _take(node, worker, address, path, mine)
        except TicketError as refused:
            path.rename(path.with_suffix(".refused"))
            done.append(f"{path.stem[:16]}: ticket refused: {refused}")
            continue
        _save(node, address, mine)
        path.unlink()
        done.append(line)
    if mine.pending:
        mine, lines = _redeem(node, worker, address, mine)
        done += lines
    return done


def _redeem(node: Node, worker: object, address: bytes, mine: Earnings) -> tuple[Earnings, list[str]]:
    pending, lines, redeemed = set(mine.pending), [], mine.redeemed
    for signed, outcome in node.tickets.redeem(recipient=worker):
        ticket_hash = signed.ticket.hash()
        if ticket_hash not in pending:
            continue  # another ticket of this recipient's: redeemed, but not a job's
        if isinstance(outcome, Effect):
            redeemed += outcome.credits.get(address, 0)
            pending.discard(ticket_hash)
            lines.append(f"redeemed a winning job ticket: {outcome.credits.get(address, 0)} paid")
        else:
            if signed in [s for s, _ in node.tickets.recipient(worker).winners()]:
                lines.append(f"a winning job ticket not paid yet: {outcome}")
                continue
            pending.discard(ticket_hash)
            lines.append(f"a winning job ticket refused by the broker: {outcome}")
    mine = attrs.evolve(mine, redeemed=redeemed, pending=tuple(sorted(pending)))
    _save(node, address, mine)
    return mine, lines


__all__ = ["Earnings", "collect", "drop_box", "earnings", "job_commitment", "job_secret", "owed", "pay", "unpaid",
           "ticket_status"]
