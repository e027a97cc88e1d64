"""The recipient's side, off the ledger (issue 24; docs/tickets.md): its secrets and commitments,
the check of each ticket as it arrives, and the winning tickets it holds until it redeems them.

A recipient commits, per payer, to a random 32-byte secret and hands out its keccak256 (the
*commitment*) before the payer signs anything.  :meth:`Recipient.check` runs the checks the
broker will run (:func:`~missive.market.tickets.ticket.verify_ticket`: this ledger and broker, the
payer's signature, the expiry) and the recipient's own: the ticket is for it, carries its current
commitment for that payer, a nonce strictly above the last one it took under that commitment, and
a face value that fits in its allowance of the payer's reserve beside the winnings it has not
redeemed yet.  Then the win test.  A winning ticket is kept with its secret; after redeeming, the
recipient rotates its secret (the redemption revealed it on the ledger).

The state lives in one file (msgpack, mode 0600: it holds secrets), written whole and renamed
into place, so a crash leaves the old state or the new one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import attrs
import msgpack

from missive.market.tickets.broker import Payer
from missive.market.tickets.ticket import (
    BROKER,
    SignedTicket,
    TicketError,
    commitment_of,
    verify_ticket,
    wins,
)


@attrs.frozen
class Checked:
    """A ticket the recipient took: its hash and whether it wins."""

    ticket_hash: bytes
    wins: bool


def check(signed: SignedTicket, *, me: bytes, commitment: bytes, last_nonce: int, chain_id: int, clock: int,
          payer: Payer | None, unredeemed: int, broker: bytes = BROKER) -> bytes:
    """The recipient's check of a ticket (pure): its hash, or TicketError naming what is wrong.

    ``commitment``: the recipient's current commitment for this payer; ``last_nonce``: the highest
    nonce taken under it (-1: none yet); ``payer``: the payer's record at the broker as the ledger
    shows it; ``unredeemed``: the face value of this payer's winning tickets it holds."""
    ticket = signed.ticket
    if ticket.recipient != me:
        raise TicketError(f"the ticket pays 0x{ticket.recipient.hex()}, not this recipient (0x{me.hex()})")
    ticket_hash = verify_ticket(signed, chain_id, broker, clock)
    if ticket.commitment != commitment:
        raise TicketError(f"wrong commitment: the ticket carries 0x{ticket.commitment.hex()[:16]}.., this "
                          f"recipient's for payer 0x{ticket.payer.hex()} is 0x{commitment.hex()[:16]}..")
    if ticket.nonce <= last_nonce:
        raise TicketError(f"nonce {ticket.nonce} is not above the last one taken under this commitment ({last_nonce})")
    if payer is None or not payer.held:
        raise TicketError(f"payer 0x{ticket.payer.hex()} has nothing at the ticket broker")
    if payer.unlock_at:
        raise TicketError(f"payer 0x{ticket.payer.hex()} is unlocking its funds (withdraw from logical time "
                          f"{payer.unlock_at}): take no more of its tickets")
    if payer.in_default:
        raise TicketError(f"payer 0x{ticket.payer.hex()} overspent (default at logical time {payer.defaulted - 1}): "
                          "take no more of its tickets")
    allowance = payer.allowance(me)
    if ticket.face_value + unredeemed > allowance:
        raise TicketError(f"face value {ticket.face_value} with {unredeemed} unredeemed is above this recipient's "
                          f"allowance of the payer's reserve ({allowance})")
    return ticket_hash


