"""Kernels: a node's direct trust plus what it learned, as signed, versioned statements.

An attester publishes its direct-trust table as a :class:`Statement`: the
entries (attester, subject, trust bitmap, step, version) for all the subjects it
attests, signed once with its Ed25519 key.  One signature per attester and
version, rather than one per entry, because a node attests its ~16 neighbours
at the same steps, and Ed25519 verification is the dominant CPU cost of
gossip; the entries stay individually addressable (:meth:`Statement.entries`,
:meth:`Kernel.entry`).  A statement is a snapshot, so the highest version per
attester is also the highest version of each (attester, subject) entry, and an
attester can retire a subject by leaving it out.

Merging keeps, per attester, the statement with the greatest (version,
digest).  The digest only breaks ties between two *different* statements an
attester signed with the same version (equivocation); that pair is kept as
evidence.  Taking a maximum under a total order makes merging idempotent,
commutative and associative, so kernels converge whatever order gossip
delivers statements in.  A statement whose signature does not verify under
the attester key it names is rejected: nobody can forge or alter another
node's view.

For reconciliation a kernel keeps XOR digests of its statements in a binary
tree of buckets (an attester's bucket is the top bits of its key), so two
kernels can find the buckets where they differ by comparing a few bytes per
bucket, maintained incrementally in O(levels) per change.
"""

from __future__ import annotations

import bisect
import hashlib
import sys
from array import array
from collections.abc import Iterable, Iterator

import attrs
import msgpack
import nacl.exceptions
import nacl.signing

from missive.consensus.direct_trust import DEFAULT_K
from missive.identity import verify

DOMAIN = "missive/trust/statement/v1"
#: Finest bucket level: 2**MAX_LEVEL buckets.
MAX_LEVEL = 11
_LITTLE = sys.byteorder == "little"


def _slot(attester: bytes) -> int:
    return int.from_bytes(attester[:8], "big")


def _signed_bytes(attester: bytes, step: int, version: int, k: int, trusts: tuple[tuple[bytes, int], ...]) -> bytes:
    body: bytes = msgpack.packb([DOMAIN, attester, step, version, k, [list(t) for t in trusts]])
    return body


@attrs.frozen(cache_hash=True)
class Entry:
    """One direct-trust entry: ``attester`` trusts ``subject`` with the k-bit ``trust`` at ``step``."""

    attester: bytes
    subject: bytes
    trust: int
    step: int
    version: int


@attrs.frozen(cache_hash=True)
class Statement:
    """An attester's signed direct-trust table at one version (see the module docstring).

    ``trusts`` is sorted by subject and holds each subject once.  ``wire`` (the
    msgpack bytes that travel), ``digest`` (64 bits of BLAKE2b over them) and
    ``slot`` (the attester's position in the digest tree) are derived once.
    """

    attester: bytes
    step: int
    version: int
    k: int
    trusts: tuple[tuple[bytes, int], ...]
    signature: bytes = attrs.field(repr=False)
    wire: bytes = attrs.field(init=False, eq=False, repr=False)
    digest: int = attrs.field(init=False, eq=False, repr=False)
    slot: int = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        wire = msgpack.packb([self.attester, self.step, self.version, self.k, [list(t) for t in self.trusts], self.signature])
        object.__setattr__(self, "wire", wire)
        object.__setattr__(self, "digest", int.from_bytes(hashlib.blake2b(wire, digest_size=8).digest(), "big"))
        object.__setattr__(self, "slot", _slot(self.attester))

    @classmethod
    def from_wire(cls, wire: bytes) -> Statement:
        """Parse a statement's wire bytes (the signature is checked on merge, not here)."""
        try:
            attester, step, version, k, trusts, signature = msgpack.unpackb(wire)
            made = cls(bytes(attester), int(step), int(version), int(k), tuple((bytes(s), int(v)) for s, v in trusts), bytes(signature))
        except (ValueError, TypeError, msgpack.UnpackException) as e:
            raise ValueError(f"malformed statement: {e}") from e
        if len(made.attester) != 32 or len(made.signature) != 64:
            raise ValueError("malformed statement: key or signature length")
        return made

    def signed_bytes(self) -> bytes:
        return _signed_bytes(self.attester, self.step, self.version, self.k, self.trusts)

    def verify(self) -> bool:
        """True if the signature is the named attester's over this exact content."""
        return verify(self.attester, self.signed_bytes(), self.signature)

    def entries(self) -> tuple[Entry, ...]:
        return tuple(Entry(self.attester, s, v, self.step, self.version) for s, v in self.trusts)

    def rank(self) -> tuple[int, int]:
        """The merge order: newer version wins; the digest breaks equivocation ties."""
        return (self.version, self.digest)


@attrs.frozen
class Attester:
    """A signing identity that issues statements (wraps an Ed25519 seed)."""

    seed: bytes = attrs.field(repr=False)
    public_key: bytes = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "public_key", bytes(nacl.signing.SigningKey(self.seed).verify_key))

    @classmethod
    def generate(cls) -> Attester:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    def statement(self, step: int, version: int, trusts: dict[bytes, int], k: int = DEFAULT_K) -> Statement:
        items = tuple(sorted(trusts.items()))
        body = _signed_bytes(self.public_key, step, version, k, items)
        signature = nacl.signing.SigningKey(self.seed).sign(body).signature
        return Statement(self.public_key, step, version, k, items, signature)


