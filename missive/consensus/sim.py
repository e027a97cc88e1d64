"""The simulator: thousands of nodes in one process, deterministic from a seed.

Two drivers share the gossip logic (:class:`~missive.consensus.gossip.Gossiper`):

* :func:`simulate` drives rounds in a plain loop — every online node, in a
  seeded random order, runs one exchange with a peer the overlay picks —
  because one trio task per node costs too much at 4,096 nodes.  Messages are
  handed over as objects and counted with :func:`~missive.consensus.gossip.wire_size`
  (equal to the msgpack length).
* :func:`missive.consensus.actors.run_network` runs the real trio actors
  (attestation and gossip) over an in-memory transport on ``MockClock``; the
  tests use it at small N.

The scenario of :func:`simulate`: N nodes on the small-world overlay attest
their assigned subjects for k steps.  Honest attesters report what they
observe: an honest subject fails an attestation only when a message is lost;
a malicious subject (an executor returning wrong diffs) fails the spot check
with probability ``cheat``.  Malicious attesters lie: they report perfect
trust for fellow colluders and failure for every honest subject; with
``withhold`` they also pass on only their colluders' statements in gossip.  Every node
signs its statement; then gossip runs (a targeted push of the fresh
statements, then rounds) until every honest node's kernel holds ``target``
of all entries.  Messages are lost with probability ``loss``; each round a
node is offline with probability ``churn`` (it neither starts nor answers an
exchange and misses pushes).  A node whose peer does not answer at all tries
one other peer in the same round (``retries``).  Naive whole-kernel flooding runs in the same
setting (same overlay, same loss, churn and retry rule, one push-pull exchange
per node per round, both sides sending their whole kernel) on bitsets of statements —
the only thing flooding needs — and its bytes come from the same wire sizes.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

import attrs

from missive.consensus import scores
from missive.consensus.gossip import (
    ROWS_PER_BUCKET,
    WHOLE_BELOW,
    Gossiper,
    Message,
    Push,
    Rows,
    Whole,
    exchange,
    wire_size,
)
from missive.consensus.kernel import Attester, Kernel, Verifier
from missive.consensus.overlay import Overlay, inverse


@attrs.frozen
class SimConfig:
    n: int
    seed: int = 1
    k: int = 16
    near: int = 4
    far: int = 4
    loss: float = 0.01
    churn: float = 0.0
    liars: float = 0.0
    cheat: float = 0.5
    p_far: float = 0.25
    whole_below: float = WHOLE_BELOW
    rows_per_bucket: int = ROWS_PER_BUCKET
    target: float = 0.9999
    max_rounds: int = 60
    targeted: bool = True
    retries: int = 1
    withhold: bool = False
    evaluators: int = 3


@attrs.define
class WithholdingGossiper(Gossiper):
    """A malicious node's gossip: it answers like anyone else but only ever passes on its colluders' statements."""

    colluders: frozenset[bytes] = frozenset()

    def handle(self, m: Message) -> Message | None:
        reply = super().handle(m)
        if isinstance(reply, Whole):
            return Whole(tuple(s for s in reply.statements if s.attester in self.colluders), reply.complement)
        if isinstance(reply, Rows):
            kept = tuple(s for s in reply.statements if s.attester in self.colluders)
            return Rows(kept, reply.want) if kept or reply.want else None
        if isinstance(reply, Push):
            return Push(tuple(s for s in reply.statements if s.attester in self.colluders))
        return reply


@attrs.frozen
class RankReport:
    """How liars rank by conspiracy-breaching score, seen from one honest evaluator."""

    evaluator: int
    honest_median: float
    liar_max: int
    liars_above_median: int
    liars: int
    verified: int
    verified_liars: int


@attrs.frozen
class SimResult:
    config: SimConfig
    rounds: int | None
    bytes_per_node: float
    flood_rounds: int | None
    flood_bytes_per_node: float
    modes: dict[str, int]
    coverage: list[float]
    flood_coverage: list[float]
    ranks: tuple[RankReport, ...]
    seconds: float

    @property
    def ratio(self) -> float:
        return self.bytes_per_node / self.flood_bytes_per_node if self.flood_bytes_per_node else float("nan")


class World:
    """The nodes of one simulation: keys, overlay, statements, kernels and gossipers."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        rng = random.Random(config.seed)
        attesters = [Attester(rng.randbytes(32)) for _ in range(config.n)]
        by_key = {a.public_key: a for a in attesters}
        self.overlay = Overlay([a.public_key for a in attesters], near=config.near, far=config.far)
        self.keys = self.overlay.members
        self.attesters = [by_key[m] for m in self.keys]
        self.assignment = self.overlay.assigned()
        self.attested_by = inverse(self.assignment)
        self.liars = set(rng.sample(range(config.n), round(config.liars * config.n)))
        self.honest = [i for i in range(config.n) if i not in self.liars]
        self.rng = rng
        self.values = self._attest()
        self.statements = [
            self.attesters[i].statement(config.k, config.k, {self.keys[j]: v for j, v in self.values[i].items()}, config.k) for i in range(config.n)
        ]
        self.total_entries = sum(len(s.trusts) for s in self.statements)
        verifier = Verifier()
        colluders = frozenset(self.keys[i] for i in self.liars)
        self.gossipers = [
            WithholdingGossiper(Kernel(verifier), config.whole_below, config.rows_per_bucket, colluders=colluders)
            if config.withhold and i in self.liars
            else Gossiper(Kernel(verifier), config.whole_below, config.rows_per_bucket)
            for i in range(config.n)
        ]
        for g, s in zip(self.gossipers, self.statements, strict=True):
            g.kernel.add(s)

    def _attest(self) -> list[dict[int, int]]:
        """k steps of attestations: returns attester -> subject -> D at the last step."""
        c, rng = self.config, self.rng
        top = 1 << (c.k - 1)
        values: list[dict[int, int]] = [dict.fromkeys(self.assignment[i], 0) for i in range(c.n)]
        for _ in range(c.k):
            for i in range(c.n):
                row = values[i]
                liar = i in self.liars
                for j in row:
                    if liar:
                        ok = j in self.liars
                    else:
                        ok = rng.random() >= c.loss and (j not in self.liars or rng.random() >= c.cheat)
                    row[j] = (row[j] >> 1) | (top if ok else 0)
        return values

    def targets(self, i: int) -> set[int]:
        """Whom node i's fresh statement concerns: its subjects and the nodes attesting it."""
        return set(self.assignment[i]) | set(self.attested_by.get(i, ()))

    def coverage(self) -> float:
        """The smallest fraction of all entries held by an honest node."""
        return min(self.gossipers[i].kernel.entry_count for i in self.honest) / self.total_entries


