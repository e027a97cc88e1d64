"""Probabilistic payments (issue 24; docs/tickets.md): lottery tickets paid from a payer's deposit
at the ticket broker, backed by a penalty reserve.

- :mod:`.ticket`: the ticket, its signed hash (bound to the chain id and the broker) and the win test;
- :mod:`.issuer`: the payer signs tickets off the ledger;
- :mod:`.recipient`: the recipient's secrets, its check of each ticket, the winners it holds;
- :mod:`.broker`: the broker's ledger records (fund, unlock, withdraw, redeem), checked the same
  way live and by replay.
"""

from missive.market.tickets.broker import BURNED, PAYER, UNLOCK_DELAY, USED, Effect, Payer, View, apply, args_of, digest
from missive.market.tickets.issuer import Issuer
from missive.market.tickets.recipient import Checked, Recipient, check
from missive.market.tickets.ticket import (
    BROKER,
    MAX_VALIDITY,
    ONE,
    SignedTicket,
    Ticket,
    TicketError,
    commitment_of,
    sign,
    verify_ticket,
    wins,
)

__all__ = ["BROKER", "BURNED", "MAX_VALIDITY", "ONE", "PAYER", "UNLOCK_DELAY", "USED", "Checked", "Effect", "Issuer",
           "Payer", "Recipient", "SignedTicket", "Ticket", "TicketError", "View", "apply", "args_of", "check",
           "commitment_of", "digest", "sign", "verify_ticket", "wins"]
