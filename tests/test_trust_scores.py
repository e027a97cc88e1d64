"""Transitive trust, the verified set and the conspiracy-breaching score on small graphs."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from missive.consensus.direct_trust import full
from missive.consensus.scores import (
    attestation_graph,
    conspiracy_scores,
    is_strong,
    reverse,
    transitive_trust,
    verified_set,
    vertex_disjoint_paths,
)

K = 16
FULL = full(K)
HALF = 1 << (K - 1)  # only the latest attestation succeeded
WEAK = 0b0111_1111_1111_1111  # latest failed


def paths(out: dict[str, set[str]], sources: set[str], target: str) -> int:
    return vertex_disjoint_paths(out, reverse(out), sources, target)


def test_strong_needs_recent_and_mostly_successful() -> None:
    assert is_strong(FULL, K)
    assert not is_strong(WEAK, K)  # 15 of 16 succeeded but not the latest
    assert not is_strong(HALF, K)  # latest succeeded, too few in the window
    assert is_strong(0b1111_1111_1111_0000, K) and not is_strong(0b1111_1111_1110_0000, K)


def test_transitive_trust_known_answers() -> None:
    g = {"e": {"a": FULL, "b": HALF}, "a": {"c": HALF}, "b": {"c": FULL}, "c": {"d": FULL}}
    t = transitive_trust(g, "e", K)
    h = HALF / FULL
    assert t["e"] == 1.0 and t["a"] == 1.0 and t["b"] == pytest.approx(h)
    assert t["c"] == pytest.approx(h)  # both paths give 1/2-ish; the best product wins
    assert t["d"] == pytest.approx(h)
    assert "x" not in t
    # parallel colluding edges cannot raise trust: it is a max over paths, not a sum
    g2 = {**g, "x1": {"d": FULL}, "x2": {"d": FULL}, "b": {"c": FULL, "x1": HALF, "x2": HALF}}
    assert transitive_trust(g2, "e", K)["d"] == pytest.approx(h)


def test_transitive_trust_follows_the_seed_order() -> None:
    """A more recent success on an edge never lowers anyone's transitive trust."""
    older, newer = 0b0111_1111_1111_1111, 0b1000_0000_0000_0000
    assert newer > older
    t_old = transitive_trust({"e": {"a": older}, "a": {"b": FULL}}, "e", K)["b"]
    t_new = transitive_trust({"e": {"a": newer}, "a": {"b": FULL}}, "e", K)["b"]
    assert t_new > t_old


def test_disjoint_paths_known_answers() -> None:
    diamond = {"s": {"a", "b"}, "a": {"t", "b"}, "b": {"t"}}
    assert paths(diamond, {"s"}, "t") == 1  # one source starts one path
    assert paths(diamond, {"a", "b"}, "t") == 2
    assert paths(diamond, {"x"}, "t") == 0
    # a bottleneck vertex: three sources, all through m
    funnel = {"s1": {"m"}, "s2": {"m"}, "s3": {"m", "u"}, "m": {"t"}, "u": {"t"}}
    assert paths(funnel, {"s1", "s2", "s3"}, "t") == 2
    # needs a reroute: the first path found must be undone to reach 2
    reroute = {"s1": {"a"}, "s2": {"c"}, "a": {"b", "d"}, "c": {"b"}, "b": {"t"}, "d": {"t"}}
    assert paths(reroute, {"s1", "s2"}, "t") == 2
    # the target is never a source nor an intermediate
    assert paths({"t": {"a"}, "a": {"t"}}, {"t"}, "t") == 0
    assert paths(diamond, {"a", "b"}, "t") == vertex_disjoint_paths(diamond, reverse(diamond), {"a", "b"}, "t", limit=5)
    assert vertex_disjoint_paths(diamond, reverse(diamond), {"a", "b"}, "t", limit=1) == 1


def brute_min_cut(out: dict[int, set[int]], sources: set[int], target: int, nodes: list[int]) -> int:
    """Menger's other side: the fewest vertices (not the target) whose removal cuts all source-target paths."""
    others = [v for v in nodes if v != target]
    for size in range(len(others) + 1):
        for cut in itertools.combinations(others, size):
            removed = set(cut)
            seen = {s for s in sources if s not in removed and s != target}
            stack = list(seen)
            reached = False
            while stack:
                u = stack.pop()
                for v in out.get(u, ()):
                    if v == target:
                        reached = True
                    elif v not in removed and v not in seen:
                        seen.add(v)
                        stack.append(v)
            if not reached:
                return size
    raise AssertionError("unreachable")


@settings(max_examples=150, deadline=None)
@given(st.integers(3, 7).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1))), st.sets(st.integers(0, n - 1), min_size=1))))
def test_disjoint_paths_equal_min_vertex_cut(case: tuple[int, set[tuple[int, int]], set[int]]) -> None:
    n, edges, sources = case
    out: dict[int, set[int]] = {}
    for u, v in edges:
        if u != v:
            out.setdefault(u, set()).add(v)
    target = n - 1
    assert paths(out, sources, target) == brute_min_cut(out, sources, target, list(range(n)))  # type: ignore[arg-type]


def ring(n: int, near: int) -> dict[int, dict[int, int]]:
    return {i: {(i + d) % n: FULL for d in range(-near, near + 1) if d} for i in range(n)}


def test_colluding_clique_gets_no_score_from_its_own_vouching() -> None:
    """Honest ring of 12 (each attested by its 4 ring neighbours) plus a clique of 5 liars
    that vouch for each other; honest nodes attest liar 100 and see it fail."""
    g = ring(12, 2)
    liars = list(range(100, 105))
    for a in liars:
        g[a] = {b: FULL for b in liars if b != a}
    g[0][100] = WEAK  # honest attesters saw the liars cheat
    g[1][100] = WEAK
    g[2][101] = HALF  # and one lucky attestation, not strong enough
    cb = conspiracy_scores(g, 0, list(g), k=K)
    v = verified_set(g, 0, k=K)
    assert v == set(range(12))
    assert all(cb[i] == 4 for i in range(12))  # four independent ring attesters each
    assert all(cb[a] == 0 for a in liars)  # vouched only by unverified colluders


def test_lucky_liar_admitted_early_is_pruned_by_the_evidence() -> None:
    g = ring(12, 2)
    g[11][100] = FULL  # a lucky strong vouch from a seed (the evaluator vouches for 11)...
    g[100] = {101: FULL}
    g[101] = {100: FULL}
    for u in (5, 6, 7):
        g[u][100] = WEAK  # ...but three attesters verified later saw it fail
    assert 100 in verified_set(g, 0, k=K, max_passes=1)  # admitted before the evidence was verified
    assert 101 in verified_set(g, 0, k=K, max_passes=2) - verified_set(g, 0, k=K, max_passes=1)
    v = verified_set(g, 0, k=K)
    assert v == set(range(12))  # then pruned, and its colluder with it
    cb = conspiracy_scores(g, 0, [100, 101, 6], k=K)
    assert cb == {100: 1, 101: 0, 6: 4}


def test_attestation_graph_drops_unassigned_edges() -> None:
    g = attestation_graph([("a", [("b", FULL), ("z", FULL), ("a", FULL)])], allowed=lambda u, v: v != "z")
    assert g == {"a": {"b": FULL}}
