"""Admission of external messages: the checks a signed message passes before it is accepted.

Everything here runs inside the accepting LMDB transaction, so it sees the
sender's account exactly as the acceptance will leave it.  A rejected message
changes nothing; the error names what was wrong.
"""

from __future__ import annotations

from collections.abc import Callable

import lmdb

from missive.identity import verify
from missive.mailbox import ethtx
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
from missive.mailbox.records import Account
from missive.mailbox.signed import SignedRecord
from missive.mailbox.store import Store
from missive.market.fees import escrow
from missive.market.raises import raise_misfit, raise_target
from missive.market.workers import below_minimum
from missive.vm.creation import create_address
from missive.vm.keccak import keccak256

EXTERNAL_KINDS = (Kind.CALL, Kind.QUERY, Kind.DEPLOY)
#: How far ahead of the node's logical clock an external message may be stamped.
#: Without a bound one message could push the clock (and every actor's time)
#: to the end of the 64-bit range.
MAX_CLOCK_SKEW = 1 << 20


def address_of(public_key: bytes) -> bytes:
    """An external account's address: the last 20 bytes of keccak256(Ed25519 public key)."""
    return keccak256(public_key)[12:]


def verify_signature(envelope: Envelope, public_key: bytes, signature: bytes) -> None:
    if ethtx.is_eth_public_key(public_key):
        verify_eth_signed(envelope, public_key, signature)
        return
    if len(public_key) != 32:
        raise EnvelopeError("public key must be 32 bytes (Ed25519), or 64 (secp256k1, an Ethereum transaction)")
    if address_of(public_key) != envelope.sender:
        raise EnvelopeError(f"public key does not belong to sender 0x{envelope.sender.hex()}")
    if not verify(public_key, envelope.id, signature):
        raise EnvelopeError(f"bad signature on message from 0x{envelope.sender.hex()}")


def verify_eth_signed(envelope: Envelope, public_key: bytes, raw_transaction: bytes) -> None:
    """An Ethereum-signed message: its "signature" is the raw signed transaction, which must be
    signed by ``public_key`` (64 bytes, secp256k1) and be exactly ``envelope`` (:func:`ethtx.verify`)."""
    tx = ethtx.verify(envelope, public_key, raw_transaction)
    if tx.sender != envelope.sender:  # (verify rebuilt the envelope from the signer: this cannot differ)
        raise EnvelopeError(f"public key does not belong to sender 0x{envelope.sender.hex()}")


Check = Callable[[lmdb.Transaction, Envelope, bytes, bytes, dict[bytes, Account]], Account]


def check_signatures(submissions: list[tuple[Envelope, bytes, bytes]]) -> list[EnvelopeError | None]:
    """Each submission's signature problem (None: signed by its sender).  Pure: needs no state, so
    a node runs it on a worker thread before the admission's transaction, not inside it."""
    problems: list[EnvelopeError | None] = []
    for envelope, public_key, signature in submissions:
        try:
            verify_signature(envelope, public_key, signature)
        except EnvelopeError as err:
            problems.append(err)
        else:
            problems.append(None)
    return problems


