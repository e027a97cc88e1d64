"""Blocks and logs for Ethereum tools, kept in an index file of their own (``<dir>/rpc-index``).

Ethereum tools ask for blocks by number and hash and for logs by block range, address and topic.
A node's ledger has no such order: what becomes a block is decided here, once, and written down.

- On a **node** every ledger seal is a block (:mod:`missive.mailbox.seals`): block ``n`` is the
  ``n``-th seal (0-based), its hash the seal's chain hash, its parent the seal before.  A message is
  *in* the block whose seal covers its receipt record (it was handled there).
- On a **cluster** each node keeps its own ledger and seals; a block is what one look at every
  node's ledger found handled since the look before (receipts not seen yet, one block per look
  that found any), its hash ``keccak(parent hash || the message ids)``.  The endpoint that looked
  decides these blocks; another endpoint on the same cluster numbers its own.

A block's time is the latest ``block.timestamp`` among its receipts (else its parent's).  Each
block's logs are written beside it, keyed by (block, log index), with a second key by emitting
address, so ``eth_getLogs`` reads the logs of the blocks and addresses asked about and never the
ledger.  The index is derived data: nothing in the ledger depends on it.  It is written in one
transaction per look (blocks, logs and the cursor that says how far the ledger was read), so a
crash leaves it at a look, and a restart carries on from there instead of rescanning.  Those
writes are not flushed to disk one by one (an fsync per block would halve the endpoint's
throughput): a machine crash may undo the last looks, which the next start redoes from the
ledger.  What the ledger does not hold (a cluster endpoint's Ethereum transactions) is flushed
before the request that wrote it is answered.  If
it was written by another format, or names another ledger (its chain id differs), it is rebuilt
from the ledger; that is the only time the ledger is read from the start.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import lmdb
import msgpack

from missive.errors import MissiveError
from missive.mailbox.records import Receipt
from missive.vm.keccak import keccak256

log = logging.getLogger(__name__)

#: the index's own format; a file of another is rebuilt (it is derived data, never migrated)
INDEX_FORMAT = 1
INDEX_DIR = "rpc-index"
MAP_SIZE = 1 << 36  # sparse: LMDB takes only what it writes
TABLES = ("meta", "blocks", "by_hash", "handled_in", "logs", "log_addr", "txs", "records", "receipts")


class RpcIndexError(MissiveError):
    """The index file cannot be opened or written (one line says which and why)."""


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


@attrs.define
class Block:
    number: int
    seq: int  # on a node: the ledger key of the last record the seal covers; on a cluster: the number
    hash: bytes
    parent: bytes
    timestamp: int
    #: messages handled in this block (their receipts), in order
    handled: list[bytes] = attrs.field(factory=list)

    def encode(self) -> bytes:
        return msgpack.packb([self.seq, self.hash, self.parent, self.timestamp, self.handled])  # type: ignore[no-any-return]

    @classmethod
    def decode(cls, number: int, raw: bytes) -> Block:
        seq, block_hash, parent, timestamp, handled = msgpack.unpackb(raw)
        return cls(number, seq, bytes(block_hash), bytes(parent), timestamp, [bytes(m) for m in handled])


@attrs.frozen
class Log:
    """One log as the index keeps it: where it is (block, its index there, the message and its
    position among the block's handled messages) and what it says."""

    block: int
    index: int
    message_id: bytes
    position: int
    emitter: bytes
    topics: tuple[int, ...]
    data: bytes


@attrs.define
class NewBlock:
    """A block to append: its handled messages with their receipts (``hash``: the seal's, or None
    for a cluster block, whose hash is computed from its parent and its messages)."""

    seq: int
    handled: list[tuple[bytes, Receipt]]
    hash: bytes | None = None
    #: messages to remember for a cluster (id -> [canonical envelope, public key, signature])
    records: dict[bytes, list[bytes]] = attrs.field(factory=dict)


class Index:
    """The persistent block and log index of one endpoint's ledger (a node's or a cluster's)."""

    def __init__(self, directory: Path, chain_id: int) -> None:
        self.path = Path(directory) / INDEX_DIR
        self._lock = threading.Lock()
        self.env = self._open(chain_id)
        self.db = {name: self.env.open_db(name.encode()) for name in TABLES}
        with self.env.begin() as txn:
            head = txn.get(b"head", db=self.db["meta"])
            self.head = int.from_bytes(head, "big") - 1 if head is not None else -1
        self._last: Block | None = None
        self._last = self.block(self.head) if self.head >= 0 else None

    def _open(self, chain_id: int) -> lmdb.Environment:
        """The index environment; one of another format or ledger, or one LMDB cannot read (damaged),
        is removed and started again (it is derived data)."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                return self._checked(chain_id)
            except lmdb.Error as exc:
                log.warning("the RPC index at %s cannot be read (%s): rebuilding it from the ledger", self.path, exc)
            shutil.rmtree(self.path)
            self.path.mkdir(mode=0o700)
            return self._checked(chain_id)
        except (OSError, lmdb.Error) as exc:
            raise RpcIndexError(f"cannot open the RPC index at {self.path}: {exc}") from None

    def _checked(self, chain_id: int) -> lmdb.Environment:
        env = lmdb.open(str(self.path), map_size=MAP_SIZE, max_dbs=len(TABLES) + 1, sync=False)
        try:
            meta = env.open_db(b"meta")
            with env.begin() as txn:
                written = txn.get(b"format", db=meta), txn.get(b"chain_id", db=meta)
            wanted = (u32(INDEX_FORMAT), u64(chain_id))
            if written != wanted and written != (None, None):  # another format or ledger: built again
                env.close()
                shutil.rmtree(self.path)
                self.path.mkdir(mode=0o700)
                env = lmdb.open(str(self.path), map_size=MAP_SIZE, max_dbs=len(TABLES) + 1, sync=False)
                meta = env.open_db(b"meta")
                written = (None, None)
            if written == (None, None):
                with env.begin(write=True) as txn:
                    txn.put(b"format", wanted[0], db=meta)
                    txn.put(b"chain_id", wanted[1], db=meta)
        except BaseException:
            env.close()
            raise
        return env

    @classmethod
    def rebuilt(cls, directory: Path, chain_id: int) -> Index:
        """An empty index in place of the one at ``directory`` (it is built again from the ledger)."""
        shutil.rmtree(Path(directory) / INDEX_DIR, ignore_errors=True)
        return cls(directory, chain_id)

    def close(self) -> None:
        self.env.close()

    # -- reading ------------------------------------------------------------------------------

    def cursor(self, name: str) -> bytes | None:
        """How far a source has read (its own encoding), as of the last look."""
        with self.env.begin() as txn:
            found = txn.get(b"cursor:" + name.encode(), db=self.db["meta"])
            return bytes(found) if found is not None else None

    def block(self, number: int) -> Block | None:
        if self._last is not None and number == self._last.number:
            return self._last
        with self.env.begin() as txn:
            raw = txn.get(u64(number), db=self.db["blocks"])
            return Block.decode(number, raw) if raw is not None else None

    def by_hash(self, block_hash: bytes) -> int | None:
        with self.env.begin() as txn:
            raw = txn.get(block_hash, db=self.db["by_hash"])
            return int.from_bytes(raw, "big") if raw is not None else None

    def where(self, message_id: bytes) -> tuple[int, int] | None:
        """(block number, position among its handled messages) of a handled message."""
        with self.env.begin() as txn:
            raw = txn.get(message_id, db=self.db["handled_in"])
            if raw is None:
                return None
            return int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")

    def logs(self, first: int, last: int, addresses: set[bytes] | None = None) -> Iterator[Log]:
        """The logs of blocks ``first``..``last`` in order (of ``addresses`` only, if given: read
        through the address keys, so other contracts' logs are not even looked at)."""
        with self.env.begin() as txn:
            if addresses is None:
                keys: Sequence[bytes] | Iterator[bytes] = self._range(txn, "logs", b"", first, last)
            else:
                wanted: list[bytes] = []
                for emitter in sorted(addresses):
                    wanted += [key[20:] for key in self._range(txn, "log_addr", emitter, first, last)]
                keys = sorted(wanted)
            for key in keys:
                raw = txn.get(key, db=self.db["logs"])
                message_id, position, emitter, topics, data = msgpack.unpackb(raw)
                yield Log(int.from_bytes(key[:8], "big"), int.from_bytes(key[8:], "big"), bytes(message_id),
                          position, bytes(emitter), tuple(int.from_bytes(t, "big") for t in topics), bytes(data))

    def _range(self, txn: lmdb.Transaction, table: str, prefix: bytes, first: int, last: int) -> Iterator[bytes]:
        cursor = txn.cursor(db=self.db[table])
        if not cursor.set_range(prefix + u64(first)):
            return
        for key in cursor.iternext(keys=True, values=False):
            key = bytes(key)
            if not key.startswith(prefix) or int.from_bytes(key[len(prefix):len(prefix) + 8], "big") > last:
                return
            yield key

    def block_logs_before(self, number: int, position: int) -> int:
        """How many logs the messages before ``position`` in block ``number`` emitted (a log index base)."""
        count = 0
        for entry in self.logs(number, number):
            if entry.position >= position:
                break
            count += 1
        return count

    # -- what a cluster endpoint keeps (a node's store has these itself) ---------------------------

    def tx(self, tx_hash: bytes) -> bytes | None:
        with self.env.begin() as txn:
            found = txn.get(tx_hash, db=self.db["txs"])
            return bytes(found) if found is not None else None

    def record(self, message_id: bytes) -> tuple[bytes, bytes, bytes] | None:
        with self.env.begin() as txn:
            found = txn.get(message_id, db=self.db["records"])
        if found is None:
            return None
        canonical, public_key, signature = msgpack.unpackb(found)
        return bytes(canonical), bytes(public_key), bytes(signature)

    def receipt(self, message_id: bytes) -> Receipt | None:
        with self.env.begin() as txn:
            found = txn.get(message_id, db=self.db["receipts"])
            return Receipt.decode(bytes(found)) if found is not None else None

    def remember(self, tx_hash: bytes, message_id: bytes, record: list[bytes]) -> None:
        """An Ethereum transaction this endpoint admitted to a cluster: its hash, its message and the
        signed record (the cluster's nodes answer with the message's envelope only)."""
        with self._lock, self.env.begin(write=True) as txn:
            txn.put(tx_hash, message_id, db=self.db["txs"])
            txn.put(message_id, msgpack.packb(record), db=self.db["records"])
        self.env.sync(True)  # no ledger holds this: on disk before the hash answers

    # -- writing -----------------------------------------------------------------------------

    def append(self, blocks: list[NewBlock], cursors: dict[str, bytes], *, keep_receipts: bool = False) -> None:
        """Blocks after the head, and how far each source was read, in one transaction."""
        with self._lock, self.env.begin(write=True) as txn:
            last = self._last
            for new in blocks:
                number = last.number + 1 if last is not None else 0
                parent = last.hash if last is not None else bytes(32)
                ids = [message_id for message_id, _ in new.handled]
                block_hash = new.hash if new.hash is not None else keccak256(parent + b"".join(ids))
                timestamp = last.timestamp if last is not None else 0
                log_index = 0
                for position, (message_id, receipt) in enumerate(new.handled):
                    timestamp = max(timestamp, receipt.timestamp)
                    txn.put(message_id, u64(number) + u32(position), db=self.db["handled_in"])
                    if keep_receipts:
                        txn.put(message_id, receipt.encode(), db=self.db["receipts"])
                    for emitter, topics, data in receipt.logs:
                        key = u64(number) + u32(log_index)
                        txn.put(key, msgpack.packb([message_id, position, emitter,
                                                    [t.to_bytes(32, "big") for t in topics], data]),
                                db=self.db["logs"])
                        txn.put(emitter + key, b"", db=self.db["log_addr"])
                        log_index += 1
                for message_id, record in new.records.items():
                    if txn.get(message_id, db=self.db["records"]) is None:
                        txn.put(message_id, msgpack.packb(record), db=self.db["records"])
                block = Block(number, new.seq if new.hash is not None else number, block_hash, parent, timestamp, ids)
                txn.put(u64(number), block.encode(), db=self.db["blocks"])
                txn.put(block_hash, u64(number), db=self.db["by_hash"])
                last = block
            for name, value in cursors.items():
                txn.put(b"cursor:" + name.encode(), value, db=self.db["meta"])
            if last is not None:
                txn.put(b"head", u64(last.number + 1), db=self.db["meta"])
        self._last = last
        self.head = last.number if last is not None else -1

    def stats(self) -> dict[str, Any]:
        with self.env.begin() as txn:
            return {name: txn.stat(self.db[name])["entries"] for name in TABLES}
