"""The ledger and the mailboxes, in one LMDB environment.

Tables (LMDB named databases; every value is msgpack or raw bytes):

============  =====================================  ==========================================
table         key                                    value
============  =====================================  ==========================================
meta          b"format", b"seq", b"clock",           store format (STORE_FORMAT), next ledger seq,
              b"seal_key", b"chain_id"               node clock, public key of the seals (below),
                                                     the ledger's chain id (CHAINID; chosen at init)
              b"given-up:" + message id              b"": a message whose sending record a rollback
                                                     gave up, kept only for replay (never queued again)
              b"coinbase"                            the account this node's fees are paid to (see
                                                     :meth:`Store.coinbase`)
              b"credits"                             b"by-message" on a cluster node: fees and refunds
                                                     travel as messages (missive.market.fees)
              b"eth-tx:" + transaction hash          message id: an Ethereum-signed message, by the
                                                     keccak of its raw transaction (mailbox.ethtx)
ledger        seq (8 bytes, big-endian)              ["genesis", addr, pubkey, balance(, code, storage)] |
                                                     ["accept", message id] | ["receipt", message id] |
                                                     ["diff", executor node id, state diff] (applied
                                                     here) | ["rollback", addr, position, account,
                                                     storage, [seqs of the receipt and accept records
                                                     it discards]] | ["raise", ...] | ["unraise", ...] |
                                                     ["worker", ...]: read them with
                                                     :mod:`missive.mailbox.ledger_records`, nowhere else
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
known_code    address                                code hash   (of an actor another node executes)
digests       address                                the actor's storage sum (missive.mailbox.digest),
                                                     kept by cluster nodes only; b"digests" in meta
                                                     says every sum is current
ranked        (2**256-1-bid) (32) + seq + recipient  sender + message id: the ``pending`` messages that
                                                     bid more than 0, highest first (a node alone;
                                                     b"ranked" = bids.RANKED in meta: current; see
                                                     :mod:`missive.mailbox.bids`)
queued        recipient + seq (a ``pending`` key)    sender + (2**256-1-bid): the same entries by queue
                                                     key (to find a pair's earlier messages, and to
                                                     drop the ``ranked`` entry with the queue entry)
============  =====================================  ==========================================

A cluster node's environment also holds the replication tables (the queues to the other
holders of its actors and the records its copies compare), which only :mod:`missive.replicas`
reads and writes: the store reaches them through its :class:`Replication` hook.

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

import logging
import os
import threading
import time
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any, Protocol, cast

import attrs
import lmdb
import msgpack

from missive.identity import NodeIdentity
from missive.mailbox import bids, digest, market_ops
from missive.mailbox.diffs import StateDiff
from missive.mailbox.disk import LOCK_FILE_SIZE, MAX_READERS, NoStore, StoreDamaged, StoreError, disk_errors
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
from missive.mailbox.ethtx import PUBLIC_KEY_SIZE as ETH_PUBLIC_KEY_SIZE
from missive.mailbox.integrity import Damaged, check_lmdb
from missive.mailbox.ledger_records import GenesisRecord
from missive.mailbox.records import Account, Receipt, credit_encoded
from missive.mailbox.seals import GENESIS, KEY_FILE, SealError, chain, load_key, record_bytes, seal_message
from missive.mailbox.signed import SignedRecord, pack_record
from missive.market.fees import BY_MESSAGE, credit_messages
from missive.market.raises import RAISED, decode_raised, rank_bid
from missive.market.workers import EvidenceCheck, Slash, Worker
from missive.vm.keccak import keccak256

TABLES = ("meta", "ledger", "seals", "discarded", "messages", "pending", "standby", "scheduled", "receipts", "mailbox",
          "accounts", "code", "storage", "known_code", "digests")
#: the bid-order index of a node alone (:meth:`Store.pending_by_bid`): derived from ``pending``, rebuilt
#: when missing, so a store without it (an older one, a read-only open) is still read
RANK_TABLES = ("ranked", "queued")
#: LMDB named databases the environment may hold: the store's, and those other rooms open in it
#: (the replication tables: :mod:`missive.replicas.records`)
MAX_DBS = 32
MAP_SIZE = 1 << 36  # 64 GiB of address space; the file grows only as used
#: meta key prefix marking a message whose sending record a rollback gave up, but whose body stays
#: because this node had handled it (replay needs it): a later rollback never queues it again.
GIVEN_UP = b"given-up:"
#: meta key prefix of the index from an Ethereum transaction's hash to its message's id, written with
#: the message (an index only: the raw transaction is the message's stored signature).  In ``meta``
#: rather than a table of its own so a store of this format made before it opens unchanged.
ETH_TX = b"eth-tx:"
#: Version of the store's layout and of the rules its ledger replays under (meta b"format").
#: 1: before ledger seals (records rewritten by a rollback; no seals).  2: a reply was given at least
#: 100,000 gas that no message paid for (REPLY_GAS_FLOOR); since 3 the request reserves its reply's
#: gas, so a format-2 ledger with replies would not replay.  This Missive opens neither (replay them
#: with the Missive that wrote them).  3: block.timestamp was the logical clock, CHAINID 1 and tx.origin
#: the message's own sender; since 4 block.timestamp is the executing node's clock in seconds,
#: recorded with each receipt, CHAINID the ledger's own id (meta b"chain_id"), signed messages bound
#: to it, and envelopes carry their tree's origin: a format-3 ledger's receipts would not replay.
#: 4: the VM ran Cancun alone; since 5 it also runs Prague's BLS12-381 precompiles (0x0b..0x11) and
#: Osaka's CLZ (0x1e) and P256VERIFY (0x100): code that hit 0x1e halted and a call to those addresses
#: was a message, so a format-4 ledger with either would not replay (the layout is unchanged).
#: 5: messages escrowed nothing for their bid and receipts recorded no fee; since 6 admission debits
#: gas × bid beside the value and every receipt records its fee, refund and coinbase (three more
#: fields, which a format-5 receipt does not have: it would not decode), credited with the commit.
STORE_FORMAT = 6
#: A cluster holder refuses a state diff whose block.timestamp is more than this many seconds ahead
#: of its own clock (an executor with a clock far ahead would drag its actors' time with it).
MAX_TIME_AHEAD = 15
#: Chain ids that must never be chosen for a ledger: Ethereum's mainnet and testnets, and the
#: ids of other well-known chains and local development tools, so that a signature a wallet makes
#: for one of them is never valid here and vice versa.
WELL_KNOWN_CHAIN_IDS = frozenset({
    0, 1, 2, 3, 4, 5, 10, 11, 25, 56, 61, 97, 100, 130, 137, 146, 250, 252, 288, 324, 1088, 1101, 1284, 1285,
    1337, 2020, 4201, 5000, 7777777, 8453, 17000, 31337, 34443, 42161, 42170, 42220, 43113, 43114, 59144,
    80001, 80002, 81457, 84532, 421614, 534352, 560048, 11155111, 11155420, 1313161554,
})


def new_chain_id() -> int:
    """A random chain id for a new ledger: 48 bits (fits a JavaScript number, as wallets need), never a
    well-known chain's."""
    while True:
        chain_id = int.from_bytes(os.urandom(6), "big")
        if chain_id not in WELL_KNOWN_CHAIN_IDS:
            return chain_id
