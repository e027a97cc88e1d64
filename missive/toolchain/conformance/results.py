"""How a case ended (:class:`Outcome`, :class:`CaseResult`), a run's :class:`Summary`, and the
vectors expected to fail because Ethereum changed their meaning (:data:`KNOWN_XFAILS`).

Part of :mod:`missive.toolchain.conformance` (which says what the runner checks, and how).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Final

import attrs

from missive.toolchain.conformance.cases import Case
from missive.vm.types import ExecutionResult

#: Vectors whose expectations predate a change of meaning in Ethereum itself.
#: They still run (so a crash would show), but a mismatch is reported as
#: "xfail" with this reason instead of a failure.
KNOWN_XFAILS: Final[Mapping[str, str]] = {
    "vmBlockInfoTest/difficulty": (
        "expects the pre-Merge DIFFICULTY value from opcode 0x44; since the Merge (EIP-4399) "
        "0x44 is PREVRANDAO, which Missive implements"
    ),
}

#: The same, for every case whose name starts with the key (a whole parametrized test).
KNOWN_XFAIL_PREFIXES: Final[Mapping[str, str]] = {
    "tests/prague/eip2537_bls_12_381_precompiles/test_bls12_precompiles_before_fork.py::": (
        "checks that the BLS12-381 precompiles are absent before Prague; Missive's VM runs them on every ledger"
    ),
}


def known_xfail(name: str) -> str | None:
    """Why the case ``name`` is expected to fail, if it is."""
    reason = KNOWN_XFAILS.get(name)
    if reason is None:
        reason = next((why for prefix, why in KNOWN_XFAIL_PREFIXES.items() if name.startswith(prefix)), None)
    return reason


class Outcome(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    XFAILED = "xfailed"
    #: A known expected failure that passed: harmless, but worth a look.
    XPASSED = "xpassed"


@attrs.frozen
class CaseResult:
    case: Case
    outcome: Outcome
    #: What differed, one readable line each ("storage[0x01]: expected 0x02, got 0x00").
    differences: tuple[str, ...] = ()
    result: ExecutionResult | None = attrs.field(default=None, eq=False)
    duration: float = attrs.field(default=0.0, eq=False)

    @property
    def name(self) -> str:
        return self.case.name

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAILED

    @property
    def explanation(self) -> str:
        """Differences as one string; for an xfail, the known reason first."""
        lines = list(self.differences)
        if self.outcome in (Outcome.XFAILED, Outcome.XPASSED) and self.case.xfail:
            lines.insert(0, f"known: {self.case.xfail}")
        return "; ".join(lines)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.case.name,
            "path": str(self.case.path),
            "format": self.case.format,
            "fork": self.case.fork,
            "outcome": self.outcome.value,
            "differences": list(self.differences),
            "duration": round(self.duration, 6),
        }
        if self.case.xfail:
            data["xfail_reason"] = self.case.xfail
        if self.result is not None:
            data["status"] = self.result.status.value
            data["gas_used"] = self.result.gas_used
        return data


@attrs.frozen
class Summary:
    results: tuple[CaseResult, ...]
    duration: float = 0.0

    def _count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome is outcome)

    @property
    def passed(self) -> int:
        return self._count(Outcome.PASSED)

    @property
    def failed(self) -> int:
        return self._count(Outcome.FAILED)

    @property
    def xfailed(self) -> int:
        return self._count(Outcome.XFAILED)

    @property
    def xpassed(self) -> int:
        return self._count(Outcome.XPASSED)

    @property
    def failures(self) -> tuple[CaseResult, ...]:
        return tuple(r for r in self.results if r.failed)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @property
    def line(self) -> str:
        """The summary line the CLI ends with.  XPASSED counts as passed here."""
        return f"{self.passed + self.xpassed} passed, {self.failed} failed"

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed + self.xpassed,
            "failed": self.failed,
            "xfailed": self.xfailed,
            "xpassed": self.xpassed,
            "total": len(self.results),
            "duration": round(self.duration, 3),
            "results": [r.to_json() for r in self.results],
        }
