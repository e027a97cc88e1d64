"""Epochs on a cluster node: the acceptor's RPCs, the coordinator, and a joining node's catch-up.

The rules are in :mod:`missive.replicas.epochs` (network-free); this module carries them
over the node's peer links and keeps them durable in its store:

* **Acceptor** (``epoch_prepare``, ``epoch_accept``): every member takes part in choosing
  each next epoch; its promises and the epochs it installed are written through the node's
  writer (one fsync) before it answers.
* **Coordinator**: the member with the lowest id among those it hears proposes the next
  epoch when its view of who is up, or of who has caught up, differs from the newest
  epoch's; others only propose if they believe themselves lowest (a partition, or a
  lost heartbeat), and Paxos keeps that safe.
* **Learning**: a proposer tells every peer the epoch it got chosen (``epoch_learn``);
  a node that hears of a newer epoch in a heartbeat fetches what it lacks (``epochs``).
* **Catching up**: a joining node asks each serving peer (``sync``) for the records of
  the actors that peer executes and this node holds; where its copy lacks them and the
  peer has nothing queued for it, it takes the executor's copy (a snapshot).  Once every
  copy matches (and, for actors nobody executes, it served last: rule 3), it reports
  itself complete in its heartbeats, and the coordinator's next epoch has it serve.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from missive.cluster.membership import Membership
from missive.identity import short_id
from missive.mailbox.writer import GroupWriter
from missive.net import NetError, PeerLink
from missive.replicas.copies import Copies
from missive.replicas.epochs import Acceptor, AcceptorState, Epoch, EpochError, History, Proposer, parse_request
from missive.replicas.refusals import require_member

log = logging.getLogger(__name__)

#: Takes ``peer``'s copy of an actor after this node's record ``version`` (the receiver's reconcile: missive.replicas.receiver).
Reconcile = Callable[[bytes, bytes, int], Awaitable[None]]


def load_history(copies: Copies, members: list[bytes], holders: Callable[[bytes], list[bytes]]
                 ) -> tuple[History, AcceptorState]:
    """The epochs and acceptor state a node saved (genesis and a fresh acceptor for a new store)."""
    raw_epochs, raw_state = copies.epochs()
    member_set = frozenset(members)
    history = History(members, holders, (Epoch.decode(e, member_set) for e in raw_epochs))
    state = AcceptorState.decode(raw_state, member_set) if raw_state is not None else AcceptorState()
    return history, state


class EpochService:
    def __init__(self, me: bytes, names: dict[bytes, str], links: dict[bytes, PeerLink], membership: Membership,
                 copies: Copies, writer: GroupWriter, state: AcceptorState, reconcile: Reconcile, *,
                 interval: float, timeout: float) -> None:
        self.me = me
        self.names = names
        self.links = links
        self.membership = membership
        self.history = membership.history
        self.copies = copies
        self.writer = writer
        self.reconcile = reconcile
        self.interval = interval
        self.timeout = timeout
        self.acceptor = Acceptor(self.history, state, self._save)
        self.proposer = Proposer(me, self.acceptor, self._ask, timeout=timeout)
        #: this node joins and its copies are complete in the newest epoch (said in heartbeats)
        self.complete = False
        self.proposals = 0
        self.chosen = 0
        self._saved_latest = self.history.latest.number

    # -- durability ----------------------------------------------------------------------------

    async def _save(self, history: History, state: AcceptorState) -> None:
        await self.writer.write(functools.partial(
            self.copies.save_epochs, [e.encode() for e in history.after(0)], state.encode()))
        if history.latest.number != self._saved_latest:
            self._saved_latest = history.latest.number
            self.complete = False  # said of the epoch before
            self.membership.installed()

    # -- talking to peers --------------------------------------------------------------------------

    async def _ask(self, peer: bytes, method: str, params: Any) -> Any:
        link = self.links.get(peer)
        if link is None:
            return None
        try:
            return await link.call(method, params, timeout=self.timeout)
        except NetError as exc:
            log.debug("%s to %s: %s", method, self.names.get(peer, short_id(peer)), exc)
            return None

    def _member(self, peer: bytes, method: str) -> None:
        require_member(self.names, self.me, peer, method)

    def handlers(self) -> dict[str, Callable[[bytes, Any], Awaitable[Any]]]:
        return {"epoch_prepare": self.rpc_prepare, "epoch_accept": self.rpc_accept,
                "epoch_learn": self.rpc_learn, "epochs": self.rpc_epochs, "sync": self.rpc_sync}

    async def rpc_prepare(self, peer: bytes, params: Any) -> dict[str, Any]:
        self._member(peer, "epoch_prepare")
        number, ballot, _, known = parse_request(params, self.history.member_set, with_epoch=False)
        return await self.acceptor.prepare(number, ballot, known)

    async def rpc_accept(self, peer: bytes, params: Any) -> dict[str, Any]:
        self._member(peer, "epoch_accept")
        number, ballot, epoch, known = parse_request(params, self.history.member_set, with_epoch=True)
        assert epoch is not None
        return await self.acceptor.accept(number, ballot, epoch, known)

    async def rpc_learn(self, peer: bytes, params: Any) -> bool:
        """Chosen epochs, from the proposer that got them chosen."""
        self._member(peer, "epoch_learn")
        if not isinstance(params, dict) or not isinstance(params.get("known"), list):
            raise EpochError("epoch_learn takes {known: [epochs]}")
        return await self.acceptor.learn(Epoch.decode(e, self.history.member_set) for e in params["known"])

    async def rpc_epochs(self, peer: bytes, params: Any) -> list[Any]:
        """The epochs after ``after`` (a node that heard of a newer epoch fetches what it lacks)."""
        self._member(peer, "epochs")
        after = params.get("after") if isinstance(params, dict) else None
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise EpochError("epochs takes {after: an epoch number}")
        return [e.encode() for e in self.history.after(after)]

    async def rpc_sync(self, peer: bytes, params: Any) -> dict[str, Any]:
        """For a joining peer: the epoch this node acts in, how many diffs wait to go to the peer, and
        (address, version, epoch) of the last record of every actor this node executes that the
        peer holds."""
        self._member(peer, "sync")

        def wanted(address: bytes) -> bool:
            return peer in self.membership.holders(address) and self.membership.executes(address)

        view = await trio.to_thread.run_sync(self.copies.sync_view, peer, wanted)
        return {"epoch": self.membership.number, "serving": self.membership.may_execute(), "copies": view}

    # -- running ------------------------------------------------------------------------------------

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._coordinate)
            nursery.start_soon(self._learn_newer)
            nursery.start_soon(self._catch_up)

    async def _coordinate(self) -> None:
        """Propose the next epoch while this node is the lowest-id member it hears from."""
        while True:
            await trio.sleep(self.interval)
            membership = self.membership
            live = membership.current()
            if not live or min(live) != self.me or not membership.has_quorum():
                continue
            if membership.newer_epoch() > self.history.latest.number:
                continue  # a newer epoch exists: learn it first (_learn_newer)
            complete = membership.complete_peers() | ({self.me} if self.complete else set())
            desired = self.history.proposal(live, complete)
            if desired is None:
                continue
            self.proposals += 1
            chosen = await self.proposer.propose(desired)
            if chosen is None:
                await trio.sleep(self.proposer.backoff())
                continue
            self.chosen += 1
            log.info("epochs: epoch %d chosen: serving %s, joining %s", chosen.number,
                     sorted(self.names[n] for n in chosen.serving), sorted(self.names[n] for n in chosen.joining))
            await self._tell_everyone()

    async def _tell_everyone(self) -> None:
        known = {"known": [e.encode() for e in self.history.after(0)]}
        async with trio.open_nursery() as nursery:
            for peer in self.links:
                nursery.start_soon(self._ask, peer, "epoch_learn", known)

    async def _learn_newer(self) -> None:
        """Fetch epochs a peer told of in a heartbeat and this node lacks."""
        while True:
            await trio.sleep(self.interval)
            newest = self.membership.newer_epoch()
            latest = self.history.latest.number
            if newest <= latest:
                continue
            for peer, state in self.membership.peers.items():
                if state.epoch > latest:
                    answer = await self._ask(peer, "epochs", {"after": latest})
                    if isinstance(answer, list):
                        try:
                            await self.acceptor.learn(Epoch.decode(e, self.history.member_set) for e in answer)
                        except EpochError as exc:
                            log.warning("epochs from %s: %s", self.names[peer], exc)
                        break

    async def _catch_up(self) -> None:
        """While this node joins: compare its copies with the executors' and fill what is missing."""
        while True:
            await trio.sleep(self.interval)
            if not self.membership.joining or self.membership.number != self.history.latest.number:
                self.complete = False
                continue
            try:
                complete = await self._copies_complete()
            except (NetError, EpochError, KeyError, TypeError, ValueError) as exc:
                log.info("epochs: catching up: %s", exc)
                complete = False
            if complete and not self.complete:
                log.info("epochs: every copy this node holds is complete in epoch %d", self.membership.number)
            self.complete = complete and self.membership.number == self.history.latest.number

    async def _copies_complete(self) -> bool:
        """Whether every copy this node holds has every record its executor has (rule 3)."""
        membership = self.membership
        epoch = membership.epoch
        holders = membership.holders
        mine = await trio.to_thread.run_sync(self.copies.heads, lambda a: self.me in holders(a))
        for address, _, _ in mine:
            executor = self.history.executor(address, epoch.number)
            if executor is None and not self.history.complete_without_executor(self.me, holders(address)):
                return False
        complete = True
        for peer in sorted(epoch.serving - {self.me}):
            answer = await self._ask(peer, "sync", {})
            if not isinstance(answer, dict) or answer.get("epoch") != epoch.number or not answer.get("serving"):
                return False
            for address, version, record_epoch, oldest in answer["copies"]:
                address, version = bytes(address), int(version)
                head, _ = self.copies.head(address)
                if head >= version and self.copies.record_epoch(address, version) == record_epoch:
                    # this copy has every record up to the executor's queue for it; records made before
                    # this epoch still queued were not acknowledged with it: wait until they are here
                    complete = complete and (oldest is None or oldest >= epoch.number)
                    continue
                complete = False  # a gap the queue will not fill, or records that are not the executor's
                await self.reconcile(peer, address, min(head, version))
        return complete
