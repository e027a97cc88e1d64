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

import attrs
import msgpack

from missive.identity import verify
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind, bytes_int, int_bytes
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


# -- on a cluster: a raise is a message (docs/market.md "Raising a bid on a cluster") -----------------------
#
# On a cluster the waiting message M sits with the holders of its recipient R, and its sender S's
# balance with the holders of S: a raise cannot be one record in one transaction.  So it is a
# message of its own, kind RAISE, from S to R, signed by S like any message: its gas is M's and its
# bid the whole raise above M's own bid, so admission escrows exactly the top-up (gas × (new bid −
# M's bid)) from S, and the message carries it to R's holders, where it waits in R's queue like any
# message.  It runs no code.  The executor of R, when a round takes M, moves the raises of M it
# holds in that round to just before M (:func:`arrange`): handled there, a raise gives M its new bid
# and keeps its escrow for M's run (its refund is the escrow of the raise it supersedes, if any);
# a raise handled anywhere else (M was handled first, or is unknown, or the raise does not fit M)
# refunds its whole escrow.  Which of the two is decided by :func:`effective_bids` from nothing but
# the order of the handled messages, so every holder that re-executes the receipts, and anyone
# checking evidence, settles each raise the same way.


def raise_payload(message_id: bytes, new_bid: int) -> bytes:
    """The payload of a raise message: msgpack [message id, new bid]."""
    return cast(bytes, msgpack.packb([message_id, int_bytes(new_bid)], use_bin_type=True))


def raise_target(envelope: Envelope) -> tuple[bytes, int]:
    """(message id, new bid) a raise message names; EnvelopeError (one line) if its payload is not that."""
    try:
        fields = msgpack.unpackb(envelope.payload, raw=False)
    except Exception:
        raise EnvelopeError("malformed raise: its payload is not msgpack [message id, new bid]") from None
    if (not isinstance(fields, list) or len(fields) != 2 or not isinstance(fields[0], bytes)
            or len(fields[0]) != 32):
        raise EnvelopeError("malformed raise: its payload is not msgpack [message id (32 bytes), new bid]")
    return fields[0], bytes_int(fields[1], "the raise's new bid")


def rank_bid(envelope: Envelope) -> int:
    """The bid a waiting message is served by: a raise's new bid (so that a round taking it takes the
    earlier messages of its pair, the raised one among them), else its own."""
    if envelope.kind is Kind.RAISE:
        try:
            return raise_target(envelope)[1]
        except EnvelopeError:
            return envelope.bid
    return envelope.bid


def raise_misfit(raising: Envelope, message_id: bytes, target: Envelope, current: int) -> str | None:
    """Why ``raising`` (a raise message naming ``message_id``) does not raise ``target``, whose bid
    is ``current`` now (its own, or an earlier raise's); None: it does."""
    shown = f"0x{message_id.hex()}"
    try:
        _, new_bid = raise_target(raising)
    except EnvelopeError as err:
        return str(err)
    if target.kind is Kind.RAISE or not target.is_external:
        return f"message {shown} was not signed by an account as a call, query or deploy: its bid cannot be raised"
    if raising.sender != target.sender:
        return f"only the sender of {shown} (0x{target.sender.hex()}) can raise its bid"
    if raising.recipient != target.recipient or raising.gas != target.gas:
        return (f"a raise of {shown} is sent to its recipient 0x{target.recipient.hex()} with its gas "
                f"{target.gas}, not to 0x{raising.recipient.hex()} with {raising.gas}")
    if new_bid <= current:
        return f"a raise must offer more than the current bid of {shown} ({current}), not {new_bid}"
    if raising.bid != new_bid - target.bid:
        return (f"a raise of {shown} from bid {target.bid} to {new_bid} escrows gas × {new_bid - target.bid}: "
                f"its bid must be {new_bid - target.bid}, not {raising.bid}")
    return None