class Verifier:
    """Checks statement signatures, remembering the ones already verified.

    A node sees the same statement from many peers; verifying it once is
    enough because the cache is keyed by the exact wire bytes (any change in
    content or signature is a different key).  The simulator shares one
    verifier among its nodes to save CPU; that changes no outcome.
    """

    def __init__(self) -> None:
        self._good: set[bytes] = set()
        self.checked = 0

    def ok(self, statement: Statement) -> bool:
        if statement.wire in self._good:
            return True
        self.checked += 1
        if statement.verify():
            self._good.add(statement.wire)
            return True
        return False


class Kernel:
    """A node's kernel: the newest verified statement of every attester it knows.

    Mutable (it is a node's state), but every operation is a deterministic
    function of the set of statements merged so far.
    """

    def __init__(self, verifier: Verifier | None = None, max_level: int = MAX_LEVEL) -> None:
        self.verifier = verifier if verifier is not None else Verifier()
        self.max_level = max_level
        self.rows: dict[int, Statement] = {}
        self._slots: list[int] = []
        self._shift = 64 - max_level
        self._finest = array("Q", bytes(8 << max_level))
        self._levels: dict[int, array[int]] = {}
        self.entry_count = 0
        self.rejected = 0
        self.equivocations: list[tuple[Statement, Statement]] = []

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Statement]:
        return iter(self.rows.values())

    def get(self, attester: bytes) -> Statement | None:
        row = self.rows.get(_slot(attester))
        return row if row is not None and row.attester == attester else None

    def entry(self, attester: bytes, subject: bytes) -> Entry | None:
        row = self.get(attester)
        if row is None:
            return None
        for s, v in row.trusts:
            if s == subject:
                return Entry(attester, s, v, row.step, row.version)
        return None

    def entries(self) -> Iterator[Entry]:
        for row in self.rows.values():
            yield from row.entries()

    def snapshot(self) -> dict[bytes, Statement]:
        """The kernel as a plain value: attester -> statement."""
        return {row.attester: row for row in self.rows.values()}

    def add(self, statement: Statement) -> bool:
        """Merge one statement; True if it changed the kernel."""
        slot = statement.slot
        current = self.rows.get(slot)
        if current is not None:
            if current is statement:
                return False
            if current.attester != statement.attester:
                self.rejected += 1  # a 64-bit slot collision with another key: refuse the newcomer
                return False
            if statement.version < current.version or (statement.version == current.version and statement.digest <= current.digest):
                if statement.version == current.version and statement.digest != current.digest:
                    self._equivocation(current, statement)
                return False
        if not self.verifier.ok(statement):
            self.rejected += 1
            return False
        self.rows[slot] = statement
        if current is None:
            bisect.insort(self._slots, slot)
            self._finest[slot >> self._shift] ^= statement.digest
            self.entry_count += len(statement.trusts)
        else:
            if statement.version == current.version:
                self._equivocation(current, statement)
            self._finest[slot >> self._shift] ^= statement.digest ^ current.digest
            self.entry_count += len(statement.trusts) - len(current.trusts)
        self._levels.clear()
        return True

    def _equivocation(self, a: Statement, b: Statement) -> None:
        if a.verify() and b.verify():
            self.equivocations.append((a, b) if a.digest < b.digest else (b, a))

    def merge(self, statements: Iterable[Statement]) -> list[Statement]:
        """Merge many statements; returns those that changed the kernel."""
        return [s for s in statements if self.add(s)]

    # -- reconciliation ---------------------------------------------------------------

    def digests(self, level: int) -> array[int]:
        """The 2**level bucket digests (XOR of statement digests) at ``level``.

        Only the finest level is kept up to date on every change; a coarser
        level is folded from it on demand (bucket b at level l covers buckets 2b
        and 2b+1 at level l+1) and cached until the kernel changes.
        """
        if not 0 <= level <= self.max_level:
            raise ValueError(f"no digest level {level}")
        if level == self.max_level:
            return self._finest
        cached = self._levels.get(level)
        if cached is None:
            finer = self.digests(level + 1)
            width = 8 << level
            even = int.from_bytes(finer[0::2].tobytes(), "little")
            odd = int.from_bytes(finer[1::2].tobytes(), "little")
            cached = array("Q")
            cached.frombytes((even ^ odd).to_bytes(width, "little"))
            self._levels[level] = cached
        return cached

    def in_buckets(self, level: int, buckets: Iterable[int]) -> Iterator[Statement]:
        """The statements whose attester falls in the given buckets at ``level``."""
        shift = 64 - level
        for b in buckets:
            lo = bisect.bisect_left(self._slots, b << shift) if level else 0
            hi = bisect.bisect_left(self._slots, (b + 1) << shift) if level else len(self._slots)
            for slot in self._slots[lo:hi]:
                yield self.rows[slot]

    def version_vector(self) -> dict[bytes, int]:
        """Attester -> newest version held."""
        return {row.attester: row.version for row in self.rows.values()}


def digests_to_bytes(digests: array[int]) -> bytes:
    """Bucket digests as little-endian 8-byte words (the wire form)."""
    if not _LITTLE:
        digests = array("Q", digests)
        digests.byteswap()
    return digests.tobytes()


def digests_from_bytes(data: bytes) -> array[int]:
    if len(data) % 8:
        raise ValueError("digest bytes not a multiple of 8")
    out = array("Q")
    out.frombytes(data)
    if not _LITTLE:
        out.byteswap()
    return out
