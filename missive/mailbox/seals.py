"""Ledger seals: a signed hash chain over the ledger, one link per write transaction.

Every write transaction of a :class:`~missive.mailbox.store.Store` that appends
ledger records ends by writing one **seal** in the ``seals`` table, keyed by the
ledger key (seq) of the last record it covers::

    h_0 = 32 zero bytes
    h_n = blake2b-256(h_{n-1} || record || record || ...,  person=b"missive-seal-v1")
          record = key (8 bytes) || len(value) (4 bytes, big-endian) || value
    seal_n = msgpack [h_n, Ed25519 signature of (SEAL_DOMAIN || last key || h_n)]

The records of seal n are exactly the ledger records whose keys lie after the
key of seal n-1, up to and including its own key, in key order.  The signing key
is the store's own (``ledger.key`` in the store directory, mode 0600, made with
the store; its public key is in the store's ``meta`` table under
``b"seal_key"``).  A cluster node's store is its node directory, so it has one
too (separate from ``node.key``, the node's network identity).

What a seal proves.  Replay (:func:`missive.actors.replay.replay`) recomputes
the chain as it reads the records and, at each seal, compares the hash before
it replays the records the seal covers.  The newest seal's signature vouches
for every hash under it, so replay verifies that one (and, only if it fails,
every seal in order, to name the first the key did not sign); with
``--check-signatures`` it verifies each seal's.  The store signs once per
*transaction* (group commit puts hundreds of messages in one), and replay
needs no Ed25519 verify per message.  Changing, adding, deleting or
reordering any sealed record, or forging, moving or deleting a seal, is
reported at the first seal it breaks, naming the record range.  (A damaged
signature on an older seal whose hash is right changes nothing the seals
protect; only ``--check-signatures`` reports it.)  The records
bind everything else replay reads: an ``accept`` record names a message id,
which is the keccak of the stored envelope (replay checks it); receipts are
re-executed and compared byte for byte.  The client signatures stored beside
each message are bound only by the seal's word that admission checked them:
``missive replay --check-signatures`` checks them again.

What it does not prove.  Someone who can read ``ledger.key`` can re-seal a
rewritten ledger: the key sits beside the LMDB file, so the seals stop
accidents and anyone without that key, and an auditor who holds the store's
public key from before (``missive replay --seal-key``) catches a swapped key.
Dropping the newest transactions together with their seals leaves a shorter
ledger whose chain is valid: compare the head replay prints (last seq and
hash) with one you noted earlier to catch that.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from missive.errors import MissiveError
from missive.identity import IdentityError, NodeIdentity, verify

#: The file in the store directory that holds the seal signing key (a NodeIdentity file, 0600).
KEY_FILE = "ledger.key"
#: The chain before any record.
GENESIS = bytes(32)
#: blake2b personalisation of the chain hash (at most 16 bytes).
PERSON = b"missive-seal-v1"
#: Prefix of every signed seal message, so the key's signatures mean nothing anywhere else.
SEAL_DOMAIN = b"missive ledger seal v1\x00"


class SealError(MissiveError):
    """The seal key cannot be loaded or does not match the store."""


#: a record's value length as it enters the chain
LENGTH = struct.Struct(">I").pack


def record_bytes(key: bytes, value: bytes) -> bytes:
    """One ledger record as it enters the chain: its key, the value's length, the value."""
    return key + LENGTH(len(value)) + value


def chain(previous: bytes, records: bytes) -> bytes:
    """The next link: ``records`` is the :func:`record_bytes` of one transaction's records, joined."""
    h = hashlib.blake2b(previous, digest_size=32, person=PERSON)
    h.update(records)
    return h.digest()


def seal_message(last_key: bytes, digest: bytes) -> bytes:
    """What the store key signs for the seal at ``last_key``."""
    return SEAL_DOMAIN + last_key + digest


def verify_seal(public_key: bytes, last_key: bytes, digest: bytes, signature: bytes) -> bool:
    return verify(public_key, seal_message(last_key, digest), signature)


def load_key(store_dir: Path, *, create: bool) -> NodeIdentity | None:
    """The store's seal key from ``store_dir/ledger.key``; made (0600) if ``create`` and missing."""
    path = store_dir / KEY_FILE
    try:
        if path.exists():
            return NodeIdentity.load(path)
        return NodeIdentity.load_or_generate(path) if create else None
    except (IdentityError, OSError) as err:
        raise SealError(f"cannot use the ledger seal key {path}: {err}") from None


__all__ = ["GENESIS", "KEY_FILE", "LENGTH", "SealError", "chain", "load_key", "record_bytes", "seal_message",
           "verify_seal"]
