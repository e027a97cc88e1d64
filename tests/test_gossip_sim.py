"""Simulations with fixed seeds: convergence, bandwidth against flooding, liars' ranks, the actors on MockClock."""

from __future__ import annotations

from functools import cache

from missive.consensus.gossip import Gossiper, exchange
from missive.consensus.kernel import Kernel
from missive.consensus.sim import SimConfig, SimResult, World, rank_liars, run_gossip, simulate
from missive.consensus.simnet import run_network


@cache
def liars_run() -> SimResult:
    return simulate(SimConfig(256, seed=3, liars=0.3, loss=0.01))


def test_converges_fast_and_frugally_with_colluding_liars() -> None:
    r = liars_run()
    assert r.rounds is not None and r.rounds <= 10
    assert r.coverage[-1] >= 0.9999 and r.coverage[r.rounds - 2] < 0.9999
    assert r.flood_rounds is not None
    assert r.ratio < 0.25  # Erlay-style savings: well under a quarter of flooding's bytes
    assert r.modes["whole"] > 0 and r.modes["reduced"] > 0 and r.modes["targeted"] == 256


def test_no_liar_ranks_above_the_honest_median() -> None:
    r = liars_run()
    assert len(r.ranks) == 3
    for rank in r.ranks:
        assert rank.liars == 77
        assert rank.liars_above_median == 0
        assert rank.liar_max < rank.honest_median
        assert rank.verified_liars <= 1 and rank.verified - rank.verified_liars >= 0.95 * (256 - 77)


def test_converges_when_liars_withhold_honest_statements() -> None:
    honest_relay = simulate(SimConfig(128, seed=8, liars=0.3), flooding=False, ranking=False)
    r = simulate(SimConfig(128, seed=8, liars=0.3, withhold=True), flooding=False, ranking=False)
    assert r.rounds is not None and honest_relay.rounds is not None
    assert r.rounds <= honest_relay.rounds + 4
    assert r.coverage[0] < honest_relay.coverage[0] or r.coverage[1] < honest_relay.coverage[1]


def test_deterministic_for_a_seed() -> None:
    a = simulate(SimConfig(64, seed=9, liars=0.2, loss=0.05, churn=0.1))
    b = simulate(SimConfig(64, seed=9, liars=0.2, loss=0.05, churn=0.1))
    assert (a.rounds, a.bytes_per_node, a.coverage, a.flood_bytes_per_node, a.ranks) == (b.rounds, b.bytes_per_node, b.coverage, b.flood_bytes_per_node, b.ranks)
    c = simulate(SimConfig(64, seed=10, liars=0.2, loss=0.05, churn=0.1))
    assert c.coverage != a.coverage


def test_converges_under_loss_and_churn() -> None:
    r = simulate(SimConfig(128, seed=5, loss=0.05, churn=0.1), ranking=False)
    assert r.rounds is not None and r.rounds <= 20
    assert r.flood_rounds is not None


def test_without_targeted_push_it_is_slower_or_equal() -> None:
    with_push = simulate(SimConfig(128, seed=4), flooding=False, ranking=False)
    without = simulate(SimConfig(128, seed=4, targeted=False), flooding=False, ranking=False)
    assert with_push.rounds is not None and without.rounds is not None
    assert with_push.coverage[0] > without.coverage[0]


def test_a_new_node_catches_up_in_one_exchange() -> None:
    world = World(SimConfig(64, seed=2))
    rounds, _, _ = run_gossip(world)
    assert rounds is not None
    newcomer = Gossiper(Kernel(world.gossipers[0].kernel.verifier))
    exchange(newcomer, world.gossipers[5].handle)
    assert world.gossipers[5].modes["whole"] >= 1
    assert newcomer.kernel.snapshot() == world.gossipers[5].kernel.snapshot()
    assert newcomer.kernel.entry_count == world.total_entries


def test_without_liars_every_node_is_verified() -> None:
    world = World(SimConfig(64, seed=6, loss=0.0))
    run_gossip(world)
    rank = rank_liars(world, 0)
    assert rank.verified == 64 and rank.liars == 0


def test_actors_on_mock_clock() -> None:
    """The real trio actors, real bytes, on a simulated network with loss and colluding liars."""
    net, nodes, _ = run_network(24, 5, steps=6, settle=8, loss=0.02, liars=0.25)
    latest = {n.key: n.gossip.gossiper.kernel.get(n.key) for n in nodes}
    assert all(s is not None and s.version == 6 for s in latest.values())
    for n in nodes:
        if not n.liar:
            assert n.gossip.gossiper.kernel.snapshot() == latest
    liars = {n.key for n in nodes if n.liar}
    honest = [n for n in nodes if not n.liar]
    # honest attesters caught the cheating liars (signed evidence) and trust them less
    caught = [e for n in honest for e in n.attestation.evidence]
    assert caught and all(e.subject in liars and e.verify() for e in caught)

    def mean(xs: list[int]) -> float:
        return sum(xs) / len(xs)

    on_honest = [h.value.bit_count() for n in honest for s, h in n.attestation.histories.items() if s not in liars]
    on_liars = [h.value.bit_count() for n in honest for s, h in n.attestation.histories.items() if s in liars]
    assert mean(on_honest) > 5.5 and mean(on_liars) < 4.5  # 6 steps; liars cheat half the time
    # liars lie: they report their colluders perfectly
    for n in nodes:
        if n.liar:
            assert all(h.value == (1 << 16) - 1 - ((1 << 10) - 1) for s, h in n.attestation.histories.items() if s in liars)
    again, _, _ = run_network(24, 5, steps=6, settle=8, loss=0.02, liars=0.25)
    assert again.sent == net.sent
