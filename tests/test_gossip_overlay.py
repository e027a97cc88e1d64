"""The overlay: deterministic attestation assignment, harmonic long links, a small diameter."""

from __future__ import annotations

import random
from collections import Counter, deque

from hypothesis import given
from hypothesis import strategies as st

from missive.consensus.overlay import Overlay, harmonic_offset, inverse


def keys(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(32) for _ in range(n)]


def test_assignment_is_a_function_of_the_keys() -> None:
    ks = keys(200)
    a, b = Overlay(ks), Overlay(list(reversed(ks)))
    assert a.members == b.members
    assert all(a.attests(k) == b.attests(k) for k in ks)
    # ring neighbours are always assigned, the node itself never
    for i in range(len(a)):
        subjects = set(a.attests_index(i))
        assert i not in subjects
        assert {(i + d) % 200 for d in (1, 2, 3, 4, -1, -2, -3, -4)} <= subjects
        assert len(subjects) <= 12


@given(st.integers(2, 5000), st.floats(0, 0.999999))
def test_harmonic_offset_in_range(n: int, u: float) -> None:
    d = harmonic_offset(n, u)
    assert 1 <= d <= max(1, n // 2)


def test_long_links_spread_over_scales() -> None:
    o = Overlay(keys(4096))
    rng = random.Random(2)
    scales = Counter(o.harmonic_offset(rng.random()).bit_length() for _ in range(20000))
    # roughly equal mass per doubling of distance (Kleinberg): every scale is used
    assert set(scales) >= set(range(1, 12))
    assert max(scales.values()) < 3 * min(scales[s] for s in range(2, 11))


def test_small_diameter() -> None:
    n = 2048
    o = Overlay(keys(n))
    out = o.assigned()
    inn = inverse(out)
    assert sum(len(v) for v in inn.values()) == sum(len(v) for v in out.values())

    def eccentricity(src: int) -> int:
        dist = {src: 0}
        q = deque([src])
        while q:
            u = q.popleft()
            for v in out[u]:
                if v not in dist:
                    dist[v] = dist[u] + 1
                    q.append(v)
        assert len(dist) == n
        return max(dist.values())

    # a ring with +-4 neighbours alone needs n/8 = 256 hops; the long links bring it to a handful
    assert max(eccentricity(s) for s in (0, 500, 1500)) <= 12


def test_peer_choice_is_mostly_near() -> None:
    o = Overlay(keys(1024))
    rng = random.Random(3)
    picks = [o.choose_peer_index(100, rng) for _ in range(4000)]
    near = sum(1 for p in picks if min((p - 100) % 1024, (100 - p) % 1024) <= 4)
    assert 0.7 < near / len(picks) < 0.9
    assert 100 not in picks
