"""A lottery ticket (issue 24; docs/tickets.md): what a payer signs, and the win test.

A ticket promises ``face_value`` coin to ``recipient`` with probability ``win_prob / 2**256``.
The payer signs, with its account's Ed25519 key, the keccak256 of the msgpack list
``["ticket", chain id, broker, payer key, recipient, face value, win prob, nonce, commitment,
expiry]`` (:meth:`Ticket.hash`): the ledger's chain id and the broker's address are bound into
the signed hash, so a ticket signed for one ledger or broker is refused by every other one.

The ticket wins iff ``keccak256(signature ‖ secret) < win_prob``, where ``keccak256(secret)`` is
the ticket's ``commitment``, handed out by the recipient *before* the signature existed.  Neither
side can bias the outcome: the recipient fixed its secret before it saw the signature and cannot
change the signature (libsodium verifies strictly: a canonical ``S`` and the ``R`` recomputed,
so nobody but the signer can make a second valid signature of the same ticket); the payer signs
without knowing the secret, so every signature it could choose wins with the same probability.

The checks here are the ones shared by the recipient (off the ledger,
:mod:`missive.market.tickets.recipient`) and the broker (on it,
:mod:`missive.market.tickets.broker`): the encoding, the chain, the broker, the signature and
the expiry.  Every refusal is a :class:`TicketError` with one line naming what was wrong.
"""

from __future__ import annotations

from typing import Any, cast

import attrs
import msgpack

from missive.errors import BadInput
from missive.identity import verify
from missive.mailbox.envelope import int_bytes
from missive.vm.keccak import keccak256

#: The broker's address: a system address, not a contract (docs/tickets.md says why).  Bound into
#: every ticket's signed hash; a broker that moves (to an actor, say) gets a new address and
#: refuses the old tickets.
BROKER = keccak256(b"missive ticket broker v1")[12:]
#: The longest an encoded signed ticket may be (its fields at their largest take about 230 bytes).
MAX_TICKET_BYTES = 400
#: A ticket may be valid for at most this much logical time ahead of the ledger's clock.  The
#: broker's used-ticket set keeps a ticket's hash only until its expiry, so this bounds the set.
MAX_VALIDITY = 1_000
#: ``win_prob`` is a threshold out of 2**256 (1/1,000 is ``2**256 // 1000``)
ONE = 2**256
SIGNATURE_SIZE = 64


class TicketError(BadInput, ValueError):
    """A ticket, or a broker operation, that is refused; the text names what was wrong (refused
    input: exit 2 from the CLI)."""


