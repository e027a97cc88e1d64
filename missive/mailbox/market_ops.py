"""The store's market operations: a raise of a waiting message's bid, the worker registry
(register, unbond, withdraw, accuse), the job board, and what they read back.

Why a module of its own: these are the store's writes for the market (issue 23), each a signed
operation checked by :mod:`missive.market` and appended to the ledger in one transaction, and
none of them is on a message's path.  ``market/`` may not import the store (tests/test_layers.py),
so they stay in ``mailbox/``, next to the records they append.  Each is a function of the
:class:`~missive.mailbox.store.Store` it is handed; ``Store`` keeps a one-line method for each, so
callers do not change.  Moved unchanged from ``store.py`` (``self`` became ``store``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lmdb

from missive.identity import NodeIdentity
from missive.mailbox.disk import StoreError
from missive.mailbox.envelope import EnvelopeError
from missive.mailbox.envelope import int_bytes as word_bytes  # (the store's word_bytes: the same bytes)
from missive.market.raises import RAISED, check_raise, encode_raised
from missive.market.workers import (
    BURNED,
    OWN_STAKE,
    SELF,
    SLASH,
    WORKER,
    Slash,
    Worker,
    args_of,
    decode_slash,
)
from missive.market.workers import accuse as accuse_worker
from missive.market.workers import apply as apply_worker_op
from missive.market.workers import digest as worker_digest
from missive.market.workers import idle_reason as worker_idle_reason
from missive.vm.keccak import keccak256

if TYPE_CHECKING:
    from missive.mailbox.store import Store


def raise_bid(store: Store, message_id: bytes, new_bid: int, public_key: bytes, signature: bytes) -> int:
    """Raise the bid of a waiting message (:mod:`missive.market.raises`): check the signed raise,
    debit the top-up from the sender, keep the new bid, move the message up the bid order, and
    append ``["raise", id, new bid, public key, signature]``; return the top-up.  A refused raise
    raises :class:`EnvelopeError` (one line) and changes nothing."""
    if store.replication is not None or store.credits_by_message():
        raise EnvelopeError("on a cluster node a bid is raised by a raise message (`missive bid --cluster D`, "
                            "RemoteNode.raise_bid), not by a raise record")
    with store.writing() as txn:
        found = store.message(message_id, txn)
        current = store._bid_of(txn, message_id, found[0]) if found is not None else 0
        handled = txn.get(message_id, db=store.db["receipts"]) is not None
        key = None
        if found is not None and not handled:
            recipient = found[0].recipient
            for queue_key, queued_id in store.scan("pending", recipient, txn=txn):
                if queued_id == message_id:
                    key = queue_key
                    break
            handled = key is None  # not waiting: taken by a round, or given up
        sender = store.account(found[0].sender, txn) if found is not None else None
        top_up = check_raise(message_id, found, handled, current, new_bid, public_key, signature, sender,
                             store.chain_id)
        assert found is not None and sender is not None and key is not None
        envelope = found[0]
        # the balance only: a raise is no message of the account's own (its nonce stays)
        txn.put(envelope.sender, sender.replace(balance=sender.balance - top_up).encode(), db=store.db["accounts"])
        txn.put(RAISED + message_id, encode_raised(new_bid, envelope), db=store.db["meta"])
        if store._ranks:
            if store._level(txn) is not None:  # every waiting bid was one level: index them now
                store._index_pending(txn)
            store._unrank(txn, key)
            store._rank(txn, key, message_id, envelope.sender, new_bid)
        store.append(txn, ["raise", message_id, word_bytes(new_bid), public_key, signature])
    return top_up


def worker(store: Store, address: bytes, txn: lmdb.Transaction | None = None) -> Worker | None:
    """``address``'s entry in the worker registry (:mod:`missive.market.workers`), if any."""
    raw = store.get(txn, "meta", WORKER + address)
    return Worker.decode(raw) if raw is not None else None


def workers(store: Store) -> list[tuple[bytes, Worker]]:
    return [(key[len(WORKER):], Worker.decode(value)) for key, value in store.scan("meta", WORKER)]


def own_worker(store: Store, txn: lmdb.Transaction | None = None) -> Worker | None:
    """The worker this node executes as (registered on it), if any."""
    address = store.get(txn, "meta", SELF)
    return store.worker(address, txn) if address else None


