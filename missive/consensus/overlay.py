"""The overlay: who attests whom and whom a node gossips with — a small world.

Nodes sit on a ring ordered by the top 64 bits of their public key.  Each node
attests its ``near`` successors and predecessors on the ring plus ``far`` long
links, and gossips mostly with ring neighbours and sometimes across a long
link.  Long links follow Kleinberg's harmonic rule: the ring distance is
N**u for u uniform in [0, 1), so links at every scale are equally likely per
doubling of distance.  Ring neighbours give locality (the "closely related"
nodes targeted gossip serves); harmonic long links give the O(log N)-ish
diameter that makes gossip converge in a handful of rounds (Watts–Strogatz,
Kleinberg).

The attestation assignment is a deterministic function of the membership and
the keys, so any node can check that an attestation edge is one the overlay
assigned.  Edges outside the assignment are ignored by the scores
(:mod:`scores`): colluders cannot vouch for whom they like, only for the
neighbours the hash of their key gave them.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence

import attrs


def _unit(*parts: bytes) -> float:
    """A deterministic number in [0, 1) from a hash of ``parts``."""
    return int.from_bytes(hashlib.blake2b(b"".join(parts), digest_size=8).digest(), "big") / 2.0**64


def harmonic_offset(n: int, u: float) -> int:
    """A ring distance in [1, n/2] from u in [0, 1), with P(d) ∝ 1/d (Kleinberg's small-world rule)."""
    half = max(1, n // 2)
    return max(1, min(half, int(half**u)))


def ring_order(members: Iterable[bytes]) -> tuple[bytes, ...]:
    """Members in ring order: by the top 64 bits of the key (then the key, for ties)."""
    return tuple(sorted(set(members), key=lambda m: (m[:8], m)))


@attrs.frozen
class Overlay:
    """The ring of ``members`` (public keys) and its attestation assignment."""

    members: tuple[bytes, ...] = attrs.field(converter=ring_order)
    near: int = 4
    far: int = 4
    index: dict[bytes, int] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "index", {m: i for i, m in enumerate(self.members)})

    def __len__(self) -> int:
        return len(self.members)

    def harmonic_offset(self, u: float) -> int:
        return harmonic_offset(len(self.members), u)

    def attests_index(self, i: int) -> tuple[int, ...]:
        """Indices of the subjects node ``i`` attests: ring neighbours plus long links."""
        n = len(self.members)
        out: dict[int, None] = {}
        for d in range(1, self.near + 1):
            out[(i + d) % n] = None
            out[(i - d) % n] = None
        key = self.members[i]
        for j in range(self.far):
            u = _unit(key, j.to_bytes(2, "big"))
            sign = 1 if _unit(key, b"s", j.to_bytes(2, "big")) < 0.5 else -1
            out[(i + sign * self.harmonic_offset(u)) % n] = None
        out.pop(i, None)
        return tuple(out)

    def attests(self, member: bytes) -> tuple[bytes, ...]:
        return tuple(self.members[j] for j in self.attests_index(self.index[member]))

    def assigned(self) -> dict[int, tuple[int, ...]]:
        """The whole assignment by index (attester -> subjects)."""
        return {i: self.attests_index(i) for i in range(len(self.members))}

    def choose_peer_index(self, i: int, rng: random.Random, p_far: float = 0.25) -> int:
        """A gossip partner: a ring neighbour, or with probability ``p_far`` a harmonic long link."""
        n = len(self.members)
        if n < 2:
            return i
        if rng.random() < p_far:
            d = self.harmonic_offset(rng.random())
        else:
            d = rng.randint(1, max(1, min(self.near, n // 2)))
        return (i + d if rng.random() < 0.5 else i - d) % n


def inverse(assignment: Mapping[int, Sequence[int]]) -> dict[int, tuple[int, ...]]:
    """subject -> attesters, from attester -> subjects."""
    out: dict[int, list[int]] = {}
    for a, subjects in assignment.items():
        for s in subjects:
            out.setdefault(s, []).append(a)
    return {s: tuple(v) for s, v in out.items()}
