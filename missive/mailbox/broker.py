"""The ticket broker's records in the store (issue 24; docs/tickets.md): the rules are
:mod:`missive.market.tickets.broker`'s; this applies their effect in one LMDB transaction with
the ledger record, and reads the broker's state back.

Meta keys: ``tickets:payer:`` + address (the payer's record), ``tickets:nonce:`` + nonce key
(the used-ticket set: a redeemed ticket's hash under the key of its payer, commitment and nonce),
``tickets:used:`` + expiry (8 bytes) + nonce key (the same entries by expiry, so that expired ones
are dropped from its front at each redemption: a ticket past its expiry is refused as expired, so
it need not be kept), ``tickets:burned`` (coin burned as penalties, in all).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lmdb

from missive.mailbox.envelope import int_bytes
from missive.mailbox.records import Account
from missive.market.tickets.broker import BURNED, NONCES, PAYER, USED, Effect, Payer, Rebuilt, View, apply
from missive.market.tickets.ticket import BROKER, TicketError

if TYPE_CHECKING:
    from missive.mailbox.store import Store


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def payer(store: Store, address: bytes, txn: lmdb.Transaction | None = None) -> Payer | None:
    raw = store.get(txn, "meta", PAYER + address)
    return Payer.decode(raw) if raw is not None else None


def payers(store: Store) -> list[tuple[bytes, Payer]]:
    return [(key[len(PAYER):], Payer.decode(value)) for key, value in store.scan("meta", PAYER)]


def burned(store: Store, txn: lmdb.Transaction | None = None) -> int:
    raw = store.get(txn, "meta", BURNED)
    return int.from_bytes(raw, "big") if raw else 0


def held(store: Store) -> int:
    """Coin at the broker: deposits and reserves of every payer, and what was burned (the
    conservation check counts it as a holding: it left the balances through the broker)."""
    return sum(p.held for _, p in payers(store)) + burned(store)


def used_count(store: Store) -> int:
    return len(store.scan("meta", NONCES))


def view(store: Store, txn: lmdb.Transaction) -> View:
    def used(key: bytes) -> bytes | None:
        found = txn.get(NONCES + key, db=store.db["meta"])
        return bytes(found) if found is not None else None

    return View(lambda a: store.account(a, txn), lambda a: payer(store, a, txn), used)


def write_effect(store: Store, txn: lmdb.Transaction, effect: Effect) -> None:
    """Write what an operation did (its balances, the payer's record, the used ticket, the burn)."""
    meta, accounts = store.db["meta"], store.db["accounts"]
    for address, amount in effect.credits.items():
        account = store.account(address, txn) or Account()
        txn.put(address, account.replace(balance=account.balance + amount).encode(), db=accounts)
    txn.put(PAYER + effect.payer_address, effect.payer.encode(), db=meta)
    if effect.used is not None:
        key, expiry, ticket_hash = effect.used
        txn.put(NONCES + key, ticket_hash, db=meta)
        txn.put(USED + _u64(expiry) + key, b"", db=meta)
    if effect.burned:
        txn.put(BURNED, int_bytes(burned(store, txn) + effect.burned), db=meta)


def forget_expired(store: Store, txn: lmdb.Transaction, clock: int) -> int:
    """Drop the used-ticket entries whose tickets have expired (keeps the set bounded)."""
    meta, limit = store.db["meta"], USED + _u64(clock + 1)
    expired: list[bytes] = []  # the front of the expiry index (it is in key order: the oldest first)
    cursor = txn.cursor(db=meta)
    if cursor.set_range(USED):
        for key in cursor.iternext(keys=True, values=False):
            if bytes(key) >= limit:  # USED + the clock + 1 sorts after every expired entry, before the rest
                break
            expired.append(bytes(key))
    for key in expired:
        txn.delete(key, db=meta)
        txn.delete(NONCES + key[len(USED) + 8:], db=meta)
    return len(expired)


def ticket_op(store: Store, op: str, address: bytes, args: list[Any], public_key: bytes,
              signature: bytes) -> Effect:
    """Apply a signed broker operation and append its ledger record, in one transaction;
    TicketError (one line) and nothing changed if it is refused.  A node alone only, for now."""
    if store.replication is not None or store.credits_by_message():
        raise TicketError("the ticket broker works on a node alone for now: not on a cluster node")
    with store.writing() as txn:
        clock = store.clock(txn)
        effect = apply(op, address, clock, args, public_key, signature, store.chain_id, BROKER, view(store, txn))
        write_effect(store, txn, effect)
        if op == "redeem":
            forget_expired(store, txn, clock)
        store.append(txn, ["tickets", op, address, clock, *args, public_key, signature])
    return effect


def differs(store: Store, rebuilt: Rebuilt, txn: lmdb.Transaction) -> str | None:
    """How the broker's state in the store differs from the one replay rebuilt (None: it does not)."""
    live = {key[len(PAYER):]: Payer.decode(value) for key, value in store.scan("meta", PAYER, txn=txn)}
    for address in sorted(set(live) | set(rebuilt.payers)):
        if live.get(address) != rebuilt.payers.get(address):
            return (f"the ticket broker's record of payer 0x{address.hex()}: the store has {live.get(address)}, "
                    f"replay {rebuilt.payers.get(address)}")
    if burned(store, txn) != rebuilt.burned:
        return f"the ticket broker burned {burned(store, txn)} by the store's count, {rebuilt.burned} by replay's"
    return None


__all__ = ["burned", "differs", "forget_expired", "held", "payer", "payers", "ticket_op", "used_count", "view", "write_effect"]
