"""``node.tickets``: lottery-ticket payments from Python (issue 24; docs/tickets.md).

The payer funds the broker (ledger records) and signs tickets off the ledger; the recipient hands
out commitments, checks each ticket at once and redeems the winners.  A node alone only, for now
(the broker's records, like the worker registry's, are not replicated).  The off-ledger state (a
recipient's secrets and winning tickets, a payer's next nonce) lives beside the keystore, in the
node directory's ``tickets/``, one file per account.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from missive.mailbox import broker as ledger
from missive.market.tickets import (
    BROKER,
    Checked,
    Effect,
    Issuer,
    Payer,
    Recipient,
    SignedTicket,
    TicketError,
    args_of,
    digest,
)
from missive.market.tickets.broker import Unfunded
from missive.node.values import to_address

if TYPE_CHECKING:
    from missive.keys import Key
    from missive.node.embedded import Node


def to_ticket(value: object) -> SignedTicket:
    """A signed ticket from itself, its bytes or their hex."""
    if isinstance(value, SignedTicket):
        return value
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value.strip().removeprefix("0x"))
        except ValueError:
            raise TicketError("malformed ticket: not hex") from None
    return SignedTicket.decode(value)


class Tickets:
    """Fund, issue, check, redeem and inspect lottery tickets on an embedded node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._recipients: dict[bytes, Recipient] = {}
        self._issuers: dict[bytes, Issuer] = {}

    @property
    def folder(self) -> Path:
        return self.node.path / "tickets"

    # -- the payer, on the ledger ------------------------------------------------------------

    def _op(self, key: Key, op: str, **kwargs: Any) -> Effect:
        self.node.ensure_writable("use the ticket broker")
        store = self.node.store
        args = args_of(op, ledger.payer(store, key.address), **kwargs)
        signature = bytes(key.signing_key.sign(digest(store.chain_id, BROKER, op, key.address, args)).signature)
        return ledger.ticket_op(store, op, key.address, args, key.public_key, signature)

    def fund(self, deposit: int = 0, reserve: int = 0, recipients: list[object] | None = None, *,
             sender: object = None) -> Payer:
        """Move ``deposit`` and ``reserve`` from ``sender``'s balance to the broker; ``recipients``:
        who the reserve backs (None: as before, or this node's registered workers the first time)."""
        key = self.node._key(sender)
        named: tuple[bytes, ...] = ()
        if recipients is not None:
            named = tuple(to_address(r, "recipient") for r in recipients)
        elif reserve and not (ledger.payer(self.node.store, key.address) or Payer()).recipients:
            named = tuple(address for address, worker in self.node.store.workers() if worker.stake)
        return self._op(key, "fund", deposit=deposit, reserve=reserve, recipients=named).payer

    def unlock(self, *, sender: object = None) -> Payer:
        return self._op(self.node._key(sender), "unlock").payer

    def withdraw(self, *, sender: object = None) -> Payer:
        return self._op(self.node._key(sender), "withdraw").payer

    def payer(self, address: object) -> Payer | None:
        return ledger.payer(self.node.store, to_address(address, "payer"))

    # -- off the ledger ------------------------------------------------------------------------

    def recipient(self, who: object = None) -> Recipient:
        key = self.node._key(who)
        found = self._recipients.get(key.address)
        if found is None:
            found = self._recipients[key.address] = Recipient(key.address, self.folder / f"{key.address.hex()}.recipient")
        return found

    def commitment(self, payer: object, *, recipient: object = None) -> bytes:
        """The commitment ``recipient`` hands to ``payer`` (keccak256 of a secret it keeps)."""
        return self.recipient(recipient).commitment(to_address(payer, "payer"))

    def issue(self, recipient: object, commitment: bytes, face_value: int, win_prob: int, *,
              expiry: int | None = None, sender: object = None) -> SignedTicket:
        """A ticket signed by ``sender`` (the payer) for ``recipient`` under its ``commitment``."""
        key = self.node._key(sender)
        issuer = self._issuers.get(key.address)
        if issuer is None:
            issuer = self._issuers[key.address] = Issuer(key.signing_key, key.public_key,
                                                          self.folder / f"{key.address.hex()}.nonce")
        store = self.node.store
        return issuer.issue(to_address(recipient, "recipient"), commitment, face_value, win_prob,
                            chain_id=store.chain_id, clock=store.clock(), expiry=expiry)

    def check(self, ticket: object, *, recipient: object = None) -> Checked:
        """``recipient`` checks a ticket and takes it; whether it wins.  TicketError if refused."""
        signed = to_ticket(ticket)
        store = self.node.store
        return self.recipient(recipient).take(signed, chain_id=store.chain_id, clock=store.clock(),
                                              payer=ledger.payer(store, signed.ticket.payer))

    # -- redeeming -----------------------------------------------------------------------------

    def redeem(self, *, recipient: object = None, payer: object = None
               ) -> list[tuple[SignedTicket, Effect | TicketError]]:
        """Redeem every winning ticket ``recipient`` holds (of ``payer``, or all), then rotate its
        secret for each payer it redeemed from.  Each ticket's :class:`Effect`, or why it was
        refused; a refused ticket is dropped unless its payer may still pay it (:class:`Unfunded`)."""
        key = self.node._key(recipient)
        holder = self.recipient(key.address)
        results: list[tuple[SignedTicket, Effect | TicketError]] = []
        rotate: set[bytes] = set()
        for signed, secret in holder.winners(to_address(payer, "payer") if payer is not None else None):
            try:
                effect = self._op(key, "redeem", signed=signed.encode(), secret=secret)
            except Unfunded as exc:
                results.append((signed, exc))
                continue
            except TicketError as exc:
                results.append((signed, exc))
            else:
                results.append((signed, effect))
                rotate.add(signed.ticket.payer)
            holder.forget(signed)
        for address in rotate:
            holder.rotate(address)
        return results

    def status(self) -> dict[str, Any]:
        store = self.node.store
        return {"payers": ledger.payers(store), "burned": ledger.burned(store), "used": ledger.used_count(store),
                "clock": store.clock()}


__all__ = ["Tickets", "to_ticket"]
