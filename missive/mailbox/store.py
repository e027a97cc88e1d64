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
ledger        seq (8 bytes, big-endian)              ["genesis", addr, pubkey, balance] |
                                                     ["accept", message id] | ["receipt", message id] |
                                                     ["diff", executor node id, state diff] (applied
                                                     here) | ["rollback", addr, position, account,
                                                     storage, [seqs of the receipt and accept records
                                                     it discards]]
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
entries       address + version (8 bytes)            [epoch, state digest after, messages handled after,
                                                     [ids of the messages it carried]]: one per record
                                                     (state diff) of a replicated actor, made or applied
                                                     here; what copies compare (missive.replicas.epochs)
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

import errno
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

from missive.errors import DiskFailure, MissiveError, NotFound
from missive.mailbox import digest
from missive.mailbox.diffs import DiffConflict, DiffError, DiffGap, DiffSuperseded, StateDiff
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
from missive.mailbox.integrity import Damaged, check_lmdb
from missive.mailbox.records import Account, Receipt
from missive.mailbox.seals import GENESIS, KEY_FILE, SealError, chain, load_key, record_bytes, seal_message
from missive.net.identity import NodeIdentity
from missive.vm.keccak import keccak256

TABLES = ("meta", "ledger", "seals", "discarded", "messages", "pending", "standby", "scheduled", "receipts", "mailbox",
          "accounts", "code", "storage", "outbound", "replicate", "replica", "replica_messages", "announce", "known_code",
          "last_diff", "digests", "entries")
MAP_SIZE = 1 << 36  # 64 GiB of address space; the file grows only as used
#: meta key prefix marking a message whose sending record a rollback gave up, but whose body stays
#: because this node had handled it (replay needs it): a later rollback never queues it again.
GIVEN_UP = b"given-up:"
#: Version of the store's layout and of the rules its ledger replays under (meta b"format").
#: 1: before ledger seals (records rewritten by a rollback; no seals).  2: a reply was given at least
#: 100,000 gas that no message paid for (REPLY_GAS_FLOOR); since 3 the request reserves its reply's
#: gas, so a format-2 ledger with replies would not replay.  This Missive opens neither (replay them
#: with the Missive that wrote them).  3: block.timestamp was the logical clock, CHAINID 1 and tx.origin
#: the message's own sender; since 4 block.timestamp is the executing node's clock in seconds,
#: recorded with each receipt, CHAINID the ledger's own id (meta b"chain_id"), signed messages bound
#: to it, and envelopes carry their tree's origin: a format-3 ledger's receipts would not replay.
STORE_FORMAT = 4
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


class StoreError(MissiveError):
    """The store cannot be used as asked (missing, wrong format, locked)."""


class NoStore(StoreError, NotFound):
    """There is no store where one was asked for (and none was ever there)."""


#: the name the rest of the package used before the integrity check came
NoNode = NoStore


class StoreDamaged(StoreError, Damaged):
    """The store is not whole: a damaged, truncated or foreign ``data.mdb``, or a ledger gone missing.

    Raised before anything is mapped or written; the message is one line naming the file.
    """


class DiskFull(StoreError, DiskFailure):
    """A write transaction met a full (or failing) disk: nothing of it was written.

    LMDB writes a transaction's pages, then its meta page; a transaction whose
    pages could not all be written never becomes the store's state, so the
    store stays as it was and opens and replays as before.  Writes may work
    again once there is space.  The text is one line naming the store's path.
    """


log = logging.getLogger(__name__)
#: LMDB's reader table (one slot per open read transaction of every process): LMDB's default is 126,
#: which a busy node and its clients, or readers killed inside a read, use up
MAX_READERS = 1024
#: bytes of a lock file made here: MAX_READERS slots of 64 bytes and room for LMDB's header
LOCK_FILE_SIZE = (MAX_READERS + 64) * 64
#: below this many free bytes an Input/output error on a write is read as a full disk (LMDB turns a
#: short write, as a filling disk gives, into EIO)
NEARLY_FULL = 64 << 20
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO)


