"""Raising the bid of a pending message (SPEC §7; issue 23; docs/market.md "Raising a bid").

A message's bid is part of its signed envelope, so a raise cannot change the envelope: it is
a **raise record** of its own, signed by the message's sender over
``keccak256(msgpack(["raise", chain id, message id, new bid]))`` (:func:`raise_digest`), with the
sender's public key.  The store checks it (:func:`check_raise`), debits the top-up
``gas × (new bid − current bid)`` from the sender, keeps the message's new bid (meta
``raised:`` + id: :func:`encode_raised`) and appends ``["raise", message id, new bid, public
key, signature]`` to the ledger, all in one transaction.  Replay re-checks the record with the
same function against the state it has rebuilt at that point of the ledger, and debits the
same top-up.

The handler then runs the message with the raised bid (its fee, its refund and the bid its
messages carry on), so ``fee + refund + Σ carried × bid == gas × bid`` with the new bid.

A raise that lands after the runtime has read the message for a round but before that round
commits (the runtime runs rounds ahead of their commits) came too late: the commit finds the
run's bid (``Outcome.bid``) below the message's current one, credits the top-up back to the
sender and appends ``["unraise", message id, the run's bid]`` before the receipt record, so
replay undoes the raise at the same point.
"""

from __future__ import annotations

from typing import Any, cast

import msgpack

from missive.identity import verify
from missive.mailbox.envelope import Envelope, EnvelopeError, bytes_int, int_bytes
from missive.mailbox.records import Account
from missive.vm.keccak import keccak256

#: meta key prefix of a message's raised bid: b"raised:" + message id -> msgpack [bid bytes, gas, sender]
RAISED = b"raised:"


def raise_digest(chain_id: int, message_id: bytes, new_bid: int) -> bytes:
    """What the sender signs to raise ``message_id``'s bid to ``new_bid`` on the ledger ``chain_id``
    (bound to the ledger, so a raise signed for one ledger is refused by every other)."""
    return keccak256(cast(bytes, msgpack.packb(["raise", chain_id, message_id, int_bytes(new_bid)], use_bin_type=True)))


def sign_raise(signing_key: Any, chain_id: int, message_id: bytes, new_bid: int) -> bytes:
    """The signature of a raise (``signing_key``: the sender's :class:`nacl.signing.SigningKey`)."""
    if not isinstance(new_bid, int) or isinstance(new_bid, bool) or new_bid < 0 or new_bid >> 256:
        raise EnvelopeError(f"a bid is a fee per gas in [0, 2**256), not {new_bid!r}")
    return bytes(signing_key.sign(raise_digest(chain_id, message_id, new_bid)).signature)


def encode_raised(bid: int, envelope: Envelope) -> bytes:
    return cast(bytes, msgpack.packb([int_bytes(bid), envelope.gas, envelope.sender], use_bin_type=True))


def decode_raised(raw: bytes) -> tuple[int, int, bytes]:
    """(bid, gas, sender) of a raised message."""
    bid, gas, sender = msgpack.unpackb(raw)
    return bytes_int(bid, "bid"), gas, bytes(sender)


def check_raise(message_id: bytes, found: tuple[Envelope, Any, Any] | None, handled: bool, current_bid: int,
                new_bid: object, public_key: object, signature: object, sender: Account | None,
                chain_id: int) -> int:
    """The top-up a raise of ``message_id`` to ``new_bid`` costs its sender; or EnvelopeError, one line.

    ``found``: the stored message (None: unknown); ``handled``: it has a receipt (or is being
    handled); ``current_bid``: its bid now (its envelope's, or its last raise's); ``sender``:
    the sender's account as it stands."""
    shown = f"0x{message_id.hex()}"
    if not isinstance(new_bid, int) or isinstance(new_bid, bool) or new_bid < 0 or new_bid >> 256:
        raise EnvelopeError(f"a bid is a fee per gas in [0, 2**256), not {new_bid!r}")
    if found is None:
        raise EnvelopeError(f"unknown message {shown}: nothing to raise")
    envelope = found[0]
    if not envelope.is_external:
        raise EnvelopeError(f"message {shown} was sent by a handler: only a message an account signed can be raised")
    if handled:
        raise EnvelopeError(f"message {shown} is already handled: its bid can no longer be raised")
    if not isinstance(public_key, bytes) or len(public_key) != 32 or keccak256(public_key)[12:] != envelope.sender:
        raise EnvelopeError(f"only the sender of {shown} (0x{envelope.sender.hex()}) can raise its bid")
    if not isinstance(signature, bytes) or not verify(public_key, raise_digest(chain_id, message_id, new_bid),
                                                      signature):
        raise EnvelopeError(f"bad signature on the raise of {shown}")
    if new_bid <= current_bid:
        raise EnvelopeError(f"a raise must offer more than the current bid of {shown} ({current_bid}), not {new_bid}")
    top_up = envelope.gas * (new_bid - current_bid)
    balance = sender.balance if sender is not None else 0
    if top_up > balance:
        raise EnvelopeError(f"balance too low: 0x{envelope.sender.hex()} has {balance}, raising the bid of {shown} "
                            f"from {current_bid} to {new_bid} escrows {top_up} more (gas {envelope.gas} × {new_bid - current_bid})")
    return top_up


__all__ = ["RAISED", "check_raise", "decode_raised", "encode_raised", "raise_digest", "sign_raise"]
