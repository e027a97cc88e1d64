"""The attestation and gossip actors: trio tasks over a small :class:`Transport`.

The actors hold no sockets.  A :class:`Transport` sends bytes to a peer named
by its public key and, for a request, waits for the peer's reply; whatever
cannot be delivered (lost, peer offline, timed out) comes back as ``None``.
``missive.net``'s authenticated channels can implement it for a cluster node;
:class:`~missive.consensus.simnet.SimNetwork` implements it in memory for the
simulator.  A node runs both actors behind one :class:`Router`, which
tells their messages apart by a one-byte channel prefix.

*Attestation.*  Each step the attestation actor challenges every subject the
overlay assigned it: a fresh nonce plus a receipt to spot-check.  The subject
answers with its result for that receipt, signed with its key over (attester,
nonce, step, answer) — the challenge-response proves liveness and identity, the
spot check compares the answer with the attester's own re-execution
(:class:`Prover`).  A missing, unsigned or wrong answer is a failure; a wrong
signed answer is kept as :class:`Evidence` (anyone can check the subject said
it).  After the step the actor signs its direct-trust statement and hands it
to the gossip actor, which pushes it to the nodes it concerns (targeted
gossip) and spreads it in its rounds.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

import attrs
import msgpack
import nacl.exceptions
import nacl.signing
import trio

from missive.consensus import gossip
from missive.consensus.direct_trust import DEFAULT_K, TrustHistory
from missive.consensus.gossip import Gossiper
from missive.consensus.kernel import Attester, Statement
from missive.identity import verify

Handler = Callable[[bytes, bytes], Awaitable[bytes | None]]
ATTEST_DOMAIN = "missive/trust/attest/v1"
GOSSIP, ATTEST = b"g", b"a"


class Transport(Protocol):
    """What the actors need from a network."""

    @property
    def me(self) -> bytes: ...

    async def request(self, peer: bytes, data: bytes) -> bytes | None:
        """Send ``data`` to ``peer`` and return its reply, or None if there is none (lost, offline, timeout)."""
        ...

    async def send(self, peer: bytes, data: bytes) -> None:
        """Send ``data`` to ``peer`` without waiting for anything (best effort)."""
        ...


class Router:
    """One node's handler: routes a request to the actor its channel byte names."""

    def __init__(self) -> None:
        self.routes: dict[bytes, Handler] = {}

    def add(self, channel: bytes, handler: Handler) -> None:
        self.routes[channel] = handler

    async def __call__(self, sender: bytes, data: bytes) -> bytes | None:
        route = self.routes.get(data[:1])
        if route is None:
            return None
        reply = await route(sender, data[1:])
        return None if reply is None else data[:1] + reply


class Prover(Protocol):
    """The spot check behind an attestation (the VM re-execution in a cluster)."""

    def pick(self, subject: bytes) -> bytes:
        """A recent receipt of ``subject`` to check."""
        ...

    def answer(self, receipt: bytes) -> bytes:
        """This node's result for ``receipt`` (what it answers when challenged)."""
        ...

    def expected(self, subject: bytes, receipt: bytes) -> bytes:
        """The attester's own result for ``receipt`` (by re-execution)."""
        ...


@attrs.frozen
class Evidence:
    """A subject's signed answer that contradicted the attester's re-execution."""

    attester: bytes
    subject: bytes
    step: int
    nonce: bytes
    receipt: bytes
    answer: bytes
    signature: bytes

    def signed_bytes(self) -> bytes:
        body: bytes = msgpack.packb([ATTEST_DOMAIN, self.attester, self.nonce, self.step, self.receipt, self.answer])
        return body

    def verify(self) -> bool:
        """True if the subject really signed this answer (whether it is wrong needs a re-execution)."""
        return _verify(self.subject, self.signed_bytes(), self.signature)


def _verify(key: bytes, body: bytes, signature: bytes) -> bool:
    return verify(key, body, signature)


