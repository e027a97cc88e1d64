"""Blocks for Ethereum tools: every ledger seal is a block.

A seal closes one write transaction of the store (:mod:`missive.mailbox.seals`): block ``n`` is the
``n``-th seal (0-based), its hash the seal's chain hash, its parent the seal before.  A message is
*in* the block whose seal covers its receipt record (it was handled there); the block's
``transactions`` are the external messages handled in it, and its time the latest
``block.timestamp`` among their receipts (else its parent's).

The index is built from the ledger when the endpoint starts and extended, one look at the seals
table per request, as new seals appear: it is derived data, held in this process's memory, and
never written.  Logs are read from the receipts of a block's messages when asked for.
"""

from __future__ import annotations

import threading

import attrs
import msgpack

from missive.mailbox.store import Store, u64


@attrs.define
class Block:
    number: int
    seq: int  # the ledger key of the last record the seal covers
    hash: bytes
    parent: bytes
    timestamp: int
    #: messages handled in this block (receipt records), in ledger order; external ones marked
    handled: list[bytes] = attrs.field(factory=list)
    accepted: list[bytes] = attrs.field(factory=list)


class Index:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.blocks: list[Block] = []
        self.by_hash: dict[bytes, int] = {}
        #: message id -> (block number, position among the block's handled messages)
        self.handled_in: dict[bytes, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> None:
        """Take in the seals written since the last look."""
        with self._lock, self.store.read() as txn:
            after = u64(self.blocks[-1].seq) if self.blocks else None
            seals = self.store.scan("seals", b"", txn=txn, after=after)
            if not seals:
                return
            start = self.blocks[-1].seq + 1 if self.blocks else 0
            cursor = txn.cursor(db=self.store.db["ledger"])
            records: list[tuple[int, list[object]]] = []
            last = int.from_bytes(seals[-1][0], "big")
            if cursor.set_range(u64(start)):
                for key, value in cursor:
                    seq = int.from_bytes(key, "big")
                    if seq > last:
                        break
                    records.append((seq, msgpack.unpackb(value)))
            position = 0
            for key, value in seals:
                seq = int.from_bytes(key, "big")
                chain_hash = bytes(msgpack.unpackb(value)[0])
                parent = self.blocks[-1] if self.blocks else None
                block = Block(len(self.blocks), seq, chain_hash, parent.hash if parent else bytes(32),
                              parent.timestamp if parent else 0)
                while position < len(records) and records[position][0] <= seq:
                    record = records[position][1]
                    position += 1
                    if record[0] == "receipt":
                        message_id = bytes(record[1])  # type: ignore[call-overload]
                        self.handled_in[message_id] = (block.number, len(block.handled))
                        block.handled.append(message_id)
                        receipt = self.store.receipt(message_id, txn)
                        if receipt is not None and receipt.timestamp > block.timestamp:
                            block.timestamp = receipt.timestamp
                    elif record[0] == "accept":
                        block.accepted.append(bytes(record[1]))  # type: ignore[call-overload]
                self.blocks.append(block)
                self.by_hash[chain_hash] = block.number

    @property
    def head(self) -> int:
        return len(self.blocks) - 1