def _uint(value: object, bits: int, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value >> bits:
        raise TicketError(f"malformed ticket: {name} must be a whole number below 2**{bits}, not {value!r}")
    return value


def _word(raw: object, name: str) -> int:
    if not isinstance(raw, bytes) or len(raw) > 32 or raw[:1] == b"\x00":
        raise TicketError(f"malformed ticket: {name} must be a canonical big-endian integer of at most 32 bytes")
    return int.from_bytes(raw, "big")


def _blob(raw: object, size: int, name: str) -> bytes:
    if not isinstance(raw, bytes) or len(raw) != size:
        shown = f"{len(raw)} bytes" if isinstance(raw, bytes) else type(raw).__name__
        raise TicketError(f"malformed ticket: {name} must be {size} bytes, not {shown}")
    return raw


@attrs.frozen
class Ticket:
    """What the payer signs.  ``payer_key`` is the payer account's Ed25519 public key (its address
    is ``keccak256(key)[12:]``, as for every account); ``expiry`` is in the ledger's logical time
    (the ticket can be redeemed while the clock is below it)."""

    payer_key: bytes
    recipient: bytes
    face_value: int
    win_prob: int
    nonce: int
    commitment: bytes
    expiry: int
    chain_id: int
    broker: bytes = BROKER

    def __attrs_post_init__(self) -> None:
        _blob(self.payer_key, 32, "the payer key")
        _blob(self.recipient, 20, "the recipient")
        _blob(self.commitment, 32, "the commitment")
        _blob(self.broker, 20, "the broker")
        _uint(self.face_value, 256, "the face value")
        _uint(self.win_prob, 256, "the win probability")
        _uint(self.nonce, 64, "the nonce")
        _uint(self.expiry, 64, "the expiry")
        _uint(self.chain_id, 64, "the chain id")

    @property
    def payer(self) -> bytes:
        return keccak256(self.payer_key)[12:]

    def fields(self) -> list[Any]:
        return [self.chain_id, self.broker, self.payer_key, self.recipient, int_bytes(self.face_value),
                int_bytes(self.win_prob), self.nonce, self.commitment, self.expiry]

    def hash(self) -> bytes:
        """The signed hash (also the ticket's identity in the broker's used-ticket set)."""
        return keccak256(cast(bytes, msgpack.packb(["ticket", *self.fields()], use_bin_type=True)))

    @property
    def expected_value(self) -> float:
        return self.face_value * self.win_prob / ONE


@attrs.frozen
class SignedTicket:
    ticket: Ticket
    signature: bytes

    def encode(self) -> bytes:
        return cast(bytes, msgpack.packb([*self.ticket.fields(), self.signature], use_bin_type=True))

    @classmethod
    def decode(cls, raw: object) -> SignedTicket:
        """A signed ticket from its bytes; TicketError naming the field that is wrong."""
        if not isinstance(raw, bytes):
            raise TicketError(f"malformed ticket: bytes expected, not {type(raw).__name__}")
        if len(raw) > MAX_TICKET_BYTES:
            raise TicketError(f"malformed ticket: {len(raw)} bytes, more than a ticket's {MAX_TICKET_BYTES}")
        try:
            fields = msgpack.unpackb(raw)
        except Exception as exc:  # msgpack raises several kinds for bytes that are not msgpack
            raise TicketError(f"malformed ticket: not msgpack ({type(exc).__name__})") from None
        if not isinstance(fields, list) or len(fields) != 10:
            raise TicketError("malformed ticket: a list of 10 fields expected")
        chain_id, broker, payer_key, recipient, face, prob, nonce, commitment, expiry, signature = fields
        ticket = Ticket(payer_key, recipient, _word(face, "the face value"), _word(prob, "the win probability"),
                        nonce, commitment, expiry, chain_id, broker)
        return cls(ticket, _blob(signature, SIGNATURE_SIZE, "the signature"))

    def hex(self) -> str:
        return self.encode().hex()


def sign(ticket: Ticket, signing_key: Any) -> SignedTicket:
    """The payer's signature of ``ticket`` (``signing_key``: its :class:`nacl.signing.SigningKey`)."""
    return SignedTicket(ticket, bytes(signing_key.sign(ticket.hash()).signature))


def wins(signature: bytes, secret: bytes, win_prob: int) -> bool:
    """The win test: ``keccak256(signature ‖ secret)``, read as a number, below ``win_prob``."""
    return int.from_bytes(keccak256(signature + secret), "big") < win_prob


def probability(text: str) -> int:
    """A win probability written ``1/1000``, ``0.001`` or ``1`` as a threshold out of 2**256."""
    from fractions import Fraction

    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise TicketError(f"a win probability is a fraction such as 1/1000 or 0.001, not {text!r}") from None
    if not 0 <= value <= 1:
        raise TicketError(f"a win probability is between 0 and 1, not {text!r}")
    return min(ONE - 1, ONE * value.numerator // value.denominator)


def commitment_of(secret: bytes) -> bytes:
    return keccak256(secret)


def verify_ticket(signed: SignedTicket, chain_id: int, broker: bytes, clock: int) -> bytes:
    """The checks the recipient and the broker share: this ledger and broker, the payer's
    signature, not expired, not valid for longer than :data:`MAX_VALIDITY`.  Returns the
    ticket's hash; TicketError (one line) otherwise."""
    ticket = signed.ticket
    if ticket.chain_id != chain_id:
        raise TicketError(f"the ticket is for chain {ticket.chain_id}, not this ledger's ({chain_id})")
    if ticket.broker != broker:
        raise TicketError(f"the ticket is for broker 0x{ticket.broker.hex()}, not this ledger's (0x{broker.hex()})")
    if not ticket.face_value:
        raise TicketError("the ticket's face value is 0: it pays nothing")
    digest = ticket.hash()
    if not verify(ticket.payer_key, digest, signed.signature):
        raise TicketError(f"bad signature: the ticket is not signed by its payer 0x{ticket.payer.hex()}")
    if clock >= ticket.expiry:
        raise TicketError(f"the ticket expired at logical time {ticket.expiry} (now {clock})")
    if ticket.expiry > clock + MAX_VALIDITY:
        raise TicketError(f"the ticket's expiry {ticket.expiry} is more than {MAX_VALIDITY} past now ({clock})")
    return digest


__all__ = ["BROKER", "MAX_TICKET_BYTES", "MAX_VALIDITY", "ONE", "SignedTicket", "Ticket", "TicketError",
           "commitment_of", "probability", "sign", "verify_ticket", "wins"]