def _disk_errno(exc: BaseException) -> int | None:
    """The errno of a failed write that points at the disk (full, over quota, failing), if any.

    py-lmdb gives no errno, only LMDB's text ("mdb_txn_commit: Input/output error"),
    so its errors are matched by their strerror."""
    if isinstance(exc, OSError):
        return exc.errno if exc.errno in _DISK_ERRNOS else None
    if isinstance(exc, lmdb.DiskError):
        return errno.ENOSPC
    if isinstance(exc, lmdb.Error):
        text = str(exc)
        return next((code for code in _DISK_ERRNOS if text.endswith(os.strerror(code))), None)
    return None


def _free_bytes(path: Path) -> int | None:
    """The bytes left on the disk holding ``path`` for an unprivileged writer (None: unknown)."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def _size_text(size: int | None) -> str:
    """``size`` bytes free, for a person ("12.0 MiB free")."""
    if size is None:
        return "free space unknown"
    if size < 1024:
        return f"{size} B free"
    value, unit = size / 1024, "KiB"
    for larger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{value:.1f} {unit} free"


def disk_full(path: Path, exc: BaseException) -> DiskFull | None:
    """``exc`` as one line naming the disk that holds the store at ``path``, if it says that disk is
    full or failing; None for any other error.

    Why: LMDB reports a full disk as ``lmdb.DiskError`` (ENOSPC), as a plain
    ``lmdb.Error`` "Input/output error" (LMDB turns a short write into EIO), or,
    past the map size, as ``MapFullError``; the files beside it fail with OSError.
    Raw, these reach a client or a log as a traceback naming neither the disk
    nor what to do about it.
    """
    if isinstance(exc, DiskFull):
        return exc
    done = "nothing was written; free space and retry"
    if isinstance(exc, lmdb.MapFullError):
        return DiskFull(f"the store at {path} is full: it has reached its LMDB map size (MDB_MAP_FULL): nothing "
                        "was written")
    code = _disk_errno(exc)
    if code is None:
        return None
    free = _free_bytes(path)
    if code == errno.EIO and (free is None or free >= NEARLY_FULL):
        return DiskFull(f"the disk holding {path} failed a write ({os.strerror(code)}, {_size_text(free)}): "
                        "nothing was written; check the disk and retry")
    return DiskFull(f"the disk holding {path} is full ({os.strerror(code)}, {_size_text(free)}): {done}")


#: exit status of a process stopped by its store's disk (full or failing) or by a store LMDB gave up on
#: (sysexits' EX_IOERR), for ``missive`` commands and cluster nodes alike
EXIT_DISK = 74
#: exit status of a process that refused a store that is not whole (the same as the CLI's EXIT_DAMAGED)
EXIT_DAMAGED = 4


def fatal_error(exc: BaseException, path: Path) -> StoreError | None:
    """The store error ``exc`` stops a process with (``exc`` may be a group: a nursery's errors),
    a full disk under ``path`` as :class:`DiskFull`; None if it holds none (a bug, which keeps its
    traceback)."""
    leaves = [exc]
    while leaves:
        leaf = leaves.pop(0)
        if isinstance(leaf, BaseExceptionGroup):
            leaves.extend(leaf.exceptions)
        elif isinstance(leaf, StoreError):
            return leaf
        elif isinstance(leaf, lmdb.Error | OSError) and (found := disk_full(path, leaf)) is not None:
            return found
    return None


def exit_status(error: StoreError) -> int:
    """:data:`EXIT_DISK` for a full or failing disk (or a store LMDB gave up on), 4 for a store that is
    not whole (:class:`StoreDamaged`), else 1."""
    if isinstance(error, StoreDamaged):
        return EXIT_DAMAGED
    return EXIT_DISK if isinstance(error, DiskFull) or isinstance(error.__cause__, lmdb.Error) else 1


@contextmanager
def disk_errors(path: Path) -> Iterator[None]:
    """Raise what a write meets on a full or failing disk as :class:`DiskFull` (see :func:`disk_full`)."""
    try:
        yield
    except (lmdb.Error, OSError) as exc:
        converted = disk_full(path, exc)
        if converted is None:
            raise
        raise converted from exc


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

    def epoch(self) -> int:
        """The epoch this node acts in now (missive.replicas.epochs): every record it makes carries it."""
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
                 placement: Placement | None = None, chain_id: int | None = None) -> None:
        """``chain_id``: for a new store, its ledger's id (None: a random one, :func:`new_chain_id`);
        for an existing one, the id it must have (a cluster node's config names its cluster's)."""
        self.path = Path(path)
        #: the clock block.timestamp comes from (seconds); tests move it
        self.wall_clock: Callable[[], float] = time.time
        self.placement = placement
        check_whole(self.path)
        data_file = self.path / "data.mdb"
        if not create and not data_file.exists():
            raise NoStore(f"no Missive node at {self.path} (run `missive init` first)")
        with disk_errors(self.path):
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._make_lock_file()  # before LMDB writes its header through a mapping
        with disk_errors(self.path):
            self.env = lmdb.open(str(self.path), map_size=MAP_SIZE, max_dbs=len(TABLES) + 2, sync=True,
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
                      "timestamps in seconds and its own chain id)"
                   }.get(found, "")
            raise StoreError(f"{self.path} has store format {found}{why}; this Missive reads {STORE_FORMAT}. "
                             "Replay or read it with the Missive that wrote it, or start a new node")
        self.db = {name: self.env.open_db(name.encode(), create=not readonly) for name in TABLES}
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
        txn.delete(GIVEN_UP + message_id, db=self.db["meta"])  # admitted (or sent) again: it stands
        placement = self.placement
        if placement is None:
            self._place(txn, envelope, message_id, True)
            return record
        holders = placement.holders(envelope.recipient)
        # a message made here (an admission, or a handler's) for another actor waits for the record
        # that made it to be acknowledged, here too: given up, it must not have been handled anywhere
        held = fan_out and envelope.sender != envelope.recipient and self._replicated(envelope.sender)
        if placement.me in holders:
            if held:
                pass  # queued for this node below, like for the others: release_held places it
            elif txn.get(message_id, db=self.db["receipts"]) is None:  # not handled by another holder yet
                self._place(txn, envelope, message_id, placement.executes(envelope.recipient))
        elif not fan_out:
            raise EnvelopeError(f"this node keeps no copy of 0x{envelope.recipient.hex()}, the recipient")
        if fan_out:
            targets = [n for n in holders if n != placement.me or held]
            self._queue_for(txn, "outbound", targets, record)
        return record

    def release_held(self, keys: list[bytes], txn: lmdb.Transaction) -> int:
        """Place the messages queued for this node itself under ``keys`` (outbound, this node's id +
        seq), now that the records that made them are acknowledged (a :meth:`write_together`
        write).  One given up meanwhile is gone from the queue and is skipped."""
        assert self.placement is not None, "only a cluster node holds messages for itself"
        placed = 0
        for key in keys:
            record = txn.get(key, db=self.db["outbound"])
            if record is None:
                continue
            txn.delete(key, db=self.db["outbound"])
            envelope = Envelope.decode(msgpack.unpackb(record)[0], check=False)
            message_id = envelope.id
            if txn.get(message_id, db=self.db["receipts"]) is None:
                self._place(txn, envelope, message_id, self.placement.executes(envelope.recipient))
                placed += 1
        return placed

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
        """Genesis: an external account with a starting balance (the dev faucet).

        Checked before anything is written: an account with a malformed address or key
        would be written, and its state diff then refused by every peer, forever."""
        if not isinstance(address, bytes) or len(address) != 20:
            shown = f"{len(address)} bytes" if isinstance(address, bytes) else type(address).__name__
            raise StoreError(f"an account address is 20 bytes, not {shown}")
        if not isinstance(public_key, bytes) or len(public_key) != 32:
            raise StoreError("an account's public key is 32 bytes (Ed25519)")
        if not isinstance(balance, int) or isinstance(balance, bool) or not 0 <= balance < 2**256:
            raise StoreError(f"a balance is a whole number from 0 to 2**256 - 1, not {balance!r}")
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
            if o.receipt.outgoing != tuple(envelope.id for envelope in o.new_messages):
                raise StoreError(f"the receipt of 0x{o.message_id.hex()} names other messages than its run sent")
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
        epoch = self.placement.epoch()
        for diff in diffs:
            targets = [n for n in self.placement.holders(diff.address) if n != me]
            if targets:
                seq = seqs[diff.address] if seqs and diff.address in seqs else self._next_seq(txn)
                version, prev_epoch = self._head(txn, diff.address)
                diff = attrs.evolve(diff, seq=seq, epoch=epoch, version=version + 1, prev_epoch=prev_epoch)
                self._record_entry(txn, diff, made_here=True)
                self._queue_for(txn, "replicate", targets, diff.encode(), seq)
                txn.put(diff.address, u64(seq), db=self.db["last_diff"])

    # -- records of replicated actors (versions, epochs) ------------------------------------

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
        with self._reading(txn) as t:
            return self._head(t, address)

    def epoch_of_record_before(self, address: bytes, seq: int) -> int | None:
        """The epoch of the last record of ``address`` this node made numbered below ``seq`` (the record
        that made a message queued at ``seq``); None if it has none (it was given up, or made elsewhere)."""
        with self.read() as txn:
            cursor = txn.cursor(db=self.db["entries"])
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
        with self._reading(txn) as t:
            entry = self._entry(t, address, version)
        return int(entry[0]) if entry is not None else None

    def _record_entry(self, txn: lmdb.Transaction, diff: StateDiff, *, made_here: bool) -> None:
        """Keep ``diff``'s record: [epoch, digest after, handled after, message ids, and the seq it was
        numbered with if this node made it (its accept and receipt ledger records come after that
        seq: where a rollback starts looking for them), else -1]."""
        ids = [keccak256(msgpack.unpackb(record)[0]) for record in diff.messages]
        txn.put(diff.address + u64(diff.version),
                msgpack.packb([diff.epoch, diff.after, diff.account.handled, ids, diff.seq if made_here else -1],
                              use_bin_type=True),
                db=self.db["entries"])

    def heads(self, wanted: Callable[[bytes], bool]) -> list[tuple[bytes, int, int]]:
        """(address, version, epoch) of every replicated actor held here that ``wanted`` picks."""
        out = []
        with self.read() as txn:
            for address in txn.cursor(db=self.db["accounts"]).iternext(keys=True, values=False):
                address = bytes(address)
                if self._replicated(address) and wanted(address):
                    version, epoch = self._head(txn, address)
                    out.append((address, version, epoch))
        return out

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
            for diff in diffs:
                try:
                    if (self._holds_record(txn, diff) if diff.version
                            else self._legacy_held(txn, executor_id, diff)):
                        done += 1  # a re-sent record, from whichever holder
                        continue
                    self._check_diff(txn, diff)
                    if check is not None:
                        check(txn, diff)
                except DiffError as err:
                    return done, err
                self._apply_diff(txn, executor_id, diff)
                done += 1
        return done, None

    def _holds_record(self, txn: lmdb.Transaction, diff: StateDiff) -> bool:
        """Where ``diff`` (a versioned record) stands against this copy's records of its actor.

        True: this copy holds it already (same version, same epoch, same resulting state:
        one executor per epoch makes one record per version, so that is the same record).
        False: it is the next record of this copy.  Otherwise raises: :class:`DiffConflict`
        (another record for that version here, or for the one before it: the copies
        diverged; the record of the higher epoch wins, missive.replicas.epochs rule 4) or
        :class:`DiffGap` (records between this copy's last and it are missing here).
        """
        where = f"state diff for 0x{diff.address.hex()}"
        held = self._entry(txn, diff.address, diff.version)
        if held is not None:
            if held[0] == diff.epoch and bytes(held[1]) == diff.after:
                return True
            raise DiffConflict(f"{where} is record {diff.version} of epoch {diff.epoch}; this copy holds record "
                               f"{diff.version} of epoch {held[0]}", diff.address, self._handled_at(txn, diff),
                               version=diff.version, theirs=diff.epoch, mine=int(held[0]))
        version, epoch = self._head(txn, diff.address)
        if diff.version > version + 1:
            account = self.account(diff.address, txn)
            raise DiffGap(f"{where} is record {diff.version}; this copy holds {version}", diff.address,
                          account.handled if account is not None else 0, version=version)
        if diff.prev_epoch != epoch:
            raise DiffConflict(f"{where} follows a record {version} of epoch {diff.prev_epoch}; this copy's is of "
                               f"epoch {epoch}", diff.address, self._handled_at(txn, diff, version),
                               version=version, theirs=diff.prev_epoch, mine=epoch)
        return False

    def _handled_at(self, txn: lmdb.Transaction, diff: StateDiff, version: int | None = None) -> int:
        """Messages handled in this copy before record ``version`` (default: the diff's)."""
        before = self._entry(txn, diff.address, (diff.version if version is None else version) - 1)
        return int(before[2]) if before is not None else 0

    def _legacy_held(self, txn: lmdb.Transaction, executor_id: bytes, diff: StateDiff) -> bool:
        """A diff from before versions (0): held if its executor's last diff applied here came after
        it, or if this copy holds what it records (:meth:`_already_held`)."""
        seen = txn.get(diff.address, db=self.db["replica"])
        if seen is not None:
            seen_executor, seen_seq = msgpack.unpackb(seen)
            if seen_executor == executor_id and diff.seq <= seen_seq:
                return True
        return self._already_held(txn, diff)

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
        """Raise DiffError if ``diff`` does not continue this node's copy of its actor exactly, or
        its time is more than :data:`MAX_TIME_AHEAD` seconds ahead of this node's clock."""
        where = f"state diff for 0x{diff.address.hex()}"
        if self.placement is not None and self.placement.executes(diff.address):
            raise DiffSuperseded(f"{where}: this node executes that actor now", diff.address)
        if diff.receipts:
            now = int(self.wall_clock())
            latest = max([diff.account.timestamp, *(r.timestamp for r in diff.decoded_receipts())])
            if latest > now + MAX_TIME_AHEAD:
                raise DiffError(f"{where}: its block.timestamp {latest} is {latest - now} s ahead of this "
                                f"node's clock (at most {MAX_TIME_AHEAD} s is taken); it is taken once this "
                                "clock catches up")
        if diff.version:  # its version and epochs follow this copy's records
            try:
                self._check_continues(txn, diff, where)
            except DiffConflict as exc:  # ...but not its state: one of the two copies drifted
                raise DiffConflict(str(exc), diff.address, exc.position, version=diff.version - 1,
                                   theirs=diff.prev_epoch, mine=diff.prev_epoch) from None
            except DiffGap as exc:  # positions past this copy's while the versions follow: a lie
                raise DiffError(f"{exc}, though its version follows this copy's") from None
            return
        self._check_continues(txn, diff, where)

    def _check_continues(self, txn: lmdb.Transaction, diff: StateDiff, where: str) -> None:
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
        try:
            carried = {keccak256(msgpack.unpackb(record)[0]) for record in diff.messages}
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise DiffError(f"{where}: a message record it carries is malformed ({exc})") from None
        if not {out for r in receipts for out in r.outgoing} <= carried:
            raise DiffError(f"{where}: its receipts name messages it does not carry")
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
        if diff.version:
            self._record_entry(txn, diff, made_here=False)
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

    def snapshot(self, address: bytes, version: int) -> dict[str, Any] | None:
        """This node's copy of an actor after its record ``version``, for a holder whose copy diverged
        after that record, or ends there (a gap): the record itself (``base``: [epoch, digest], so
        the other side checks it is theirs too), the records after it (``entries``: [version,
        epoch, digest, handled, message ids]), the receipts from the mailbox position it left
        (``since``), the account, every storage slot, and the seq of the last diff this node
        made for it.  ``{"head": n}`` if this copy does not reach record ``version``."""
        with self.read() as txn:
            raw = txn.get(address, db=self.db["accounts"])
            if raw is None:
                return None
            head, _ = self._head(txn, address)
            base = self._entry(txn, address, version) if version else None
            if version > head or (version and base is None):
                return {"head": head}
            since = int(base[2]) if base is not None else 0
            receipts = [txn.get(message_id, db=self.db["receipts"])
                        for key, message_id in self._scan("mailbox", address, txn=txn)
                        if int.from_bytes(key[20:], "big") >= since]
            entries = [[int.from_bytes(key[20:], "big"), *msgpack.unpackb(value)[:4]]
                       for key, value in self._scan("entries", address, txn=txn, after=address + u64(version))]
            storage = [[key[20:], value] for key, value in self._scan("storage", address, txn=txn)]
            seq = txn.get(address, db=self.db["last_diff"])
            carried = []  # the messages those records sent or admitted: the other copy keeps them too
            for entry in entries:
                for message_id in entry[4]:
                    record = (txn.get(bytes(message_id), db=self.db["messages"])
                              or txn.get(bytes(message_id), db=self.db["replica_messages"]))
                    if record is not None:
                        carried.append(record)
            return {"account": raw, "storage": storage, "receipts": receipts, "since": since,
                    "base": None if base is None else base[:2], "entries": entries, "messages": carried,
                    "seq": int.from_bytes(seq, "big") if seq else -1}

    def roll_back(self, source: bytes, address: bytes, version: int, snapshot: dict[str, Any]) -> RolledBack:
        """Replace this node's copy of ``address`` after its record ``version`` by ``source``'s (a
        :meth:`snapshot` from that record), in one transaction; say which messages this node had
        handled there (they now stand unhandled, queued again) and which messages the records
        given up had sent that had already left.

        This is the losing side of a conflict (the record of the higher epoch wins:
        missive.replicas.epochs, rule 4), or a copy filling a gap (``version`` is its last
        record: nothing is given up).  What the records given up did goes with them: their
        storage writes (the snapshot replaces all storage), their receipts, the diffs queued
        for other holders after ``version`` (earlier ones stand, and still go out), and the
        messages they sent or admitted, unless the standing records carry the same ones
        (the same message run again from the same state sends the same ids).  What the
        standing receipts handled leaves this node's queues.  A message that had already left
        is not taken back; it is named in the result so that the node can say so (with the
        epochs' acknowledgement rule, a message leaves only with a record that stands).

        Raises DiffError if the snapshot is not from this copy's record ``version`` (the copies
        diverged earlier: ask from an earlier record) or does not hold what it says.
        """
        where = f"snapshot of 0x{address.hex()} from record {version}"
        if "head" in snapshot:
            raise DiffError(f"{where}: the other copy holds only {snapshot['head']} records")
        account = Account.decode(snapshot["account"])
        receipts = [Receipt.decode(raw) for raw in snapshot["receipts"]]
        since = int(snapshot["since"])
        theirs = [(int(v), int(epoch), bytes(after), int(handled), [bytes(m) for m in ids])
                  for v, epoch, after, handled, ids, *_ in snapshot["entries"]]
        if any(r.position != since + i for i, r in enumerate(receipts)) or account.handled != since + len(receipts):
            raise DiffError(f"{where} does not hold mailbox positions {since}.. in order")
        if [v for v, *_ in theirs] != list(range(version + 1, version + 1 + len(theirs))):
            raise DiffError(f"{where} does not hold the records after {version} in order")
        db = self.db
        with self._write() as txn:
            base = self._entry(txn, address, version) if version else None
            their_base = snapshot["base"]
            if (None if base is None else [int(base[0]), bytes(base[1])]) != (
                    None if their_base is None else [int(their_base[0]), bytes(their_base[1])]):
                raise DiffError(f"{where}: the copies differ at that record already")
            if (int(base[2]) if base is not None else 0) != since:
                raise DiffError(f"{where} starts at mailbox position {since}, this copy's record {version} at "
                                f"{int(base[2]) if base is not None else 0}")
            given_up: set[bytes] = set()  # what this copy's records after `version` carried
            standing_records = {v: (epoch, after) for v, epoch, after, _, _ in theirs}
            differing = 0  # records of this copy that the other's does not hold (0: a gap filled)
            made_from: int | None = None  # the lowest seq of those this node made: its ledger records follow
            for key, value in self._scan("entries", address, txn=txn, after=address + u64(version)):
                entry = msgpack.unpackb(value)
                given_up.update(bytes(m) for m in entry[3])
                if standing_records.get(int.from_bytes(key[20:], "big")) != (int(entry[0]), bytes(entry[1])):
                    differing += 1
                    if len(entry) > 4 and entry[4] >= 0:
                        made_from = entry[4] if made_from is None else min(made_from, entry[4])
                txn.delete(key, db=db["entries"])
            mine = [(key, message_id) for key, message_id in self._scan("mailbox", address, txn=txn)
                    if int.from_bytes(key[20:], "big") >= since]
            for key, message_id in mine:
                raw_receipt = txn.get(message_id, db=db["receipts"])
                if raw_receipt is not None:
                    given_up.update(Receipt.decode(raw_receipt).outgoing)
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
            for v, epoch, after, count, ids in theirs:
                txn.put(address + u64(v), msgpack.packb([epoch, after, count, ids], use_bin_type=True),
                        db=db["entries"])
            # the standing records may carry the very same messages: those stay, wherever they are
            standing = {out for r in receipts for out in r.outgoing} | {m for *_, ids in theirs for m in ids}
            for record in snapshot.get("messages", ()):
                message_id = keccak256(msgpack.unpackb(bytes(record))[0])
                if message_id in standing and txn.get(message_id, db=db["messages"]) is None:
                    txn.put(message_id, bytes(record), db=db["replica_messages"])
            gone = self._forget_messages(txn, given_up - standing)
            self._drop_diffs_after(txn, address, version, since)
            txn.delete(address, db=db["last_diff"])
            txn.put(address, msgpack.packb([source, snapshot["seq"]]), db=db["replica"])
            handled = {r.message_id for r in receipts}
            self._unqueue(txn, address, handled)  # what the standing receipts handled waits nowhere
            # what this copy had handled there waits again, unless the record that sent it was given
            # up meanwhile (its body stayed only for replay): queued, it would be handled twice
            unhandled = [m for _, m in mine if m not in handled and txn.get(GIVEN_UP + m, db=db["meta"]) is None]
            for message_id in unhandled:
                found = txn.get(message_id, db=db["messages"])
                if found is not None:
                    envelope = Envelope.decode(msgpack.unpackb(found)[0], check=False)
                    self._place(txn, envelope, message_id, self.placement is None or self.placement.executes(address))
            discarded = self._records_given_up(txn, {m for _, m in mine}, given_up - standing, made_from)
            rollback = self._append(txn, ["rollback", address, since, account.encode(),
                                          [[bytes(slot), bytes(value)] for slot, value in snapshot["storage"]],
                                          discarded])
            for seq in discarded:
                txn.put(u64(seq), u64(rollback), db=db["discarded"])
        standing_receipts = {(r.position, r.message_id) for r in receipts}
        differing += sum(1 for key, m in mine if (int.from_bytes(key[20:], "big"), m) not in standing_receipts)
        return RolledBack(tuple(unhandled), tuple(gone), differing)

    def _records_given_up(self, txn: lmdb.Transaction, handled: set[bytes], carried: set[bytes],
                          made_from: int | None) -> list[int]:
        """Seqs of the standing (not yet discarded) ledger records a rollback gives up, ascending: the
        receipt records of ``handled`` and the accept records of ``carried`` (messages this node
        admitted in records given up).  Sealed records are never rewritten: the rollback record
        lists them and the ``discarded`` index points replay from each to it.  They are recent:
        search from the end, down to ``made_from`` (the seq of the first record given up that
        this node made; None: it made none, so its ledger has none of them)."""
        if made_from is None:
            return []
        wanted = {"receipt": set(handled), "accept": set(carried)}
        found_seqs: list[int] = []
        discarded = self.db["discarded"]
        cursor = txn.cursor(db=self.db["ledger"])
        found = cursor.last()
        while found and (wanted["receipt"] or wanted["accept"]):
            key, value = cursor.item()
            if int.from_bytes(key, "big") < made_from:
                break
            record = msgpack.unpackb(value)
            left = wanted.get(record[0])
            if left and bytes(record[1]) in left and txn.get(key, db=discarded) is None:
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
            else:  # kept for replay, but nothing sends it any more: never queue it again (roll_back)
                txn.put(GIVEN_UP + message_id, b"", db=db["meta"])
            txn.delete(message_id, db=db["replica_messages"])
        return gone

    def _drop_diffs_after(self, txn: lmdb.Transaction, address: bytes, version: int, since: int) -> None:
        """Drop the diffs queued for ``address`` that a rollback after record ``version`` (mailbox
        position ``since``) gives up: later records (diffs from before versions: those leaving it
        with more than ``since`` messages handled).  Earlier ones stand, and a holder that has
        not had them still needs them."""
        for key, raw in self._scan("replicate", b"", txn=txn):
            diff = StateDiff.decode(raw)
            if diff.address == address and (diff.version > version if diff.version
                                            else diff.account.handled > since):
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

    def epochs(self) -> tuple[list[Any], Any]:
        """The epochs this node installed and its acceptor's state, as saved (missive.replicas.epochs)."""
        with self.read() as txn:
            raw = txn.get(b"epochs", db=self.db["meta"])
            state = txn.get(b"acceptor", db=self.db["meta"])
        return (msgpack.unpackb(raw) if raw else []), (msgpack.unpackb(state) if state else None)

    def save_epochs(self, epochs: list[Any], state: Any, txn: lmdb.Transaction) -> None:
        """Save the epochs and the acceptor's state (a :meth:`write_together` write: durable before
        the acceptor answers, so a promise outlives a crash)."""
        txn.put(b"epochs", msgpack.packb(epochs, use_bin_type=True), db=self.db["meta"])
        txn.put(b"acceptor", msgpack.packb(state, use_bin_type=True), db=self.db["meta"])

    def sync_view(self, node_id: bytes, wanted: Callable[[bytes], bool]) -> list[list[Any]]:
        """What a joining ``node_id`` compares its copies with, read in one transaction: for each
        actor held here that ``wanted`` picks, [address, version, epoch of that record, oldest
        epoch among its diffs still queued for ``node_id`` (None: none)].  The version is the
        record just before the first diff queued for ``node_id``, or this copy's last record
        if none is queued: the joining copy must hold exactly that record."""
        with self.read() as txn:
            queued: dict[bytes, tuple[int, int]] = {}
            for _, raw in self._scan("replicate", node_id, txn=txn):
                fields = msgpack.unpackb(raw)
                address = bytes(fields[1])
                version, epoch = (int(fields[11]), int(fields[10])) if len(fields) == 13 else (0, 0)
                low = queued.get(address)
                queued[address] = (version, epoch) if low is None else (min(low[0], version), min(low[1], epoch))
            out: list[list[Any]] = []
            for key in txn.cursor(db=self.db["accounts"]).iternext(keys=True, values=False):
                address = bytes(key)
                if not (self._replicated(address) and wanted(address)):
                    continue
                if address in queued:
                    version, oldest = queued[address][0] - 1, queued[address][1]
                    entry = self._entry(txn, address, version) if version > 0 else None
                    out.append([address, version, int(entry[0]) if entry is not None else 0, oldest])
                else:
                    version, epoch = self._head(txn, address)
                    out.append([address, version, epoch, None])
            return out

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
                queue = "pending" if self.placement is None or self.placement.executes(envelope.recipient) else "standby"
                txn.put(envelope.recipient + u64(self._next_seq(txn)), message_id, db=self.db[queue])
                moved += 1
            self._advance_clock(txn, up_to)
        return moved