class AttestationActor:
    """Attests the subjects the overlay assigns, keeps their histories and publishes statements."""

    def __init__(
        self,
        identity: Attester,
        transport: Transport,
        subjects: Callable[[], Sequence[bytes]],
        prover: Prover,
        publish: Callable[[Statement], Awaitable[None]],
        *,
        rng: random.Random,
        k: int = DEFAULT_K,
        period: float = 1.0,
        timeout: float = 0.5,
        report: Callable[[bytes, bool], bool] | None = None,
        phase: float = 0.0,
    ) -> None:
        self.identity = identity
        self.signing = nacl.signing.SigningKey(identity.seed)
        self.transport = transport
        self.subjects = subjects
        self.prover = prover
        self.publish = publish
        self.rng = rng
        self.k = k
        self.period = period
        self.timeout = timeout
        self.report = report or (lambda subject, ok: ok)  # a liar's policy replaces this
        self.phase = phase  # nodes are not synchronised: each starts its schedule at its own offset
        self.histories: dict[bytes, TrustHistory] = {}
        self.evidence: list[Evidence] = []
        self.step = 0

    async def handle(self, sender: bytes, data: bytes) -> bytes | None:
        """Answer a challenge: our result for the receipt, signed over the challenge."""
        try:
            tag, nonce, step, receipt = msgpack.unpackb(data)
            if tag != "C":
                return None
            nonce, receipt, step = bytes(nonce), bytes(receipt), int(step)
        except (ValueError, TypeError, msgpack.UnpackException):
            return None
        answer = self.prover.answer(receipt)
        body = msgpack.packb([ATTEST_DOMAIN, sender, nonce, step, receipt, answer])
        reply: bytes = msgpack.packb(["A", answer, self.signing.sign(body).signature])
        return reply

    async def attest(self, subject: bytes, step: int) -> bool:
        """One attestation of ``subject``: True if it answered, signed, and its answer checks out."""
        nonce = self.rng.randbytes(16)
        receipt = self.prover.pick(subject)
        with trio.move_on_after(self.timeout):
            raw = await self.transport.request(subject, ATTEST + msgpack.packb(["C", nonce, step, receipt]))
            if raw is None or raw[:1] != ATTEST:
                return False
            try:
                tag, answer, signature = msgpack.unpackb(raw[1:])
                answer, signature = bytes(answer), bytes(signature)
            except (ValueError, TypeError, msgpack.UnpackException):
                return False
            if tag != "A":
                return False
            body = msgpack.packb([ATTEST_DOMAIN, self.identity.public_key, nonce, step, receipt, answer])
            if not _verify(subject, body, signature):
                return False
            if answer == self.prover.expected(subject, receipt):
                return True
            self.evidence.append(Evidence(self.identity.public_key, subject, step, nonce, receipt, answer, signature))
            return False
        return False

    async def run_step(self) -> Statement:
        """Attest every subject once (concurrently), then sign and publish the statement."""
        self.step += 1
        step = self.step
        subjects = list(self.subjects())
        results: dict[bytes, bool] = {}

        async def one(subject: bytes) -> None:
            results[subject] = await self.attest(subject, step)

        async with trio.open_nursery() as nursery:
            for subject in subjects:
                nursery.start_soon(one, subject)
        trusts: dict[bytes, int] = {}
        for subject in subjects:
            history = self.histories.get(subject, TrustHistory(self.k, step))
            history = history.record(step, self.report(subject, results[subject]))
            self.histories[subject] = history
            trusts[subject] = history.value
        statement = self.identity.statement(step, step, trusts, self.k)
        await self.publish(statement)
        return statement

    async def run(self, steps: int | None = None) -> None:
        await trio.sleep(self.phase)
        done = 0
        while steps is None or done < steps:
            await self.run_step()
            done += 1
            await trio.sleep(self.period)


class GossipActor:
    """Runs gossip rounds (one exchange per period with a chosen peer) and targeted pushes."""

    def __init__(
        self,
        gossiper: Gossiper,
        transport: Transport,
        choose_peer: Callable[[], bytes | None],
        targets: Callable[[Statement], Iterable[bytes]],
        *,
        period: float = 1.0,
        timeout: float = 0.5,
        phase: float = 0.0,
        retries: int = 1,
    ) -> None:
        self.gossiper = gossiper
        self.phase = phase
        self.retries = retries
        self.transport = transport
        self.choose_peer = choose_peer
        self.targets = targets
        self.period = period
        self.timeout = timeout
        self.rounds = 0

    async def handle(self, sender: bytes, data: bytes) -> bytes | None:
        try:
            message = gossip.decode(data)
        except ValueError:
            return None
        reply = self.gossiper.handle(message)
        return None if reply is None else gossip.encode(reply)

    async def exchange(self, peer: bytes) -> int:
        """One exchange with ``peer``: the same ping-pong as :func:`gossip.exchange`; returns replies received."""
        m: gossip.Message | None = self.gossiper.summary()
        replies = 0
        while m is not None:
            raw = None
            with trio.move_on_after(self.timeout):
                raw = await self.transport.request(peer, GOSSIP + gossip.encode(m))
            if raw is None or raw[:1] != GOSSIP:
                break
            replies += 1
            try:
                m = self.gossiper.handle(gossip.decode(raw[1:]))
            except ValueError:
                break
        return replies

    async def publish(self, statement: Statement) -> None:
        """Take our fresh statement and push it straight to the nodes it concerns."""
        if not self.gossiper.kernel.add(statement):
            return
        data = GOSSIP + gossip.encode(self.gossiper.push([statement]))
        for target in self.targets(statement):
            if target != self.transport.me:
                await self.transport.send(target, data)

    async def run(self, rounds: int | None = None) -> None:
        await trio.sleep(self.phase)
        while rounds is None or self.rounds < rounds:
            await trio.sleep(self.period)
            self.rounds += 1
            for _ in range(1 + self.retries):  # a peer that never answers: try another
                peer = self.choose_peer()
                if peer is None or await self.exchange(peer):
                    break
