"""Transactions that wait for their nonce: the endpoint's small queue, as geth's and anvil's pools hold them.

Off by default: issue 28 counts a future nonce among the bad requests that get an error and change
nothing, so a plain ``missive rpc`` refuses one (``nonce too high``).  ``missive rpc --nonce-queue N``
turns the queue on for wallets that send ahead (geth keeps up to 64 ahead; so does ``N = 64``).

A wallet may send a sender's transactions out of order (nonce 5 reaches the endpoint before
nonce 4), or several at once without waiting.  Missive admits a message only with its sender's
next nonce; a transaction whose nonce is *ahead* of that waits here instead of being refused,
and is admitted as soon as the nonces before it are (each admission of the sender's
transactions looks here for the next one).

The queue is bounded and says so when full (JSON-RPC -32000 with geth's words):

- at most :data:`MAX_PER_SENDER` transactions a sender (``txpool is full``), each at most
  :data:`MAX_AHEAD` nonces ahead of the sender's next one (further ahead: ``nonce too high``);
- at most :data:`MAX_QUEUED` transactions in all (``txpool is full``).

What differs from geth: the queue is this endpoint's memory only (a restart forgets it, and
another endpoint of the same cluster has its own); a queued transaction is checked (signature,
chain id, gas, fee, funds as they stand) when it arrives and again, like any transaction, when it
is admitted; if it is refused then (the sender's funds went elsewhere meanwhile), it is dropped,
and logged.  A transaction with the same nonce as a queued one replaces it only with a higher fee
(``replacement transaction underpriced`` otherwise), as in geth.
"""

from __future__ import annotations

import attrs

from missive.errors import MissiveError
from missive.mailbox.ethtx import EthTransaction

MAX_PER_SENDER = 16
MAX_AHEAD = 64  # geth's limit, and the usual choice for --nonce-queue
MAX_QUEUED = 1024


class PoolFull(MissiveError):
    """The queue has no room for the transaction (the text says which limit)."""


@attrs.define
class Pool:
    """Queued transactions: sender -> nonce -> (transaction, raw bytes)."""

    #: how many nonces ahead of a sender's next one a transaction may wait (0: none may)
    max_ahead: int = 0
    by_sender: dict[bytes, dict[int, tuple[EthTransaction, bytes]]] = attrs.field(factory=dict)
    by_hash: dict[bytes, tuple[EthTransaction, bytes]] = attrs.field(factory=dict)

    def __len__(self) -> int:
        return len(self.by_hash)

    def queue(self, tx: EthTransaction, raw: bytes, next_nonce: int) -> None:
        """Keep ``tx`` until ``next_nonce`` reaches its nonce (which is ahead of it)."""
        if not self.max_ahead:
            raise PoolFull(f"nonce too high: nonce {tx.nonce} is ahead of 0x{tx.sender.hex()}'s next one "
                           f"({next_nonce}); send that one first (`missive rpc --nonce-queue N` lets "
                           "transactions up to N ahead wait)")
        if tx.nonce - next_nonce > self.max_ahead:
            raise PoolFull(f"nonce too high: nonce {tx.nonce} is more than {self.max_ahead} ahead of "
                           f"0x{tx.sender.hex()}'s next one ({next_nonce}); transactions further ahead are refused")
        mine = self.by_sender.setdefault(tx.sender, {})
        old = mine.get(tx.nonce)
        if old is not None:
            if tx.gas_price <= old[0].gas_price:
                raise PoolFull(f"replacement transaction underpriced: nonce {tx.nonce} of 0x{tx.sender.hex()} "
                               f"waits already with a fee of {old[0].gas_price} a gas; a replacement must offer more")
            del self.by_hash[old[0].hash]
        elif len(mine) >= MAX_PER_SENDER:
            raise PoolFull(f"txpool is full: 0x{tx.sender.hex()} has {MAX_PER_SENDER} transactions waiting for "
                           "earlier nonces; send the missing nonces first")
        elif len(self.by_hash) >= MAX_QUEUED:
            raise PoolFull(f"txpool is full: {MAX_QUEUED} transactions wait for earlier nonces; try again later")
        mine[tx.nonce] = (tx, raw)
        self.by_hash[tx.hash] = (tx, raw)

    def take(self, sender: bytes, nonce: int) -> tuple[EthTransaction, bytes] | None:
        """The queued transaction of ``sender`` with ``nonce`` (removed), if any; and the ones
        below it, which can never be admitted now, dropped."""
        mine = self.by_sender.get(sender)
        if not mine:
            return None
        for stale in [n for n in mine if n < nonce]:
            self.by_hash.pop(mine.pop(stale)[0].hash, None)
        found = mine.pop(nonce, None)
        if found is not None:
            self.by_hash.pop(found[0].hash, None)
        if not mine:
            del self.by_sender[sender]
        return found

    def waiting(self, sender: bytes) -> int:
        return len(self.by_sender.get(sender, ()))
