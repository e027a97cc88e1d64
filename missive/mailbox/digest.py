"""A commitment to an actor's whole state, kept up to date one storage write at a time.

Why: a replica that re-executes an executor's state diff and gets another
result must be able to *prove* it to nodes that hold no copy of the actor
(SPEC §6, execution trust).  The proof carries the state the diff started
from; the executor signed a commitment to that state (the diff's ``before``),
so nobody can frame it with a made-up pre-state.  The commitment must be
cheap to keep as storage changes: recomputing a hash over every slot of a
busy token for every diff is out of the question.

The storage part is a multiset hash (AdHash, Bellare–Micciancio): the sum,
modulo 2^2048, of one 2048-bit term per non-zero slot, each term a
SHAKE-256 output over the slot and its value.  Writing a slot subtracts the
old term and adds the new one, so it costs two hashes whatever the size of
the storage, and the sum does not depend on the order slots were written in.
The width is what makes it safe: with a 256-bit modulus, Wagner's
generalised birthday attack finds a different set of slots with the same sum
cheaply; 2048 bits puts that out of reach.  The actor's account (balance,
nonce, code hash, mailbox position, clock, state root) is hashed in with it:
:func:`state_digest`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from missive.vm.keccak import keccak256

#: Bytes per term and per sum (2048 bits).
SUM_BYTES = 256
_MODULUS = 1 << (8 * SUM_BYTES)
_SLOT_DOMAIN = b"missive/slot\x00"
_STATE_DOMAIN = b"missive/state\x00"


def slot_term(slot: int, value: int) -> int:
    """The term slot ``slot`` holding ``value`` adds to the sum (a zero slot adds nothing)."""
    if not value:
        return 0
    data = _SLOT_DOMAIN + slot.to_bytes(32, "big") + value.to_bytes(32, "big")
    return int.from_bytes(hashlib.shake_256(data).digest(SUM_BYTES), "big")


def storage_sum(slots: Iterable[tuple[int, int]]) -> int:
    """The sum over a whole storage, computed from scratch (to check, or to start a sum)."""
    total = 0
    for slot, value in slots:
        total += slot_term(slot, value)
    return total % _MODULUS


def rewrite(total: int, slot: int, old: int, new: int) -> int:
    """The sum after slot ``slot`` changes from ``old`` to ``new``."""
    if old == new:
        return total
    return (total - slot_term(slot, old) + slot_term(slot, new)) % _MODULUS


def sum_bytes(total: int) -> bytes:
    return total.to_bytes(SUM_BYTES, "big")


def sum_from_bytes(raw: bytes | None) -> int:
    return int.from_bytes(raw, "big") if raw else 0


def state_digest(account: bytes, total: int) -> bytes:
    """The commitment to an actor's state: its encoded account (b"" before it exists) and storage sum."""
    return keccak256(_STATE_DOMAIN + len(account).to_bytes(4, "big") + account + sum_bytes(total))


__all__ = ["SUM_BYTES", "rewrite", "slot_term", "state_digest", "storage_sum", "sum_bytes", "sum_from_bytes"]
