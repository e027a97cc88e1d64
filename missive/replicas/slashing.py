"""Slashing on evidence (issue 23 item 4; docs/market.md "Slashing"): the check the worker registry
runs on wrong-diff evidence before it forfeits a pledge.

The registry (:mod:`missive.market.workers`, kept by the store) may not import the re-execution
that checks evidence (it sits above the ledger), so the node attaches :func:`check_evidence` to
its store (``Store.evidence_check``), and replay uses the same function: a slash record is
re-checked, not trusted, whenever the ledger is replayed.
"""

from __future__ import annotations

from missive.market.registry_actor import attach_evidence_check
from missive.replicas.execution import EvidenceError, WrongDiff


def check_evidence(raw: bytes, chain_id: int) -> tuple[bytes, list[str]]:
    """(the executor's node id, the differences a re-run of its diff finds) of wrong-diff evidence
    (:meth:`WrongDiff.check`; none: the evidence proves nothing).  Raises :class:`EvidenceError`
    for evidence that is malformed, not signed by whom it names, incomplete, or of another ledger."""
    evidence = WrongDiff.decode(raw)
    if evidence.state.chain_id != chain_id:
        raise EvidenceError(f"the evidence is of the ledger of chain id {evidence.state.chain_id}, not this one's "
                            f"({chain_id})")
    return evidence.executor, evidence.check()


# a cluster's registry actor re-checks accusations with it too, wherever a handler runs in this process
attach_evidence_check(check_evidence)

__all__ = ["check_evidence"]