def run_gossip(world: World) -> tuple[int | None, float, list[float]]:
    """Gossip rounds until coverage; returns (rounds, bytes per node, coverage per round)."""
    c = world.config
    rng = random.Random(c.seed * 7919 + 1)
    sent = [0] * c.n
    gossipers = world.gossipers
    coverage: list[float] = []
    lost = c.loss

    def link(i: int, j: int) -> Callable[[Message], Message | None]:
        def send(m: Message) -> Message | None:
            sent[i] += wire_size(m)
            if rng.random() < lost:
                return None
            reply = gossipers[j].handle(m)
            if reply is None:
                return None
            sent[j] += wire_size(reply)
            return None if rng.random() < lost else reply

        return send

    for rnd in range(1, c.max_rounds + 1):
        online = [rng.random() >= c.churn for _ in range(c.n)]
        if rnd == 1 and c.targeted:
            for i in range(c.n):
                if not online[i]:
                    continue
                push = gossipers[i].push([world.statements[i]])
                size = wire_size(push)
                for j in sorted(world.targets(i)):
                    sent[i] += size
                    if online[j] and rng.random() >= lost:
                        gossipers[j].handle(push)
        order = list(range(c.n))
        rng.shuffle(order)
        for i in order:
            if not online[i]:
                continue
            for _ in range(1 + c.retries):
                j = world.overlay.choose_peer_index(i, rng, c.p_far)
                if not online[j]:
                    sent[i] += wire_size(gossipers[i].summary())
                    continue
                if exchange(gossipers[i], link(i, j)):
                    break
        coverage.append(world.coverage())
        if coverage[-1] >= c.target:
            return rnd, sum(sent) / c.n, coverage
    return None, sum(sent) / c.n, coverage