def worker_op(store: Store, op: str, address: bytes, args: list[Any], public_key: bytes, signature: bytes) -> Worker:
    """Apply a signed registry operation (:func:`missive.market.workers.apply`) and append it to
    the ledger; a ``register`` makes this node execute as that worker (its fees go to the
    worker's coinbase).  Refused: EnvelopeError, one line, nothing changed."""
    if store.replication is not None or store.credits_by_message():
        raise EnvelopeError("the worker registry works on a node alone for now: not on a cluster node")
    with store.writing() as txn:
        if op != "register":
            args = [store.clock(txn)]
        account, worker = apply_worker_op(op, address, args, public_key, signature, store.chain_id,
                                          store.account(address, txn), store.worker(address, txn))
        if op == "register":
            coinbase = store.account(worker.coinbase, txn)
            if coinbase is not None and coinbase.is_contract:
                raise EnvelopeError(f"0x{worker.coinbase.hex()} is a contract: a coinbase is an external account")
            txn.put(b"coinbase", worker.coinbase, db=store.db["meta"])
            txn.put(SELF, address, db=store.db["meta"])
        txn.put(address, account.encode(), db=store.db["accounts"])
        txn.put(WORKER + address, worker.encode(), db=store.db["meta"])
        store.append(txn, ["worker", op, address, *args, public_key, signature])
    return worker


def job_op(store: Store, op: str, signer: bytes, args: list[Any], public_key: bytes, signature: bytes) -> bytes:
    """A signed job board operation (issue 25: :mod:`missive.mailbox.jobboard`); the job's id.
    Refused: EnvelopeError, one line, nothing changed."""
    from missive.mailbox.jobboard import apply_op

    return apply_op(store, op, signer, args, public_key, signature)


def accuse(store: Store, address: bytes, evidence: bytes, public_key: bytes, signature: bytes) -> Slash:
    """Submit wrong-diff evidence to the registry, signed by ``address``'s account
    (:func:`missive.market.workers.accuse`): re-checked, it forfeits the executor's whole
    pledge (:data:`ACCUSER_SHARE` percent to the accuser, the rest burned) and deregisters it,
    with the ledger record ``["worker", "accuse", address, evidence, public key, signature]``.
    Refused (EnvelopeError, one line, nothing changed): duplicate evidence, evidence that
    proves nothing, an executor with nothing to forfeit, a forged accusation."""
    if store.replication is not None or store.credits_by_message():
        raise EnvelopeError("the worker registry works on a node alone for now: not on a cluster node")
    with store.writing() as txn:
        meta = store.db["meta"]
        key = SLASH + keccak256(evidence) if isinstance(evidence, bytes) else b""
        slash = accuse_worker(address, evidence, public_key, signature, store.chain_id, store.account(address, txn),
                              store.evidence_check, lambda worker: store.worker(worker, txn),
                              bool(key) and txn.get(key, db=meta) is not None)
        txn.put(address, slash.account.encode(), db=store.db["accounts"])
        txn.put(WORKER + slash.executor, slash.worker.encode(), db=meta)
        txn.put(key, slash.encode(address), db=meta)
        txn.put(BURNED, word_bytes(store.burned(txn) + slash.burned), db=meta)
        store.append(txn, ["worker", "accuse", address, evidence, public_key, signature])
    return slash


def burned(store: Store, txn: lmdb.Transaction | None = None) -> int:
    """Coin burned by slashing, in total."""
    raw = store.get(txn, "meta", BURNED)
    return int.from_bytes(raw, "big") if raw else 0


def slashes(store: Store) -> list[tuple[bytes, tuple[bytes, bytes, int, int, str]]]:
    """(keccak256 of the evidence, (executor, accuser, reward, burned, finding)) of every slash."""
    return [(key[len(SLASH):], decode_slash(value)) for key, value in store.scan("meta", SLASH)]


def register_own_worker(store: Store, coinbase: bytes | None = None) -> bytes:
    """Make the node its own worker (``missive init``): the account of its ledger key, created
    at genesis with :data:`OWN_STAKE`, registers with all of it (minimum bid 0, fees to
    ``coinbase``, default that account), signed by the ledger key.  Returns its address."""
    if store.seal_key is None:
        raise StoreError(f"{store.path} is open read-only: it cannot register its worker")
    public_key = store.seal_key.node_id
    address = keccak256(public_key)[12:]
    store.create_account(address, public_key, OWN_STAKE)
    args = args_of("register", OWN_STAKE, address if coinbase is None else coinbase, 0)
    store.worker_op("register", address, args, public_key,
                   store.seal_key.sign(worker_digest(store.chain_id, "register", address, args)))
    return address


def own_worker_key(store: Store) -> NodeIdentity | None:
    """The ledger key, if the worker this node executes as is its account (``missive init``)."""
    own = store.get(None, "meta", SELF)
    if store.seal_key is None or own != keccak256(store.seal_key.node_id)[12:]:
        return None
    return store.seal_key


def idle_reason(store: Store, txn: lmdb.Transaction | None = None) -> str | None:
    """Why this node executes nothing (None: it executes).  A node alone executes only as a
    registered worker: once it has one of its own (``missive init``, ``missive worker
    register``), only while that worker has a stake (not unbonding, not slashed).  A store
    with no worker of its own (made without ``init``) and a cluster node execute as before."""
    if store.replication is not None:
        return None
    address = store.get(txn, "meta", SELF)
    return worker_idle_reason(address, store.worker(address, txn)) if address else None
