"""The trust layer on a cluster node: attestation and gossip between the members, over PeerLinks.

The consensus package (:mod:`missive.consensus`) holds the actors, the kernel
and the scores and talks to the network only through a
:class:`~missive.consensus.actors.Transport`.  This module is what a cluster
node adds to run them for real:

* :class:`LinkTransport`: the ``Transport`` over the node's :class:`PeerLink`\\ s.
  Everything travels as one RPC method, ``trust``, whose parameter is the
  :class:`~missive.consensus.actors.Router`'s bytes (a channel byte, then the
  actor's message) and whose result is the reply bytes or nil.  A peer that is
  down, slow or refuses gives ``None``, which is what the actors expect of a
  lossy network.
* :class:`~missive.cluster.spot_checks.ReplicaProver` (in :mod:`missive.cluster.spot_checks`):
  the spot check behind an attestation, against the receipts this node holds as a replica.
* :class:`~missive.cluster.trust_store.TrustStore` (in :mod:`missive.cluster.trust_store`): the
  node's trust state in an LMDB environment of its own (``<node dir>/trust``), so a restart
  continues where it stopped and the ledger's store is not touched.
* :class:`TrustService`: builds the actors over the overlay of the cluster's
  members, runs the attestation steps and the gossip rounds, serves ``trust``
  and ``trust_view`` (this node's view: direct trust, kernel, transitive trust,
  conspiracy-breaching scores, evidence).

A node's ``[trust]`` table in its config sets the step interval and, for tests
and simulation only, a fault to inject (:class:`TrustSettings`).
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import msgpack
import trio

from missive.cluster.spot_checks import WRONG_ATTESTATIONS, MemberVerifier, ReplicaProver
from missive.cluster.trust_store import EVIDENCE_KEPT, Saved, TrustStore, pack_evidence, unpack_evidence
from missive.consensus import gossip
from missive.consensus.actors import ATTEST, GOSSIP, AttestationActor, Evidence, GossipActor, Router
from missive.consensus.direct_trust import DEFAULT_K, full
from missive.consensus.gossip import Gossiper
from missive.consensus.kernel import Attester, Kernel, Statement
from missive.consensus.overlay import Overlay
from missive.consensus.scores import attestation_graph, conspiracy_scores, transitive_trust
from missive.errors import MissiveError
from missive.mailbox.disk import disk_full
from missive.net import NetError, NodeIdentity, PeerLink, short_id
from missive.replicas.refusals import require_member

if TYPE_CHECKING:
    from missive.mailbox.store import Store

log = logging.getLogger(__name__)

#: How often a full disk under the trust store is said again while it lasts (seconds).
FULL_DISK_REPEAT = 60.0

#: The RPC method carrying the actors' bytes between members.
TRUST_METHOD = "trust"
#: The RPC method answering with this node's view of trust.
VIEW_METHOD = "trust_view"
#: Largest trust frame served or accepted: a whole kernel of about a thousand members
#: (statements average ~0.5 kB), well inside the network's 1 MiB frame.
MAX_TRUST_FRAME = 512 * 1024
#: Faults that can be injected (tests and simulation only): answer every spot check wrongly
#: (signed); send state diffs whose storage is not what the handlers wrote (signed).
WRONG_DIFFS = "wrong-diffs"
FAULTS = (WRONG_ATTESTATIONS, WRONG_DIFFS)


class TrustFrameError(MissiveError, ValueError):
    """A ``trust`` request that is not one: answered with an error, the connection stays up."""


# -- settings ---------------------------------------------------------------------------------------


@attrs.frozen
class TrustSettings:
    """A node's ``[trust]`` config table.

    ``interval`` is the attestation step (and gossip round) in seconds.
    Execution trust (:mod:`missive.replicas.execution_trust`): a state diff from
    an executor this node trusts less than ``threshold`` (0..1, its trust as
    ``missive trust`` shows it) is re-executed before it is applied, and so is
    a random ``sample`` (0..1) of the others.
    ``fault`` is for tests and simulation only: ``"wrong-attestations"`` makes
    this node answer every spot check wrongly, ``"wrong-diffs"`` makes it send
    state diffs that misstate what its handlers wrote — both signed, so the
    other nodes keep verifiable evidence.  Never set it on a node that matters.
    """

    interval: float = 1.0
    fault: str | None = None
    threshold: float = 0.5
    sample: float = 0.05

    @classmethod
    def from_table(cls, table: object, where: str) -> TrustSettings:
        """Parse and check the ``[trust]`` table (``where`` names the file in errors)."""
        if table is None:
            return cls()
        if not isinstance(table, dict):
            raise ValueError(f"{where}: [trust] must be a table")
        unknown = set(table) - {"interval", "fault", "threshold", "sample"}
        if unknown:
            raise ValueError(f"{where}: unknown [trust] key(s) {', '.join(sorted(unknown))}")
        interval = table.get("interval", 1.0)
        if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0.05 <= interval <= 3600:
            raise ValueError(f"{where}: [trust] interval must be a number of seconds from 0.05 to 3600, not {interval!r}")
        fault = table.get("fault")
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"{where}: [trust] fault must be one of {', '.join(FAULTS)}, not {fault!r}")
        shares = {}
        for key in ("threshold", "sample"):
            value = table.get(key, getattr(cls(), key))
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"{where}: [trust] {key} must be a number from 0 to 1, not {value!r}")
            shares[key] = float(value)
        return cls(float(interval), fault, **shares)

    def dump(self) -> list[str]:
        """TOML lines for the table (none when everything is the default)."""
        if self == TrustSettings():
            return []
        lines = ["[trust]", f"interval = {self.interval!r}", f"threshold = {self.threshold!r}",
                 f"sample = {self.sample!r}"]
        if self.fault is not None:
            lines.append(f'fault = "{self.fault}"  # tests and simulation only')
        return [*lines, ""]


# -- transport --------------------------------------------------------------------------------------


class LinkTransport:
    """The consensus ``Transport`` over a node's peer links (see the module docstring).

    A link that is not connected answers ``None`` at once rather than waiting
    for it: an attestation of a node that is down is a failure now, not a
    stalled step.  ``timeout`` bounds each call; the actors bound their own
    waits too.
    """

    def __init__(self, me: bytes, links: Mapping[bytes, PeerLink], timeout: float) -> None:
        self._me = me
        self.links = links
        self.timeout = timeout
        self.failures: Counter[bytes] = Counter()

    @property
    def me(self) -> bytes:
        return self._me

    async def request(self, peer: bytes, data: bytes) -> bytes | None:
        link = self.links.get(peer)
        if link is None or not link.connected:
            return None
        try:
            reply = await link.call(TRUST_METHOD, data, timeout=self.timeout)
        except NetError as exc:
            self.failures[peer] += 1
            log.debug("trust request to %s failed: %s", short_id(peer), exc)
            return None
        if not isinstance(reply, bytes) or len(reply) > MAX_TRUST_FRAME:
            return None
        return reply

    async def send(self, peer: bytes, data: bytes) -> None:
        await self.request(peer, data)


# -- the service ------------------------------------------------------------------------------------


def _bits(value: int, k: int) -> str:
    """The k-bit map as text, newest step first (the seed's order: the top bit is the latest)."""
    return format(value & full(k), f"0{k}b")


class TrustService:
    """Runs this node's attestation and gossip actors and serves ``trust`` and ``trust_view``.

    ``names`` maps every member's node id (this node's too) to its name; the
    members are its keys.  ``links`` are the node's peer links (shared with
    the rest of the node).  State lives in ``<node_dir>/trust``.
    """

    def __init__(self, identity: NodeIdentity, node_dir: Path, names: Mapping[bytes, str],
                 links: Mapping[bytes, PeerLink], store: Store, settings: TrustSettings) -> None:
        self.me = identity.node_id
        self.names = dict(names)
        self.settings = settings
        self.interval = settings.interval
        self.members = sorted(self.names)
        self.overlay = Overlay(self.members)
        self.assigned = {m: frozenset(self.overlay.attests(m)) for m in self.members}
        self.subjects = tuple(self.overlay.attests(self.me))
        self.rng = random.SystemRandom()  # nonces must be unpredictable
        timeout = min(5.0, max(0.5, self.interval))
        self.transport = LinkTransport(self.me, links, timeout * 0.9)
        self.prover = ReplicaProver(store, self.rng, settings.fault)
        self.kernel = Kernel(MemberVerifier(self.members))
        self.gossip = GossipActor(Gossiper(self.kernel), self.transport, self._choose_peer, self._targets,
                                  period=self.interval, timeout=timeout, phase=self.rng.random() * self.interval)
        self.attestation = AttestationActor(Attester(identity.seed), self.transport, lambda: self.subjects,
                                            self.prover, self.gossip.publish, rng=self.rng, period=self.interval,
                                            timeout=timeout)
        self.router = Router()
        self.router.add(GOSSIP, self._on_gossip)
        self.router.add(ATTEST, self._on_attest)
        self.state_path = node_dir / "trust"
        self.state = TrustStore(self.state_path)
        self.evidence: list[Evidence] = []
        self._transitive: dict[bytes, float] = {}  # refreshed every step, for trust_in
        self._saved: dict[bytes, int] = {}  # attester -> digest of the statement last written
        self._restore(self.state.load())
        if settings.fault is not None:
            log.warning("trust fault injected: %s (for tests and simulation only)", settings.fault)

    # -- starting and stopping ------------------------------------------------------------------

    def _restore(self, saved: Saved) -> None:
        """Continue from the saved state; the steps missed while down count as not attested."""
        missed = int((time.time() - saved.saved_at) / self.interval) if saved.step and saved.saved_at else 0
        self.attestation.step = saved.step + max(0, missed)
        self.attestation.histories = {s: h for s, h in saved.histories.items() if s in self.subjects}
        for wire in saved.statements:
            try:
                statement = Statement.from_wire(wire)
            except ValueError:
                log.warning("dropped a malformed statement from the trust store")
                continue
            if self.kernel.add(statement):
                self._saved[statement.attester] = statement.digest
        self.evidence = list(saved.evidence)
        if saved.step:
            log.info("trust state restored: step %d (%d missed while down), %d statement(s), %d evidence",
                     saved.step, max(0, missed), len(self.kernel), len(self.evidence))

    def handlers(self) -> dict[str, Callable[[bytes, Any], Awaitable[Any]]]:
        """The RPC methods to add to the node's server."""
        return {TRUST_METHOD: self.rpc_trust, VIEW_METHOD: self.rpc_trust_view}

    async def run(self) -> None:
        """Attest and gossip until cancelled; on the way out, what was learnt since the last step
        (statements gossiped in meanwhile) is saved and the trust store closed, so a node stopped
        cleanly continues from everything it knew."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep_running, "gossip", self.gossip.run)
                nursery.start_soon(self._keep_running, "attestation", self._attest_forever)
        finally:
            try:
                with trio.CancelScope(shield=True):
                    await self._save([])
            finally:
                self.state.close()

    async def _keep_running(self, what: str, loop: Callable[[], Awaitable[None]]) -> None:
        """A bug in the trust layer is logged and the loop restarted; it never takes the node down.

        A full disk is not a bug: it is said in one line, at most once a minute while it
        lasts (not a traceback every step)."""
        full_said = -FULL_DISK_REPEAT
        while True:
            try:
                await loop()
            except Exception as exc:
                full = disk_full(self.state_path, exc)
                if full is None:
                    log.exception("trust %s loop failed; restarting it", what)
                elif time.monotonic() - full_said >= FULL_DISK_REPEAT:
                    full_said = time.monotonic()
                    log.error("trust %s: %s (the trust store is not ledger: nothing anyone relies on is lost; "
                              "trying again every step)", what, full)
            await trio.sleep(self.interval)

    async def _attest_forever(self) -> None:
        await trio.sleep(self.rng.random() * self.interval)  # members are not synchronised
        while True:
            await self.step()
            await trio.sleep(self.interval)

    # -- one step --------------------------------------------------------------------------------

    async def step(self) -> Statement:
        """One attestation step: sample receipts, attest every subject, publish, save."""
        own = self.kernel.get(self.me)
        if own is not None and own.version > self.attestation.step:
            self.attestation.step = own.version  # our state was lost but peers kept our statement: go past it
        self.prover.candidates = await trio.to_thread.run_sync(self.prover.sample, self.subjects)
        statement = await self.attestation.run_step()
        fresh = self.attestation.evidence
        self.attestation.evidence = []
        for e in fresh:
            log.warning("%s answered a spot check wrongly at step %d (signed: evidence kept)",
                        self.names.get(e.subject, short_id(e.subject)), e.step)
        await self._save(fresh)
        self._transitive = self._scores(DEFAULT_K)[1]
        return statement

    def trust_in(self, node: bytes) -> float:
        """This node's trust in ``node``, 0..1: its direct trust D/(2^k−1) if it attests ``node``,
        else transitive trust over the kernel (as of the last step).  Execution trust reads it."""
        history = self.attestation.histories.get(node)
        if history is not None:
            if history.step < self.attestation.step:
                history = history.at(self.attestation.step)
            return history.value / full(DEFAULT_K)
        return self._transitive.get(node, 0.0)

    def _scores(self, k: int) -> tuple[dict[bytes, dict[bytes, int]], dict[bytes, float]]:
        """The attestation graph of the kernel and this node's transitive trust over it."""
        graph = attestation_graph(((s.attester, s.trusts) for s in self.kernel),
                                  lambda a, b: b in self.assigned.get(a, frozenset()))
        return graph, transitive_trust(graph, self.me, k)

    async def _save(self, fresh: list[Evidence]) -> None:
        changed = {s.attester: s for s in self.kernel if self._saved.get(s.attester) != s.digest}
        await trio.to_thread.run_sync(self.state.save, self.attestation.step, dict(self.attestation.histories),
                                      {a: s.wire for a, s in changed.items()}, fresh)
        for attester, statement in changed.items():
            self._saved[attester] = statement.digest
        for subject in {e.subject for e in fresh}:
            kept = [e for e in self.evidence + fresh if e.subject == subject][-EVIDENCE_KEPT:]
            self.evidence = [e for e in self.evidence if e.subject != subject] + kept

    def _choose_peer(self) -> bytes | None:
        if len(self.members) < 2:
            return None
        return self.overlay.members[self.overlay.choose_peer_index(self.overlay.index[self.me], self.rng)]

    def _targets(self, statement: Statement) -> tuple[bytes, ...]:
        """Targeted gossip: the subjects we attest and the members that attest us."""
        attesters = tuple(m for m in self.members if self.me in self.assigned[m])
        return tuple(m for m in dict.fromkeys(self.subjects + attesters) if m != self.me)

    # -- serving -------------------------------------------------------------------------------

    async def rpc_trust(self, peer: bytes, data: Any) -> bytes | None:
        """A member's trust frame: checked here, then handed to the actor its channel names."""
        require_member(self.names, self.me, peer, "trust")
        if not isinstance(data, bytes):
            raise TrustFrameError(f"a trust frame is bytes, not {type(data).__name__}")
        if len(data) > MAX_TRUST_FRAME:
            raise TrustFrameError(f"trust frame of {len(data)} bytes exceeds {MAX_TRUST_FRAME}")
        if data[:1] not in (GOSSIP, ATTEST):
            raise TrustFrameError(f"unknown trust channel {data[:1]!r}")
        return await self.router(peer, data)

    async def _on_gossip(self, sender: bytes, body: bytes) -> bytes | None:
        """Like :meth:`GossipActor.handle`, but a malformed message is an error, not silence."""
        try:
            reply = self.gossip.gossiper.handle(gossip.decode(body))
        except ValueError as exc:
            raise TrustFrameError(str(exc)) from None
        return None if reply is None else gossip.encode(reply)

    async def _on_attest(self, sender: bytes, body: bytes) -> bytes | None:
        """A challenge: checked for shape (an error if malformed), then answered by the actor."""
        try:
            tag, nonce, step, receipt = msgpack.unpackb(body)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise TrustFrameError(f"malformed challenge: {exc}") from None
        if tag != "C" or not isinstance(nonce, bytes) or not isinstance(step, int) or not isinstance(receipt, bytes) \
                or len(nonce) > 64 or len(receipt) > 64:
            raise TrustFrameError("malformed challenge: expected ['C', nonce, step, message id]")
        return await self.attestation.handle(sender, body)

    async def rpc_trust_view(self, peer: bytes, params: Any) -> dict[str, Any]:
        return self.view()

    def view(self) -> dict[str, Any]:
        """This node's view: direct trust, kernel, scores, evidence (what ``missive trust`` shows)."""
        k = DEFAULT_K
        graph, transitive = self._scores(k)
        conspiracy = conspiracy_scores(graph, self.me, self.members, k=k)
        return {
            "name": self.names[self.me], "id": self.me, "step": self.attestation.step, "interval": self.interval,
            "k": k, "fault": self.settings.fault,
            "members": [{"id": m, "name": self.names[m]} for m in self.members],
            "direct": [self._direct(subject, k) for subject in self.subjects],
            "kernel": {"statements": len(self.kernel), "entries": self.kernel.entry_count,
                       "attesters": sorted(s.attester for s in self.kernel),
                       "versions": [[s.attester, s.version] for s in self.kernel],
                       "equivocations": len(self.kernel.equivocations), "rejected": self.kernel.rejected},
            "gossip": dict(self.gossip.gossiper.modes), "rounds": self.gossip.rounds,
            "scores": [{"id": m, "transitive": transitive.get(m, 0.0), "conspiracy": conspiracy.get(m, 0)}
                       for m in self.members],
            "edges": [[a, b, d] for a, row in graph.items() for b, d in row.items()],
            "evidence": [pack_evidence(e) for e in self.evidence],
        }

    def _direct(self, subject: bytes, k: int) -> dict[str, Any]:
        history = self.attestation.histories.get(subject)
        if history is not None and history.step < self.attestation.step:
            history = history.at(self.attestation.step)
        value = history.value if history is not None else 0
        failures = history.failures if history is not None else 0
        checks = self.prover.checks.get(subject, Counter())
        return {"id": subject, "trust": value, "bits": _bits(value, k), "failures": _bits(failures, k),
                "receipt_checks": checks["receipt"], "challenge_checks": checks["challenge"]}


def evidence_from_view(raw: bytes) -> Evidence:
    """An evidence record from ``trust_view`` (anyone can check it: ``.verify()``)."""
    return unpack_evidence(raw)
