"""Transitive trust and the conspiracy-breaching score, from a kernel's attestation graph.

The seed gives direct trust and says transitive trust is "a path of
connections" and that a "conspiracy breaching" model shows "how intense a
target node is attested", without formulas.  Missive defines (docs/trust.md
argues the choices):

* **Attestation graph.**  Edge u -> v with the k-bit value D_uv for every entry
  in the kernel, kept only if the overlay assigned v to u (``allowed``), so
  colluders cannot vouch for arbitrary friends.  An edge is *strong* (u vouches
  for v) when u's latest attestation of v succeeded and at least ``ratio`` of
  the last k did.
* **Transitive trust** T(e -> v): the maximum over paths from e to v of the
  product of normalised direct trusts D/(2^k-1).  It is monotone in the seed's
  order (a more recent success never lowers it), decays with path length, and
  parallel edges added by colluders cannot raise it (a max, not a sum).
  Computed with Dijkstra (products of numbers in [0, 1] only shrink).
* **Verified set** V(e): grown from e and the nodes e vouches for by admitting
  any node with at least ``m`` strong in-edges from nodes already in V.  A node
  vouched for only by unverified nodes (a colluding clique) stays out however
  many of them vouch.
* **Conspiracy-breaching score** CB(v): the maximum number of vertex-disjoint
  strong paths from V \\ {v} to v (Menger: equal to the minimum number of
  nodes, other than v, an attacker must corrupt so that no verified node's
  observation of v reaches the evaluator — how many nodes must conspire for
  v's lie to go unnoticed).  Computed as a unit-capacity max-flow with node
  splitting, augmenting paths found by a breadth-first search backwards from v
  (short when V is large, which is why it is fast).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import TypeVar

from missive.consensus.direct_trust import DEFAULT_K, full

N = TypeVar("N", bound=Hashable)

STRONG_RATIO = 0.75
ADMIT = 1


def attestation_graph(statements: Iterable[tuple[N, Iterable[tuple[N, int]]]], allowed: Callable[[N, N], bool] | None = None) -> dict[N, dict[N, int]]:
    """attester -> subject -> D from (attester, [(subject, D), ...]) pairs, keeping allowed edges."""
    graph: dict[N, dict[N, int]] = {}
    for attester, trusts in statements:
        row = graph.setdefault(attester, {})
        for subject, value in trusts:
            if subject != attester and (allowed is None or allowed(attester, subject)):
                row[subject] = value
    return graph


def is_strong(value: int, k: int = DEFAULT_K, ratio: float = STRONG_RATIO) -> bool:
    """u vouches for v: the latest attestation succeeded and at least ``ratio`` of the window did."""
    return bool(value >> (k - 1) & 1) and value.bit_count() >= ratio * k


def strong_edges(graph: Mapping[N, Mapping[N, int]], k: int = DEFAULT_K, ratio: float = STRONG_RATIO) -> dict[N, set[N]]:
    return {u: {v for v, d in row.items() if is_strong(d, k, ratio)} for u, row in graph.items()}


def reverse(out: Mapping[N, Iterable[N]]) -> dict[N, set[N]]:
    inn: dict[N, set[N]] = {}
    for u, vs in out.items():
        for v in vs:
            inn.setdefault(v, set()).add(u)
    return inn


def transitive_trust(graph: Mapping[N, Mapping[N, int]], source: N, k: int = DEFAULT_K) -> dict[N, float]:
    """T(source -> v) for every reachable v: the best product of normalised trusts along a path."""
    top = full(k)
    best: dict[N, float] = {source: 1.0}
    heap: list[tuple[float, int, N]] = [(-1.0, 0, source)]
    tie = 1
    done: set[N] = set()
    while heap:
        neg, _, u = heapq.heappop(heap)
        if u in done:
            continue
        done.add(u)
        for v, d in graph.get(u, {}).items():
            t = -neg * (d / top)
            if t > best.get(v, 0.0):
                best[v] = t
                heapq.heappush(heap, (-t, tie, v))
                tie += 1
    return best


def vertex_disjoint_paths(out: Mapping[N, Iterable[N]], inn: Mapping[N, Iterable[N]], sources: Iterable[N], target: N, limit: int | None = None) -> int:
    """Maximum number of paths from ``sources`` to ``target`` sharing no vertex but the target.

    Each source starts at most one path; ``target`` is never a source.  ``inn``
    must be the reverse of ``out``.  Stops early once ``limit`` paths are found.
    """
    src = set(sources)
    src.discard(target)
    src_used: set[N] = set()
    through: set[N] = set()  # vertices carrying a path (v_in -> v_out saturated)
    flow: set[tuple[N, N]] = set()  # edges u_out -> v_in carrying a path
    paths = 0
    # Residual states: (v, 0) = v_in, (v, 1) = v_out.  Search backwards from target_in.
    while limit is None or paths < limit:
        start = (target, 0)
        parent: dict[tuple[N, int], tuple[N, int] | None] = {start: None}
        queue = deque([start])
        found: tuple[N, int] | None = None
        while queue and found is None:
            state = queue.popleft()
            v, side = state
            preds: list[tuple[N, int]] = []
            if side == 0:
                if v in src and v not in src_used and v != target:
                    found = state
                    break
                preds.extend((u, 1) for u in inn.get(v, ()) if (u, v) not in flow and u != target)
                if v in through:
                    preds.append((v, 1))
            else:
                if v not in through:
                    preds.append((v, 0))
                preds.extend((w, 0) for w in out.get(v, ()) if (v, w) in flow)
            for p in preds:
                if p not in parent:
                    parent[p] = state
                    queue.append(p)
        if found is None:
            break
        # Walk from the source forward (parent pointers lead towards the target) and flip arcs.
        src_used.add(found[0])
        state = found
        while state != start:
            nxt = parent[state]
            assert nxt is not None
            (a, sa), (b, sb) = state, nxt
            if a == b:  # internal arc of a split vertex
                if sa == 0 and sb == 1:
                    through.add(a)
                else:
                    through.discard(a)
            elif sa == 1 and sb == 0:  # forward edge a_out -> b_in
                flow.add((a, b))
            else:  # a_in -> b_out is the reverse of edge b -> a
                flow.discard((b, a))
            state = nxt
        paths += 1
    return paths


def verified_set(graph: Mapping[N, Mapping[N, int]], evaluator: N, admit: int = ADMIT, k: int = DEFAULT_K, ratio: float = STRONG_RATIO, max_passes: int = 1000) -> set[N]:
    """V(e): the nodes whose verified attesters vouch for them more than they report failures.

    Starts from e and the nodes e vouches for (the seeds, never removed), then
    alternates two synchronous steps until nothing changes:

    * *grow*: admit every node attested by the set with at least ``admit``
      strong edges from verified attesters and more strong than weak ones;
    * *prune*: drop every non-seed node whose verified attesters now report
      failures at least as often as they vouch (a weak edge is evidence).

    A colluder admitted early on a lucky vouch is pruned once the honest
    attesters that saw it fail are verified.  Each step judges every node
    against the set as it stood at the start of the step, so the result does
    not depend on iteration order; ``max_passes`` bounds the loop.
    """
    inn: dict[N, list[tuple[N, bool]]] = {}
    for u, row in graph.items():
        for v, d in row.items():
            inn.setdefault(v, []).append((u, is_strong(d, k, ratio)))
    seeds: set[N] = {evaluator, *(v for v, d in graph.get(evaluator, {}).items() if is_strong(d, k, ratio))}
    verified = set(seeds)

    def votes(v: N) -> tuple[int, int]:
        strong = weak = 0
        for u, s in inn.get(v, ()):
            if u in verified and u != v:
                if s:
                    strong += 1
                else:
                    weak += 1
        return strong, weak

    for _ in range(max_passes):
        candidates = {v for u in verified for v in graph.get(u, {}) if v not in verified}
        grown = set()
        for v in candidates:
            strong, weak = votes(v)
            if strong >= admit and strong > weak:
                grown.add(v)
        verified |= grown
        pruned = set()
        for v in verified - seeds:
            strong, weak = votes(v)
            if strong <= weak or strong < admit:
                pruned.add(v)
        verified -= pruned
        if not grown and not pruned:
            break
    return verified


def conspiracy_scores(graph: Mapping[N, Mapping[N, int]], evaluator: N, nodes: Iterable[N], admit: int = ADMIT, k: int = DEFAULT_K, ratio: float = STRONG_RATIO) -> dict[N, int]:
    """CB(v) for each of ``nodes``: vertex-disjoint strong paths to v from, and through, V(e) minus v."""
    verified = verified_set(graph, evaluator, admit, k, ratio)
    out = {u: {v for v, d in row.items() if is_strong(d, k, ratio)} for u, row in graph.items() if u in verified}
    inn = reverse(out)
    return {v: vertex_disjoint_paths(out, inn, verified, v) for v in nodes}
