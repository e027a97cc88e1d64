"""A cluster node's door for questions about the node itself: its status, progress and trust view,
and a member's heartbeat.

Why apart from :mod:`missive.cluster.client_door` and the process wiring
(:mod:`missive.cluster.node`): these four requests read every part of a node (its copies, the
runtime, the writer, the sender and receiver, membership and epochs, the trust layer) but change
none of it, except that a heartbeat tells membership a peer is alive.  Handed those parts, the
door answers; the node process keeps only the wiring.  It also keeps the node's rate of handled
messages (one task, :meth:`measure`), which only ``status`` reports.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from missive.actors.runtime import Runtime
from missive.cluster import reads
from missive.cluster.epochs import EpochService
from missive.cluster.membership import Heard, Membership
from missive.cluster.trust import TrustService
from missive.mailbox.store import Store
from missive.mailbox.writer import GroupWriter
from missive.net import PeerLink
from missive.replicas.copies import Copies
from missive.replicas.execution_trust import ExecutionTrust
from missive.replicas.receiver import Receiver
from missive.replicas.sender import Sender


class NodeDoor:
    """``status``, ``heartbeat``, ``trust_view`` and ``progress`` of one node (see the module docstring)."""

    def __init__(self, *, name: str, me: bytes, names: dict[bytes, str], links: dict[bytes, PeerLink], k: int,
                 store: Store, copies: Copies, runtime: Runtime, writer: GroupWriter, membership: Membership,
                 epochs: EpochService, sender: Sender, receiver: Receiver, trust: TrustService,
                 execution: ExecutionTrust, executes: Callable[[bytes], bool], port: Callable[[], int]) -> None:
        self.name = name
        self.me = me
        self.names = names
        self.links = links
        self.k = k
        self.store = store
        self.copies = copies
        self.runtime = runtime
        self.writer = writer
        self.membership = membership
        self.epochs = epochs
        self.sender = sender
        self.receiver = receiver
        self.trust = trust
        self.execution = execution
        self.executes = executes
        self.port = port
        self.started = time.monotonic()
        #: messages handled per second, over the last second (:meth:`measure`)
        self.rate = 0.0

    def handlers(self) -> dict[str, Callable[[bytes, Any], Awaitable[Any]]]:
        """The door's methods by RPC name."""
        return {"status": self.status, "heartbeat": self.heartbeat, "trust_view": self.trust_view,
                "progress": self.progress}

    async def measure(self) -> None:
        """Keep :attr:`rate` current, once a second, until cancelled."""
        last, then = self.runtime.handled_total, time.monotonic()
        while True:
            await trio.sleep(1.0)
            now = time.monotonic()
            self.rate = (self.runtime.handled_total - last) / (now - then)
            last, then = self.runtime.handled_total, now

    async def heartbeat(self, peer: bytes, params: dict[str, Any]) -> dict[str, Any]:
        """A peer is alive, knows epoch ``epoch`` and (if it joins) whether its copies are complete;
        the answer says whether this node serves and the newest epoch it knows."""
        self.receiver.member(peer, "heartbeat")
        if not isinstance(params, dict):
            raise ValueError("heartbeat takes {serving, epoch, complete}")
        epoch = params.get("epoch", -1)
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            raise ValueError("a heartbeat's epoch must be a number")
        await self.membership.observe(Heard(peer, bool(params.get("serving")), epoch, bool(params.get("complete"))))
        return {"serving": self.membership.serving, "epoch": self.membership.history.latest.number,
                "complete": self.epochs.complete}

    async def status(self, peer: bytes, params: Any) -> dict[str, Any]:
        counts = self.copies.counts("pending", "standby", "outbound", "replicate", "replica")
        backlog, standby, outbound = counts["pending"], counts["standby"], counts["outbound"]
        replicating, held = counts["replicate"], counts["replica"]
        actors = sum(1 for address, account in self.store.accounts() if account.is_contract and self.executes(address))
        return {
            "serving": self.membership.may_execute(), "standby": standby, "view_changes": self.membership.changes,
            "up": sorted(self.names[n] for n in self.membership.acting),
            "name": self.name, "id": self.me, "pid": os.getpid(), "port": self.port(),
            "chain_id": self.store.chain_id,
            "uptime": time.monotonic() - self.started, "actors": actors, "backlog": backlog,
            "outbound": outbound, "handled": self.runtime.handled_total, "rate": self.rate,
            "transactions": self.writer.transactions, "writes": self.writer.writes,
            "forwarded": self.sender.forwarded, "replicas": self.k, "replicating": replicating, "replicas_held": held,
            "diffs_sent": self.sender.diffs_sent, "diffs_applied": self.receiver.diffs_applied,
            "conflicts": self.receiver.conflicts, "rolled_back": self.receiver.rolled_back,
            "gone_after_rollback": self.receiver.gone_after_rollback,
            "leases_lost": self.membership.leases_lost,
            "epoch": self.membership.number, "epochs_known": self.membership.history.latest.number,
            "joining": self.membership.joining, "complete": self.epochs.complete,
            "epochs_proposed": self.epochs.proposals, "epochs_chosen": self.epochs.chosen,
            "distrusted": sorted(self.names[n] for n in self.membership.distrusted),
            "unstaked": sorted(self.names[n] for n in self.membership.unstaked),
            "peers": {self.names[n]: link.connected for n, link in self.links.items()},
        }

    async def trust_view(self, peer: bytes, params: Any) -> dict[str, Any]:
        """This node's view of trust (``missive trust``): the trust layer's, and execution trust's."""
        return {**self.trust.view(), "execution": self.execution.view()}

    async def progress(self, peer: bytes, params: Any) -> dict[str, int]:
        """How far this node's store has come (see :func:`missive.cluster.reads.progress`)."""
        return reads.progress(self.copies)
