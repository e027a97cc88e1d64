"""Epochs: the cluster's views, each chosen by a majority, and what they decide.

An actor is held by K nodes (its first K in rendezvous order).  Which of them executes it,
whose acknowledgement a record of it needs, and whose copy wins when two differ, used to
be decided by each node's own view of who is up, plus special cases.  Two nodes could
then both execute an actor (a frozen node and its successor), acknowledge records the
other never saw, and leave no rule that keeps what was acknowledged.  Here those
questions are answered by an **epoch**: a numbered view of the cluster that a majority
of the members agreed on.

An epoch names two sets of members:

* ``serving``: nodes whose copies hold every acknowledged record of every actor they
  hold.  An actor's **executor** in the epoch is the first of its holders (preference
  order) that serves; if none serves, nobody executes it and its messages wait.
* ``joining``: nodes that are up but may lack records (they were down, frozen or cut off
  in an earlier epoch).  They receive and acknowledge diffs but execute nothing, until
  they have caught up and a later epoch lists them as serving.

The rules (docs/cluster.md, "The replication protocol", names the test of each):

1. **Epochs are chosen by a majority** (:class:`Acceptor`, :class:`Proposer`: single-decree
   Paxos per epoch number, so at most one record is ever chosen for a number, and each
   is derived from the one before).  A node acts on the newest epoch it has installed.
2. **A record is acknowledged only in the epoch it was made, once every node of its ack
   set has it** (:meth:`History.ack_set`: the actor's holders that serve or join).  A
   holder refuses diffs from a sender whose epoch is older than its own, so an executor
   that was replaced cannot collect acknowledgements any more.
3. **Only complete copies serve.** A joining node becomes serving only once it holds every
   record the executors of its actors hold (it compares versions with them), or, for an
   actor that nobody executes now, if it served in the last epoch in which one of the
   actor's holders did (:meth:`History.complete_without_executor`).  So every executor
   holds every acknowledged record of its actor.
4. **Every record carries the epoch it was made in and its version** (the actor's record
   count).  A re-sent record a copy holds (same version, same epoch, same resulting
   state) is a no-op, whoever sends it; a record past the copy's end is a gap, filled
   from the executor; two different records for one version are a conflict, and **the
   record of the higher epoch wins** (Raft's log matching).  By rules 2 and 3 an
   acknowledged record is in the copy of every later executor, so it is never the one
   that loses.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence, Set
from typing import Any

import attrs
import trio

from missive.errors import MissiveError

log = logging.getLogger(__name__)

#: A proposal's ballot: (round, proposer's node id); compared as tuples, so two proposers never tie.
Ballot = tuple[int, bytes]
#: What a proposer calls on a peer: (peer, method, params) -> answer, or None if it did not answer.
Ask = Callable[[bytes, str, Any], Awaitable[Any]]


class EpochError(MissiveError, ValueError):
    """An epoch record, ballot or answer that is malformed or contradicts what this node knows."""


@attrs.frozen
class Epoch:
    number: int
    serving: frozenset[bytes]
    joining: frozenset[bytes] = frozenset()

    def encode(self) -> list[Any]:
        return [self.number, sorted(self.serving), sorted(self.joining)]

    @classmethod
    def decode(cls, raw: Any, members: Set[bytes]) -> Epoch:
        """An epoch record from the wire or the store, checked against the member list."""
        if not (isinstance(raw, list | tuple) and len(raw) == 3 and isinstance(raw[0], int)
                and not isinstance(raw[0], bool) and raw[0] >= 0
                and all(isinstance(s, list | tuple) for s in raw[1:])):
            raise EpochError("malformed epoch: expected [number, [serving ids], [joining ids]]")
        serving, joining = (frozenset(bytes(n) for n in s if isinstance(n, bytes)) for s in raw[1:])
        if len(serving) != len(raw[1]) or len(joining) != len(raw[2]):
            raise EpochError(f"malformed epoch {raw[0]}: node ids must be bytes, each named once")
        if not serving | joining <= members:
            raise EpochError(f"epoch {raw[0]} names nodes that are not members")
        if serving & joining:
            raise EpochError(f"epoch {raw[0]} lists a node as both serving and joining")
        return cls(raw[0], serving, joining)


def encode_ballot(ballot: Ballot | None) -> list[Any] | None:
    return None if ballot is None else [ballot[0], ballot[1]]


def decode_ballot(raw: Any) -> Ballot | None:
    if raw is None:
        return None
    if not (isinstance(raw, list | tuple) and len(raw) == 2 and isinstance(raw[0], int)
            and not isinstance(raw[0], bool) and isinstance(raw[1], bytes)):
        raise EpochError("malformed ballot: expected [round, node id]")
    return (raw[0], raw[1])


class History:
    """Every epoch installed so far, genesis (epoch 0: every member serving) first.

    Each was chosen by a majority, so every node that knows epoch n knows the same
    record for it; a node that missed some learns them (:meth:`extend`) before it acts.
    """

    def __init__(self, members: Sequence[bytes], holders: Callable[[bytes], Sequence[bytes]],
                 epochs: Iterable[Epoch] = ()) -> None:
        self.members = sorted(members)
        self.member_set = frozenset(self.members)
        #: an actor's holders in preference order (placement: missive.cluster.placement.replicas)
        self.holders = holders
        self.epochs: list[Epoch] = [Epoch(0, self.member_set)]
        self.extend(epochs)

    @property
    def latest(self) -> Epoch:
        return self.epochs[-1]

    def get(self, number: int) -> Epoch | None:
        return self.epochs[number] if 0 <= number < len(self.epochs) else None

    def extend(self, epochs: Iterable[Epoch]) -> bool:
        """Install chosen epochs (in any order, known ones again); returns whether any was new.
        A record that contradicts a known one, or a gap before a new one, is an error."""
        added = False
        for epoch in sorted(epochs, key=lambda e: e.number):
            known = self.get(epoch.number)
            if known is not None:
                if known != epoch:
                    raise EpochError(f"two different records for epoch {epoch.number}")
                continue
            if epoch.number != len(self.epochs):
                raise EpochError(f"epoch {epoch.number} comes after {self.latest.number}, which is missing")
            self.epochs.append(epoch)
            added = True
        return added

    def after(self, number: int) -> list[Epoch]:
        """The epochs after ``number`` (what a node that knows up to ``number`` lacks)."""
        return self.epochs[max(number + 1, 1):]

    def executor(self, address: bytes, number: int | None = None) -> bytes | None:
        """The holder of ``address`` that executes it in epoch ``number`` (default: the latest), or
        None if none of its holders serves then (its messages wait)."""
        epoch = self.latest if number is None else self.epochs[number]
        return next((n for n in self.holders(address) if n in epoch.serving), None)

    def executing_since(self, address: bytes, node: bytes, last: int) -> int | None:
        """The first epoch of the unbroken run of epochs up to ``last`` in which ``node`` executes
        ``address`` (None: it does not execute it in ``last``).

        Why: records a node made in epoch ``first`` and that were not acknowledged then may
        lose only to records another executor made later (rule 4: the higher epoch wins).  If
        the node executed the actor in every epoch since, no other copy has later records,
        so its copy stands and the current epoch's ack set decides; if another node executed
        it in between, the node's old records may lose (and a holder that acknowledged them
        may have given them up meanwhile, taking the other executor's copy)."""
        first = None
        for number in range(last, -1, -1):
            if self.executor(address, number) != node:
                break
            first = number
        return first

    def ack_set(self, address: bytes, number: int | None = None) -> frozenset[bytes]:
        """The holders whose copies must have a record of ``address`` before it is acknowledged."""
        epoch = self.latest if number is None else self.epochs[number]
        return frozenset(n for n in self.holders(address) if n in epoch.serving or n in epoch.joining)

    def complete_without_executor(self, node: bytes, holders: Sequence[bytes]) -> bool:
        """For an actor held by ``holders``: whether ``node``'s copy holds every acknowledged record,
        judged from the epochs alone.  Records are acknowledged only while one of the holders
        serves (rule 2), and then only with every serving holder's copy (rule 3): so the nodes
        that served in the last epoch in which one of them did hold every one."""
        for epoch in reversed(self.epochs):
            if any(h in epoch.serving for h in holders):
                return node in epoch.serving
        return True

    def proposal(self, live: Set[bytes], complete: Set[bytes]) -> Epoch | None:
        """The next epoch a coordinator proposes, given who is up (``live``, not distrusted) and which
        joining nodes report a complete copy; None if the latest already says so.  A serving node
        that is down leaves; one that returns joins; a joining node serves once complete."""
        latest = self.latest
        live = frozenset(live) & self.member_set
        serving = (latest.serving & live) | (latest.joining & live & frozenset(complete))
        joining = live - serving
        if serving == latest.serving and joining == latest.joining:
            return None
        return Epoch(latest.number + 1, serving, joining)

    def majority(self) -> int:
        return len(self.members) // 2 + 1