#: The file that says a directory holds a ledger (written with the store, or on the first write-open of
#: a store made before it): with it, or a ``ledger.key``, a missing ``data.mdb`` is a lost ledger, never
#: a place for a new one.
MARKER = "missive-ledger"
MARKER_TEXT = ("This directory holds a Missive ledger: data.mdb (LMDB) beside this file.\n"
               "If data.mdb is missing, restore it from a backup (`missive restore`); Missive will not start "
               "an empty ledger here.\n")


log = logging.getLogger(__name__)


class Replication(Protocol):
    """The store's one hook for a node that holds actors with other nodes (a cluster node).

    The store calls it inside its own write transactions, so that what it queues for the
    other holders is written with the commit that made it (or not at all).  A lone node
    has none (``Store.replication is None``).  :class:`missive.replicas.copies.Copies`
    implements it; the store never imports that package.
    """

    def executes(self, address: bytes) -> bool:
        """Whether this node runs ``address``'s handlers now (else its messages wait in ``standby``)."""
        ...

    def replicated(self, address: bytes) -> bool:
        """Whether other nodes keep copies of ``address`` (its changes go to them as state diffs)."""
        ...

    def queue_message(self, txn: lmdb.Transaction, envelope: Envelope, message_id: bytes, record: bytes,
                      fan_out: bool) -> None:
        """Queue a message just stored for every holder of its recipient (this node's own queue
        through :meth:`Store.place`); ``fan_out=False``: a delivery from a peer."""
        ...

    def changed(self, txn: lmdb.Transaction, diffs: list[StateDiff], seqs: dict[bytes, int] | None = None) -> None:
        """Queue the state diffs of actors this transaction changed for their other holders."""
        ...

    def deployed(self, txn: lmdb.Transaction, address: bytes, code: bytes) -> None:
        """Tell the other nodes about a deploy's code."""
        ...


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
    #: who the receipt's refund goes to: the external account at the root of the message's tree
    payer: bytes = b""
    #: the bid the run used (the message's, or its raise's when the round read it): the commit
    #: undoes a raise that came after (:mod:`missive.market.raises`)
    bid: int = 0


@attrs.frozen
class Accepted:
    message_id: bytes
    duplicate: bool


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


def check_whole(path: Path) -> None:
    """Raise :class:`StoreDamaged` if the store at ``path`` is not whole: its ``data.mdb`` fails the
    header check (:mod:`missive.mailbox.integrity`), or is missing where a ledger was (:data:`MARKER`
    or ``ledger.key`` is there).  Reads only."""
    data_file = path / "data.mdb"
    if data_file.exists():
        try:
            check_lmdb(path, "the node's ledger")
        except Damaged as exc:
            raise StoreDamaged(str(exc)) from None
        return
    for sign in (MARKER, KEY_FILE):
        if (path / sign).exists():
            raise StoreDamaged(f"{data_file} is missing, but {path} held a ledger ({sign} is there): refusing to "
                               "start an empty one in its place; restore the node from a backup (`missive restore`)")


def write_marker(path: Path) -> None:
    """Write :data:`MARKER` into ``path`` (atomically)."""
    spare = path / f".{MARKER}.{os.getpid()}"
    spare.write_text(MARKER_TEXT)
    os.replace(spare, path / MARKER)


