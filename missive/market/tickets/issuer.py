"""The payer's side, off the ledger (issue 24; docs/tickets.md): signing tickets.

A payer needs only its account key and a nonce that never goes down: each ticket takes the next
one, so the nonces under any one commitment are strictly increasing, which the recipient checks
(a ticket whose nonce is not above the last one taken under its commitment is refused).  The
next nonce is kept in a small file, written before the ticket is handed out, so a crash skips
a nonce rather than reusing one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from missive.market.tickets.ticket import BROKER, MAX_VALIDITY, SignedTicket, Ticket, TicketError, sign


class Issuer:
    """Signs tickets for one payer account (``signing_key``: its :class:`nacl.signing.SigningKey`)."""

    def __init__(self, signing_key: Any, public_key: bytes, path: Path | None = None) -> None:
        self.signing_key, self.public_key, self.path = signing_key, public_key, path
        self.next_nonce = 0
        if path is not None and path.exists():
            text = path.read_text().strip()
            if not text.isdigit():
                raise TicketError(f"cannot read the payer's next ticket nonce in {path}: {text[:20]!r}")
            self.next_nonce = int(text)

    def issue(self, recipient: bytes, commitment: bytes, face_value: int, win_prob: int, *, chain_id: int,
              clock: int, expiry: int | None = None, broker: bytes = BROKER) -> SignedTicket:
        """A signed ticket (``expiry`` default: the longest a recipient accepts, ``clock`` + MAX_VALIDITY)."""
        ticket = Ticket(self.public_key, recipient, face_value, win_prob, self.next_nonce, commitment,
                        clock + MAX_VALIDITY if expiry is None else expiry, chain_id, broker)
        self.next_nonce += 1
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(f"{self.next_nonce}\n")
            os.replace(temporary, self.path)
        return sign(ticket, self.signing_key)


__all__ = ["Issuer"]