def write_private(path: Path, data: object) -> None:
    """``data`` as msgpack in ``path`` (mode 0600), written whole, synced and renamed into place:
    a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(cast(bytes, msgpack.packb(data, use_bin_type=True)))
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


@attrs.define
class _PerPayer:
    secret: bytes
    last_nonce: int = -1
    #: winning tickets not redeemed yet: (encoded signed ticket, the secret it was checked with)
    winners: list[tuple[bytes, bytes]] = attrs.Factory(list)


class Recipient:
    """One recipient account's secrets, nonces and winning tickets, kept in ``path`` (None: memory)."""

    def __init__(self, address: bytes, path: Path | None = None) -> None:
        self.address, self.path = address, path
        self.payers: dict[bytes, _PerPayer] = {}
        if path is not None and path.exists():
            self._load(path.read_bytes())

    # -- secrets -------------------------------------------------------------------------------

    def commitment(self, payer: bytes) -> bytes:
        """The commitment to hand to ``payer`` (a fresh secret the first time)."""
        state = self.payers.get(payer)
        if state is None:
            state = self.payers[payer] = _PerPayer(os.urandom(32))
            self.save()
        return commitment_of(state.secret)

    def rotate(self, payer: bytes) -> bytes:
        """A new secret for ``payer`` (after a redemption revealed the old one); its commitment.
        Winning tickets under the old secret keep theirs."""
        state = self.payers.setdefault(payer, _PerPayer(b""))
        state.secret, state.last_nonce = os.urandom(32), -1
        self.save()
        return commitment_of(state.secret)

    # -- tickets -------------------------------------------------------------------------------

    def unredeemed(self, payer: bytes) -> int:
        state = self.payers.get(payer)
        return sum(SignedTicket.decode(raw).ticket.face_value for raw, _ in state.winners) if state else 0

    def take(self, signed: SignedTicket, *, chain_id: int, clock: int, payer: Payer | None,
             save: bool = True) -> Checked:
        """Check a ticket and take it (its nonce is then the last one; a winner is kept for
        redemption).  TicketError, and nothing changed, if it is refused."""
        state = self.payers.get(signed.ticket.payer)
        if state is None:  # what is wrong with the ticket itself first: another chain, a bad signature...
            if signed.ticket.recipient == self.address:
                verify_ticket(signed, chain_id, BROKER, clock)
            raise TicketError(f"this recipient gave payer 0x{signed.ticket.payer.hex()} no commitment")
        ticket_hash = check(signed, me=self.address, commitment=commitment_of(state.secret),
                            last_nonce=state.last_nonce, chain_id=chain_id, clock=clock, payer=payer,
                            unredeemed=self.unredeemed(signed.ticket.payer) if payer is not None else 0)
        won = wins(signed.signature, state.secret, signed.ticket.win_prob)
        state.last_nonce = signed.ticket.nonce
        if won:
            state.winners.append((signed.encode(), state.secret))
        if save:
            self.save()
        return Checked(ticket_hash, won)

    def take_bound(self, signed: SignedTicket, secret: bytes, *, chain_id: int, clock: int,
                   payer: Payer | None) -> Checked:
        """Check and take a ticket under a one-use secret of the caller's (a job's ticket,
        :mod:`missive.market.jobpay`), not the per-payer one: the same checks, the nonce check
        trivially (one ticket per such commitment).  A winner is kept for :meth:`winners`."""
        ticket_hash = check(signed, me=self.address, commitment=commitment_of(secret), last_nonce=-1,
                            chain_id=chain_id, clock=clock, payer=payer,
                            unredeemed=self.unredeemed(signed.ticket.payer))
        won = wins(signed.signature, secret, signed.ticket.win_prob)
        if won:
            state = self.payers.setdefault(signed.ticket.payer, _PerPayer(os.urandom(32)))
            state.winners.append((signed.encode(), secret))
            self.save()
        return Checked(ticket_hash, won)

    def winners(self, payer: bytes | None = None) -> list[tuple[SignedTicket, bytes]]:
        """Winning tickets held (of ``payer``, or all), with their secrets."""
        return [(SignedTicket.decode(raw), secret) for address, state in self.payers.items()
                if payer is None or address == payer for raw, secret in state.winners]

    def forget(self, signed: SignedTicket) -> None:
        """Drop a winning ticket (redeemed, or refused for good: expired, used)."""
        state = self.payers.get(signed.ticket.payer)
        if state is not None:
            raw = signed.encode()
            state.winners = [w for w in state.winners if w[0] != raw]
            self.save()

    # -- the file ------------------------------------------------------------------------------

    def save(self) -> None:
        if self.path is None:
            return
        write_private(self.path, [self.address, [[payer, s.secret, s.last_nonce, [list(w) for w in s.winners]]
                                                 for payer, s in self.payers.items()]])

    def _load(self, raw: bytes) -> None:
        try:
            address, payers = cast(list[Any], msgpack.unpackb(raw))
            for payer, secret, last_nonce, winners in payers:
                self.payers[bytes(payer)] = _PerPayer(bytes(secret), int(last_nonce),
                                                      [(bytes(t), bytes(s)) for t, s in winners])
        except Exception as exc:  # any damage: one line naming the file
            raise TicketError(f"cannot read the recipient's ticket state {self.path}: {type(exc).__name__}") from None
        if bytes(address) != self.address:
            raise TicketError(f"{self.path} holds the tickets of 0x{bytes(address).hex()}, not 0x{self.address.hex()}")


__all__ = ["Checked", "Recipient", "check", "write_private"]
