"""The ledger's records, a sealed transaction at a time, each checked against its seal first.

The store seals every write transaction that appends ledger records
(:mod:`missive.mailbox.seals`): a hash chain over the records, signed by the
store's key.  :class:`SealedRecords` is the reading side, for replay
(:mod:`missive.actors.replay`): it hands out records only once the seal over
them has been recomputed and compared, so a changed, added, deleted or
reordered record is reported at the first broken seal, before anything in it
is re-executed.  Records come decoded by :func:`~missive.mailbox.ledger_records.decode_lean`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack

from missive.errors import MissiveError
from missive.mailbox.ledger_records import MessageRef, Record, decode_lean
from missive.mailbox.seals import GENESIS, LENGTH, chain, verify_seal


def _seq(key: bytes) -> int:
    """A ledger record's sequence number: its key, big-endian."""
    return int.from_bytes(key, "big")


class Unsealed(MissiveError):
    """The ledger records from ``first`` to ``last`` do not match their seal."""

    def __init__(self, first: int, last: int, *what: str) -> None:
        super().__init__(first, last, what)
        self.first, self.last, self.what = first, last, what


def signed_by(public_key: bytes | None, key: bytes, raw_seal: bytes) -> bool:
    """Whether the seal ``raw_seal`` at ledger key ``key`` is signed by ``public_key``."""
    try:
        digest, signature = msgpack.unpackb(raw_seal)
        return public_key is not None and verify_seal(public_key, key, bytes(digest), bytes(signature))
    except (ValueError, TypeError):
        return False


class SealedRecords:
    """The ledger's records, a sealed transaction at a time, each checked against its seal first.

    Iterating yields (key, decoded record) in ledger order, but only records
    whose seal has been checked: a transaction's records are read ahead to its
    seal (the next key in the ``seals`` table), the chain recomputed over
    them and compared with the seal's hash; then they are yielded.  A mismatch
    raises :class:`Unsealed` naming the range.

    Signatures.  The newest seal's signature vouches for the whole chain under
    it, since every earlier seal's hash is recomputed from the records and
    compared: so only that one is verified, before anything is replayed (one
    Ed25519 verify, not one per transaction, which would cost about as much
    as re-running a transfer each).  If it fails, every seal is verified in
    order to find the first one the store key did not sign, and the walk
    reports that one at its place.  ``every_signature`` verifies each seal as
    it is reached instead (``--check-signatures``).  A replay that stops early
    calls :meth:`stop`, which verifies the last seal it reached.  ``head`` is
    the last seal checked.
    """

    def __init__(self, txn: Any, ledger_db: Any, seals_db: Any, public_key: bytes | None,
                 every_signature: bool = False) -> None:
        self.txn, self.ledger_db, self.seals_db, self.public_key = txn, ledger_db, seals_db, public_key
        self.every_signature = every_signature
        self.head: tuple[int, bytes] | None = None
        self._last_seal: tuple[bytes, bytes] | None = None  # (key, raw) of the last seal checked
        #: the first seal whose signature fails (None: the newest one verifies, so all are vouched for)
        self.unsigned: bytes | None = None
        if not every_signature:
            cursor = txn.cursor(db=seals_db)
            if cursor.last() and not signed_by(public_key, cursor.key(), cursor.value()):
                self.unsigned = next(k for k, v in txn.cursor(db=seals_db) if not signed_by(public_key, k, v))

    def _unsigned(self, first: int, last: int) -> Unsealed:
        whose = f"0x{self.public_key.hex()}" if self.public_key else "(none recorded)"
        return Unsealed(first, last, f"the seal at {last} is not signed by the store's seal key {whose}")

    def stop(self) -> Unsealed | None:
        """Stopping before the newest seal: verify the last one reached (it vouches for the rest)."""
        if self._last_seal is None or self.every_signature:
            return None
        key, raw = self._last_seal
        return None if signed_by(self.public_key, key, raw) else self._unsigned(_seq(key), _seq(key))

    def __iter__(self) -> Iterator[tuple[bytes, MessageRef | Record]]:
        public_key, unsigned, every_signature = self.public_key, self.unsigned, self.every_signature
        seals = iter(self.txn.cursor(db=self.seals_db))
        seal = next(seals, None)
        previous = GENESIS
        batch: list[tuple[bytes, bytes]] = []
        unpackb = msgpack.unpackb
        record = decode_lean
        for key, value in self.txn.cursor(db=self.ledger_db):
            if seal is None:
                batch.append((key, value))
                continue
            seal_key = seal[0]
            if seal_key < key:  # a seal whose last record is not there
                first = _seq(batch[0][0]) if batch else _seq(seal_key)
                raise Unsealed(first, _seq(seal_key), f"the seal at {_seq(seal_key)} covers ledger record "
                                f"{_seq(seal_key)}, which is missing (records deleted, or a seal moved or added)")
            batch.append((key, value))
            if seal_key != key:
                continue
            first, last = _seq(batch[0][0]), _seq(key)
            got = chain(previous, b"".join([k + LENGTH(len(v)) + v for k, v in batch]))
            try:
                expected, _signature = unpackb(seal[1])
                expected = bytes(expected)
            except (ValueError, TypeError) as err:
                raise Unsealed(first, last, f"the seal at {last} is unreadable: {err}") from None
            if got != expected:
                raise Unsealed(first, last, f"chain hash: expected 0x{expected.hex()} (sealed), got 0x{got.hex()} "
                                "(records changed, added, deleted or reordered, or a seal missing or changed)")
            if key == unsigned or (every_signature and not signed_by(public_key, key, seal[1])):
                raise self._unsigned(first, last)
            previous = expected
            self.head = (last, expected)
            self._last_seal = seal
            for k, v in batch:
                yield k, record(v)
            batch = []
            seal = next(seals, None)
        if batch:
            raise Unsealed(_seq(batch[0][0]), _seq(batch[-1][0]), "these records have no seal (appended after the "
                            "last seal, or the seal deleted)")
        if seal is not None:
            last = _seq(seal[0])
            raise Unsealed(last, last, f"the seal at {last} covers ledger record {last}, which is missing "
                            "(records deleted at the end of the ledger)")


__all__ = ["SealedRecords", "Unsealed", "signed_by"]