def effective_bids(handled: list[tuple[bytes, Envelope]]) -> dict[bytes, int]:
    """The bid each message of ``handled`` (message id, envelope, in the order one actor handled
    them) runs with, where it is not its envelope's: the rule that settles raises on a cluster.

    Raise messages handled right before a message M (consecutively, in queue order) are settled
    against M: each that fits (:func:`raise_misfit`, against M's bid so far) runs with bid (M's bid
    so far − M's own bid), so its refund is the escrow of the raise it supersedes and the rest of
    its escrow stays with M; M runs with the last such raise's bid.  Every other raise runs with
    its own bid: it refunds its whole escrow.  So for every raise, the coin it escrowed is either
    refunded or part of M's ``gas × bid``, exactly once."""
    out: dict[bytes, int] = {}
    run: list[tuple[bytes, Envelope]] = []
    for message_id, envelope in handled:
        if envelope.kind is Kind.RAISE:
            run.append((message_id, envelope))
            continue
        if run:
            current = envelope.bid
            for raise_id, raising in run:
                named, new_bid = _named(raising)
                if named == message_id and raise_misfit(raising, message_id, envelope, current) is None:
                    out[raise_id] = current - envelope.bid
                    current = new_bid
            if current != envelope.bid:
                out[message_id] = current
            run = []
    return out


def raised_bids(waiting: list[Envelope]) -> dict[bytes, int]:
    """The bids waiting messages will run with where raise messages waiting with them (in queue
    order, as an executor settles them) raise them: message id -> its bid with the raises that fit."""
    by_id = {envelope.id: envelope for envelope in waiting if envelope.kind is not Kind.RAISE}
    current: dict[bytes, int] = {}
    for envelope in waiting:
        if envelope.kind is Kind.RAISE:
            named, new_bid = _named(envelope)
            target = by_id.get(named)
            if target is not None and raise_misfit(envelope, named, target, current.get(named, target.bid)) is None:
                current[named] = new_bid
    return current


def _named(raising: Envelope) -> tuple[bytes, int]:
    try:
        return raise_target(raising)
    except EnvelopeError:
        return b"", 0


def arrange(batch: list[tuple[bytes, bytes, Envelope]]) -> list[tuple[bytes, bytes, Envelope]]:
    """A round's share of one actor, (queue key, message id, envelope) in queue order, with the raise
    messages whose message is in the share moved to just before it (in their own order), and every
    envelope given the bid :func:`effective_bids` settles for it.  Unchanged if it holds no raise."""
    if not any(envelope.kind is Kind.RAISE for _, _, envelope in batch):
        return batch
    ids = {message_id for _, message_id, envelope in batch if envelope.kind is not Kind.RAISE}
    raises_of: dict[bytes, list[tuple[bytes, bytes, Envelope]]] = {}
    for entry in batch:
        if entry[2].kind is Kind.RAISE and (named := _named(entry[2])[0]) in ids:
            raises_of.setdefault(named, []).append(entry)
    moved = {entry[1] for entries in raises_of.values() for entry in entries}
    arranged: list[tuple[bytes, bytes, Envelope]] = []
    for entry in batch:
        if entry[1] in moved:
            continue
        arranged += raises_of.get(entry[1], [])
        arranged.append(entry)
    running = with_effective_bids([(message_id, envelope) for _, message_id, envelope in arranged])
    return [(key, message_id, envelope) for (key, message_id, _), envelope in zip(arranged, running, strict=True)]


def running_with(envelope: Envelope, message_id: bytes, bid: int) -> Envelope:
    """``envelope`` running with ``bid`` (its id stays the signed envelope's)."""
    evolved = attrs.evolve(envelope, bid=bid)
    evolved.__dict__["id"] = message_id
    return evolved


def with_effective_bids(handled: list[tuple[bytes, Envelope]]) -> list[Envelope]:
    """The envelopes of ``handled`` as they run: with the bids :func:`effective_bids` settles."""
    bids = effective_bids(handled)
    return [running_with(envelope, message_id, bids[message_id]) if message_id in bids else envelope
            for message_id, envelope in handled]


__all__ = ["RAISED", "arrange", "check_raise", "decode_raised", "effective_bids", "encode_raised", "raise_digest",
           "raise_misfit", "raise_payload", "raise_target", "raised_bids", "rank_bid", "running_with", "sign_raise",
           "with_effective_bids"]