def checker(store: Store, is_local: Callable[[bytes], bool] | None = None, *, signatures: bool = True,
            minimum: Callable[[Envelope], str | None] | None = None) -> Check:
    """Admission for ``store``.  With ``is_local`` (a cluster node), a recipient whose actor
    another node executes is not looked up here: its node handles the message, and a sender
    this node does not execute at the moment of the write is refused: its record would be made
    in an epoch where another holder executes the sender, so no holder could ever acknowledge
    it (the submit was routed before the epoch changed; sent again, it goes to the executor).
    ``signatures=False``: the caller has checked them already (:func:`check_signatures`).
    ``minimum``: why a message bids too little for the worker that will execute it (None: it does
    not); without it, this node's own worker's minimum (a node alone)."""
    def check(txn: lmdb.Transaction, envelope: Envelope, public_key: bytes, signature: bytes,
              updated: dict[bytes, Account]) -> Account:
        envelope.validate()
        if is_local is not None and not is_local(envelope.sender):
            raise EnvelopeError(f"this node does not execute 0x{envelope.sender.hex()} now (the cluster changed "
                                "while the message waited): send it again")
        if envelope.kind is Kind.RAISE and is_local is None:
            raise EnvelopeError("on a node alone a bid is raised by a raise record (`missive bid`, Node.raise_bid), "
                                "not by a raise message: those are a cluster's")
        if envelope.kind not in EXTERNAL_KINDS and envelope.kind is not Kind.RAISE:
            raise EnvelopeError(f"an external account cannot send a {envelope.kind.name.lower()} message")
        if envelope.parent:
            raise EnvelopeError("an external message cannot name a parent message")
        if envelope.chain_id != store.chain_id:
            raise EnvelopeError(f"the message is signed for chain id {envelope.chain_id}, not this ledger's "
                                f"({store.chain_id}): it was made for another ledger")
        clock = store.clock(txn)
        if envelope.time > clock + MAX_CLOCK_SKEW:
            raise EnvelopeError(f"time {envelope.time} is too far ahead of the node's logical clock ({clock})")
        if signatures:
            verify_signature(envelope, public_key, signature)
        sender = updated.get(envelope.sender) or store.account(envelope.sender, txn)
        if sender is None:
            raise EnvelopeError(f"unknown account 0x{envelope.sender.hex()} (create it with `missive account new`)")
        if sender.is_contract:
            raise EnvelopeError(f"0x{envelope.sender.hex()} is a contract; only its own handlers send its messages")
        if envelope.nonce != sender.nonce:
            raise EnvelopeError(f"nonce {envelope.nonce} is wrong for 0x{envelope.sender.hex()}: expected {sender.nonce}")
        held = escrow(envelope)
        if envelope.kind is Kind.RAISE:
            check_raise_message(store, txn, envelope, sender)
            return sender.debited(held)
        if envelope.value + held > sender.balance:
            if held:
                raise EnvelopeError(
                    f"balance too low: 0x{envelope.sender.hex()} has {sender.balance}, the message carries "
                    f"{envelope.value} and escrows {held} for its fees (gas {envelope.gas} × bid {envelope.bid})")
            raise EnvelopeError(
                f"balance too low: 0x{envelope.sender.hex()} has {sender.balance}, the message carries {envelope.value}"
            )
        if ethtx.is_eth_public_key(public_key):
            ethtx.admit(envelope, sender.balance)
        too_low = below_minimum(envelope.bid, store.own_worker(txn)) if minimum is None else minimum(envelope)
        if too_low is not None:
            raise EnvelopeError(too_low)
        if envelope.kind is Kind.QUERY and envelope.value:
            raise EnvelopeError("a query cannot carry value")
        if envelope.kind is Kind.DEPLOY:
            expected = create_address(envelope.sender, envelope.nonce)
            if envelope.recipient != expected:
                raise EnvelopeError(f"deploy address must be 0x{expected.hex()} (sender and nonce decide it)")
            if not envelope.payload:
                raise EnvelopeError("deploy message carries no init code")
        elif envelope.payload and (is_local is None or is_local(envelope.recipient)):
            target = store.account(envelope.recipient, txn)
            if target is None or not target.is_contract:
                raise EnvelopeError(f"unknown contract 0x{envelope.recipient.hex()}: no code there to call")
        return sender.debited(envelope.value + held)

    return check


def check_raise_message(store: Store, txn: lmdb.Transaction, envelope: Envelope, sender: Account) -> None:
    """A cluster's raise message (:mod:`missive.market.raises`), checked where its sender is executed:
    what this node knows of the message it raises (its sender's executor admitted it, so its
    record is here, or in the copy of the sender's actor); EnvelopeError (one line) if it cannot
    raise it.  Whether the message is still waiting is known at its recipient's holders: a raise
    that arrives after the message ran refunds its whole escrow there."""
    named, new_bid = raise_target(envelope)
    shown = f"0x{named.hex()}"
    raw = store.get(txn, "messages", named)
    if raw is None and "replica_messages" in store.db:
        raw = store.get(txn, "replica_messages", named)
    if raw is None:
        raise EnvelopeError(f"unknown message {shown}: nothing to raise")
    target = SignedRecord.decode(raw, check=False).envelope
    if (misfit := raise_misfit(envelope, named, target, target.bid)) is not None:
        raise EnvelopeError(misfit)
    if store.get(txn, "receipts", named) is not None:
        raise EnvelopeError(f"message {shown} is already handled: its bid can no longer be raised")
    top_up = escrow(envelope)
    if top_up > sender.balance:
        raise EnvelopeError(f"balance too low: 0x{envelope.sender.hex()} has {sender.balance}, raising the bid of "
                            f"{shown} from {target.bid} to {new_bid} escrows {top_up} more "
                            f"(gas {envelope.gas} × {envelope.bid})")
