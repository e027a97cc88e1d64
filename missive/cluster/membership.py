"""Membership and liveness: which members are up, and the epoch this node acts in.

The view is kept by one actor per node (:meth:`Membership.run`, a trio task that takes
observations from its mailbox one at a time), so it changes in one place and in order;
the trust layer reads the same view.  Observations are heartbeats: every ``interval``
each node calls every peer's ``heartbeat``, saying which epoch it knows and whether its
copies are complete; the answer says the same of the peer.  A peer not heard from for
``timeout`` seconds is *down*.

**Who executes what** (K > 1) is not decided here from heartbeats but by the newest
**epoch** this node has installed (:mod:`missive.replicas.epochs`): a view of the cluster
chosen by a majority, naming the nodes that serve (they execute) and those that join
(they catch up).  An actor's executor is the first of its holders that serves.  Liveness
feeds the coordinator, which proposes the next epoch when someone went down, came back,
or has caught up.  With K = 1 each actor has one copy, so its only holder executes it
and there is nothing to agree on.

**The lease.** With K > 1 a node executes only while it has heard from a majority of the
members, itself included, within ``timeout / 2`` (exactly half counts when it includes the
first member in id order), and while no peer has told it of a newer epoch than the one it
acts in.  A node cut off or frozen so stops before another holder can take its actors;
the epochs are what keeps that safe where timing is not (an executor that a newer epoch
replaced cannot get its records acknowledged any more).

A member proven to have sent a wrong state diff (execution trust,
:mod:`missive.replicas.execution_trust`) is *distrusted*: it counts as down, so the next
epoch leaves it out and its actors move to their next holders.  That holds in its own view
too: a node that checks the evidence against itself steps down.

The epoch a node acts on (:attr:`Membership.number`) changes only through
:meth:`Membership.adopt`, which the node calls with its runtime paused, so a round never
runs under one epoch and commits under another.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import attrs
import trio

from missive.cluster.placement import replicas
from missive.replicas.epochs import Epoch, History

log = logging.getLogger(__name__)


@attrs.frozen
class Heard:
    """A heartbeat from (or answered by) ``node_id``."""

    node_id: bytes
    serving: bool
    #: the newest epoch the peer has installed (-1: not said)
    epoch: int = -1
    #: the peer joins and reports its copies complete in that epoch (see ClusterNode._catch_up)
    complete: bool = False


@attrs.define
class PeerState:
    last_heard: float | None = None
    serving: bool = False
    epoch: int = -1
    complete: bool = False


class Membership:
    """One node's view of the members and of the epoch it acts in (see the module docstring)."""

    def __init__(self, me: bytes, members: Sequence[bytes], k: int, *, timeout: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, history: History | None = None) -> None:
        self.me = me
        self.members = sorted(members)
        self.k = k
        self.timeout = timeout
        self.clock = clock
        self.started = clock()
        #: how recently a majority must have been heard for this node to execute (see the lease above)
        self.lease = timeout / 2
        #: how many times this node lost its lease (and so stopped executing until it had it back)
        self.leases_lost = 0
        self._had_lease = False  # none until a majority is heard
        self.peers = {n: PeerState() for n in self.members if n != me}
        #: every epoch this node installed (shared with its acceptor: missive.replicas.epochs)
        self.history = history if history is not None else History(self.members, self.holders)
        #: the epoch this node acts in (adopted with the runtime paused; <= the newest installed)
        self.number = self.history.latest.number
        #: how many times the epoch acted in changed
        self.changes = 0
        #: members proven to have sent a wrong state diff: never executors again
        self.distrusted: set[bytes] = set()
        #: members whose worker has no stake in the cluster's registry (unbonded, slashed): they execute
        #: nothing, so the next epoch leaves them out (issue 23; missive/cluster/stakes.py keeps it)
        self.unstaked: frozenset[bytes] = frozenset()
        self._inbox_in, self._inbox_out = trio.open_memory_channel[tuple[Heard | None, trio.Event | None]](1024)

    def holders(self, address: bytes) -> list[bytes]:
        return replicas(address, self.members, self.k)

    # -- observations ---------------------------------------------------------------------

    def heard(self, heard: Heard) -> None:
        """Record a heartbeat (callable from any task: the actor applies it in order)."""
        try:
            self._inbox_in.send_nowait((heard, None))
        except trio.WouldBlock:  # the actor is far behind; a newer heartbeat will come
            log.warning("membership inbox full; dropped a heartbeat from %s", heard.node_id.hex()[:8])

    async def observe(self, heard: Heard | None = None) -> None:
        """Record a heartbeat (or, with None, a newly installed epoch) and return once the view it
        leads to is adopted."""
        done = trio.Event()
        await self._inbox_in.send((heard, done))
        await done.wait()

    def installed(self) -> None:
        """A newer epoch was installed (by the acceptor): the actor adopts it between rounds."""
        try:
            self._inbox_in.send_nowait((None, None))
        except trio.WouldBlock:
            pass  # the actor looks at the history on its next turn anyway

    def _record(self, heard: Heard) -> None:
        peer = self.peers.get(heard.node_id)
        if peer is None:
            return
        self._check_lease()  # did it run out before this heartbeat came (a freeze, a cut)?
        peer.last_heard = self.clock()
        peer.serving = heard.serving
        if heard.epoch >= 0:
            peer.epoch, peer.complete = heard.epoch, heard.complete

    def told_epoch(self, node_id: bytes, epoch: object) -> None:
        """A peer's answer named the newest epoch it knows (it may be newer than this node's)."""
        peer = self.peers.get(node_id)
        if peer is not None and isinstance(epoch, int) and not isinstance(epoch, bool) and epoch > peer.epoch:
            peer.epoch, peer.complete = epoch, False  # what it said of its copies was of an older epoch

    # -- liveness -------------------------------------------------------------------------------

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
        """The members up, not distrusted and staked (what the coordinator proposes epochs from)."""
        return frozenset(n for n in self.members if self.up(n) and n not in self.distrusted and n not in self.unstaked)

    def set_unstaked(self, unstaked: frozenset[bytes]) -> None:
        """The members the registry says have no stake now.  Kept only with two holders or more per
        actor (with one, an actor has no other copy to move to: its node keeps executing it), and never
        all of them (a cluster where no worker has a stake would execute nothing: it keeps the last
        view, and says so)."""
        unstaked = frozenset(n for n in unstaked if n in self.members) if self.k > 1 else frozenset()
        if unstaked == self.unstaked:
            return
        if len(unstaked) == len(self.members):
            log.warning("membership: no member's worker has a stake in the registry; keeping the last view")
            return
        for node in sorted(unstaked - self.unstaked):
            log.warning("membership: %s's worker has no stake in the registry: it executes nothing, its actors move "
                        "to their next holders", node.hex()[:8])
        for node in sorted(self.unstaked - unstaked):
            log.warning("membership: %s's worker has a stake again: it may serve", node.hex()[:8])
        self.unstaked = unstaked

    def distrust(self, node_id: bytes) -> None:
        """``node_id`` sent a wrong state diff (the evidence checked): the next epoch leaves it out."""
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

    def newer_epoch(self) -> int:
        """The newest epoch a peer has told of (to fetch it if this node lacks it)."""
        return max([p.epoch for p in self.peers.values()] + [self.history.latest.number])

    def complete_peers(self) -> frozenset[bytes]:
        """Joining peers that report complete copies in the newest epoch (the coordinator promotes them)."""
        latest = self.history.latest.number
        return frozenset(n for n, p in self.peers.items() if p.complete and p.epoch == latest and self.up(n))

    # -- the epoch acted in ---------------------------------------------------------------------

    @property
    def epoch(self) -> Epoch:
        return self.history.epochs[self.number]

    @property
    def serving(self) -> bool:
        """This node executes its actors: it serves in the epoch it acts in (always, with K = 1)."""
        return self.k == 1 or not self.peers or (self.me in self.epoch.serving and self.me not in self.distrusted
                                                   and self.me not in self.unstaked)

    @property
    def joining(self) -> bool:
        return self.k > 1 and bool(self.peers) and self.me in self.epoch.joining

    @property
    def acting(self) -> frozenset[bytes]:
        """The members whose copies take part now (serving or joining): what a record waits for."""
        if self.k == 1 or not self.peers:
            return self.current()
        return self.epoch.serving | self.epoch.joining

    def may_execute(self) -> bool:
        """Whether this node may run a round or admit a message now: it serves, holds its lease, and
        no peer has told it of a newer epoch (checked at the moment, not at the last change: a
        node frozen for a while must not run a round before its view catches up)."""
        if self.k == 1 or not self.peers:
            return True
        return self.serving and self.has_quorum() and self.newer_epoch() <= self.number

    def executor(self, address: bytes) -> bytes:
        """The holder of ``address`` that executes it in the epoch acted in; if none serves, the first
        holder (its messages wait there)."""
        holders = self.holders(address)
        if self.k == 1 or not self.peers:
            return holders[0]
        return self.history.executor(address, self.number) or holders[0]

    def executes(self, address: bytes) -> bool:
        return self.serving and self.executor(address) == self.me

    def adopt(self) -> bool:
        """Act in the newest installed epoch (the caller has paused the runtime); whether it changed."""
        latest = self.history.latest.number
        if latest == self.number:
            return False
        before = self.epoch
        self.number = latest
        self.changes += 1
        now = self.epoch
        log.info("membership: epoch %d: serving %s, joining %s%s", now.number,
                 sorted(n.hex()[:8] for n in now.serving), sorted(n.hex()[:8] for n in now.joining),
                 "; this node serves" if self.me in now.serving and self.me not in before.serving else
                 "; this node catches up" if self.me in now.joining else "")
        return True

    def _check_lease(self) -> None:
        """Count a lease that ran out since the last look (the node stopped executing meanwhile)."""
        lease = self.has_quorum()
        if self._had_lease and not lease and self.serving:
            log.warning("membership: lost touch with a majority of the members; this node executes nothing "
                        "until it hears from them again")
            self.leases_lost += 1
        self._had_lease = lease

    # -- the actor ---------------------------------------------------------------------------------

    async def run(self, on_change: Callable[[], Awaitable[None]], interval: float) -> None:
        """Apply heartbeats in order; when a newer epoch is installed, call ``on_change()``, which
        adopts it with the runtime paused.  Counts lost leases."""
        while True:
            observed: list[tuple[Heard | None, trio.Event | None]] = []
            with trio.move_on_after(interval):
                observed.append(await self._inbox_out.receive())
                while True:
                    try:
                        observed.append(self._inbox_out.receive_nowait())
                    except trio.WouldBlock:
                        break
            for heard, _ in observed:
                if heard is not None:
                    self._record(heard)
            self._check_lease()
            if self.history.latest.number != self.number:
                await on_change()
            for _, done in observed:
                if done is not None:
                    done.set()