@attrs.frozen
class AcceptorState:
    """What an acceptor must remember across a crash, for the epoch number being chosen."""

    number: int = 1
    promised: Ballot | None = None
    accepted: tuple[Ballot, Epoch] | None = None

    def encode(self) -> list[Any]:
        return [self.number, encode_ballot(self.promised),
                None if self.accepted is None else [encode_ballot(self.accepted[0]), self.accepted[1].encode()]]

    @classmethod
    def decode(cls, raw: Any, members: Set[bytes]) -> AcceptorState:
        if not (isinstance(raw, list | tuple) and len(raw) == 3 and isinstance(raw[0], int)):
            raise EpochError("malformed acceptor state")
        accepted = None
        if raw[2] is not None:
            ballot = decode_ballot(raw[2][0])
            assert ballot is not None
            accepted = (ballot, Epoch.decode(raw[2][1], members))
        return cls(raw[0], decode_ballot(raw[1]), accepted)


#: Saves the history and the acceptor's state durably before an answer leaves (an acceptor that
#: forgot a promise after a crash could let two records be chosen for one epoch).
Save = Callable[[History, AcceptorState], Awaitable[None]]


class Acceptor:
    """One node's part in choosing each next epoch: single-decree Paxos per epoch number.

    ``prepare(n, b)``: promise to accept no ballot below ``b`` for epoch ``n`` and say what it
    accepted already; ``accept(n, b, epoch)``: accept unless it promised a higher ballot.
    Requests carry the sender's epochs after genesis, so an acceptor that missed some
    installs them first; one that knows epoch ``n`` already answers with what was chosen.
    """

    def __init__(self, history: History, state: AcceptorState, save: Save) -> None:
        self.history = history
        self.state = state
        self.save = save
        self._lock = trio.Lock()

    def _current(self) -> AcceptorState:
        """The state for the next epoch number (a new number starts with no promise)."""
        number = self.history.latest.number + 1
        return self.state if self.state.number == number else AcceptorState(number)

    def _chosen(self, number: int) -> dict[str, Any] | None:
        if number <= self.history.latest.number:
            return {"chosen": [e.encode() for e in self.history.after(number - 1)]}
        if number > self.history.latest.number + 1:
            return {"behind": self.history.latest.number}
        return None

    async def learn(self, epochs: Iterable[Epoch]) -> bool:
        """Install chosen epochs; saved before this returns.  True if any was new."""
        async with self._lock:
            if not self.history.extend(epochs):
                return False
            self.state = self._current()
            await self.save(self.history, self.state)
            return True

    async def prepare(self, number: int, ballot: Ballot, known: Iterable[Epoch]) -> dict[str, Any]:
        await self.learn(known)
        async with self._lock:
            answer = self._chosen(number)
            if answer is not None:
                return answer
            state = self._current()
            if state.promised is not None and ballot <= state.promised:
                return {"promised": False, "ballot": encode_ballot(state.promised)}
            self.state = attrs.evolve(state, promised=ballot)
            await self.save(self.history, self.state)
            accepted = self.state.accepted
            return {"promised": True, "accepted": None if accepted is None
                    else [encode_ballot(accepted[0]), accepted[1].encode()]}

    async def accept(self, number: int, ballot: Ballot, epoch: Epoch, known: Iterable[Epoch]) -> dict[str, Any]:
        await self.learn(known)
        async with self._lock:
            answer = self._chosen(number)
            if answer is not None:
                return answer
            if epoch.number != number:
                raise EpochError(f"a proposal for epoch {number} carries epoch {epoch.number}")
            state = self._current()
            if state.promised is not None and ballot < state.promised:
                return {"accepted": False, "ballot": encode_ballot(state.promised)}
            self.state = attrs.evolve(state, promised=ballot, accepted=(ballot, epoch))
            await self.save(self.history, self.state)
            return {"accepted": True}


