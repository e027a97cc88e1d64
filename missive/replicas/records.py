"""One node's records of the actors it holds with other nodes, and its queues to them.

The replication tables live in the node's LMDB environment beside the ledger
(:mod:`missive.mailbox.store`), so that a commit, its state diff and the messages it
queues for other holders are written in one transaction; but only this package
reads or writes them.  The store reaches them through one hook
(:class:`missive.mailbox.store.Replication`), which :class:`missive.replicas.copies.Copies`
implements.

==================  =====================================  ==========================================
table               key                                    value
==================  =====================================  ==========================================
outbound            peer node id (32) + seq                message record (to deliver to that peer)
replicate           replica node id (32) + seq             state diff  (to send to that replica)
replica             address                                [executor node id, seq of the last diff applied]
replica_messages    message id                             message record of a replicated actor (kept apart
                                                           from ``messages``, which dedups deliveries here)
announce            peer node id (32) + seq                [address, code]  (a deploy, to tell that peer)
last_diff           address                                seq of the last diff this node made for it
entries             address + version (8 bytes)            [epoch, state digest after, messages handled after,
                                                           [ids of the messages it carried], seq made at or -1]:
                                                           one per record (state diff) of a replicated actor,
                                                           made or applied here; what copies compare
                                                           (:mod:`missive.replicas.epochs`)
==================  =====================================  ==========================================

(The meta table's ``epochs`` and ``acceptor`` keys hold the epochs this node installed and its
acceptor's state: :meth:`Records.epochs`.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs
import lmdb
import msgpack

from missive.mailbox import bids
from missive.mailbox.diffs import StateDiff
from missive.mailbox.envelope import Kind
from missive.mailbox.signed import record_envelope, record_id
from missive.mailbox.store import GIVEN_UP, Store, u64

#: The replication tables (opened in the store's environment by :class:`Records`).
TABLES = ("outbound", "replicate", "replica", "replica_messages", "announce", "last_diff", "entries")


def open_tables(store: Store) -> dict[str, Any]:
    """The store's tables and the replication tables of its environment, by name (for a read-only
    store too: an inspection tool reading a stopped node's queues)."""
    readonly = bool(store.env.flags().get("readonly"))
    return {**store.db, **{name: store.env.open_db(name.encode(), create=not readonly) for name in TABLES}}


def in_transit_value(store: Store) -> int:
    """Value carried by messages waiting to leave a node, and the fees they escrow (gas × bid: part
    of the cluster's value in flight); a message queued for several holders counts once.  Reads only
    (a stopped node's store too)."""
    total = 0
    seen: set[bytes] = set()
    outbound = open_tables(store)["outbound"]
    with store.read() as txn:
        for _, record in txn.cursor(db=outbound):
            envelope = record_envelope(record)
            if envelope.id not in seen:
                seen.add(envelope.id)
                total += envelope.value + envelope.gas * envelope.bid
    return total


class Placement(Protocol):
    """Where actors live (see :mod:`missive.cluster.placement`).

    ``holders`` is fixed by the membership (the K nodes keeping a copy of an
    actor, in preference order); ``executes`` changes as nodes fail and
    return (which holder orders the mailbox and runs the handlers now).
    """

    @property
    def me(self) -> bytes:
        """This node's id."""
        ...

    def holders(self, address: bytes) -> Sequence[bytes]: ...

    def executes(self, address: bytes) -> bool: ...

    def peers(self) -> Sequence[bytes]: ...

    def epoch(self) -> int:
        """The epoch this node acts in now (missive.replicas.epochs): every record it makes carries it."""
        ...


