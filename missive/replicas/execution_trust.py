"""Execution trust on a cluster node: apply a state diff, or re-execute it first (SPEC §6).

Every state diff an executor sends passes through :meth:`ExecutionTrust.checker`
inside the store transaction that would apply it (so it sees the copy
exactly as the diff finds it).  A diff that handled messages is re-executed
(:func:`missive.replicas.execution.rerun`) when this node's trust in the
executor (:meth:`TrustService.trust_in`, 0..1) is below ``[trust] threshold``,
and otherwise for a random ``[trust] sample`` of diffs, drawn from the system
RNG so an executor cannot tell which of its diffs will be checked.  A new
cluster trusts nobody yet, so it re-executes everything until attestations
build trust up.

Every diff, re-executed or not, must also agree with itself: the state it
signed it started from (``before``, which must be this copy's), with its own
account and storage writes applied, must give the state it signed it ends in
(``after``).  A diff that misstates its writes is caught there, by every
replica, without running anything.

A diff whose re-run differs, or that contradicts itself, is refused and becomes signed evidence
(:class:`~missive.replicas.execution.WrongDiff`).  This node keeps it (in the
trust store, for the pledge/slashing issue), stops trusting the executor
(its trust reads 0; the membership distrusts it, so its actors move to
their next holders), and hands the evidence to every peer until each has
acknowledged it.  A peer checks the evidence itself, by re-executing it,
before it acts on it; a false accusation is logged and not acted on.

What trust accepts as risk: a diff applied without re-execution is taken as
signed, as long as it agrees with itself.  An executor that lies
consistently (receipts, or writes with a matching ``after``) is caught by the
first re-execution of a later diff of that actor: the copy is then the
state the liar signed, and re-running from it contradicts the liar's own
results, which is evidence too; what was applied before stays until then.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import lmdb
import trio

from missive.errors import MissiveError
from missive.mailbox.diffs import DiffError, StateDiff
from missive.mailbox.envelope import Envelope
from missive.mailbox.records import Account
from missive.mailbox.store import Store
from missive.net import NetError, NodeIdentity, PeerLink, RemoteError, short_id
from missive.replicas.execution import (
    CONTRADICTION,
    CannotCheck,
    EvidenceError,
    WrongDiff,
    WrongResult,
    pre_state,
    rerun,
)
from missive.replicas.refusals import NotAMember

if TYPE_CHECKING:  # the cluster node hands them in (replication never imports the cluster)
    from missive.cluster.membership import Membership
    from missive.cluster.trust import TrustService, TrustSettings

log = logging.getLogger(__name__)

#: The RPC method that hands a peer evidence of a wrong state diff.
EVIDENCE_METHOD = "evidence"


class NotYetCheckable(DiffError):
    """A diff to re-execute needs a message or code that has not reached this node yet: it waits
    (the executor sends it again) rather than be applied unchecked."""


class ExecutionTrust:
    """Decides, per state diff, apply or re-execute; keeps and spreads evidence of wrong diffs."""

    def __init__(self, identity: NodeIdentity, store: Store, names: Mapping[bytes, str],
                 links: Mapping[bytes, PeerLink], membership: Membership, trust: TrustService,
                 settings: TrustSettings) -> None:
        self.identity = identity
        self.me = identity.node_id
        self.store = store
        self.names = dict(names)
        self.links = links
        self.membership = membership
        self.trust = trust
        self.threshold = settings.threshold
        self.sample = settings.sample
        self.rng = random.SystemRandom()  # an executor must not predict which diffs are checked
        self.reexecuted: Counter[bytes] = Counter()  # diffs re-executed and confirmed, per executor
        self.on_trust: Counter[bytes] = Counter()  # diffs applied on trust, per executor
        self.waiting: Counter[bytes] = Counter()  # diffs put off: a message they handled is not here yet
        self.evidence: dict[bytes, WrongDiff] = {}  # executor -> the evidence against it
        self._told: dict[bytes, set[bytes]] = {}  # executor -> peers that acknowledged its evidence
        #: submits evidence this node found to the worker registry (the cluster node sets it: the
        #: executor's pledge is forfeited and this node's worker paid the accuser's share); it answers
        #: what the registry did, or raises NetError to be retried
        self.submit_accusation: Callable[[bytes], Awaitable[str]] | None = None
        self.accused: dict[bytes, str] = {}  # executor -> what the registry answered this node's accusation
        self._news = trio.Event()
        for raw in trust.state.wrong_diffs():
            try:
                self._distrust(WrongDiff.decode(raw))
            except EvidenceError as exc:
                log.warning("dropped unreadable evidence from the trust store: %s", exc)

    def _name(self, node: bytes) -> str:
        return self.names.get(node, short_id(node))

    def distrusts(self, node: bytes) -> bool:
        return node in self.evidence

    def trust_in(self, node: bytes) -> float:
        return 0.0 if node in self.evidence else self.trust.trust_in(node)

    def wants_rerun(self, executor: bytes) -> bool:
        return self.trust_in(executor) < self.threshold or self.rng.random() < self.sample

    # -- checking diffs (in the store's transaction, on a worker thread) -----------------------

    def checker(self, executor: bytes) -> Callable[[lmdb.Transaction, StateDiff], None]:
        """The ``check`` for :meth:`missive.replicas.copies.Copies.apply_diffs` of ``executor``'s diffs."""
        store = self.store

        def check(txn: lmdb.Transaction, diff: StateDiff) -> None:
            address = diff.address
            account_raw = bytes(txn.get(address, db=store.db["accounts"]) or b"")
            account = Account.decode(account_raw) if account_raw else Account()
            code = store.code(account.code_hash, txn) if account.code_hash else b""
            if diff.after != store.digest_after(diff, txn):  # every diff: it costs a hash per slot written
                raise WrongResult(diff, [CONTRADICTION], pre_state(account_raw, store.storage(address, txn).items(),
                                                                   code, diff, lambda _: None, lambda _: None,
                                                                   store.chain_id))
            if not diff.receipts:
                return  # an acceptance or a new account: nothing ran, signatures were checked at admission
            if not self.wants_rerun(executor):
                self.on_trust[executor] += 1
                return

            def message(message_id: bytes) -> Envelope | None:
                found = store.message(message_id, txn)
                return found[0] if found is not None else None

            def code_by_hash(code_hash: bytes) -> bytes | None:
                return store.code(code_hash, txn) or None

            try:
                differences = rerun(diff, account, code, {}, lambda slot: store.slot(address, slot, txn),
                                    message, code_by_hash, store.chain_id)
            except CannotCheck as exc:
                self.waiting[executor] += 1
                raise NotYetCheckable(f"state diff for 0x{address.hex()} waits: {exc}") from None
            if not differences:
                self.reexecuted[executor] += 1
                return
            raise WrongResult(diff, differences, pre_state(account_raw, store.storage(address, txn).items(), code,
                                                           diff, message, code_by_hash, store.chain_id))

        return check

    # -- evidence ----------------------------------------------------------------------------------

    def accuse(self, executor: bytes, wrong: WrongResult, raw: bytes, signature: bytes) -> WrongDiff:
        """Sign evidence of ``wrong`` (found here) against ``executor``; keep it and spread it."""
        evidence = WrongDiff.make(self.identity, executor, raw, signature, wrong.evidence)
        log.error("%s sent a wrong state diff for 0x%s: %s; it is distrusted from now on",
                  self._name(executor), wrong.diff.address.hex(), "; ".join(wrong.differences[:3]))
        self.adopt(evidence)
        return evidence

    def adopt(self, evidence: WrongDiff) -> bool:
        """Act on checked evidence: keep it, distrust its executor, tell the peers.  False if known."""
        if evidence.executor in self.evidence:
            return False
        self.trust.state.keep_wrong_diff(evidence.executor, evidence.encode())
        self._distrust(evidence)
        self._news.set()
        return True

    def _distrust(self, evidence: WrongDiff) -> None:
        self.evidence[evidence.executor] = evidence
        self._told.setdefault(evidence.executor, {evidence.accuser})
        self.membership.distrust(evidence.executor)

    async def rpc_evidence(self, peer: bytes, raw: Any) -> dict[str, Any]:
        """A peer's evidence of a wrong diff: checked here by re-executing it, then acted on."""
        if peer not in self.names or peer == self.me:
            raise NotAMember("evidence", peer)
        try:
            evidence = WrongDiff.decode(raw)
        except EvidenceError as exc:
            raise ValueError(str(exc)) from None
        if evidence.executor in self.evidence:
            self._told.setdefault(evidence.executor, set()).add(peer)
            return {"known": True}
        if evidence.state.chain_id != self.store.chain_id:
            raise ValueError(f"the evidence is about chain id {evidence.state.chain_id}, not this cluster's "
                             f"({self.store.chain_id})")
        try:
            differences = await trio.to_thread.run_sync(evidence.check)
        except EvidenceError as exc:
            log.warning("%s sent evidence that proves nothing: %s", self._name(peer), exc)
            raise ValueError(f"the evidence proves nothing: {exc}") from None
        if not differences:
            log.error("%s accused %s of a wrong state diff, falsely (its re-run agrees with the diff)",
                      self._name(evidence.accuser), self._name(evidence.executor))
            return {"accepted": False, "why": "the diff is right: re-executed, it gives the same results"}
        log.error("%s proved %s sent a wrong state diff (%s); it is distrusted from now on",
                  self._name(evidence.accuser), self._name(evidence.executor), differences[0])
        self._told.setdefault(evidence.executor, set()).add(peer)
        self.adopt(evidence)
        return {"accepted": True, "differences": differences}

    async def run(self) -> None:
        """Hand every piece of evidence to every peer that has not acknowledged it, retrying; submit
        the evidence this node found to the worker registry, once (retried while it cannot be reached)."""
        while True:
            self._news = trio.Event()
            await self._accuse_in_registry()
            for executor, evidence in list(self.evidence.items()):
                for peer, link in self.links.items():
                    told = self._told.setdefault(executor, set())
                    if peer in told:
                        continue
                    try:
                        await link.call(EVIDENCE_METHOD, evidence.encode(), timeout=10.0)
                        told.add(peer)
                    except RemoteError as exc:  # it answered: it checked the evidence and refused it
                        told.add(peer)
                        log.warning("%s refused evidence against %s: %s", self._name(peer), self._name(executor), exc)
                    except NetError as exc:
                        log.debug("evidence against %s to %s: %s; will retry", self._name(executor),
                                  self._name(peer), exc)
            with trio.move_on_after(1.0):
                await self._news.wait()

    async def _accuse_in_registry(self) -> None:
        if self.submit_accusation is None:
            return
        for executor, evidence in list(self.evidence.items()):
            if evidence.accuser != self.me or executor in self.accused:
                continue  # only what this node found: a peer's evidence is its own to submit
            try:
                self.accused[executor] = answer = await self.submit_accusation(evidence.encode())
            except NetError as exc:
                log.info("the accusation of %s waits: %s", self._name(executor), exc)
                continue
            except (MissiveError, ValueError) as exc:  # refused where it went: said, not retried
                self.accused[executor] = answer = f"not sent: {exc}"
            log.warning("accused %s in the worker registry: %s", self._name(executor), answer)

    def view(self) -> dict[str, Any]:
        """For ``trust_view``: the settings, what was checked per executor, the evidence."""
        return {
            "threshold": self.threshold, "sample": self.sample,
            "checked": [{"id": n, "trust": self.trust_in(n), "reexecuted": self.reexecuted[n],
                         "on_trust": self.on_trust[n], "waiting": self.waiting[n]}
                        for n in sorted(self.names) if n != self.me],
            "distrusted": sorted(self.evidence),
            "wrong_diffs": [e.encode() for e in self.evidence.values()],
            "accused": {self._name(n): answer for n, answer in self.accused.items()},
        }


def falsify(raw: bytes) -> bytes:
    """The ``wrong-diffs`` fault (tests and simulation only): a diff that handled messages claims
    a different value in its first storage slot than its handlers wrote."""
    diff = StateDiff.decode(raw)
    if not diff.receipts or not diff.storage:
        return raw
    (slot, value), *rest = diff.storage
    return attrs.evolve(diff, storage=((slot, (value + 1) % (1 << 256) or 1), *rest)).encode()


__all__ = ["EVIDENCE_METHOD", "ExecutionTrust", "NotYetCheckable", "falsify"]
