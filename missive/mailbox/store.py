"""The ledger and the mailboxes, in one LMDB environment.

Tables (LMDB named databases; every value is msgpack or raw bytes):

============  =====================================  ==========================================
table         key                                    value
============  =====================================  ==========================================
meta          b"format", b"seq", b"clock",           store format (STORE_FORMAT), next ledger seq,
              b"seal_key"                            node clock, public key of the seals (below)
ledger        seq (8 bytes, big-endian)              ["genesis", addr, pubkey, balance] |
                                                     ["accept", message id] | ["receipt", message id] |
                                                     ["diff", executor node id, state diff] (applied
                                                     here) | ["rollback", addr, position, account,
                                                     storage, [seqs of the receipt records it discards]]
seals         seq of the last ledger record covered  [chain hash, Ed25519 signature] (one per write
                                                     transaction that appends records; see
                                                     :mod:`missive.mailbox.seals`)
discarded     seq of a receipt record (8 bytes)      seq of the rollback record that discarded it (an
                                                     index of what the sealed rollback records list)
messages      message id                             [canonical envelope, public key, signature]
pending       recipient + seq                        message id   (each actor's queue, in order)
scheduled     not_before (32 bytes) + message id     b""          (waiting for logical time)
receipts      message id                             Receipt
mailbox       recipient + position (8 bytes)         message id   (handled, in order)
accounts      address                                Account
code          code hash                              code
storage       address + slot (32 bytes)              value (big-endian, no leading zeros)
standby       recipient + seq                        message id   (for an actor another node executes
                                                     and this one keeps a copy of: its queue, should
                                                     this node take it over)
outbound      peer node id (32) + seq                message record (to deliver to that peer)
replicate     replica node id (32) + seq             state diff  (to send to that replica)
replica       address                                [executor node id, seq of the last diff applied]
replica_messages  message id                         message record of a replicated actor (kept apart
                                                     from ``messages``, which dedups deliveries here)
announce      peer node id (32) + seq                [address, code]  (a deploy, to tell that peer)
known_code    address                                code hash   (of an actor another node executes)
last_diff     address                                seq of the last diff this node made for it
digests       address                                the actor's storage sum (missive.mailbox.digest),
                                                     kept by cluster nodes only; b"digests" in meta
                                                     says every sum is current
============  =====================================  ==========================================

``ledger`` + ``seals`` + ``messages`` + ``receipts`` (+ the ``discarded`` index)
are the ledger proper: replay reads only those.  Ledger records are never
rewritten once sealed: a rollback appends a record listing the receipt records
it gives up, and indexes them in ``discarded`` for replay.  ``accounts``,
``code`` and ``storage`` are the state they imply, kept so actors load in O(1).

Durability: the environment is opened with ``sync=True``, so a committed write
transaction is on disk when ``commit`` returns.  Callers batch: one transaction
accepts many external messages or commits many handler outcomes (group commit),
so throughput does not pay one fsync per message.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Protocol, cast

import attrs
import lmdb
import msgpack

from missive.mailbox import digest
from missive.mailbox.diffs import DiffConflict, DiffError, DiffGap, StateDiff
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
from missive.mailbox.records import Account, Receipt
from missive.mailbox.seals import GENESIS, SealError, chain, load_key, record_bytes, seal_message
from missive.net.identity import NodeIdentity
from missive.vm.keccak import keccak256

TABLES = ("meta", "ledger", "seals", "discarded", "messages", "pending", "standby", "scheduled", "receipts", "mailbox",
          "accounts", "code", "storage", "outbound", "replicate", "replica", "replica_messages", "announce", "known_code",
          "last_diff", "digests")
MAP_SIZE = 1 << 36  # 64 GiB of address space; the file grows only as used
#: Version of the store's layout (meta b"format").  1: before ledger seals (records rewritten by a
#: rollback; no seals); this Missive does not open those (replay them with the Missive that wrote them).
STORE_FORMAT = 2


class StoreError(Exception):
    """The store cannot be used as asked (missing, wrong format, locked)."""


class Placement(Protocol):
    """Where actors live, for a store that is one node of a cluster (see :mod:`missive.cluster`).

    ``holders`` is fixed by the membership (the K nodes keeping a copy of an
    actor, in preference order); ``executes`` changes as nodes fail and
    return (which holder orders the mailbox and runs the handlers now).
    """

    me: bytes

    def holders(self, address: bytes) -> Sequence[bytes]: ...

    def executes(self, address: bytes) -> bool: ...

    def peers(self) -> Sequence[bytes]: ...


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def word_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


@attrs.frozen
class Outcome:
    """Everything one handler run changes, committed together or not at all."""

    message_id: bytes
    recipient: bytes
    #: (table, key) of the queue entry the message leaves
    queue_key: tuple[str, bytes]
    receipt: Receipt
    #: the actor's account after the run; the commit takes every field from it
    #: except the balance (applied as ``balance_delta``) and an external
    #: account's nonce, which acceptance of its own messages moves
    account: Account
    balance_delta: int
    storage_writes: dict[int, int]
    code: bytes | None
    new_messages: tuple[Envelope, ...]


@attrs.frozen
class Accepted:
    message_id: bytes
    duplicate: bool


@attrs.frozen
class RolledBack:
    """What :meth:`Store.roll_back` did to the messages around the receipts it gave up."""

    #: messages the discarded receipts had handled: queued again, for whichever holder executes them
    requeued: tuple[bytes, ...]
    #: messages the discarded receipts sent that had already left this node (every other holder of
    #: their recipient acknowledged them): they stand where they went, nothing here takes them back
    gone: tuple[bytes, ...]
    #: how many receipts of this copy were given up (0: the snapshot only filled a gap)
    discarded: int = 0


@attrs.define
class _Changes:
    """What one commit did to one actor, gathered for its replicas."""

    account: Account = Account()
    storage: dict[int, int] = attrs.field(factory=dict)
    code: bytes = b""
    receipts: list[bytes] = attrs.field(factory=list)
    messages: list[bytes] = attrs.field(factory=list)
    before: bytes = b""
    after: bytes = b""

    def add(self, outcome: Outcome, receipt: bytes, sent: list[bytes]) -> None:
        self.storage.update(outcome.storage_writes)
        if outcome.code is not None:
            self.code = outcome.code
        self.receipts.append(receipt)
        self.messages += sent

    def diff(self, address: bytes) -> StateDiff:
        return StateDiff(address, 0, self.account, tuple(sorted(self.storage.items())), self.code,
                         tuple(self.receipts), tuple(self.messages), self.before, self.after)


class Store:
    """A node's ledger and state in one LMDB environment.

    Alone (no ``placement``) a node executes every actor.  As one node of a
    cluster:

    * A message is queued for *every* holder of its recipient's actor: here in
      ``pending`` if this node executes it, in ``standby`` if it only keeps a
      copy, and in ``outbound`` for each other holder, in the transaction that
      creates it.  So whichever holder executes the actor next already has
      every message, in arrival order, and nothing depends on the sender's
      node being up when the executor changes.
    * Every transaction that changes an actor queues a state diff for its
      other holders in ``replicate`` (see :mod:`missive.mailbox.diffs`); a
      diff applied here drops the messages its receipts handled from the queues.
    * Each deploy's code is queued in ``announce`` for every peer, so every
      node can answer EXTCODESIZE/EXTCODEHASH/EXTCODECOPY about an actor it
      does not hold.  Code never changes once deployed, so a copy is never
      stale; until it arrives the actor reads as having no code, and the
      receipt records that, so replay agrees.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False, readonly: bool = False,
                 placement: Placement | None = None) -> None:
        self.path = Path(path)
        self.placement = placement
        if not create and not (self.path / "data.mdb").exists():
            raise StoreError(f"no Missive node at {self.path} (run `missive init` first)")
        self.path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(
            str(self.path), map_size=MAP_SIZE, max_dbs=len(TABLES) + 2, sync=True, metasync=True, readonly=readonly
        )
        meta = self.env.open_db(b"meta", create=not readonly)
        with self.env.begin() as txn:
            version = txn.get(b"format", db=meta)
        if version is not None and msgpack.unpackb(version) != STORE_FORMAT:
            found = msgpack.unpackb(version)
            self.env.close()
            why = " (a ledger without seals, from a Missive before them)" if found == 1 else ""
            raise StoreError(f"{self.path} has store format {found}{why}; this Missive reads {STORE_FORMAT}. "
                             "Replay or read it with the Missive that wrote it, or start a new node")
        self.db = {name: self.env.open_db(name.encode(), create=not readonly) for name in TABLES}
        #: signs the seals (None: read-only use; appending to the ledger raises StoreError)
        self.seal_key: NodeIdentity | None = None
        try:
            with self.env.begin(write=not readonly) as txn:
                version = txn.get(b"format", db=meta)
                if version is None and not readonly:  # a new store: its seal key with it
                    self.seal_key = load_key(self.path, create=True)
                    assert self.seal_key is not None
                    txn.put(b"format", msgpack.packb(STORE_FORMAT), db=meta)
                    txn.put(b"seal_key", self.seal_key.node_id, db=meta)
                elif not readonly:
                    self.seal_key = load_key(self.path, create=False)
                recorded = txn.get(b"seal_key", db=meta)
                if self.seal_key is not None and recorded is not None and self.seal_key.node_id != recorded:
                    raise StoreError(f"{self.path}/ledger.key is not the key that sealed this ledger "
                                     f"(0x{recorded.hex()[:16]}..); it cannot append to it")
        except SealError as err:
            self.env.close()
            raise StoreError(str(err)) from None
        except StoreError:
            self.env.close()
            raise
        #: ``appended``: the ledger records (:func:`record_bytes`) the write transaction under way in
        #: this thread has appended, to seal.  Per thread: a thread's ``accept`` may still be tidying
        #: up after its commit released LMDB's write lock while another thread's transaction begins.
        self._sealing = threading.local()
        if not readonly:
            with self.env.begin(write=True) as txn:
                self._start_digests(txn)

    def _start_digests(self, txn: lmdb.Transaction) -> None:
        """Cluster nodes keep each actor's storage sum current (one write, two hashes); a node
        alone does not need them.  Sums are (re)computed from scratch when a store becomes a
        cluster node's, or was opened alone since (its writes did not keep them)."""
        flag = txn.get(b"digests", db=self.db["meta"]) is not None
        if self.placement is None:
            if flag:
                txn.delete(b"digests", db=self.db["meta"])
            return
        if flag:
            return
        txn.drop(self.db["digests"], delete=False)
        slots: dict[bytes, list[tuple[int, int]]] = {}
        for key, value in txn.cursor(db=self.db["storage"]):
            slots.setdefault(bytes(key[:20]), []).append((int.from_bytes(key[20:], "big"), int.from_bytes(value, "big")))
        for address, held in slots.items():
            txn.put(address, digest.sum_bytes(digest.storage_sum(held)), db=self.db["digests"])
        txn.put(b"digests", b"1", db=self.db["meta"])

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads -----------------------------------------------------------------

    def read(self) -> lmdb.Transaction:
        return self.env.begin(buffers=False)

    def account(self, address: bytes, txn: lmdb.Transaction | None = None) -> Account | None:
        raw = self._get(txn, "accounts", address)
        return Account.decode(raw) if raw is not None else None

    def code(self, code_hash: bytes, txn: lmdb.Transaction | None = None) -> bytes:
        return self._get(txn, "code", code_hash) or b""

    def slot(self, address: bytes, slot: int, txn: lmdb.Transaction | None = None) -> int:
        raw = self._get(txn, "storage", address + slot.to_bytes(32, "big"))
        return int.from_bytes(raw, "big") if raw else 0

    def state_digest(self, address: bytes, txn: lmdb.Transaction | None = None) -> bytes:
        """The commitment to ``address``'s state here (see :mod:`missive.mailbox.digest`; cluster nodes)."""
        return digest.state_digest(self._get(txn, "accounts", address) or b"",
                                   digest.sum_from_bytes(self._get(txn, "digests", address)))

    def digest_after(self, diff: StateDiff, txn: lmdb.Transaction | None = None) -> bytes:
        """The commitment this copy would have with ``diff`` applied (the diff's ``after`` must be it)."""
        total = digest.sum_from_bytes(self._get(txn, "digests", diff.address))
        for slot, value in diff.storage:
            total = digest.rewrite(total, slot, self.slot(diff.address, slot, txn), value)
        return digest.state_digest(diff.account.encode(), total)

    def storage(self, address: bytes, txn: lmdb.Transaction | None = None) -> dict[int, int]:
        """Every non-zero storage slot of ``address``."""
        return {int.from_bytes(key[20:], "big"): int.from_bytes(value, "big")
                for key, value in self._scan("storage", address, txn=txn)}

    def message(self, message_id: bytes, txn: lmdb.Transaction | None = None, *,
                check: bool = True) -> tuple[Envelope, bytes, bytes] | None:
        """(envelope, public key, signature) of a stored message; ``check=False``: see :meth:`Envelope.decode`."""
        raw = self._get(txn, "messages", message_id)
        if raw is None:
            return None
        canonical, public_key, signature = msgpack.unpackb(raw)
        envelope = Envelope.decode(canonical, check=check)
        if not check:
            envelope.__dict__["id"] = message_id  # trusted: the key it is stored under is its id
        return envelope, public_key, signature

    def message_ids_with_prefix(self, prefix: bytes, limit: int = 2) -> list[bytes]:
        """Ids of stored messages starting with ``prefix``, at most ``limit`` (two say "ambiguous")."""
        matches: list[bytes] = []
        with self.read() as txn:
            cursor = txn.cursor(db=self.db["messages"])
            if cursor.set_range(prefix):
                for raw in cursor.iternext(keys=True, values=False):
                    key = bytes(raw)
                    if not key.startswith(prefix) or len(matches) >= limit:
                        break
                    matches.append(key)
        return matches

    def receipt(self, message_id: bytes, txn: lmdb.Transaction | None = None) -> Receipt | None:
        raw = self._get(txn, "receipts", message_id)
        return Receipt.decode(raw) if raw is not None else None

    def mailbox(self, address: bytes) -> list[bytes]:
        """Ids of the messages ``address`` has handled, in order."""
        return [v for _, v in self._scan("mailbox", address)]

    def pending(self, address: bytes | None = None, limit: int | None = None) -> list[tuple[bytes, bytes]]:
        """(queue key, message id) of messages waiting, for one actor or all, in queue order."""
        return self._scan("pending", address or b"", limit)

    def pending_batch(self, limit: int, per_actor: int, start_after: bytes = b"",
                      skip: Container[bytes] = frozenset(),
                      txn: lmdb.Transaction | None = None) -> list[tuple[bytes, bytes]]:
        """A fair batch of waiting messages: at most ``per_actor`` from each actor's queue
        (the oldest ones), visiting actors in address order from ``start_after`` and
        wrapping around, so one busy actor cannot starve the others.  Queue keys in
        ``skip`` (messages already handled, whose commit is under way) are passed over.
        Read in ``txn`` if given (a write transaction sees its own writes)."""
        out: list[tuple[bytes, bytes]] = []
        with self._reading(txn) as txn:
            cursor = txn.cursor(db=self.db["pending"])
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
                taken = 0
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

    def scheduled(self) -> list[tuple[int, bytes]]:
        """(due logical time, message id) of scheduled messages not yet due, soonest first."""
        return [(int.from_bytes(k[:32], "big"), k[32:]) for k, _ in self._scan("scheduled", b"")]

    def any_pending(self, queue_keys: Iterable[bytes], txn: lmdb.Transaction | None = None) -> bool:
        """Whether any of these ``pending`` queue keys is still queued (a round's commit removes them)."""
        with self._reading(txn) as txn:
            return any(txn.get(key, db=self.db["pending"]) is not None for key in queue_keys)

    def next_scheduled(self, txn: lmdb.Transaction | None = None) -> int | None:
        """Logical time of the soonest scheduled message, if any."""
        with self._reading(txn) as txn:
            cursor = txn.cursor(db=self.db["scheduled"])
            return int.from_bytes(cursor.key()[:32], "big") if cursor.first() else None

    def ledger(self, start: int = 0) -> Iterator[tuple[int, list[Any]]]:
        with self.read() as txn:
            cursor = txn.cursor(db=self.db["ledger"])
            if cursor.set_range(u64(start)):
                for key, value in cursor:
                    yield int.from_bytes(key, "big"), msgpack.unpackb(value)

    def clock(self, txn: lmdb.Transaction | None = None) -> int:
        raw = self._get(txn, "meta", b"clock")
        return msgpack.unpackb(raw) if raw else 0

    def accounts(self) -> list[tuple[bytes, Account]]:
        return [(k, Account.decode(v)) for k, v in self._scan("accounts", b"")]

    def _reading(self, txn: lmdb.Transaction | None) -> AbstractContextManager[lmdb.Transaction]:
        """``txn`` if given (a write transaction sees its own writes), else a read transaction of its own."""
        return nullcontext(txn) if txn is not None else self.read()

    def _get(self, txn: lmdb.Transaction | None, table: str, key: bytes) -> bytes | None:
        if txn is not None:
            return cast("bytes | None", txn.get(key, db=self.db[table]))
        with self.read() as own:
            return cast("bytes | None", own.get(key, db=self.db[table]))

    def _scan(self, table: str, prefix: bytes, limit: int | None = None,
              txn: lmdb.Transaction | None = None, after: bytes | None = None) -> list[tuple[bytes, bytes]]:
        """(key, value) of ``table``'s entries starting with ``prefix``, in key order (those after
        the key ``after`` only, if given)."""
        if txn is None:
            with self.read() as own:
                return self._scan(table, prefix, limit, own, after)
        out: list[tuple[bytes, bytes]] = []
        cursor = txn.cursor(db=self.db[table])
        if cursor.set_range(after if after is not None and after > prefix else prefix):
            for key, value in cursor:
                key, value = bytes(key), bytes(value)
                if key == after:
                    continue
                if not key.startswith(prefix) or (limit is not None and len(out) >= limit):
                    break
                out.append((key, value))
        return out

    # -- writes ----------------------------------------------------------------

    def _next_seq(self, txn: lmdb.Transaction) -> int:
        raw = txn.get(b"seq", db=self.db["meta"])
        seq = msgpack.unpackb(raw) if raw else 0
        txn.put(b"seq", msgpack.packb(seq + 1), db=self.db["meta"])
        return seq

    def _append(self, txn: lmdb.Transaction, record: list[Any]) -> int:
        """Append a ledger record; only inside :meth:`_write` (or ``accept``), which seals it."""
        appended: list[bytes] | None = getattr(self._sealing, "appended", None)
        if appended is None:
            raise StoreError("a ledger record appended outside a sealing transaction (Store._write)")
        seq = self._next_seq(txn)
        key, value = u64(seq), msgpack.packb(record, use_bin_type=True)
        txn.put(key, value, db=self.db["ledger"])
        appended.append(record_bytes(key, value))
        return seq

    @contextmanager
    def _write(self) -> Iterator[lmdb.Transaction]:
        """A write transaction that seals the ledger records it appends (one seal, at its end)."""
        with self.env.begin(write=True) as txn:
            self._sealing.appended = []
            try:
                yield txn
                self._seal(txn)
            finally:
                self._sealing.appended = None

    def _seal(self, txn: lmdb.Transaction) -> None:
        """Write the seal of the records this transaction appended (none: no seal)."""
        appended: list[bytes] | None = getattr(self._sealing, "appended", None)
        if not appended:
            return
        if self.seal_key is None:
            raise StoreError(f"{self.path} has no ledger seal key ({self.path}/ledger.key): it cannot append to "
                             "the ledger")
        seals = self.db["seals"]
        cursor = txn.cursor(db=seals)
        previous = msgpack.unpackb(cursor.value())[0] if cursor.last() else GENESIS
        head = chain(previous, b"".join(appended))
        last_key = appended[-1][:8]
        signature = self.seal_key.sign(seal_message(last_key, head))
        txn.put(last_key, msgpack.packb([head, signature]), db=seals)
        appended.clear()

    def discarded(self, seq: int) -> bool:
        """Whether the receipt record at ledger ``seq`` was given up by a rollback (see ``roll_back``)."""
        return self._get(None, "discarded", u64(seq)) is not None

    def seal_head(self) -> tuple[int, bytes] | None:
        """(seq of the last sealed record, chain hash) of the newest seal, if any."""
        with self.read() as txn:
            cursor = txn.cursor(db=self.db["seals"])
            if not cursor.last():
                return None
            return int.from_bytes(cursor.key(), "big"), bytes(msgpack.unpackb(cursor.value())[0])

    def seal_public_key(self, txn: lmdb.Transaction | None = None) -> bytes | None:
        """The public key the ledger's seals are signed with (from the store's meta table)."""
        return self._get(txn, "meta", b"seal_key")

    def _advance_clock(self, txn: lmdb.Transaction, time: int) -> None:
        if time > self.clock(txn):
            txn.put(b"clock", msgpack.packb(time), db=self.db["meta"])

    def _enqueue(self, txn: lmdb.Transaction, envelope: Envelope, message_id: bytes, public_key: bytes,
                 signature: bytes, *, fan_out: bool = True) -> bytes:
        """Store a message and queue it for every holder of its recipient (here, elsewhere, or when
        due); returns its record.  ``fan_out=False``: a delivery from a peer, which already sent
        it to every holder, so it is queued here only."""
        record = cast(bytes, msgpack.packb([envelope.canonical(), public_key, signature]))
        txn.put(message_id, record, db=self.db["messages"])
        placement = self.placement
        if placement is None:
            self._place(txn, envelope, message_id, True)
            return record
        holders = placement.holders(envelope.recipient)
        if placement.me in holders:
            if txn.get(message_id, db=self.db["receipts"]) is None:  # not handled by another holder yet
                self._place(txn, envelope, message_id, placement.executes(envelope.recipient))
        elif not fan_out:
            raise EnvelopeError(f"this node keeps no copy of 0x{envelope.recipient.hex()}, the recipient")
        if fan_out:
            self._queue_for(txn, "outbound", [n for n in holders if n != placement.me], record)
        return record

    def _place(self, txn: lmdb.Transaction, envelope: Envelope, message_id: bytes, executed_here: bool) -> None:
        """Queue a message for an actor held here: when due, in its queue (or standby queue)."""
        if envelope.kind is Kind.SCHEDULED:
            txn.put(envelope.not_before.to_bytes(32, "big") + message_id, b"", db=self.db["scheduled"])
        else:
            queue = "pending" if executed_here else "standby"
            txn.put(envelope.recipient + u64(self._next_seq(txn)), message_id, db=self.db[queue])

    # -- between nodes ---------------------------------------------------------------

    def in_transit_value(self) -> int:
        """Value carried by messages waiting to leave this node (part of the cluster's value in
        flight); a message queued for several holders counts once."""
        total = 0
        seen: set[bytes] = set()
        with self.read() as txn:
            for _, record in txn.cursor(db=self.db["outbound"]):
                envelope = Envelope.decode(msgpack.unpackb(record)[0], check=False)
                if envelope.id not in seen:
                    seen.add(envelope.id)
                    total += envelope.value
        return total

    def receive(self, records: list[bytes], txn: lmdb.Transaction | None = None) -> list[bytes | EnvelopeError]:
        """Accept messages another node sent here (its stored records), in order, in one transaction
        (``txn`` if given: a :meth:`write_together` write).

        Each is checked (decodes, validates) and deduplicated by id, so a retried
        delivery is harmless; the Lamport clock moves past each message's time.
        Returns the ids (or the error naming what was wrong with a record).
        """
        if txn is None:
            with self.env.begin(write=True) as own:
                return self.receive(records, own)
        results: list[bytes | EnvelopeError] = []
        for raw in records:
            try:
                canonical, public_key, signature = msgpack.unpackb(raw)
                envelope = Envelope.decode(canonical)
                message_id = envelope.id
                if txn.get(message_id, db=self.db["messages"]) is None:
                    self._enqueue(txn, envelope, message_id, public_key, signature, fan_out=False)
                    self._advance_clock(txn, envelope.time)
            except EnvelopeError as err:
                results.append(err)
                continue
            except (ValueError, TypeError) as err:
                results.append(EnvelopeError(f"malformed message record: {err}"))
                continue
            results.append(message_id)
        return results

    def create_account(self, address: bytes, public_key: bytes, balance: int) -> None:
        """Genesis: an external account with a starting balance (the dev faucet)."""
        with self._write() as txn:
            if txn.get(address, db=self.db["accounts"]) is not None:
                raise StoreError(f"account 0x{address.hex()} already exists")
            before = self.state_digest(address, txn)
            account = Account(balance=balance, public_key=public_key)
            txn.put(address, account.encode(), db=self.db["accounts"])
            self._append(txn, ["genesis", address, public_key, word_bytes(balance)])
            self._replicate(txn, [StateDiff(address, 0, account, before=before,
                                            after=self.state_digest(address, txn))])

    def accept(self, submissions: list[tuple[Envelope, bytes, bytes]], check: Any, *,
               all_or_nothing: bool = False, txn: lmdb.Transaction | None = None) -> list[Accepted | EnvelopeError]:
        """Accept external messages in one transaction (group commit).

        ``check(txn, envelope, accounts)`` validates one submission against the
        state as it stands in this transaction (signature, nonce, balance...)
        and returns the sender's updated Account or raises EnvelopeError.  A
        rejected submission changes nothing; the others still commit, unless
        ``all_or_nothing``: then one rejection aborts the whole transaction.
        With ``txn`` (a :meth:`write_together` write) the work joins that transaction.
        """
        if txn is not None:
            if all_or_nothing:
                raise StoreError("all_or_nothing needs a transaction of its own")
            return self._accept(txn, submissions, check)
        txn = self.env.begin(write=True)
        self._sealing.appended = []
        try:
            results = self._accept(txn, submissions, check)
            if all_or_nothing and any(isinstance(r, EnvelopeError) for r in results):
                txn.abort()
            else:
                self._seal(txn)
                txn.commit()
        except BaseException:
            txn.abort()
            raise
        finally:
            self._sealing.appended = None
        return results

    def _accept(self, txn: lmdb.Transaction, submissions: list[tuple[Envelope, bytes, bytes]],
                check: Any) -> list[Accepted | EnvelopeError]:
        results: list[Accepted | EnvelopeError] = []
        updated: dict[bytes, Account] = {}
        records: dict[bytes, list[bytes]] = {}
        befores: dict[bytes, bytes] = {}
        diff_seqs: dict[bytes, int] = {}
        for envelope, public_key, signature in submissions:
            message_id = envelope.id
            if txn.get(message_id, db=self.db["messages"]) is not None:
                results.append(Accepted(message_id, duplicate=True))
                continue
            try:
                sender = check(txn, envelope, public_key, signature, updated)
            except EnvelopeError as err:
                results.append(err)
                continue
            if envelope.sender not in befores and self._replicated(envelope.sender):
                befores[envelope.sender] = self.state_digest(envelope.sender, txn)
                diff_seqs[envelope.sender] = self._next_seq(txn)  # numbered before its messages
            updated[envelope.sender] = sender
            txn.put(envelope.sender, sender.encode(), db=self.db["accounts"])
            records.setdefault(envelope.sender, []).append(
                self._enqueue(txn, envelope, message_id, public_key, signature))
            self._append(txn, ["accept", message_id])
            self._advance_clock(txn, envelope.time)
            results.append(Accepted(message_id, duplicate=False))
        self._replicate(txn, [StateDiff(sender, 0, updated[sender], messages=tuple(sent), before=befores[sender],
                                        after=self.state_digest(sender, txn))
                              for sender, sent in records.items() if sender in befores], diff_seqs)
        return results

    def commit(self, outcomes: list[Outcome], txn: lmdb.Transaction | None = None) -> None:
        """Commit handler runs: queue removal, receipt, state and sent messages, atomically
        (in ``txn`` if given: a :meth:`write_together` write).

        An actor handles many messages per round; its account is written once,
        from its last outcome, with the round's balance changes summed (each
        run's ``account`` already includes every earlier run of the round).
        """
        if txn is None:
            with self._write() as own:
                return self.commit(outcomes, own)
        accounts: dict[bytes, tuple[Account, int]] = {}
        changes: dict[bytes, _Changes] = {}  # per actor, for its replicas
        diff_seqs: dict[bytes, int] = {}
        clock = 0
        db = self.db
        receipts, mailbox = db["receipts"], db["mailbox"]
        for o in outcomes:
            replicated = o.recipient in changes or self._replicated(o.recipient)
            if replicated and o.recipient not in changes:  # the state its diff starts from
                changes[o.recipient] = _Changes(before=self.state_digest(o.recipient, txn))
                diff_seqs[o.recipient] = self._next_seq(txn)  # numbered before the messages it sends
            table, key = o.queue_key
            txn.delete(key, db=db[table])
            encoded = o.receipt.encode()
            txn.put(o.message_id, encoded, db=receipts)
            txn.put(o.recipient + u64(o.receipt.position), o.message_id, db=mailbox)
            earlier = accounts.get(o.recipient)
            accounts[o.recipient] = (o.account, o.balance_delta + (earlier[1] if earlier else 0))
            if o.code is not None:
                txn.put(o.account.code_hash, o.code, db=db["code"])
                if self.placement is not None:
                    self._queue_for(txn, "announce", self.placement.peers(),
                                    msgpack.packb([o.recipient, o.code], use_bin_type=True))
            if o.storage_writes:
                self._write_storage(txn, o.recipient, o.storage_writes.items())
            self._append(txn, ["receipt", o.message_id])
            sent = [self._enqueue(txn, envelope, envelope.id, b"", b"") for envelope in o.new_messages]
            if replicated:
                changes[o.recipient].add(o, encoded, sent)
            clock = max(clock, o.account.clock)
        for address, (account, delta) in accounts.items():
            raw = txn.get(address, db=db["accounts"])
            current = Account.decode(raw) if raw is not None else Account()
            merged = account.replace(
                balance=current.balance + delta,
                nonce=account.nonce if account.code_hash else current.nonce,
                public_key=current.public_key,
            )
            txn.put(address, merged.encode(), db=db["accounts"])
            if address in changes:
                changes[address].account = merged
                changes[address].after = self.state_digest(address, txn)
        if outcomes:
            self._advance_clock(txn, clock)
        if changes:
            self._replicate(txn, [c.diff(address) for address, c in changes.items()], diff_seqs)

    def _write_storage(self, txn: lmdb.Transaction, address: bytes, writes: Iterable[tuple[int, int]]) -> None:
        """Write storage slots (value 0 deletes), keeping the actor's storage sum on a cluster node."""
        storage = self.db["storage"]
        # the store's transactions are begun without buffers=True: values are bytes
        total = (digest.sum_from_bytes(cast("bytes | None", txn.get(address, db=self.db["digests"])))
                 if self.placement is not None else None)
        for slot, value in writes:
            skey = address + slot.to_bytes(32, "big")
            if total is not None:
                old = txn.get(skey, db=storage)
                total = digest.rewrite(total, slot, int.from_bytes(old, "big") if old else 0, value)
            if value:
                txn.put(skey, word_bytes(value), db=storage)
            else:
                txn.delete(skey, db=storage)
        if total is not None:
            txn.put(address, digest.sum_bytes(total), db=self.db["digests"])

    # -- replication -------------------------------------------------------------------

    def _replicated(self, address: bytes) -> bool:
        """Whether other nodes keep copies of ``address`` (its changes go to them as state diffs)."""
        placement = self.placement
        return placement is not None and any(n != placement.me for n in placement.holders(address))

    def _replicate(self, txn: lmdb.Transaction, diffs: list[StateDiff], seqs: dict[bytes, int] | None = None) -> None:
        """Queue each diff for the other holders of its actor (numbered now, or at ``seqs[address]``
        if the transaction reserved its number earlier; their order is ours).

        Why reserve: a diff numbered below the messages its commit sends lets a sender hold
        each message until every live holder has the diffs numbered below it (see
        :meth:`replicated_before`), so no message leaves before the state that sent it.
        """
        if self.placement is None:
            return
        me = self.placement.me
        for diff in diffs:
            targets = [n for n in self.placement.holders(diff.address) if n != me]
            if targets:
                seq = seqs[diff.address] if seqs and diff.address in seqs else self._next_seq(txn)
                raw = attrs.evolve(diff, seq=seq).encode()
                self._queue_for(txn, "replicate", targets, raw, seq)
                txn.put(diff.address, u64(seq), db=self.db["last_diff"])

    def _queue_for(self, txn: lmdb.Transaction, table: str, node_ids: Sequence[bytes], raw: bytes,
                   seq: int | None = None) -> None:
        """Queue ``raw`` in ``table`` for each of ``node_ids``, after everything queued before."""
        key = u64(self._next_seq(txn) if seq is None else seq)
        for node_id in node_ids:
            txn.put(node_id + key, raw, db=self.db[table])

    def queued(self, table: str, node_id: bytes, limit: int, after: bytes | None = None) -> list[tuple[bytes, bytes]]:
        """(queue key, record) waiting in ``table`` ("replicate", "outbound" or "announce") for
        ``node_id``, oldest first; only those queued after the key ``after``, if given (records
        acknowledged but not yet dropped are skipped so)."""
        return self._scan(table, node_id, limit, after=after)

    def dequeue(self, table: str, keys: list[bytes], txn: lmdb.Transaction) -> None:
        """The peer has these records durably: drop them from ``table`` (a :meth:`write_together` write)."""
        for key in keys:
            txn.delete(key, db=self.db[table])

    def write_together(self, writes: Sequence[Callable[[lmdb.Transaction], Any]]) -> list[Any]:
        """Run several writes in one transaction, so that one fsync makes them all durable (group
        commit across kinds of write: admissions, deliveries, commits, dequeues).

        Each write is given its own nested transaction: one that raises is undone
        alone, and its exception takes its place in the results; the others are
        kept.  The transaction is sealed once, over every record the kept writes
        appended.  If the commit itself fails, that raises and nothing is kept.
        """
        results: list[Any] = []
        with self._write() as txn:
            appended: list[bytes] = self._sealing.appended
            for write in writes:
                mark = len(appended)
                child = self.env.begin(write=True, parent=txn)
                try:
                    results.append(write(child))
                except Exception as exc:  # noqa: BLE001 - handed back to the write's caller
                    child.abort()
                    del appended[mark:]
                    results.append(exc)
                    continue
                except BaseException:
                    child.abort()
                    raise
                child.commit()
        return results

    def replica_message(self, message_id: bytes) -> bytes | None:
        """The stored record of a message a replicated actor sent or had accepted."""
        return self._get(None, "replica_messages", message_id)

    def known_code(self, address: bytes, txn: lmdb.Transaction | None = None) -> tuple[bytes, bytes]:
        """(code, code hash) of an actor another node executes, as far as this node has heard."""
        code_hash = self._get(txn, "known_code", address)
        return (self.code(code_hash, txn), code_hash) if code_hash else (b"", b"")

    def learn_code(self, entries: list[tuple[bytes, bytes]]) -> int:
        """Record deployed code of other nodes' actors; each must be 20-byte address and bytes."""
        with self.env.begin(write=True) as txn:
            for address, code in entries:
                code_hash = keccak256(code)
                txn.put(code_hash, code, db=self.db["code"])
                txn.put(address, code_hash, db=self.db["known_code"])
        return len(entries)

    def apply_diffs(self, executor_id: bytes, diffs: list[StateDiff],
                    check: Callable[[lmdb.Transaction, StateDiff], None] | None = None) -> tuple[int, DiffError | None]:
        """Apply an executor's diffs in order, in one transaction, stopping at the first bad one.

        ``check(txn, diff)`` runs once a diff is found to continue this copy, with
        the copy as the diff found it; it may raise DiffError to refuse the diff
        (execution trust re-executes the diff there: :mod:`missive.consensus.execution`).

        Returns how many were applied or were already here (a re-sent diff is a
        no-op, whoever re-sends it: :meth:`_already_held`), and what was wrong with
        the next one, if anything.  A bad diff
        writes nothing, and neither does any diff after it.  Among the wrong
        ones: a diff for an actor this node executes now (the sender's view of
        who executes it is out of date, or two nodes both think they do), and
        receipts that do not continue this node's copy of the mailbox exactly
        (a gap, or receipts for positions this copy already holds: a conflict).
        """
        done = 0
        with self._write() as txn:
            db = self.db
            for diff in diffs:
                seen = txn.get(diff.address, db=db["replica"])
                if seen is not None:
                    seen_executor, seen_seq = msgpack.unpackb(seen)
                    if seen_executor == executor_id and diff.seq <= seen_seq:
                        done += 1
                        continue
                try:
                    if self._already_held(txn, diff):  # a re-sent record, from whichever holder
                        done += 1
                        continue
                    self._check_diff(txn, diff)
                    if check is not None:
                        check(txn, diff)
                except DiffError as err:
                    return done, err
                self._apply_diff(txn, executor_id, diff)
                done += 1
        return done, None

    def _already_held(self, txn: lmdb.Transaction, diff: StateDiff) -> bool:
        """Whether this copy already holds everything ``diff`` records, so applying it is a no-op.

        Why not only "the last executor's seq": a diff is re-sent by whoever queued it,
        and after a failover that may be a former executor (E1 applied here, was killed
        before it dropped the diff from its queue, E2 took over, E1 came back and sent it
        again).  Taken for new, it would look like a conflict over receipts this copy holds
        byte for byte.  A record is identified by what it holds, not by who sends it:

        * receipts: every position it covers is already filled here by the same message,
          with the same receipt, byte for byte (execution is deterministic, so the same
          receipt means the same run, from the same state);
        * no receipts (an admission: the messages accepted and the sender's nonce): every
          message it carries is already here;
        * neither (a genesis): this copy's state is already the state it leads to.
        """
        raw = txn.get(diff.address, db=self.db["accounts"])
        if raw is None:
            return False
        current = Account.decode(raw)
        if diff.receipts:
            receipts = diff.decoded_receipts()
            if receipts[-1].position >= current.handled:
                return False
            mailbox, stored = self.db["mailbox"], self.db["receipts"]
            return all(txn.get(diff.address + u64(r.position), db=mailbox) == r.message_id
                       and txn.get(r.message_id, db=stored) == encoded
                       for r, encoded in zip(receipts, diff.receipts, strict=True))
        if diff.messages:
            known = (self.db["replica_messages"], self.db["messages"])
            return diff.account.nonce <= current.nonce and all(
                any(txn.get(keccak256(msgpack.unpackb(record)[0]), db=table) is not None for table in known)
                for record in diff.messages)
        return self.placement is not None and diff.after == self.state_digest(diff.address, txn)

    def _check_diff(self, txn: lmdb.Transaction, diff: StateDiff) -> None:
        """Raise DiffError if ``diff`` does not continue this node's copy of its actor exactly."""
        where = f"state diff for 0x{diff.address.hex()}"
        if self.placement is not None and self.placement.executes(diff.address):
            raise DiffError(f"{where}: this node executes that actor now")
        receipts = diff.decoded_receipts()
        raw = txn.get(diff.address, db=self.db["accounts"])
        current = Account.decode(raw) if raw is not None else Account()
        if receipts and receipts[0].position < current.handled:
            position = receipts[0].position
            theirs = txn.get(diff.address + u64(position), db=self.db["mailbox"])
            raise DiffConflict(f"{where} conflicts at mailbox position {position}: this copy handled "
                               f"{'0x' + theirs.hex()[:16] if theirs else 'another message'} there, the diff "
                               f"0x{receipts[0].message_id.hex()[:16]}", diff.address, position)
        if receipts and receipts[0].position != current.handled:
            raise DiffGap(f"{where} starts at mailbox position {receipts[0].position}, this replica holds "
                          f"{current.handled}", diff.address, current.handled)
        if diff.account.handled > current.handled + len(receipts):
            raise DiffGap(f"{where} leaves {diff.account.handled} messages handled after {len(receipts)} "
                          f"receipts from {current.handled}", diff.address, current.handled)
        if diff.account.handled != current.handled + len(receipts):
            raise DiffError(f"{where} leaves {diff.account.handled} messages handled after {len(receipts)} "
                            f"receipts from {current.handled}")
        if not diff.account.code_hash and diff.account.nonce < current.nonce:
            raise DiffError(f"{where} takes the account's nonce back from {current.nonce} to {diff.account.nonce}")
        if diff.code and keccak256(diff.code) != diff.account.code_hash:
            raise DiffError(f"{where}: its code does not hash to the account's code hash")
        if self.placement is not None:
            mine = self.state_digest(diff.address, txn)
            if diff.before != mine:  # same position, other state: the copies diverged (a conflict too)
                raise DiffConflict(f"{where} starts from another state than this copy's (pre-state digest "
                                   f"{diff.before.hex()[:16] or 'missing'}, this copy's {mine.hex()[:16]})",
                                   diff.address, min(current.handled, diff.account.handled - len(receipts)))

    def _apply_diff(self, txn: lmdb.Transaction, executor_id: bytes, diff: StateDiff) -> None:
        db = self.db
        txn.put(diff.address, diff.account.encode(), db=db["accounts"])
        if diff.storage:
            self._write_storage(txn, diff.address, diff.storage)
        if diff.code:
            txn.put(diff.account.code_hash, diff.code, db=db["code"])
        handled = set()
        for receipt, raw_receipt in zip(diff.decoded_receipts(), diff.receipts, strict=True):
            txn.put(receipt.message_id, raw_receipt, db=db["receipts"])
            txn.put(diff.address + u64(receipt.position), receipt.message_id, db=db["mailbox"])
            handled.add(receipt.message_id)
        if handled:
            self._unqueue(txn, diff.address, handled)
        for record in diff.messages:
            txn.put(keccak256(msgpack.unpackb(record)[0]), record, db=db["replica_messages"])
        txn.put(diff.address, msgpack.packb([executor_id, diff.seq]), db=db["replica"])
        self._append(txn, ["diff", executor_id, diff.encode()])

    def _unqueue(self, txn: lmdb.Transaction, address: bytes, message_ids: set[bytes]) -> None:
        """Drop messages from this node's queues for ``address`` (b"": every actor's): another
        holder has handled them, or the receipts that sent them were discarded."""
        for table in ("standby", "pending"):
            done = [key for key, message_id in self._scan(table, address, txn=txn) if message_id in message_ids]
            for key in done:
                txn.delete(key, db=self.db[table])
        for message_id in message_ids:
            raw = txn.get(message_id, db=self.db["messages"])
            if raw is not None:
                envelope = Envelope.decode(msgpack.unpackb(raw)[0], check=False)
                if envelope.kind is Kind.SCHEDULED:
                    txn.delete(envelope.not_before.to_bytes(32, "big") + message_id, db=self.db["scheduled"])

    def rehome(self) -> tuple[int, int]:
        """Move waiting messages between ``pending`` and ``standby`` after who-executes-what changed.

        Keys (recipient + arrival seq) move unchanged, so each actor's queue
        keeps its arrival order whichever table it was in: per-pair FIFO holds
        across a change of executor.  Returns (taken over, handed back).
        """
        assert self.placement is not None, "only a cluster node's actors change executor"
        moved = {"pending": 0, "standby": 0}
        verdicts: dict[bytes, bool] = {}
        with self.env.begin(write=True) as txn:
            for source, target, wanted in (("standby", "pending", True), ("pending", "standby", False)):
                for key, message_id in self._scan(source, b"", txn=txn):
                    address = key[:20]
                    if address not in verdicts:
                        verdicts[address] = self.placement.executes(address)
                    if verdicts[address] != wanted:
                        continue
                    txn.delete(key, db=self.db[source])
                    if txn.get(message_id, db=self.db["receipts"]) is None:
                        txn.put(key, message_id, db=self.db[target])
                        moved[target] += 1
        return moved["pending"], moved["standby"]

    def snapshot(self, address: bytes, since: int) -> dict[str, Any] | None:
        """This node's whole copy of an actor, for a holder whose copy conflicts from mailbox position
        ``since`` on: account, every storage slot, the receipts from ``since``, and the seq of the
        last diff this node made for it (diffs up to that one are in the snapshot)."""
        with self.read() as txn:
            raw = txn.get(address, db=self.db["accounts"])
            if raw is None:
                return None
            receipts = [txn.get(message_id, db=self.db["receipts"])
                        for key, message_id in self._scan("mailbox", address, txn=txn)
                        if int.from_bytes(key[20:], "big") >= since]
            storage = [[key[20:], value] for key, value in self._scan("storage", address, txn=txn)]
            seq = txn.get(address, db=self.db["last_diff"])
            return {"account": raw, "storage": storage, "receipts": receipts,
                    "seq": int.from_bytes(seq, "big") if seq else -1}

    def roll_back(self, source: bytes, address: bytes, since: int, snapshot: dict[str, Any]) -> RolledBack:
        """Replace this node's copy of ``address`` from mailbox position ``since`` on by ``source``'s
        (a :meth:`snapshot`), in one transaction; say which messages this node had handled there
        (they now stand unhandled, queued again) and which messages the discarded receipts sent
        had already left.

        What the discarded receipts did goes with them: their storage writes (the snapshot
        replaces all storage), the diffs queued for other holders from ``since`` on (those
        of the receipts before it stand and still go out), and the messages they sent that
        had not left this node yet, unless the standing receipts sent the same ones.  What
        the standing receipts handled leaves this node's queues.  With ``since`` at this
        copy's own position nothing is discarded: that fills a gap (:class:`DiffGap`).  This is the losing side of a conflict (SPEC §6): a
        node that executed an actor, crashed before its diffs reached the next holder, and
        came back after that holder had taken over from an earlier position.  A message that
        had already left is not taken back (its recipient's holders have it, and may have
        handled it); it is named in the result so that the node can say so.
        """
        account = Account.decode(snapshot["account"])
        receipts = [Receipt.decode(raw) for raw in snapshot["receipts"]]
        if any(r.position != since + i for i, r in enumerate(receipts)) or account.handled != since + len(receipts):
            raise DiffError(f"snapshot of 0x{address.hex()} from {since} does not hold positions {since}.. in order")
        db = self.db
        with self._write() as txn:
            mine = [(key, message_id) for key, message_id in self._scan("mailbox", address, txn=txn)
                    if int.from_bytes(key[20:], "big") >= since]
            sent: set[bytes] = set()
            for key, message_id in mine:
                raw_receipt = txn.get(message_id, db=db["receipts"])
                if raw_receipt is not None:
                    sent.update(Receipt.decode(raw_receipt).outgoing)
                txn.delete(message_id, db=db["receipts"])
                txn.delete(key, db=db["mailbox"])
            for key, _ in self._scan("storage", address, txn=txn):
                txn.delete(key, db=db["storage"])
            for slot, value in snapshot["storage"]:
                txn.put(address + bytes(slot), bytes(value), db=db["storage"])
            if self.placement is not None:
                txn.put(address, digest.sum_bytes(digest.storage_sum(
                    (int.from_bytes(bytes(slot), "big"), int.from_bytes(bytes(value), "big"))
                    for slot, value in snapshot["storage"])), db=db["digests"])
            txn.put(address, account.encode(), db=db["accounts"])
            for receipt, raw in zip(receipts, snapshot["receipts"], strict=True):
                txn.put(receipt.message_id, raw, db=db["receipts"])
                txn.put(address + u64(receipt.position), receipt.message_id, db=db["mailbox"])
            # the standing receipts may have sent the very same messages (the same message run
            # again from the same state sends the same ids): those stay, wherever they are
            standing = {out for r in receipts for out in r.outgoing}
            gone = self._forget_messages(txn, sent - standing)
            self._drop_diffs_after(txn, address, since)
            txn.delete(address, db=db["last_diff"])
            txn.put(address, msgpack.packb([source, snapshot["seq"]]), db=db["replica"])
            handled = {r.message_id for r in receipts}
            self._unqueue(txn, address, handled)  # what the standing receipts handled waits nowhere
            unhandled = [m for _, m in mine if m not in handled]
            for message_id in unhandled:
                found = txn.get(message_id, db=db["messages"])
                if found is not None:
                    envelope = Envelope.decode(msgpack.unpackb(found)[0], check=False)
                    self._place(txn, envelope, message_id, self.placement is None or self.placement.executes(address))
            discarded = self._receipt_records(txn, {m for _, m in mine})
            rollback = self._append(txn, ["rollback", address, since, account.encode(),
                                          [[bytes(slot), bytes(value)] for slot, value in snapshot["storage"]],
                                          discarded])
            for seq in discarded:
                txn.put(u64(seq), u64(rollback), db=db["discarded"])
        return RolledBack(tuple(unhandled), tuple(gone), len(mine))

    def _receipt_records(self, txn: lmdb.Transaction, message_ids: set[bytes]) -> list[int]:
        """Seqs of the standing (not yet discarded) receipt records of ``message_ids``, ascending:
        the ones a rollback gives up.  Sealed records are never rewritten: the rollback record
        lists them and the ``discarded`` index points replay from each to it.  They are recent:
        search from the end."""
        left = set(message_ids)
        found_seqs: list[int] = []
        discarded = self.db["discarded"]
        cursor = txn.cursor(db=self.db["ledger"])
        found = cursor.last()
        while found and left:
            key, value = cursor.item()
            record = msgpack.unpackb(value)
            if record[0] == "receipt" and bytes(record[1]) in left and txn.get(key, db=discarded) is None:
                left.discard(bytes(record[1]))
                found_seqs.append(int.from_bytes(key, "big"))
            found = cursor.prev()
        return sorted(found_seqs)

    def _forget_messages(self, txn: lmdb.Transaction, message_ids: set[bytes]) -> list[bytes]:
        """Drop messages sent by discarded receipts: from the ledger's messages and every queue
        they are in (the holder whose receipts stand sends its own, perhaps with the same ids).
        Return those that had left already: their recipient has holders other than this node,
        and no copy of them waited in the outbound queue any more (each was acknowledged)."""
        if not message_ids:
            return []
        db = self.db
        waiting: set[bytes] = set()
        for key, record in self._scan("outbound", b"", txn=txn):
            message_id = keccak256(msgpack.unpackb(record)[0])
            if message_id in message_ids:
                waiting.add(message_id)
                txn.delete(key, db=db["outbound"])
        gone = []
        placement = self.placement
        if placement is not None:  # (a node alone sends nothing away)
            for message_id in sorted(message_ids - waiting):
                raw = txn.get(message_id, db=db["messages"])
                if raw is None:
                    continue
                recipient = Envelope.decode(msgpack.unpackb(raw)[0], check=False).recipient
                if any(holder != placement.me for holder in placement.holders(recipient)):
                    gone.append(message_id)
        self._unqueue(txn, b"", message_ids)  # reads their records: before they go
        for message_id in message_ids:
            if txn.get(message_id, db=db["receipts"]) is None:  # a receipt here names it: replay needs it
                txn.delete(message_id, db=db["messages"])
        return gone

    def _drop_diffs_after(self, txn: lmdb.Transaction, address: bytes, since: int) -> None:
        """Drop the diffs queued for ``address`` that a rollback from mailbox position ``since``
        discards: those leaving it with more than ``since`` messages handled (they hold a
        discarded receipt, or come after one).  Earlier ones stand, and a holder that has not
        had them still needs them."""
        for key, raw in self._scan("replicate", b"", txn=txn):
            fields = msgpack.unpackb(raw)
            if bytes(fields[1]) == address and Account.decode(fields[3]).handled > since:
                txn.delete(key, db=self.db["replicate"])

    def next_seq(self) -> int:
        """The seq the next ledger record or queue entry will get (everything queued so far is below)."""
        raw = self._get(None, "meta", b"seq")
        return msgpack.unpackb(raw) if raw else 0

    def replicated_before(self, node_id: bytes, seq: int) -> bool:
        """``node_id`` has every diff this node queued for it before ``seq`` (they leave in order)."""
        oldest = self.oldest_unreplicated(node_id)
        return oldest is None or oldest >= seq

    def oldest_unreplicated(self, node_id: bytes) -> int | None:
        """The seq of the oldest diff queued for ``node_id`` that it has not acknowledged (None: none)."""
        head = self._scan("replicate", node_id, 1)
        return int.from_bytes(head[0][0][32:], "big") if head else None

    def diffs_waiting(self, node_id: bytes, wanted: Callable[[bytes], bool]) -> int:
        """How many diffs queued for ``node_id`` concern actors ``wanted`` picks (a returning node
        catching up waits until the actors it will execute have none left here)."""
        count = 0
        for _, raw in self._scan("replicate", node_id):
            if wanted(bytes(msgpack.unpackb(raw)[1])):
                count += 1
        return count

    def release_scheduled(self, up_to: int) -> int:
        """Move scheduled messages due at or before logical time ``up_to`` into their queues."""
        moved = 0
        with self.env.begin(write=True) as txn:
            cursor = txn.cursor(db=self.db["scheduled"])
            due = []
            if cursor.first():
                for key, _ in cursor:
                    if int.from_bytes(key[:32], "big") > up_to:
                        break
                    due.append(key)
            for key in due:
                message_id = key[32:]
                envelope = Envelope.decode(msgpack.unpackb(txn.get(message_id, db=self.db["messages"]))[0])
                txn.delete(key, db=self.db["scheduled"])
                queue = "pending" if self.placement is None or self.placement.executes(envelope.recipient) else "standby"
                txn.put(envelope.recipient + u64(self._next_seq(txn)), message_id, db=self.db[queue])
                moved += 1
            self._advance_clock(txn, up_to)
        return moved
