"""Direct trust: the seed's k-bit attestation bitmap.

The seed defines D_ij(t) = Σ 2^((k-1) - steps(t, t_n)) over the successful
attestations t_n of node j by node i in the last k steps.  Read as an integer,
bit k-1 (the top bit) is "attested successfully at step t", bit k-2 is "at step
t-1", and so on; older results fall off the bottom.  Because one step is the
minimum attestation interval, two attestations never land on the same bit, so
the sum is a bitwise OR.

Two consequences are used throughout:

* *Ordering.*  Comparing two values as integers compares recency first: a
  success at step t outranks every combination of older successes, since
  2^(k-1) > 2^(k-1) - 1 = Σ of all lower bits.  That is the seed's "the larger
  one indicates the more recent attestation" and what transitive trust orders by.
* *Shifting.*  Moving from step t to step t+s is a right shift by s: every
  result ages by s steps and the ones older than k steps disappear.

A failed attestation sets no bit.  It is not forgotten, though: the history
keeps a second bitmap of failures aligned with the first, so "attested and
failed" differs from "not attested" and the failure can be shown as evidence.
Everything here is a pure function or a frozen value.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

#: Default window: 16 steps, so a trust value fits in two bytes.
DEFAULT_K = 16


def full(k: int) -> int:
    """The largest k-bit value: attested successfully at each of the last k steps."""
    return (1 << k) - 1


def bit_for(now: int, at: int, k: int) -> int:
    """The bit an attestation made at step ``at`` occupies at step ``now`` (0 if outside the window)."""
    age = now - at
    if age < 0 or age >= k:
        return 0
    return 1 << ((k - 1) - age)


def direct_trust(successes: Iterable[int], now: int, k: int = DEFAULT_K) -> int:
    """D_ij(now) from the steps of the successful attestations, literally as the seed's sum.

    Steps in the future or older than k steps contribute nothing.  Duplicate
    steps are counted once: an attestation history holds at most one result
    per step, and a bitmap cannot record more.
    """
    return sum(bit_for(now, at, k) for at in set(successes))


def shift(value: int, steps: int, k: int = DEFAULT_K) -> int:
    """Age a k-bit value by ``steps`` steps: results move down, the oldest fall off."""
    if steps < 0:
        raise ValueError("time does not go backwards")
    return (value & full(k)) >> steps


def normalised(value: int, k: int = DEFAULT_K) -> float:
    """The value as a fraction of full trust, in [0, 1]; keeps the integer order."""
    return value / full(k)


def successes_in_window(value: int) -> int:
    """How many of the last k attestations succeeded (order ignored)."""
    return value.bit_count()


@attrs.frozen
class TrustHistory:
    """One attester's record of one subject: successes and failures as aligned k-bit maps.

    ``step`` is the step the top bits stand for.  Values only move forward in
    time; recording a result for a step older than the window is refused,
    because it could no longer be placed.
    """

    k: int = DEFAULT_K
    step: int = 0
    successes: int = 0
    failures: int = 0

    @property
    def value(self) -> int:
        """D_ij(step), the seed's direct trust."""
        return self.successes

    def at(self, step: int) -> TrustHistory:
        """The same history seen from a later step (shifted)."""
        if step < self.step:
            raise ValueError(f"step {step} is before {self.step}")
        s = step - self.step
        return TrustHistory(self.k, step, shift(self.successes, s, self.k), shift(self.failures, s, self.k))

    def record(self, step: int, success: bool) -> TrustHistory:
        """Add the result of an attestation made at ``step`` (advancing the history if later)."""
        history = self.at(step) if step > self.step else self
        bit = bit_for(history.step, step, self.k)
        if bit == 0:
            raise ValueError(f"step {step} is outside the window ending at {history.step}")
        if success:
            return attrs.evolve(history, successes=history.successes | bit, failures=history.failures & ~bit)
        return attrs.evolve(history, successes=history.successes & ~bit, failures=history.failures | bit)

    def failed_steps(self) -> tuple[int, ...]:
        """The steps (newest first) whose attestation failed: the evidence kept in the window."""
        return tuple(self.step - age for age in range(self.k) if self.failures >> ((self.k - 1) - age) & 1)
