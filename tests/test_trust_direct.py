"""Direct trust: the seed's k-bit bitmap (shift, window, ordering, evidence of failures)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from missive.consensus.direct_trust import TrustHistory, bit_for, direct_trust, full, normalised, shift

K = 16
steps = st.lists(st.integers(min_value=0, max_value=60), max_size=30)


def test_known_values() -> None:
    # attested at t, t-1 and t-3 with k=4: bits 3, 2 and 0
    assert direct_trust([10, 9, 7], now=10, k=4) == 0b1101
    assert direct_trust([6], now=10, k=4) == 0  # older than the window
    assert direct_trust([11], now=10, k=4) == 0  # in the future
    assert direct_trust(range(7, 11), now=10, k=4) == full(4) == 15
    assert normalised(full(K)) == 1.0 and normalised(0) == 0.0


@given(steps, st.integers(min_value=0, max_value=60))
def test_sum_is_or_and_fits_k_bits(history: list[int], now: int) -> None:
    d = direct_trust(history, now, K)
    assert 0 <= d <= full(K)
    ored = 0
    for t in history:
        ored |= bit_for(now, t, K)
    assert d == ored
    # exactly the successes within the window are set
    assert d.bit_count() == len({t for t in history if 0 <= now - t < K})


@given(steps, st.integers(min_value=0, max_value=60), st.integers(min_value=0, max_value=40))
def test_shift_is_elapsed_time(history: list[int], now: int, elapsed: int) -> None:
    """Seeing the same (past) history later equals shifting the value right by the elapsed steps."""
    history = [t for t in history if t <= now]
    assert shift(direct_trust(history, now, K), elapsed, K) == direct_trust(history, now + elapsed, K)


@given(steps, steps, st.integers(min_value=0, max_value=60))
def test_ordering_recency_first(a: list[int], b: list[int], now: int) -> None:
    """The value with the more recent success that the other lacks is larger, whatever the rest."""
    da, db = direct_trust(a, now, K), direct_trust(b, now, K)
    sa = {t for t in a if 0 <= now - t < K}
    sb = {t for t in b if 0 <= now - t < K}
    if sa == sb:
        assert da == db
    else:
        newest_difference = max(sa ^ sb)
        assert (da > db) == (newest_difference in sa)


def test_one_recent_success_beats_all_older() -> None:
    assert direct_trust([20], 20, K) > direct_trust(range(5, 20), 20, K)


@given(st.lists(st.tuples(st.integers(min_value=0, max_value=3), st.booleans()), max_size=40))
def test_history_matches_formula(events: list[tuple[int, bool]]) -> None:
    """Recording results step by step gives the seed's sum over successes; failures set no bit."""
    h = TrustHistory(K, 0)
    step = 0
    results: dict[int, bool] = {}
    for gap, ok in events:
        step += gap
        h = h.record(step, ok)
        results[step] = ok
    assert h.step == step
    assert h.value == direct_trust([t for t, ok in results.items() if ok], step, K)
    assert set(h.failed_steps()) == {t for t, ok in results.items() if not ok and step - t < K}
    assert h.successes & h.failures == 0


def test_failure_is_kept_as_evidence_not_trust() -> None:
    h = TrustHistory(4, 0).record(1, True).record(2, False).record(3, True)
    assert h.value == 0b1010
    assert h.failed_steps() == (2,)
    # a later success at the same step replaces a failure (one result per step)
    assert h.record(2, True).value == 0b1110
    with pytest.raises(ValueError):
        h.at(2)
    with pytest.raises(ValueError):
        h.record(-5, True)