def run_flooding(world: World) -> tuple[int | None, float, list[float]]:
    """Naive whole-kernel push-pull flooding in the same setting, on bitsets of statements."""
    c = world.config
    rng = random.Random(c.seed * 7919 + 2)
    cost_masks: dict[int, int] = {}
    entries_masks: dict[int, int] = {}
    for i, s in enumerate(world.statements):
        cost = len(s.wire) + (2 if len(s.wire) < 256 else 3)
        cost_masks[cost] = cost_masks.get(cost, 0) | (1 << i)
        entries_masks[len(s.trusts)] = entries_masks.get(len(s.trusts), 0) | (1 << i)

    def size(bits: int) -> int:
        count = bits.bit_count()
        header = 4 + (1 if count < 16 else 3 if count < 65536 else 5)
        return header + sum(cost * (bits & mask).bit_count() for cost, mask in cost_masks.items())

    def held(bits: int) -> int:
        return sum(e * (bits & mask).bit_count() for e, mask in entries_masks.items())

    know = [1 << i for i in range(c.n)]
    colluders = sum(1 << i for i in world.liars)

    def offered(i: int) -> int:
        """What node i sends: everything, or only its colluders' statements if it withholds."""
        return know[i] & colluders if c.withhold and i in world.liars else know[i]
    sent = [0] * c.n
    coverage: list[float] = []
    for rnd in range(1, c.max_rounds + 1):
        online = [rng.random() >= c.churn for _ in range(c.n)]
        order = list(range(c.n))
        rng.shuffle(order)
        for i in order:
            if not online[i]:
                continue
            for _ in range(1 + c.retries):
                j = world.overlay.choose_peer_index(i, rng, c.p_far)
                sent[i] += size(offered(i))
                if not online[j] or rng.random() < c.loss:
                    continue  # no answer: try another peer
                before = offered(j)
                know[j] |= offered(i)
                sent[j] += size(before)
                if rng.random() >= c.loss:
                    know[i] |= before
                break
        coverage.append(min(held(know[i]) for i in world.honest) / world.total_entries)
        if coverage[-1] >= c.target:
            return rnd, sum(sent) / c.n, coverage
    return None, sum(sent) / c.n, coverage


def rank_liars(world: World, evaluator: int) -> RankReport:
    """Conspiracy-breaching scores from ``evaluator``'s kernel; where do the liars rank?"""
    c = world.config
    index = world.overlay.index
    assigned = {i: set(v) for i, v in world.assignment.items()}
    kernel = world.gossipers[evaluator].kernel
    graph = scores.attestation_graph(
        ((index[s.attester], ((index[subj], v) for subj, v in s.trusts if subj in index)) for s in kernel),
        allowed=lambda u, v: v in assigned.get(u, ()),
    )
    cb = scores.conspiracy_scores(graph, evaluator, range(c.n), k=c.k)
    verified = scores.verified_set(graph, evaluator, k=c.k)
    honest = [cb[i] for i in world.honest if i != evaluator]
    median = statistics.median(honest) if honest else 0.0
    liar_scores = [cb[i] for i in world.liars]
    return RankReport(
        evaluator,
        float(median),
        max(liar_scores, default=0),
        sum(1 for s in liar_scores if s > median),
        len(liar_scores),
        len(verified),
        len(verified & world.liars),
    )


def simulate(config: SimConfig, *, flooding: bool = True, ranking: bool = True) -> SimResult:
    """Run the scenario of the module docstring and measure it."""
    started = time.perf_counter()
    world = World(config)
    rounds, per_node, coverage = run_gossip(world)
    modes: dict[str, int] = {}
    for g in world.gossipers:
        for name, count in g.modes.items():
            modes[name] = modes.get(name, 0) + count
    f_rounds, f_bytes, f_cov = run_flooding(world) if flooding else (None, 0.0, [])
    ranks: list[RankReport] = []
    if ranking:
        pick = random.Random(config.seed * 31 + 3)
        for e in pick.sample(world.honest, min(config.evaluators, len(world.honest))):
            ranks.append(rank_liars(world, e))
    return SimResult(config, rounds, per_node, f_rounds, f_bytes, modes, coverage, f_cov, tuple(ranks), time.perf_counter() - started)


__all__ = ["SimConfig", "SimResult", "RankReport", "World", "WithholdingGossiper", "simulate", "run_gossip", "run_flooding", "rank_liars"]
