"""The bid order of a node alone: the ``ranked``/``queued`` index over the ``pending`` queues, and
the batches a round takes by it.

Why a module of its own: the index is derived from ``pending`` with invariants of its own (an
entry per waiting message bidding more than 0, a pair's messages leaving their queue as a
prefix of it), rebuilt when missing, and read once per round.  Each function is handed the
:class:`~missive.mailbox.store.Store` whose tables it reads and writes; ``Store`` keeps a
one-line method for each, so callers do not change.  Moved unchanged from ``store.py``
(``self`` became ``store``; a call between these functions calls the function, not the method).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

import lmdb

from missive.mailbox.envelope import Envelope
from missive.mailbox.signed import SignedRecord
from missive.market.raises import RAISED, decode_raised, rank_bid

if TYPE_CHECKING:
    from missive.mailbox.store import Store

#: meta b"ranked" of a current bid-order index; "2": it holds the messages bidding more than 0 only
#: (a bid of 0 is served in queue order after them, :meth:`Store.pending_by_bid`); an index of
#: another version is rebuilt when the store opens
RANKED = b"2"
#: meta b"ranked" of a store whose waiting messages all offer one bid above 0, the level that
#: follows this prefix (32 bytes): the index is then empty, as a pair's queue order is its bid
#: order (:meth:`Store._place_ranked`); an older Missive reads any other value as "rebuild it"
UNIFORM = b"2="
TOP_BID = (1 << 256) - 1


class _Either:
    """Keys in either of two containers (a round's ``skip``, and the keys it has taken already)."""

    __slots__ = ("first", "second")

    def __init__(self, first: Container[bytes], second: Container[bytes]) -> None:
        self.first, self.second = first, second

    def __contains__(self, key: object) -> bool:
        return key in self.first or key in self.second


def start_ranks(store: Store, txn: lmdb.Transaction) -> None:
    """Build the bid-order index from the ``pending`` queues if it is not current (a store made
    before it, or one a cluster node used)."""
    if not store._ranks:
        if "ranked" in store.db:
            txn.delete(b"ranked", db=store.db["meta"])
        return
    current = cast("bytes | None", txn.get(b"ranked", db=store.db["meta"]))
    if current is not None and (current == RANKED or current.startswith(UNIFORM)):
        return
    index_pending(store, txn)


def index_pending(store: Store, txn: lmdb.Transaction) -> None:
    """(Re)build the bid-order index of every waiting message (meta ``ranked`` = RANKED)."""
    txn.drop(store.db["ranked"], delete=False)
    txn.drop(store.db["queued"], delete=False)
    for key, message_id in list(txn.cursor(db=store.db["pending"])):
        envelope = SignedRecord.decode(cast(bytes, txn.get(message_id, db=store.db["messages"])), check=False).envelope
        rank(store, txn, bytes(key), bytes(message_id), envelope.sender, bid_of(store, txn, bytes(message_id), envelope))
    txn.put(b"ranked", RANKED, db=store.db["meta"])


def rank(store: Store, txn: lmdb.Transaction, key: bytes, message_id: bytes, sender: bytes, bid: int) -> None:
    """Index a queued message by its bid; a bid of 0 is not indexed (it costs nothing: bid-0
    messages are served in queue order, as before the market, once no higher bid waits)."""
    if not bid:
        return
    inverse = (TOP_BID - bid).to_bytes(32, "big")
    txn.put(key, sender + inverse, db=store.db["queued"])
    txn.put(inverse + key[20:] + key[:20], sender + message_id, db=store.db["ranked"])


def unrank(store: Store, txn: lmdb.Transaction, key: bytes, bid: int | None = None) -> None:
    """Drop a queue entry's index entries (``bid``: the bid it is indexed by, if known: saves a read)."""
    if bid is not None:
        txn.delete(key, db=store.db["queued"])
        txn.delete((TOP_BID - bid).to_bytes(32, "big") + key[20:] + key[:20], db=store.db["ranked"])
        return
    entry = cast("bytes | None", txn.get(key, db=store.db["queued"]))
    if entry is not None:
        txn.delete(key, db=store.db["queued"])
        txn.delete(entry[20:52] + key[20:] + key[:20], db=store.db["ranked"])


def entered(store: Store, txn: lmdb.Transaction, key: bytes, message_id: bytes,
            envelope: Envelope | None = None) -> None:
    """Keep the index for a message just put in ``pending`` at ``key`` (from ``standby``, by a
    cluster node's change of executor): indexed by its bid now (its last raise's, if any), as a
    message queued there is (:meth:`Store._place_ranked`).  ``envelope``: read if not given."""
    if not store._ranks:
        return
    if envelope is None:
        envelope = SignedRecord.decode(cast(bytes, txn.get(message_id, db=store.db["messages"])), check=False).envelope
    store._place_ranked(txn, key, message_id, envelope.sender, bid_of(store, txn, message_id, envelope))


def left(store: Store, txn: lmdb.Transaction, keys: Iterable[bytes]) -> None:
    """Keep the index for entries just deleted from ``pending`` (another holder handled them, a
    rollback gave them up, or this node no longer executes their actor): their index entries go
    with them.  While every waiting message offers one bid the index is empty, and stays so."""
    if not store._ranks or store._level(txn) is not None:
        return
    for key in keys:
        unrank(store, txn, key)


def bid_of(store: Store, txn: lmdb.Transaction, message_id: bytes, envelope: Envelope) -> int:
    """The bid ``message_id`` is indexed by: its last raise's, a raise message's new bid, or its own."""
    raw = cast("bytes | None", txn.get(RAISED + message_id, db=store.db["meta"]))
    return decode_raised(raw)[0] if raw is not None else rank_bid(envelope)


def any_raised(store: Store, txn: lmdb.Transaction | None = None) -> bool:
    """Whether any bid of this ledger was ever raised (else every message runs with its envelope's)."""
    with store.reading(txn) as txn:
        cursor = txn.cursor(db=store.db["meta"])
        return bool(cursor.set_range(RAISED)) and bytes(cursor.key()).startswith(RAISED)


def bid(store: Store, message_id: bytes, envelope: Envelope, txn: lmdb.Transaction | None = None) -> int:
    """The bid ``message_id`` is handled with: its envelope's, or its last raise's."""
    with store.reading(txn) as txn:
        raw = cast("bytes | None", txn.get(RAISED + message_id, db=store.db["meta"]))
        return decode_raised(raw)[0] if raw is not None else envelope.bid


def pending_batch(store: Store, limit: int, per_actor: int, start_after: bytes = b"",
                  skip: Container[bytes] = frozenset(),
                  txn: lmdb.Transaction | None = None,
                  counts: dict[bytes, int] | None = None) -> list[tuple[bytes, bytes]]:
    """A fair batch of waiting messages: at most ``per_actor`` from each actor's queue
    (the oldest ones), visiting actors in address order from ``start_after`` and
    wrapping around, so one busy actor cannot starve the others.  Queue keys in
    ``skip`` (messages already handled, whose commit is under way) are passed over.
    ``counts``: how many of an actor's messages the round has taken already (they count
    towards its ``per_actor``).  Read in ``txn`` if given (a write transaction sees its own writes)."""
    out: list[tuple[bytes, bytes]] = []
    with store.reading(txn) as txn:
        cursor = txn.cursor(db=store.db["pending"])
        seen: set[bytes] = set()
        positioned = cursor.set_range(start_after + b"\xff" * 8) if start_after else cursor.first()
        if not positioned:
            positioned = cursor.first()
        while positioned and len(out) < limit:
            key, value = cursor.item()
            actor = bytes(key[:20])
            if actor in seen:
                break  # wrapped around to where we started
            seen.add(actor)
            taken = counts.get(actor, 0) if counts else 0
            while positioned and len(out) < limit and taken < per_actor:
                key, value = cursor.item()
                if key[:20] != actor:
                    break
                if key not in skip:
                    out.append((bytes(key), bytes(value)))
                    taken += 1
                positioned = cursor.next()
            if positioned and cursor.key()[:20] == actor:
                positioned = cursor.set_range(actor + b"\xff" * 8)
            if not positioned:
                positioned = cursor.first()
    return out


def pending_by_bid(store: Store, limit: int, per_actor: int, skip: Container[bytes] = frozenset(),
                   txn: lmdb.Transaction | None = None, start_after: bytes = b"") -> list[tuple[bytes, bytes]]:
    """A batch of waiting messages, highest bid first, keeping each (sender, recipient) pair's order.

    First the messages bidding more than 0: it walks the ``ranked`` index (bid descending,
    then queue seq: equal bids are served oldest first, whichever actor they are for).  A
    message is taken only with every earlier message of its pair that is still waiting:
    before it, those are taken (whatever their bids, 0 too) and the message after them, so
    a pair's messages always leave its queue as a prefix of it.  Then, with the room left,
    the messages bidding 0, which are not indexed: each actor's oldest in turn from
    ``start_after``, as :meth:`pending_batch` (an actor's queue prefix never breaks a pair's
    order).  With no bid above 0 waiting, the round is exactly :meth:`pending_batch`'s, so
    a ledger whose messages bid 0 pays nothing for the index; nor does a round when every
    waiting message bids the same (an actor's queue order is then its bid order).

    At most ``per_actor`` per actor (a pair whose earlier messages do not all fit gets the
    first of them now, and the rest in a later round).  Returned grouped by actor, each
    actor's in the order taken, which it handles them in (by bid, each pair's in its
    order).  ``skip``: keys of messages handled already, whose commit is under way (they
    count as gone)."""
    chosen: dict[bytes, list[bytes]] = {}
    ids: dict[bytes, bytes] = {}
    # per actor: cursors over its queue (``pending``) and its indexed entries (``queued``), and
    # per sender the keys scanned and not taken
    scans: dict[bytes, tuple[Any, Any, dict[bytes, list[bytes]], list[bool]]] = {}
    total = 0
    with store.reading(txn) as txn:
        ranked = txn.cursor(db=store.db["ranked"])
        if not ranked.first():  # no bid above 0 waits
            return pending_batch(store, limit, per_actor, start_after, skip, txn)
        top = ranked.key()[:32]
        if (ranked.last() and ranked.key()[:32] == top
                and txn.stat(store.db["pending"])["entries"] == txn.stat(store.db["ranked"])["entries"]):
            # every waiting message bids the same: there is nothing to order, and each actor's
            # queue is its bid order (the round is taken as with bids of 0)
            return pending_batch(store, limit, per_actor, start_after, skip, txn)
        ranked.first()
        queued_db, pending_db, messages_db = store.db["queued"], store.db["pending"], store.db["messages"]

        def sender_at(at: bytes, index: Any) -> bytes:
            """The sender of the message at queue key ``at``: its index entry's, else (a bid of 0,
            not indexed) its stored message's."""
            while index[1] and bytes(index[0].key()) < at:
                index[1] = index[0].next()
            if index[1] and bytes(index[0].key()) == at:
                return bytes(index[0].value()[:20])
            raw = cast("bytes | None", txn.get(cast(bytes, txn.get(at, db=pending_db)), db=messages_db))
            return SignedRecord.decode(raw, check=False).envelope.sender if raw is not None else b""

        queue_ids: dict[bytes, bytes] = {}  # queue key -> message id, of the keys the scans met

        def earlier(actor: bytes, sender: bytes, key: bytes) -> list[bytes] | None:
            """The waiting keys of (sender, actor) before ``key``, oldest first (and ``key`` left
            out); None if ``key`` itself is not waiting."""
            found = scans.get(actor)
            if found is None:
                queue, indexed = txn.cursor(db=pending_db), txn.cursor(db=queued_db)
                found = scans[actor] = (queue, [indexed, indexed.set_range(actor)], {}, [queue.set_range(actor)])
            cursor, index, by_sender, more = found
            while more[0]:
                at, message_id = cursor.item()
                at = bytes(at)
                if at[:20] != actor or at > key:
                    break
                if at not in skip:  # (the message asked for is ``sender``'s: no look-up)
                    by_sender.setdefault(sender if at == key else sender_at(at, index), []).append(at)
                    queue_ids[at] = bytes(message_id)
                more[0] = cursor.next()
            waiting = by_sender.get(sender, [])
            cut = 0
            while cut < len(waiting) and waiting[cut] < key:
                cut += 1
            before = waiting[:cut]
            present = cut < len(waiting) and waiting[cut] == key
            if not present:  # a stale index entry: the pair's waiting keys stay for its next entry
                return None
            del waiting[:cut + 1]
            return before

        full = 0  # actors whose share of the round is taken
        passed = 0  # entries passed over in a row because their actor's share is taken
        look_after = 64  # ... before asking whether any actor with room has messages waiting
        entries = cast("Iterator[tuple[bytes, bytes]]", ranked.iternext())  # (read without buffers: bytes)
        for rank_key, value in entries:
            if total >= limit:
                break
            key = rank_key[40:] + rank_key[32:40]
            if key in skip or key in ids:
                continue
            actor = key[:20]
            taken = chosen.setdefault(actor, [])
            if len(taken) >= per_actor:
                # busy actors full and nobody else waiting: do not walk the rest of their queues
                passed += 1
                if passed >= look_after:
                    if not more_actors_waiting(store, txn, full):
                        break
                    passed, look_after = 0, look_after * 2
                continue
            passed = 0
            before = earlier(actor, value[:20], key)
            if before is None:  # not waiting (an index entry the queue no longer has)
                continue
            room = min(per_actor - len(taken), limit - total)
            for pulled in before[:room]:
                ids[pulled] = queue_ids[pulled]
                taken.append(pulled)
                total += 1
            if len(before) < room:
                ids[key] = value[20:52]
                taken.append(key)
                total += 1
            else:  # the rest of the pair, and this message, wait: give back what was not taken
                scans[actor][2].setdefault(value[:20], [])[:0] = before[room:] + [key]
            if len(taken) >= per_actor:
                full += 1
        if total < limit:  # the room left: bids of 0, each actor's oldest in turn
            taken_keys = set(ids)
            rest = pending_batch(store, limit - total, per_actor, start_after,
                                      _Either(skip, taken_keys) if skip else taken_keys, txn,
                                      {actor: len(keys) for actor, keys in chosen.items()})
            for key, message_id in rest:
                ids[key] = message_id
                chosen.setdefault(key[:20], []).append(key)
    out: list[tuple[bytes, bytes]] = []
    for keys in chosen.values():
        out.extend((key, ids[key]) for key in keys)
    return out


def more_actors_waiting(store: Store, txn: lmdb.Transaction, full: int) -> bool:
    """Whether more than ``full`` actors have messages in ``pending`` (one cursor jump per
    actor, at most ``full + 1``)."""
    cursor = txn.cursor(db=store.db["pending"])
    count = 0
    positioned = cursor.first()
    while positioned:
        count += 1
        if count > full:
            return True
        positioned = cursor.set_range(bytes(cursor.key()[:20]) + b"\xff" * 8)
    return False