class Store:
    """A node's ledger and state in one LMDB environment.

    Alone, a node executes every actor.  As one node of a cluster, a
    :class:`Replication` hook is attached (:meth:`attach`): the store asks it,
    inside each write transaction, where a message is queued and what the other
    holders of a changed actor must be sent (see :mod:`missive.replicas`).
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False, readonly: bool = False,
                 replicated: bool = False, chain_id: int | None = None) -> None:
        """``chain_id``: for a new store, its ledger's id (None: a random one, :func:`new_chain_id`);
        for an existing one, the id it must have (a cluster node's config names its cluster's).
        ``replicated``: a cluster node's store (it keeps each actor's storage sum current, for the
        state digests its copies are compared by); :meth:`attach` then gives it its hook."""
        self.path = Path(path)
        #: the clock block.timestamp comes from (seconds); tests move it
        self.wall_clock: Callable[[], float] = time.time
        #: the cluster's hook (None: a node alone); set by :meth:`attach`
        self.replication: Replication | None = None
        #: re-checks wrong-diff evidence for :meth:`accuse` and replay; attached by the node
        #: (``missive.replicas.slashing.check_evidence``: the store may not import it)
        self.evidence_check: EvidenceCheck | None = None
        self._keeps_digests = replicated
        check_whole(self.path)
        data_file = self.path / "data.mdb"
        if not create and not data_file.exists():
            raise NoStore(f"no Missive node at {self.path} (run `missive init` first)")
        with disk_errors(self.path):
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._make_lock_file()  # before LMDB writes its header through a mapping
        with disk_errors(self.path):
            self.env = lmdb.open(str(self.path), map_size=MAP_SIZE, max_dbs=MAX_DBS, sync=True,
                                 metasync=True, readonly=readonly, max_readers=MAX_READERS)
        self._next_reader_check = 0.0
        # before this process's first read needs a slot; quietly: a command's or a node's first line is its own
        self.clear_stale_readers(level=logging.DEBUG)
        meta = self.env.open_db(b"meta", create=not readonly)
        with self.env.begin() as txn:
            version = txn.get(b"format", db=meta)
        if version is not None and msgpack.unpackb(version) != STORE_FORMAT:
            found = msgpack.unpackb(version)
            self.env.close()
            why = {1: " (a ledger without seals, from a Missive before them)",
                   2: " (its replies got gas no message paid for, from a Missive before requests reserved it)",
                   3: " (its block.timestamp was the logical clock and its CHAINID 1, from a Missive before "
                      "timestamps in seconds and its own chain id)",
                   4: " (its VM had no CLZ, BLS12-381 or P256VERIFY and its messages paid no fees, from a "
                      "Missive before the Prague and Osaka additions and the market)",
                   5: " (its messages paid no fees: its receipts record none, from a Missive before the market)"
                   }.get(found, "")
            raise StoreError(f"{self.path} has store format {found}{why}; this Missive reads {STORE_FORMAT}. "
                             "Replay or read it with the Missive that wrote it, or start a new node")
        self.db = {name: self.env.open_db(name.encode(), create=not readonly) for name in TABLES}
        for name in RANK_TABLES:
            with suppress(lmdb.NotFoundError, lmdb.ReadonlyError):
                self.db[name] = self.env.open_db(name.encode(), create=not readonly)
        #: whether the bid-order index is kept (writable; on a cluster node its replication keeps it
        #: too, where it moves queue entries: bids.entered, bids.left)
        self._ranks = not readonly and all(name in self.db for name in RANK_TABLES)
        #: signs the seals (None: read-only use; appending to the ledger raises StoreError)
        self.seal_key: NodeIdentity | None = None
        try:
            with disk_errors(self.path), self.env.begin(write=not readonly) as txn:
                version = txn.get(b"format", db=meta)
                if version is None and not readonly:  # a new store: its seal key with it
                    self.seal_key = load_key(self.path, create=True)
                    assert self.seal_key is not None
                    txn.put(b"format", msgpack.packb(STORE_FORMAT), db=meta)
                    txn.put(b"seal_key", self.seal_key.node_id, db=meta)
                    txn.put(b"chain_id", msgpack.packb(new_chain_id() if chain_id is None else chain_id), db=meta)
                elif not readonly:
                    self.seal_key = load_key(self.path, create=False)
                recorded = txn.get(b"seal_key", db=meta)
                if self.seal_key is not None and recorded is not None and self.seal_key.node_id != recorded:
                    raise StoreError(f"{self.path}/ledger.key is not the key that sealed this ledger "
                                     f"(0x{recorded.hex()[:16]}..); it cannot append to it")
                raw_chain = txn.get(b"chain_id", db=meta)
                #: the ledger's id: CHAINID to its handlers, and what its external messages are signed for
                self.chain_id: int = msgpack.unpackb(raw_chain) if raw_chain is not None else 0
                if chain_id is not None and raw_chain is not None and self.chain_id != chain_id:
                    raise StoreError(f"{self.path} holds the ledger of chain id {self.chain_id}, not {chain_id} "
                                     "as this node's config says")
        except SealError as err:
            self.env.close()
            raise StoreError(str(err)) from None
        except StoreError:
            self.env.close()
            raise
        if not readonly and not (self.path / MARKER).exists():
            try:
                with disk_errors(self.path):
                    write_marker(self.path)
            except StoreError:
                self.env.close()
                raise
        #: ``appended``: the ledger records (:func:`record_bytes`) the write transaction under way in
        #: this thread has appended, to seal.  Per thread: a thread's ``accept`` may still be tidying
        #: up after its commit released LMDB's write lock while another thread's transaction begins.
        self._sealing = threading.local()
        if not readonly:
            try:
                with disk_errors(self.path), self.env.begin(write=True) as txn:
                    self._start_digests(txn)
                    self._start_ranks(txn)
            except StoreError:
                self.env.close()
                raise

    def _make_lock_file(self) -> None:
        """Make the lock file (``lock.mdb``, LMDB's reader table) with its disk blocks, if there is
        none yet; a full disk raises :class:`DiskFull`.

        Why: LMDB sizes a new lock file with ftruncate (a sparse file) and writes its
        header and reader slots through a shared mapping; the first write to a page
        without a block on a full disk kills the process with SIGBUS, no message (a
        node starting on a full disk did).  Made here, the file's blocks are there
        before LMDB maps it, and a full disk fails the open instead.  It is made
        under another name and linked into place, so a lock file another process
        made meanwhile stays as it is.  A lock file that exists is never opened here:
        closing any descriptor of it would drop the fcntl locks LMDB holds on it in
        this process (POSIX), and another process could then reset the reader table.
        It is made a little larger than LMDB would make it for :data:`MAX_READERS`;
        LMDB takes the size it finds.
        """
        lock_file = self.path / "lock.mdb"
        if lock_file.exists():
            return
        spare = self.path / f"lock.mdb.{os.getpid()}.new"
        try:
            fd = os.open(spare, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                with disk_errors(self.path):
                    os.posix_fallocate(fd, 0, LOCK_FILE_SIZE)
            finally:
                os.close(fd)
            os.link(spare, lock_file)
        except OSError:
            pass  # made meanwhile, or not here (read-only directory, no fallocate): LMDB makes its own
        finally:
            with suppress(OSError):
                os.unlink(spare)

    def clear_stale_readers(self, *, every: float = 0.0, level: int = logging.WARNING) -> int:
        """Free the reader slots of processes that died inside a read transaction; return how many.

        Why: a process killed (SIGKILL, OOM) while it reads keeps its slot in the lock
        file's reader table, and the old snapshot the slot names pins every page freed
        since: the file grows instead of reusing them (244 MB against 17.5 MB in issue
        20), and once every slot is taken every new read fails (``MDB_READERS_FULL``)
        in every process.  LMDB frees a slot only when asked (``mdb_reader_check``):
        every process opening the store asks, and long-running ones (a node's writer,
        its runtime) ask again every ``every`` seconds at most (a call sooner returns 0).
        Cheap: one scan of the table and one lock test per process in it.  What it
        freed is logged at ``level``.
        """
        now = time.monotonic()
        if now < self._next_reader_check:
            return 0
        self._next_reader_check = now + every
        try:
            cleared: int = self.env.reader_check()
        except lmdb.Error as exc:  # housekeeping: never the reason a write or an open fails
            log.warning("could not look for reader slots of dead processes in %s: %s", self.path, exc)
            return 0
        if cleared:
            log.log(level, "freed %d reader slot(s) of %s left by processes that died while reading", cleared,
                    self.path)
        return cleared

    def _start_digests(self, txn: lmdb.Transaction) -> None:
        """Cluster nodes keep each actor's storage sum current (one write, two hashes); a node
        alone does not need them.  Sums are (re)computed from scratch when a store becomes a
        cluster node's, or was opened alone since (its writes did not keep them)."""
        flag = txn.get(b"digests", db=self.db["meta"]) is not None
        if not self._keeps_digests:
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

    def _start_ranks(self, txn: lmdb.Transaction) -> None:
        bids.start_ranks(self, txn)

    def _index_pending(self, txn: lmdb.Transaction) -> None:
        bids.index_pending(self, txn)

    def _rank(self, txn: lmdb.Transaction, key: bytes, message_id: bytes, sender: bytes, bid: int) -> None:
        bids.rank(self, txn, key, message_id, sender, bid)

    def _level(self, txn: lmdb.Transaction) -> int | None:
        """The one bid every waiting message offers while the index is left empty (see
        :meth:`_place_ranked`), else None (the index holds every waiting bid above 0)."""
        current = cast("bytes | None", txn.get(b"ranked", db=self.db["meta"]))
        if current is None or not current.startswith(bids.UNIFORM):
            return None
        return int.from_bytes(current[len(bids.UNIFORM):], "big")

    def _place_ranked(self, txn: lmdb.Transaction, key: bytes, message_id: bytes, sender: bytes, bid: int) -> None:
        """Index a message just queued at ``key`` (in ``pending``), or not, by its bid.

        Why not always: an index entry costs two writes at admission and two deletes in the commit,
        and while every waiting message offers the same bid there is nothing to order (each
        actor's queue order is then its bid order).  So a message that finds the queues empty sets
        the *level* (meta ``ranked`` = UNIFORM + its bid) instead of an entry, and messages at that
        level cost the index nothing; the first message at another bid (0 too), or a raise, indexes
        the waiting ones (:meth:`_index_pending`) and the index is kept as before until the queues
        are empty again.  A bid of 0 is never indexed."""
        level = self._level(txn)
        if bid == level:
            return
        if level is None and not bid:
            return
        cursor = txn.cursor(db=self.db["pending"])
        if cursor.first() and bytes(cursor.key()) == key and not cursor.next():  # nothing else waits
            txn.put(b"ranked", bids.UNIFORM + bid.to_bytes(32, "big") if bid else bids.RANKED, db=self.db["meta"])
        elif level is not None:
            self._index_pending(txn)  # this message with the others
        else:
            self._rank(txn, key, message_id, sender, bid)

    def _unrank(self, txn: lmdb.Transaction, key: bytes, bid: int | None = None) -> None:
        bids.unrank(self, txn, key, bid)

    def _bid_of(self, txn: lmdb.Transaction, message_id: bytes, envelope: Envelope) -> int:
        return bids.bid_of(self, txn, message_id, envelope)

    def any_raised(self, txn: lmdb.Transaction | None = None) -> bool:
        return bids.any_raised(self, txn)

    def bid(self, message_id: bytes, envelope: Envelope, txn: lmdb.Transaction | None = None) -> int:
        return bids.bid(self, message_id, envelope, txn)

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
        raw = self.get(txn, "accounts", address)
        return Account.decode(raw) if raw is not None else None

    def code(self, code_hash: bytes, txn: lmdb.Transaction | None = None) -> bytes:
        return self.get(txn, "code", code_hash) or b""

    def slot(self, address: bytes, slot: int, txn: lmdb.Transaction | None = None) -> int:
        raw = self.get(txn, "storage", address + slot.to_bytes(32, "big"))
        return int.from_bytes(raw, "big") if raw else 0

    def state_digest(self, address: bytes, txn: lmdb.Transaction | None = None) -> bytes:
        """The commitment to ``address``'s state here (see :mod:`missive.mailbox.digest`; cluster nodes)."""
        return digest.state_digest(self.get(txn, "accounts", address) or b"",
                                   digest.sum_from_bytes(self.get(txn, "digests", address)))

    def digest_after(self, diff: StateDiff, txn: lmdb.Transaction | None = None) -> bytes:
        """The commitment this copy would have with ``diff`` applied (the diff's ``after`` must be it)."""
        total = digest.sum_from_bytes(self.get(txn, "digests", diff.address))
        for slot, value in diff.storage:
            total = digest.rewrite(total, slot, self.slot(diff.address, slot, txn), value)
        return digest.state_digest(diff.account.encode(), total)

    def storage(self, address: bytes, txn: lmdb.Transaction | None = None) -> dict[int, int]:
        """Every non-zero storage slot of ``address``."""
        return {int.from_bytes(key[20:], "big"): int.from_bytes(value, "big")
                for key, value in self.scan("storage", address, txn=txn)}

    def message(self, message_id: bytes, txn: lmdb.Transaction | None = None, *,
                check: bool = True) -> tuple[Envelope, bytes, bytes] | None:
        """(envelope, public key, signature) of a stored message; ``check=False``: see :meth:`Envelope.decode`."""
        raw = self.get(txn, "messages", message_id)
        if raw is None:
            return None
        record = SignedRecord.decode(raw, check=check)
        if not check:
            record.envelope.__dict__["id"] = message_id  # trusted: the key it is stored under is its id
        return record.as_tuple()

    def eth_transaction(self, tx_hash: bytes, txn: lmdb.Transaction | None = None) -> bytes | None:
        """The id of the message an Ethereum transaction became (by its hash), if it was admitted here."""
        return self.get(txn, "meta", ETH_TX + tx_hash)

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
        raw = self.get(txn, "receipts", message_id)
        return Receipt.decode(raw) if raw is not None else None

    def mailbox(self, address: bytes) -> list[bytes]:
        """Ids of the messages ``address`` has handled, in order."""
        return [v for _, v in self.scan("mailbox", address)]

    def pending(self, address: bytes | None = None, limit: int | None = None) -> list[tuple[bytes, bytes]]:
        """(queue key, message id) of messages waiting, for one actor or all, in queue order."""
        return self.scan("pending", address or b"", limit)

    def pending_batch(self, limit: int, per_actor: int, start_after: bytes = b"",
                      skip: Container[bytes] = frozenset(),
                      txn: lmdb.Transaction | None = None,
                      counts: dict[bytes, int] | None = None) -> list[tuple[bytes, bytes]]:
        return bids.pending_batch(self, limit, per_actor, start_after, skip, txn, counts)

    @property
    def ranks_bids(self) -> bool:
        """Whether :meth:`pending_by_bid` can be used (writable: a node alone or a cluster node)."""
        return self._ranks

    def pending_by_bid(self, limit: int, per_actor: int, skip: Container[bytes] = frozenset(),
                       txn: lmdb.Transaction | None = None, start_after: bytes = b"") -> list[tuple[bytes, bytes]]:
        return bids.pending_by_bid(self, limit, per_actor, skip, txn, start_after)

    def _more_actors_waiting(self, txn: lmdb.Transaction, full: int) -> bool:
        return bids.more_actors_waiting(self, txn, full)

    def scheduled(self) -> list[tuple[int, bytes]]:
        """(due logical time, message id) of scheduled messages not yet due, soonest first."""
        return [(int.from_bytes(k[:32], "big"), k[32:]) for k, _ in self.scan("scheduled", b"")]

    def any_pending(self, queue_keys: Iterable[bytes], txn: lmdb.Transaction | None = None) -> bool:
        """Whether any of these ``pending`` queue keys is still queued (a round's commit removes them)."""
        with self.reading(txn) as txn:
            return any(txn.get(key, db=self.db["pending"]) is not None for key in queue_keys)

    def next_scheduled(self, txn: lmdb.Transaction | None = None) -> int | None:
        """Logical time of the soonest scheduled message, if any."""
        with self.reading(txn) as txn:
            cursor = txn.cursor(db=self.db["scheduled"])
            return int.from_bytes(cursor.key()[:32], "big") if cursor.first() else None

    def ledger(self, start: int = 0) -> Iterator[tuple[int, list[Any]]]:
        with self.read() as txn:
            cursor = txn.cursor(db=self.db["ledger"])
            if cursor.set_range(u64(start)):
                for key, value in cursor:
                    yield int.from_bytes(key, "big"), msgpack.unpackb(value)

    def clock(self, txn: lmdb.Transaction | None = None) -> int:
        raw = self.get(txn, "meta", b"clock")
        return msgpack.unpackb(raw) if raw else 0

    def accounts(self) -> list[tuple[bytes, Account]]:
        return [(k, Account.decode(v)) for k, v in self.scan("accounts", b"")]

    def reading(self, txn: lmdb.Transaction | None) -> AbstractContextManager[lmdb.Transaction]:
        """``txn`` if given (a write transaction sees its own writes), else a read transaction of its own."""
        return nullcontext(txn) if txn is not None else self.read()

    def get(self, txn: lmdb.Transaction | None, table: str | Any, key: bytes) -> bytes | None:
        """The value at ``key`` in ``table`` (a name of the store's, or a table handle another room
        opened in this environment: :mod:`missive.replicas.records`)."""
        db = self.db[table] if isinstance(table, str) else table
        if txn is not None:
            return cast("bytes | None", txn.get(key, db=db))
        with self.read() as own:
            return cast("bytes | None", own.get(key, db=db))

    def scan(self, table: str | Any, prefix: bytes, limit: int | None = None,
             txn: lmdb.Transaction | None = None, after: bytes | None = None) -> list[tuple[bytes, bytes]]:
        """(key, value) of ``table``'s entries starting with ``prefix``, in key order (those after
        the key ``after`` only, if given); ``table`` as for :meth:`get`."""
        if txn is None:
            with self.read() as own:
                return self.scan(table, prefix, limit, own, after)
        out: list[tuple[bytes, bytes]] = []
        cursor = txn.cursor(db=self.db[table] if isinstance(table, str) else table)
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

    def take_seq(self, txn: lmdb.Transaction) -> int:
        raw = txn.get(b"seq", db=self.db["meta"])
        seq = msgpack.unpackb(raw) if raw else 0
        txn.put(b"seq", msgpack.packb(seq + 1), db=self.db["meta"])
        return seq

    def append(self, txn: lmdb.Transaction, record: list[Any]) -> int:
        """Append a ledger record; only inside :meth:`_write` (or ``accept``), which seals it."""
        appended: list[bytes] | None = getattr(self._sealing, "appended", None)
        if appended is None:
            raise StoreError("a ledger record appended outside a sealing transaction (Store._write)")
        seq = self.take_seq(txn)
        key, value = u64(seq), msgpack.packb(record, use_bin_type=True)
        txn.put(key, value, db=self.db["ledger"])
        appended.append(record_bytes(key, value))
        return seq

    @contextmanager
    def writing(self) -> Iterator[lmdb.Transaction]:
        """A write transaction that seals the ledger records it appends (one seal, at its end); a full
        disk raises :class:`DiskFull` (nothing written)."""
        with disk_errors(self.path), self.env.begin(write=True) as txn:
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
        return self.get(None, "discarded", u64(seq)) is not None

    def seal_head(self) -> tuple[int, bytes] | None:
        """(seq of the last sealed record, chain hash) of the newest seal, if any."""
        with self.read() as txn:
            cursor = txn.cursor(db=self.db["seals"])
            if not cursor.last():
                return None
            return int.from_bytes(cursor.key(), "big"), bytes(msgpack.unpackb(cursor.value())[0])

    def coinbase(self, txn: lmdb.Transaction | None = None) -> bytes:
        """The account the fees of the runs this node executes are paid to: the one set with
        :meth:`set_coinbase` (``missive init``: the default account), else the address of the
        seal key (``ledger.key``), so that a fee always has somewhere to go."""
        chosen = self.get(txn, "meta", b"coinbase")
        if chosen:
            return chosen
        return keccak256(self.seal_public_key(txn) or b"")[12:]

    def set_coinbase(self, address: bytes) -> None:
        """Pay this node's fees to ``address`` (an external account: a contract's balance must
        change only by its own handlers and messages, which its loaded state follows)."""
        if not isinstance(address, bytes) or len(address) != 20:
            raise StoreError("a coinbase is a 20-byte address")
        with self.writing() as txn:
            account = self.account(address, txn)
            if account is not None and account.is_contract:
                raise StoreError(f"0x{address.hex()} is a contract: a coinbase is an external account")
            txn.put(b"coinbase", address, db=self.db["meta"])

    def credits_by_message(self, txn: lmdb.Transaction | None = None) -> bool:
        """Whether this ledger's fees and refunds travel as messages (a cluster node's) rather than
        being credited in the receipt's own commit (a node alone)."""
        return self.get(txn, "meta", b"credits") == BY_MESSAGE

    def seal_public_key(self, txn: lmdb.Transaction | None = None) -> bytes | None:
        """The public key the ledger's seals are signed with (from the store's meta table)."""
        return self.get(txn, "meta", b"seal_key")

    def advance_clock(self, txn: lmdb.Transaction, time: int) -> None:
        if time > self.clock(txn):
            txn.put(b"clock", msgpack.packb(time), db=self.db["meta"])

    def enqueue(self, txn: lmdb.Transaction, envelope: Envelope, message_id: bytes, public_key: bytes,
                 signature: bytes, *, fan_out: bool = True) -> bytes:
        """Store a message and queue it for every holder of its recipient (here, elsewhere, or when
        due); returns its record.  ``fan_out=False``: a delivery from a peer, which already sent
        it to every holder, so it is queued here only."""
        record = pack_record(envelope, public_key, signature)
        txn.put(message_id, record, db=self.db["messages"])
        if len(public_key) == ETH_PUBLIC_KEY_SIZE:  # an Ethereum transaction: its hash finds the message
            txn.put(ETH_TX + keccak256(signature), message_id, db=self.db["meta"])
        txn.delete(GIVEN_UP + message_id, db=self.db["meta"])  # admitted (or sent) again: it stands
        if self.replication is None:
            self.place(txn, envelope, message_id, True)
        else:
            self.replication.queue_message(txn, envelope, message_id, record, fan_out)
        return record

    def place(self, txn: lmdb.Transaction, envelope: Envelope, message_id: bytes, executed_here: bool) -> None:
        """Queue a message for an actor held here: when due, in its queue (or standby queue)."""
        if envelope.kind is Kind.SCHEDULED:
            txn.put(envelope.not_before.to_bytes(32, "big") + message_id, b"", db=self.db["scheduled"])
        else:
            self._queue_at(txn, envelope.recipient + u64(self.take_seq(txn)), envelope, message_id, executed_here)

    def _queue_at(self, txn: lmdb.Transaction, key: bytes, envelope: Envelope, message_id: bytes,
                  executed_here: bool) -> None:
        """Put a message in the live queue (indexed by its bid) or the standby queue at ``key``."""
        txn.put(key, message_id, db=self.db["pending" if executed_here else "standby"])
        if self._ranks and executed_here:  # a message being queued has not been raised (it was not waiting)
            self._place_ranked(txn, key, message_id, envelope.sender, rank_bid(envelope))

    def place_ahead(self, txn: lmdb.Transaction, address: bytes, messages: list[tuple[Envelope, bytes]],
                    executed_here: bool) -> None:
        """Queue ``messages`` (in their order) ahead of everything waiting for ``address``: what a
        rollback un-handled.  Why ahead: this copy had taken them from the queue before anything
        still in it of their (sender, recipient) pairs, so queued behind, a pair's later messages
        would run first.  Keys just below the queue's first (in both queues, so a move between
        them meets no key in use); at the end, as :meth:`place` queues, if there is no room."""
        due = []
        for envelope, message_id in messages:
            if envelope.kind is Kind.SCHEDULED:  # waits for its time, not in a queue
                self.place(txn, envelope, message_id, executed_here)
            else:
                due.append((envelope, message_id))
        heads = []
        for table in ("pending", "standby"):
            cursor = txn.cursor(db=self.db[table])
            if cursor.set_range(address) and bytes(cursor.key())[:20] == address:
                heads.append(int.from_bytes(bytes(cursor.key())[20:], "big"))
        first = min(heads) if heads else None
        for i, (envelope, message_id) in enumerate(due):
            if first is not None and first >= len(due):  # room below the first key
                self._queue_at(txn, address + u64(first - len(due) + i), envelope, message_id, executed_here)
            else:
                self.place(txn, envelope, message_id, executed_here)

    # -- between nodes ---------------------------------------------------------------

    def attach(self, replication: Replication) -> None:
        """Make this store one node's of a cluster: ``replication`` decides, inside each write
        transaction, where messages are queued and what the other holders are sent."""
        self.replication = replication
        if self.get(None, "meta", b"credits") != BY_MESSAGE:
            with self.writing() as txn:
                txn.put(b"credits", BY_MESSAGE, db=self.db["meta"])
        if not self._keeps_digests:
            self._keeps_digests = True
            with self.writing() as txn:
                self._start_digests(txn)

    def _replicated(self, address: bytes) -> bool:
        return self.replication is not None and self.replication.replicated(address)

    def _changed(self, txn: lmdb.Transaction, diffs: list[StateDiff], seqs: dict[bytes, int] | None = None) -> None:
        if self.replication is not None:
            self.replication.changed(txn, diffs, seqs)

    def create_account(self, address: bytes, public_key: bytes, balance: int) -> None:
        """Genesis: an external account with a starting balance (the dev faucet).

        Checked before anything is written: an account with a malformed address or key
        would be written, and its state diff then refused by every peer, forever."""
        if not isinstance(address, bytes) or len(address) != 20:
            shown = f"{len(address)} bytes" if isinstance(address, bytes) else type(address).__name__
            raise StoreError(f"an account address is 20 bytes, not {shown}")
        if not isinstance(public_key, bytes) or len(public_key) not in (32, ETH_PUBLIC_KEY_SIZE):
            raise StoreError("an account's public key is 32 bytes (Ed25519) or 64 (secp256k1)")
        if not isinstance(balance, int) or isinstance(balance, bool) or not 0 <= balance < 2**256:
            raise StoreError(f"a balance is a whole number from 0 to 2**256 - 1, not {balance!r}")
        with self.writing() as txn:
            if txn.get(address, db=self.db["accounts"]) is not None:
                raise StoreError(f"account 0x{address.hex()} already exists")
            before = self.state_digest(address, txn)
            account = Account(balance=balance, public_key=public_key)
            txn.put(address, account.encode(), db=self.db["accounts"])
            self.append(txn, ["genesis", address, public_key, word_bytes(balance)])
            self._changed(txn, [StateDiff(address, 0, account, before=before,
                                            after=self.state_digest(address, txn))])

    def create_system_actor(self, address: bytes, code: bytes, storage: dict[int, int]) -> None:
        """Genesis of a system actor: one whose code is Missive's own, not a deploy's (a cluster's
        worker registry, :mod:`missive.market.registry_actor`), with its starting storage.  Its
        record ``["genesis", address, b"", 0, code, storage]`` lets replay rebuild it."""
        if not isinstance(address, bytes) or len(address) != 20 or not isinstance(code, bytes) or not code:
            raise StoreError("a system actor needs a 20-byte address and its code")
        with self.writing() as txn:
            if txn.get(address, db=self.db["accounts"]) is not None:
                raise StoreError(f"account 0x{address.hex()} already exists")
            before = self.state_digest(address, txn)
            account = Account(code_hash=keccak256(code))
            txn.put(address, account.encode(), db=self.db["accounts"])
            txn.put(account.code_hash, code, db=self.db["code"])
            slots = sorted(storage.items())
            self.write_storage(txn, address, slots)
            self.append(txn, GenesisRecord(address, b"", 0, code, tuple(slots)).fields())
            self._changed(txn, [StateDiff(address, 0, account, tuple(slots), code, before=before,
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
            with disk_errors(self.path):
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
                diff_seqs[envelope.sender] = self.take_seq(txn)  # numbered before its messages
            updated[envelope.sender] = sender
            txn.put(envelope.sender, sender.encode(), db=self.db["accounts"])
            records.setdefault(envelope.sender, []).append(
                self.enqueue(txn, envelope, message_id, public_key, signature))
            self.append(txn, ["accept", message_id])
            self.advance_clock(txn, envelope.time)
            results.append(Accepted(message_id, duplicate=False))
        self._changed(txn, [StateDiff(sender, 0, updated[sender], messages=tuple(sent), before=befores[sender],
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
            with self.writing() as own:
                return self.commit(outcomes, own)
        accounts: dict[bytes, tuple[Account, int]] = {}
        changes: dict[bytes, _Changes] = {}  # per actor, for its replicas
        diff_seqs: dict[bytes, int] = {}
        clock = 0
        db = self.db
        receipts, mailbox = db["receipts"], db["mailbox"]
        credits: dict[bytes, int] = {}  # fees and refunds paid in this commit (a node alone)
        raises = self.any_raised(txn)  # else no run can have met a raise (one look, not one per message)
        # the one bid every waiting message offers, while the index is left empty: read again only
        # after this commit queues messages (which may index the waiting ones: _place_ranked)
        level = self._level(txn) if self._ranks else None
        for o in outcomes:
            replicated = o.recipient in changes or self._replicated(o.recipient)
            if replicated and o.recipient not in changes:  # the state its diff starts from
                changes[o.recipient] = _Changes(before=self.state_digest(o.recipient, txn))
                diff_seqs[o.recipient] = self.take_seq(txn)  # numbered before the messages it sends
            table, key = o.queue_key
            txn.delete(key, db=db[table])
            raised = cast("bytes | None", txn.get(RAISED + o.message_id, db=db["meta"])) if raises else None
            if self._ranks and table == "pending" and (o.bid or raised) and level is None:
                # (a bid of 0 is not in the index, nor is anything while every waiting bid is one level)
                self._unrank(txn, key, decode_raised(raised)[0] if raised else o.bid)
            if raised:
                self._late_raise(txn, o, raised, credits)
            encoded = o.receipt.encode()
            txn.put(o.message_id, encoded, db=receipts)
            txn.put(o.recipient + u64(o.receipt.position), o.message_id, db=mailbox)
            earlier = accounts.get(o.recipient)
            accounts[o.recipient] = (o.account, o.balance_delta + (earlier[1] if earlier else 0))
            if o.code is not None:
                txn.put(o.account.code_hash, o.code, db=db["code"])
                if self.replication is not None:
                    self.replication.deployed(txn, o.recipient, o.code)
            if o.storage_writes:
                self.write_storage(txn, o.recipient, o.storage_writes.items())
            self.append(txn, ["receipt", o.message_id])
            if o.receipt.outgoing != tuple(envelope.id for envelope in o.new_messages):
                raise StoreError(f"the receipt of 0x{o.message_id.hex()} names other messages than its run sent")
            sent = [self.enqueue(txn, envelope, envelope.id, b"", b"") for envelope in o.new_messages]
            if sent and level is not None:
                level = self._level(txn)
            receipt = o.receipt
            if receipt.fee or receipt.refund:
                if self.replication is None:
                    if receipt.fee:
                        credits[receipt.coinbase] = credits.get(receipt.coinbase, 0) + receipt.fee
                    if receipt.refund:
                        credits[o.payer] = credits.get(o.payer, 0) + receipt.refund
                else:  # the accounts may be held by other nodes: the credits travel as messages
                    sent += [self.enqueue(txn, envelope, envelope.id, b"", b"")
                             for envelope in credit_messages(receipt, o.payer)]
            if replicated:
                changes[o.recipient].add(o, encoded, sent)
            clock = max(clock, o.account.clock)
        for address, (account, delta) in accounts.items():
            raw = txn.get(address, db=db["accounts"])
            current = Account.decode(raw) if raw is not None else Account()
            merged = account.replace(
                balance=current.balance + delta + (credits.pop(address, 0) if credits else 0),
                nonce=account.nonce if account.code_hash else current.nonce,
                public_key=current.public_key,
            )
            txn.put(address, merged.encode(), db=db["accounts"])
            if address in changes:
                changes[address].account = merged
                changes[address].after = self.state_digest(address, txn)
        accounts_db = db["accounts"]
        for address, amount in credits.items():  # accounts that handled nothing in this commit
            raw = txn.get(address, db=accounts_db)
            txn.put(address, credit_encoded(raw, amount) if raw is not None else Account(balance=amount).encode(),
                    db=accounts_db)
        if outcomes:
            self.advance_clock(txn, clock)
        if changes:
            self._changed(txn, [c.diff(address) for address, c in changes.items()], diff_seqs)

    def _late_raise(self, txn: lmdb.Transaction, o: Outcome, raised: bytes, credits: dict[bytes, int]) -> None:
        """A raise of ``o``'s message committed after its run read the message (the run used a lower
        bid): the raise came too late, so its top-up goes back to the sender and the ledger says so
        (``["unraise", id, the run's bid]``, before the receipt record: replay undoes it there)."""
        bid, gas, sender = decode_raised(raised)
        if bid == o.bid:
            return
        credits[sender] = credits.get(sender, 0) + gas * (bid - o.bid)
        txn.put(RAISED + o.message_id, msgpack.packb([word_bytes(o.bid), gas, sender], use_bin_type=True),
                db=self.db["meta"])
        self.append(txn, ["unraise", o.message_id, word_bytes(o.bid)])

    def raise_bid(self, message_id: bytes, new_bid: int, public_key: bytes, signature: bytes) -> int:
        return market_ops.raise_bid(self, message_id, new_bid, public_key, signature)

    def worker(self, address: bytes, txn: lmdb.Transaction | None = None) -> Worker | None:
        return market_ops.worker(self, address, txn)

    def workers(self) -> list[tuple[bytes, Worker]]:
        return market_ops.workers(self)

    def own_worker(self, txn: lmdb.Transaction | None = None) -> Worker | None:
        return market_ops.own_worker(self, txn)

    def worker_op(self, op: str, address: bytes, args: list[Any], public_key: bytes, signature: bytes) -> Worker:
        return market_ops.worker_op(self, op, address, args, public_key, signature)

    def job_op(self, op: str, signer: bytes, args: list[Any], public_key: bytes, signature: bytes) -> bytes:
        return market_ops.job_op(self, op, signer, args, public_key, signature)

    def accuse(self, address: bytes, evidence: bytes, public_key: bytes, signature: bytes) -> Slash:
        return market_ops.accuse(self, address, evidence, public_key, signature)

    def burned(self, txn: lmdb.Transaction | None = None) -> int:
        return market_ops.burned(self, txn)

    def slashes(self) -> list[tuple[bytes, tuple[bytes, bytes, int, int, str]]]:
        return market_ops.slashes(self)

    def register_own_worker(self, coinbase: bytes | None = None) -> bytes:
        return market_ops.register_own_worker(self, coinbase)

    def own_worker_key(self) -> NodeIdentity | None:
        return market_ops.own_worker_key(self)

    def idle_reason(self, txn: lmdb.Transaction | None = None) -> str | None:
        return market_ops.idle_reason(self, txn)

    def write_storage(self, txn: lmdb.Transaction, address: bytes, writes: Iterable[tuple[int, int]]) -> None:
        """Write storage slots (value 0 deletes), keeping the actor's storage sum on a cluster node."""
        storage = self.db["storage"]
        # the store's transactions are begun without buffers=True: values are bytes
        total = (digest.sum_from_bytes(cast("bytes | None", txn.get(address, db=self.db["digests"])))
                 if self._keeps_digests else None)
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

    # -- records of replicated actors (versions, epochs) ------------------------------------

    def write_together(self, writes: Sequence[Callable[[lmdb.Transaction], Any]]) -> list[Any]:
        """Run several writes in one transaction, so that one fsync makes them all durable (group
        commit across kinds of write: admissions, deliveries, commits, dequeues).

        Each write is given its own nested transaction: one that raises is undone
        alone, and its exception takes its place in the results; the others are
        kept.  The transaction is sealed once, over every record the kept writes
        appended.  If the commit itself fails, that raises and nothing is kept.
        """
        results: list[Any] = []
        with self.writing() as txn:
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

    def known_code(self, address: bytes, txn: lmdb.Transaction | None = None) -> tuple[bytes, bytes]:
        """(code, code hash) of an actor another node executes, as far as this node has heard."""
        code_hash = self.get(txn, "known_code", address)
        return (self.code(code_hash, txn), code_hash) if code_hash else (b"", b"")

    def learn_code(self, entries: list[tuple[bytes, bytes]]) -> int:
        """Record deployed code of other nodes' actors; each must be 20-byte address and bytes."""
        with self.env.begin(write=True) as txn:
            for address, code in entries:
                code_hash = keccak256(code)
                txn.put(code_hash, code, db=self.db["code"])
                txn.put(address, code_hash, db=self.db["known_code"])
        return len(entries)

    def next_seq(self) -> int:
        """The seq the next ledger record or queue entry will get (everything queued so far is below)."""
        raw = self.get(None, "meta", b"seq")
        return msgpack.unpackb(raw) if raw else 0

    def release_scheduled(self, up_to: int) -> int:
        """Move scheduled messages due at or before logical time ``up_to`` into their queues."""
        moved = 0
        with disk_errors(self.path), self.env.begin(write=True) as txn:
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
                queue = "pending" if self.replication is None or self.replication.executes(envelope.recipient) else "standby"
                queue_key = envelope.recipient + u64(self.take_seq(txn))
                txn.put(queue_key, message_id, db=self.db[queue])
                if self._ranks and queue == "pending":
                    self._place_ranked(txn, queue_key, message_id, envelope.sender, envelope.bid)
                moved += 1
            self.advance_clock(txn, up_to)
        return moved