class Proposer:
    """Gets the next epoch chosen: a coordinator's side of :class:`Acceptor`.

    ``ask(peer, method, params)`` carries ``epoch_prepare`` / ``epoch_accept`` to a peer and
    returns its answer, or None if it did not answer in time.
    """

    def __init__(self, me: bytes, acceptor: Acceptor, ask: Ask, *, timeout: float = 1.0,
                 rng: random.Random | None = None) -> None:
        self.me = me
        self.acceptor = acceptor
        self.history = acceptor.history
        self.ask = ask
        self.timeout = timeout
        self.round = 0
        self.rng = rng or random.Random()

    async def _everyone(self, method: str, params: dict[str, Any], local: Callable[[], Awaitable[Any]]) -> list[Any]:
        """Ask every member (this node directly), in parallel; the answers that came in time."""
        answers: list[Any] = []

        async def one(peer: bytes) -> None:
            try:
                answer = await local() if peer == self.me else await self.ask(peer, method, params)
            except EpochError as exc:
                log.warning("epochs: %s from %s: %s", method, peer.hex()[:8], exc)
                return
            if isinstance(answer, dict):
                answers.append(answer)

        with trio.move_on_after(self.timeout):
            async with trio.open_nursery() as nursery:
                for peer in self.history.members:
                    nursery.start_soon(one, peer)
        return answers

    async def _learn_from(self, answers: list[Any]) -> bool:
        """Install what answers say was chosen already; note higher ballots.  True if behind."""
        behind = False
        for answer in answers:
            if "chosen" in answer:
                try:
                    await self.acceptor.learn(Epoch.decode(e, self.history.member_set) for e in answer["chosen"])
                except EpochError as exc:
                    log.warning("epochs: an answer named a bad chosen epoch: %s", exc)
                behind = True
            ballot = decode_ballot(answer.get("ballot"))
            if ballot is not None:
                self.round = max(self.round, ballot[0])
        return behind

    async def propose(self, desired: Epoch) -> Epoch | None:
        """Try once to get an epoch chosen for ``desired.number``: ``desired`` itself, or a record some
        acceptor already accepted for that number (Paxos keeps a possibly chosen value).  Returns
        the epoch installed, or None (outvoted, no majority in time, or the number was taken)."""
        number = desired.number
        if number != self.history.latest.number + 1:
            return None
        self.round += 1
        ballot: Ballot = (self.round, self.me)
        known = [e.encode() for e in self.history.after(0)]
        params = {"number": number, "ballot": encode_ballot(ballot), "known": known}
        promises = await self._everyone("epoch_prepare", params, lambda: self.acceptor.prepare(
            number, ballot, self.history.after(0)))
        if await self._learn_from(promises):
            return None
        granted = [a for a in promises if a.get("promised") is True]
        if len(granted) < self.history.majority():
            return None
        value = desired
        best: Ballot | None = None
        for answer in granted:
            if answer.get("accepted"):
                their = decode_ballot(answer["accepted"][0])
                if their is not None and (best is None or their > best):
                    best, value = their, Epoch.decode(answer["accepted"][1], self.history.member_set)
        if value.number != number:
            return None
        params = {"number": number, "ballot": encode_ballot(ballot), "epoch": value.encode(), "known": known}
        accepts = await self._everyone("epoch_accept", params, lambda: self.acceptor.accept(
            number, ballot, value, self.history.after(0)))
        if await self._learn_from(accepts):
            return None
        if sum(1 for a in accepts if a.get("accepted") is True) < self.history.majority():
            return None
        await self.acceptor.learn([value])
        return value

    def backoff(self) -> float:
        """How long to wait after a failed proposal (random, so two coordinators do not keep colliding)."""
        return self.timeout * (0.2 + self.rng.random())


def parse_request(params: Any, members: Set[bytes], *, with_epoch: bool) -> tuple[int, Ballot, Epoch | None, list[Epoch]]:
    """An ``epoch_prepare`` / ``epoch_accept`` request's fields, checked (EpochError names what is wrong)."""
    if not isinstance(params, dict):
        raise EpochError("expected {number, ballot, known[, epoch]}")
    number, known = params.get("number"), params.get("known")
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise EpochError("number must be an epoch number from 1")
    if not isinstance(known, list) or len(known) > 1_000_000:
        raise EpochError("known must be a list of epochs")
    ballot = decode_ballot(params.get("ballot"))
    if ballot is None:
        raise EpochError("a ballot is required")
    epoch = Epoch.decode(params.get("epoch"), members) if with_epoch else None
    return number, ballot, epoch, [Epoch.decode(e, members) for e in known]


__all__ = ["Acceptor", "AcceptorState", "Ballot", "Epoch", "EpochError", "History", "Proposer", "parse_request"]
