"""Fees by bid: what a message escrows, and how a receipt's fee and refund reach their accounts.

The rules (SPEC §7; docs/market.md says them for users):

* An external message escrows ``gas × bid`` from its sender at admission, beside its value
  (:func:`escrow`); the balance must cover both.
* The handler run (``missive.actors.handler.run_handler``) splits the escrow three ways, and
  the receipt records two of them: **fee** = the run's own gas (gas used less the gas it
  forwarded in the messages it sent) × bid, to the executing worker's **coinbase**; the
  messages it sent (calls, queries, deploys, scheduled messages, its reply) carry their gas on
  with the same bid, so that part of the escrow travels with them; **refund** = the gas nobody
  used × bid, back to the payer (tx.origin, the external account at the root of the tree).
  ``fee + refund + Σ gas carried on × bid == gas × bid`` for every handled message.
* Bounces carry no gas and escrow nothing.
* The store credits fee and refund in the transaction that commits the receipt (so they are
  paid once per handled message, and rolled back with it).  On a node alone, directly into the
  two accounts.  On a cluster node the accounts may be held by other nodes, so each credit
  travels as a message (:func:`credit_messages`: a bounce-kind message carrying the amount,
  from the actor that handled the message, gas 0), queued in the same transaction and listed
  in the actor's state diff like any message it sent; every holder re-executing the diff
  derives the same ones from the receipt.
"""

from __future__ import annotations

import os

from missive.mailbox.envelope import Envelope, Kind
from missive.mailbox.records import Receipt

#: meta value (key b"credits") of a store whose credits travel as messages (a cluster node's)
BY_MESSAGE = b"by-message"


#: the environment variable that sets the fee per gas of messages sent without one (the CLI's
#: ``--bid``, the Python API's ``bid=``; ``Node.default_bid``)
BID_VARIABLE = "MISSIVE_BID"


def default_bid() -> int:
    """The fee per gas a client offers when none is given: ``$MISSIVE_BID``, else 0 (free)."""
    raw = os.environ.get(BID_VARIABLE, "").strip()
    if not raw:
        return 0
    try:
        bid = int(raw, 0)
    except ValueError:
        raise ValueError(f"${BID_VARIABLE} must be a whole number (a fee per gas), not {raw!r}") from None
    if bid < 0 or bid >> 256:
        raise ValueError(f"${BID_VARIABLE} must be a fee per gas in [0, 2**256), not {raw!r}")
    return bid


def escrow(envelope: Envelope) -> int:
    """Coin a message holds for its fees while it waits: gas × bid."""
    return envelope.gas * envelope.bid


def credits(receipt: Receipt, payer: bytes) -> list[tuple[bytes, int]]:
    """(account, amount) a receipt pays: its fee to its coinbase, its refund to ``payer``."""
    out: list[tuple[bytes, int]] = []
    if receipt.fee:
        out.append((receipt.coinbase, receipt.fee))
    if receipt.refund:
        out.append((payer, receipt.refund))
    return out


def credit_messages(receipt: Receipt, payer: bytes) -> list[Envelope]:
    """The messages that carry ``receipt``'s fee and refund to their accounts on a cluster
    (``payer``: the handled message's tx.origin).

    Deterministic in the message and its receipt (re-execution derives them again); numbered
    after the run's own outgoing messages, so their ids never meet those."""
    return [Envelope(kind=Kind.BOUNCE, sender=receipt.recipient, recipient=to, value=amount, gas=0,
                     nonce=len(receipt.outgoing) + i, time=receipt.time, request_id=receipt.message_id,
                     parent=receipt.message_id, origin=payer)
            for i, (to, amount) in enumerate(credits(receipt, payer))]


__all__ = ["BID_VARIABLE", "BY_MESSAGE", "default_bid", "credit_messages", "credits", "escrow"]