class Records:
    """The replication tables of one store: each replicated actor's records (versions and epochs),
    and the queues of messages, diffs and code for the other holders."""

    def __init__(self, store: Store, placement: Placement, *, compare_digests: bool = True) -> None:
        self.store = store
        self.placement = placement
        #: whether a diff's pre-state digest must be this copy's (always, on a cluster node; False
        #: only for a copy made of an executor's later history alone, without the states its actors
        #: started from: tests that replay one node's diffs into a bare store)
        self.compare_digests = compare_digests
        #: the store's tables and this package's, by name
        self.db: dict[str, Any] = open_tables(store)

    def get(self, txn: lmdb.Transaction | None, table: str, key: bytes) -> bytes | None:
        return self.store.get(txn, self.db[table], key)

    def scan(self, table: str, prefix: bytes, limit: int | None = None, txn: lmdb.Transaction | None = None,
             after: bytes | None = None) -> list[tuple[bytes, bytes]]:
        return self.store.scan(self.db[table], prefix, limit, txn, after)

    def counts(self, *tables: str) -> dict[str, int]:
        """How many entries each of ``tables`` holds now (queue lengths, for status)."""
        with self.store.read() as txn:
            return {table: int(txn.stat(self.db[table])["entries"]) for table in tables}

    def replicated(self, address: bytes) -> bool:
        """Whether other nodes keep copies of ``address`` (its changes go to them as state diffs)."""
        placement = self.placement
        return any(n != placement.me for n in placement.holders(address))

    def changed(self, txn: lmdb.Transaction, diffs: list[StateDiff], seqs: dict[bytes, int] | None = None) -> None:
        """Queue each diff for the other holders of its actor (numbered now, or at ``seqs[address]``
        if the transaction reserved its number earlier; their order is ours).

        Why reserve: a diff numbered below the messages its commit sends lets a sender hold
        each message until every live holder has the diffs numbered below it (see
        :meth:`replicated_before`), so no message leaves before the state that sent it.
        """
        me = self.placement.me
        epoch = self.placement.epoch()
        for diff in diffs:
            targets = [n for n in self.placement.holders(diff.address) if n != me]
            if targets:
                seq = seqs[diff.address] if seqs and diff.address in seqs else self.store.take_seq(txn)
                version, prev_epoch = self._head(txn, diff.address)
                diff = attrs.evolve(diff, seq=seq, epoch=epoch, version=version + 1, prev_epoch=prev_epoch)
                self._record_entry(txn, diff, made_here=True)
                self._queue_for(txn, "replicate", targets, diff.encode(), seq)
                txn.put(diff.address, u64(seq), db=self.db["last_diff"])

    def _entry(self, txn: lmdb.Transaction, address: bytes, version: int) -> list[Any] | None:
        """[epoch, digest after, handled after, message ids] of ``address``'s record ``version``."""
        raw = txn.get(address + u64(version), db=self.db["entries"])
        return msgpack.unpackb(raw) if raw is not None else None

    def _head(self, txn: lmdb.Transaction, address: bytes) -> tuple[int, int]:
        """(version, epoch) of ``address``'s last record here; (0, 0) before its first."""
        cursor = txn.cursor(db=self.db["entries"])
        if cursor.set_range(address + b"\xff" * 8):
            found = cursor.prev()
        else:
            found = cursor.last()
        if found and cursor.key()[:20] == address:
            return int.from_bytes(cursor.key()[20:], "big"), int(msgpack.unpackb(cursor.value())[0])
        return 0, 0

    def head(self, address: bytes, txn: lmdb.Transaction | None = None) -> tuple[int, int]:
        """(version, epoch) of the last record of ``address``'s copy here (what joining nodes compare)."""
        with self.store.reading(txn) as t:
            return self._head(t, address)

    def epoch_of_record_before(self, address: bytes, seq: int, txn: lmdb.Transaction | None = None) -> int | None:
        """The epoch of the last record of ``address`` this node made numbered below ``seq`` (the record
        that made a message queued at ``seq``); None if it has none (it was given up, or made elsewhere)."""
        with self.store.reading(txn) as t:
            cursor = t.cursor(db=self.db["entries"])
            found = cursor.prev() if cursor.set_range(address + b"\xff" * 8) else cursor.last()
            while found and cursor.key()[:20] == address:
                entry = msgpack.unpackb(cursor.value())
                if len(entry) > 4 and 0 <= entry[4] < seq:
                    return int(entry[0])
                found = cursor.prev()
        return None

    def record_epoch(self, address: bytes, version: int, txn: lmdb.Transaction | None = None) -> int | None:
        """The epoch of record ``version`` of ``address``'s copy here (None: no such record; 0 for
        version 0, the empty copy every holder starts from)."""
        if version == 0:
            return 0
        with self.store.reading(txn) as t:
            entry = self._entry(t, address, version)
        return int(entry[0]) if entry is not None else None

    def _record_entry(self, txn: lmdb.Transaction, diff: StateDiff, *, made_here: bool) -> None:
        """Keep ``diff``'s record: [epoch, digest after, handled after, message ids, and the seq it was
        numbered with if this node made it (its accept and receipt ledger records come after that
        seq: where a rollback starts looking for them), else -1]."""
        ids = [record_id(record) for record in diff.messages]
        txn.put(diff.address + u64(diff.version),
                msgpack.packb([diff.epoch, diff.after, diff.account.handled, ids, diff.seq if made_here else -1],
                              use_bin_type=True),
                db=self.db["entries"])

    def heads(self, wanted: Callable[[bytes], bool]) -> list[tuple[bytes, int, int]]:
        """(address, version, epoch) of every replicated actor held here that ``wanted`` picks."""
        out = []
        with self.store.read() as txn:
            for address in txn.cursor(db=self.db["accounts"]).iternext(keys=True, values=False):
                address = bytes(address)
                if self.replicated(address) and wanted(address):
                    version, epoch = self._head(txn, address)
                    out.append((address, version, epoch))
        return out

    def sync_view(self, node_id: bytes, wanted: Callable[[bytes], bool]) -> list[list[Any]]:
        """What a joining ``node_id`` compares its copies with, read in one transaction: for each
        actor held here that ``wanted`` picks, [address, version, epoch of that record, oldest
        epoch among its diffs still queued for ``node_id`` (None: none)].  The version is the
        record just before the first diff queued for ``node_id``, or this copy's last record
        if none is queued: the joining copy must hold exactly that record."""
        with self.store.read() as txn:
            queued: dict[bytes, tuple[int, int]] = {}
            for _, raw in self.scan("replicate", node_id, txn=txn):
                fields = msgpack.unpackb(raw)
                address = bytes(fields[1])
                version, epoch = (int(fields[11]), int(fields[10])) if len(fields) == 13 else (0, 0)
                low = queued.get(address)
                queued[address] = (version, epoch) if low is None else (min(low[0], version), min(low[1], epoch))
            out: list[list[Any]] = []
            for key in txn.cursor(db=self.db["accounts"]).iternext(keys=True, values=False):
                address = bytes(key)
                if not (self.replicated(address) and wanted(address)):
                    continue
                if address in queued:
                    version, oldest = queued[address][0] - 1, queued[address][1]
                    entry = self._entry(txn, address, version) if version > 0 else None
                    out.append([address, version, int(entry[0]) if entry is not None else 0, oldest])
                else:
                    version, epoch = self._head(txn, address)
                    out.append([address, version, epoch, None])
            return out

    def epochs(self) -> tuple[list[Any], Any]:
        """The epochs this node installed and its acceptor's state, as saved (missive.replicas.epochs)."""
        with self.store.read() as txn:
            raw = txn.get(b"epochs", db=self.db["meta"])
            state = txn.get(b"acceptor", db=self.db["meta"])
        return (msgpack.unpackb(raw) if raw else []), (msgpack.unpackb(state) if state else None)

    def save_epochs(self, epochs: list[Any], state: Any, txn: lmdb.Transaction) -> None:
        """Save the epochs and the acceptor's state (a :meth:`write_together` write: durable before
        the acceptor answers, so a promise outlives a crash)."""
        txn.put(b"epochs", msgpack.packb(epochs, use_bin_type=True), db=self.db["meta"])
        txn.put(b"acceptor", msgpack.packb(state, use_bin_type=True), db=self.db["meta"])

    def _queue_for(self, txn: lmdb.Transaction, table: str, node_ids: Sequence[bytes], raw: bytes,
                   seq: int | None = None) -> None:
        """Queue ``raw`` in ``table`` for each of ``node_ids``, after everything queued before."""
        key = u64(self.store.take_seq(txn) if seq is None else seq)
        for node_id in node_ids:
            txn.put(node_id + key, raw, db=self.db[table])

    def queued(self, table: str, node_id: bytes, limit: int, after: bytes | None = None,
               txn: lmdb.Transaction | None = None) -> list[tuple[bytes, bytes]]:
        """(queue key, record) waiting in ``table`` ("replicate", "outbound" or "announce") for
        ``node_id``, oldest first; only those queued after the key ``after``, if given (records
        acknowledged but not yet dropped are skipped so)."""
        return self.scan(table, node_id, limit, txn=txn, after=after)

    def dequeue(self, table: str, keys: list[bytes], txn: lmdb.Transaction) -> None:
        """The peer has these records durably: drop them from ``table`` (a :meth:`write_together` write)."""
        for key in keys:
            txn.delete(key, db=self.db[table])

    def replicated_before(self, node_id: bytes, seq: int) -> bool:
        """``node_id`` has every diff this node queued for it before ``seq`` (they leave in order)."""
        oldest = self.oldest_unreplicated(node_id)
        return oldest is None or oldest >= seq

    def oldest_unreplicated(self, node_id: bytes, txn: lmdb.Transaction | None = None) -> int | None:
        """The seq of the oldest diff queued for ``node_id`` that it has not acknowledged (None: none)."""
        head = self.scan("replicate", node_id, 1, txn=txn)
        return int.from_bytes(head[0][0][32:], "big") if head else None

    def stands(self, message_id: bytes) -> bool:
        """Whether a message admitted or sent here still stands: stored, and not given up by a
        rollback of the record that made it (kept for replay only: ``GIVEN_UP``)."""
        return not self.given_up([message_id])

    def given_up(self, message_ids: Iterable[bytes]) -> list[bytes]:
        """Those of ``message_ids`` that no longer stand (see :meth:`stands`), read in one transaction."""
        messages, meta = self.db["messages"], self.db["meta"]
        with self.store.read() as txn:
            return [m for m in message_ids
                    if txn.get(m, db=messages) is None or txn.get(GIVEN_UP + m, db=meta) is not None]

    def replica_message(self, message_id: bytes) -> bytes | None:
        """The stored record of a message a replicated actor sent or had accepted."""
        return self.get(None, "replica_messages", message_id)

    def _unqueue(self, txn: lmdb.Transaction, address: bytes, message_ids: set[bytes]) -> None:
        """Drop messages from this node's queues for ``address`` (b"": every actor's): another
        holder has handled them, or the receipts that sent them were discarded."""
        for table in ("standby", "pending"):
            done = [key for key, message_id in self.scan(table, address, txn=txn) if message_id in message_ids]
            for key in done:
                txn.delete(key, db=self.db[table])
            if table == "pending":
                bids.left(self.store, txn, done)
        for message_id in message_ids:
            raw = txn.get(message_id, db=self.db["messages"])
            if raw is not None:
                envelope = record_envelope(raw)
                if envelope.kind is Kind.SCHEDULED:
                    txn.delete(envelope.not_before.to_bytes(32, "big") + message_id, db=self.db["scheduled"])
