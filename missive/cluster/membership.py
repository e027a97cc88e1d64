"""Membership and liveness: which members are up, which serve, and so who executes what.

The view is kept by one actor per node (:meth:`Membership.run`, a trio task
that takes observations from its mailbox one at a time), so it changes in one
place and in order; the trust layer reads the same view.  Observations are
heartbeats: every ``interval`` each node calls every peer's ``heartbeat``,
saying whether it serves; the answer says the same of the peer.  A peer not
heard from for ``timeout`` seconds is *down*.

Who executes an actor: the first of its K holders (rendezvous order, see
:mod:`missive.cluster.placement`) that is up.  So when an executor dies, the
next holder takes over after ``timeout``; when it returns, it is up again and
the interim executor hands the actor back.  A node executes nothing until it
*serves*: a returning node first catches up (see
:class:`missive.cluster.node.ClusterNode`), and only then runs its actors.

**Quorum.** With K > 1 an actor has several copies, so two nodes could both
execute it: a node cut off from its peers (a partition, or a process frozen
for longer than ``timeout``) keeps running the actors whose other holders have
meanwhile taken them over.  To prevent that, a node executes only while it
holds a *lease*: it has heard from a majority of the members, itself included,
within ``timeout / 2`` (exactly half counts when it includes the first member in
id order, so a 2-node cluster keeps one side).  Its peers take over only after
``timeout``, so a node cut off stops executing well before anyone replaces it.
A node that loses its lease stops serving and, when it hears from a majority
again, catches up like a returning node: receipts its peers never got are
rolled back then (see :meth:`Membership.yields_to`).

A member proven to have sent a wrong state diff (execution trust,
:mod:`missive.cluster.execution_trust`) is *distrusted*: it stays a member and
keeps its copies, but executes nothing any more, so its actors move to their
next holders exactly as if it were down.  That holds in its own view too: a
node that checks the evidence against itself steps down.

The view a node acts on (:attr:`Membership.acting`) changes only through
:meth:`Membership.adopt`, which the node calls with its runtime paused, so a
round never runs under one view and commits under another.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import attrs
import trio

from missive.cluster.placement import replicas

log = logging.getLogger(__name__)


@attrs.frozen
class Heard:
    """A heartbeat from (or answered by) ``node_id``."""

    node_id: bytes
    serving: bool
    #: state diffs the peer still holds for actors this node will execute (None: not asked)
    waiting: int | None = None


@attrs.define
class PeerState:
    last_heard: float | None = None
    serving: bool = False
    waiting: int | None = None


class Membership:
    """One node's view of the members (see the module docstring)."""

    def __init__(self, me: bytes, members: Sequence[bytes], k: int, *, timeout: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.me = me
        self.members = sorted(members)
        self.k = k
        self.timeout = timeout
        self.clock = clock
        self.started = clock()
        #: how recently a majority must have been heard for this node to execute (see Quorum above)
        self.lease = timeout / 2
        #: the lease ran out at some moment since this node last caught up (even if heard again since)
        self.lapsed = False
        #: how many times this node lost its lease (and so stopped serving until it caught up)
        self.leases_lost = 0
        self.peers = {n: PeerState() for n in self.members if n != me}
        #: this node executes its actors (it has caught up since it started)
        self.serving = not self.peers or k == 1
        #: the members this node takes to be up (itself included): who executes what follows from it
        self.acting: frozenset[bytes] = frozenset(self.members)
        self.changes = 0
        #: members proven to have sent a wrong state diff: never executors again
        self.distrusted: set[bytes] = set()
        self._inbox_in, self._inbox_out = trio.open_memory_channel[tuple[Heard, trio.Event | None]](1024)

    # -- observations ---------------------------------------------------------------------

    def heard(self, heard: Heard) -> None:
        """Record a heartbeat (callable from any task: the actor applies it in order)."""
        try:
            self._inbox_in.send_nowait((heard, None))
        except trio.WouldBlock:  # the actor is far behind; a newer heartbeat will come
            log.warning("membership inbox full; dropped a heartbeat from %s", heard.node_id.hex()[:8])

    async def observe(self, heard: Heard) -> None:
        """Record a heartbeat and return once the view it leads to is adopted (a peer asking
        whether it may serve must be answered from a view in which it is up)."""
        done = trio.Event()
        await self._inbox_in.send((heard, done))
        await done.wait()

    def _record(self, heard: Heard) -> None:
        peer = self.peers.get(heard.node_id)
        if peer is None:
            return
        if self.serving and not self.has_quorum():
            # the lease ran out before this heartbeat came (the process was frozen, or cut off):
            # another holder may have taken over meanwhile, so this node must catch up first
            self.lapsed = True
        peer.last_heard = self.clock()
        peer.serving = heard.serving
        if heard.waiting is not None:
            peer.waiting = heard.waiting

    # -- the view -----------------------------------------------------------------------------

    def up(self, node_id: bytes) -> bool:
        """Heard from within ``timeout`` (a peer never heard from counts as up until ``timeout``
        after this node started, so a starting cluster does not take over live nodes' actors)."""
        if node_id == self.me:
            return True
        peer = self.peers.get(node_id)
        if peer is None:
            return False
        return self.clock() - (peer.last_heard if peer.last_heard is not None else self.started) < self.timeout

    def current(self) -> frozenset[bytes]:
        """The members that may execute: up and not distrusted."""
        return frozenset(n for n in self.members if self.up(n) and n not in self.distrusted)

    def distrust(self, node_id: bytes) -> None:
        """``node_id`` sent a wrong state diff (the evidence checked): the next view leaves it out."""
        if node_id in self.members and node_id not in self.distrusted:
            log.warning("membership: %s is distrusted; its actors move to their next holders", node_id.hex()[:8])
            self.distrusted.add(node_id)

    def has_quorum(self) -> bool:
        """This node has heard from a majority of the members within ``lease`` (always, with K = 1:
        each actor has one copy, so no other node can take it over)."""
        if self.k == 1 or not self.peers:
            return True
        now = self.clock()
        heard = {self.me} | {n for n, p in self.peers.items()
                             if p.last_heard is not None and now - p.last_heard < self.lease}
        twice, total = 2 * len(heard), len(self.members)
        return twice > total or (twice == total and self.members[0] in heard)

    def may_execute(self) -> bool:
        """Whether this node may run a round or admit a message now: it serves and holds its lease
        (checked at the moment, not at the last view change: a node frozen for a while must not
        run a round before its view catches up with the time that passed)."""
        return self.serving and not self.lapsed and self.has_quorum()

    def yields_to(self, peer: bytes, address: bytes, peer_executing: bool) -> bool:
        """Whether ``peer``'s receipts for ``address`` stand over this node's where the two copies
        conflict: the rule every node computes alike (SPEC §6).

        A node that may not execute now (it is catching up: it came back, or lost its
        lease) yields to one that may; ``peer_executing`` is what the peer said of itself
        when it sent its diffs (its own view, not this node's memory of its heartbeats,
        which may predate a freeze).  Between two alike, the actor's executor in the view
        wins.  So, once views agree, exactly one side yields.
        """
        if peer == self.me:
            return False
        executing = self.may_execute()
        if executing != peer_executing:
            return not executing
        return self.executor(address) == peer

    def executor(self, address: bytes, acting: frozenset[bytes] | None = None) -> bytes:
        """The holder of ``address`` that executes it in the view ``acting`` (default: the adopted
        one); if no holder is up, the first holder (messages wait for it)."""
        view = self.acting if acting is None else acting
        holders = replicas(address, self.members, self.k)
        return next((n for n in holders if n in view), holders[0])

    def executes(self, address: bytes) -> bool:
        return self.serving and self.executor(address) == self.me

    def caught_up(self) -> bool:
        """Every peer that is up has told us it holds no diffs left for the actors we will execute."""
        return all(not self.up(n) or (p.last_heard is not None and p.waiting == 0) for n, p in self.peers.items())

    def adopt(self, acting: frozenset[bytes], serving: bool) -> None:
        """Act on a new view (the caller has paused the runtime)."""
        gone, back = self.acting - acting, acting - self.acting
        if gone or back or serving != self.serving:
            self.changes += 1
            log.info("membership: %s%s%s", "serving; " if serving and not self.serving else "",
                     f"down: {sorted(n.hex()[:8] for n in gone)} " if gone else "",
                     f"up: {sorted(n.hex()[:8] for n in back)}" if back else "")
        self.acting, self.serving = acting, serving

    # -- the actor ---------------------------------------------------------------------------------

    async def run(self, on_change: Callable[[frozenset[bytes], bool], Awaitable[None]],
                  interval: float) -> None:
        """Apply heartbeats in order; when the view changes (a peer down or up, this node caught
        up), call ``on_change(acting, serving)``, which adopts it with the runtime paused."""
        while True:
            observed: list[tuple[Heard, trio.Event | None]] = []
            with trio.move_on_after(interval):
                observed.append(await self._inbox_out.receive())
                while True:
                    try:
                        observed.append(self._inbox_out.receive_nowait())
                    except trio.WouldBlock:
                        break
            for heard, _ in observed:
                self._record(heard)
            acting = self.current()
            if self.serving and (self.lapsed or not self.has_quorum()):
                log.warning("membership: lost touch with a majority of the members; this node executes nothing "
                            "until it hears from them again and has caught up")
                for peer in self.peers.values():
                    peer.waiting = None  # catching up again: each peer must say anew what it holds for us
                self.leases_lost += 1
                await on_change(acting, False)
                self.lapsed = False
            serving = (self.serving or self.caught_up()) and self.has_quorum()
            if acting != self.acting or serving != self.serving:
                await on_change(acting, serving)
            for _, done in observed:
                if done is not None:
                    done.set()
