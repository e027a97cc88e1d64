"""An in-memory network for the actors, on trio's clock (use ``MockClock`` to simulate).

Every message is real bytes handed to the peer's handler after a latency
drawn around ``latency`` seconds (distinct times also keep trio's timer order,
which breaks ties by object id, out of the result); a message is lost with probability ``loss`` (decided by a seeded
generator, so a run is reproducible), and a node that is offline neither
receives nor answers.  Bytes sent are counted per node.
:func:`run_network` builds N nodes running the real attestation and gossip
actors and runs them for a number of steps.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import attrs
import trio
import trio.testing

from missive.consensus.actors import ATTEST, GOSSIP, AttestationActor, GossipActor, Handler, Router
from missive.consensus.gossip import Gossiper
from missive.consensus.kernel import Attester, Kernel, Statement, Verifier
from missive.consensus.overlay import Overlay


class SimNetwork:
    def __init__(self, rng: random.Random, loss: float = 0.0, latency: float = 0.01) -> None:
        self.rng = rng
        self.loss = loss
        self.latency = latency
        self.handlers: dict[bytes, Handler] = {}
        self.offline: set[bytes] = set()
        self.sent: Counter[bytes] = Counter()

    def attach(self, key: bytes, handler: Handler) -> SimTransport:
        self.handlers[key] = handler
        return SimTransport(self, key)

    def _delivered(self, peer: bytes) -> bool:
        return peer in self.handlers and peer not in self.offline and self.rng.random() >= self.loss


@attrs.frozen
class SimTransport:
    network: SimNetwork
    me: bytes

    async def request(self, peer: bytes, data: bytes) -> bytes | None:
        net = self.network
        net.sent[self.me] += len(data)
        await trio.sleep(net.latency * (0.5 + net.rng.random()))
        if self.me in net.offline or not net._delivered(peer):
            return None
        reply = await net.handlers[peer](self.me, data)
        if reply is None:
            return None
        net.sent[peer] += len(reply)
        await trio.sleep(net.latency * (0.5 + net.rng.random()))
        return reply if net.rng.random() >= net.loss else None

    async def send(self, peer: bytes, data: bytes) -> None:
        await self.request(peer, data)


@attrs.frozen
class SimProver:
    """Spot checks in the simulator: a cheating node answers wrongly with probability ``cheat``."""

    rng: random.Random
    cheat: float = 0.0

    def pick(self, subject: bytes) -> bytes:
        return self.rng.randbytes(32)

    def answer(self, receipt: bytes) -> bytes:
        right = hashlib.blake2b(receipt, digest_size=32).digest()
        return right if self.rng.random() >= self.cheat else bytes(32)

    def expected(self, subject: bytes, receipt: bytes) -> bytes:
        return hashlib.blake2b(receipt, digest_size=32).digest()


@attrs.define
class SimNode:
    key: bytes
    attestation: AttestationActor
    gossip: GossipActor
    liar: bool


def build_network(n: int, seed: int, *, loss: float = 0.0, liars: float = 0.0, cheat: float = 0.5, near: int = 2, far: int = 2, k: int = 16) -> tuple[SimNetwork, list[SimNode], Overlay]:
    """N nodes with the real actors on one :class:`SimNetwork` (not yet running)."""
    rng = random.Random(seed)
    identities = [Attester(rng.randbytes(32)) for _ in range(n)]
    overlay = Overlay([a.public_key for a in identities], near=near, far=far)
    by_key = {a.public_key: a for a in identities}
    liar_keys = set(rng.sample(list(overlay.members), round(liars * n)))
    net = SimNetwork(random.Random(seed + 1), loss=loss)
    verifier = Verifier()
    nodes: list[SimNode] = []
    for i, key in enumerate(overlay.members):
        node_rng = random.Random(f"{seed}/{i}")
        router = Router()
        transport = net.attach(key, router)
        liar = key in liar_keys
        subjects = overlay.attests(key)
        attesters_of_me = tuple(m for m in overlay.members if key in overlay.attests(m))

        def targets(statement: Statement, subjects: tuple[bytes, ...] = subjects, others: tuple[bytes, ...] = attesters_of_me) -> tuple[bytes, ...]:
            return tuple(dict.fromkeys(subjects + others))

        def choose(i: int = i, node_rng: random.Random = node_rng) -> bytes:
            return overlay.members[overlay.choose_peer_index(i, node_rng)]

        g = GossipActor(Gossiper(Kernel(verifier)), transport, choose, targets, phase=node_rng.random())

        def lie(subject: bytes, ok: bool) -> bool:
            return subject in liar_keys

        def assigned(subjects: tuple[bytes, ...] = subjects) -> tuple[bytes, ...]:
            return subjects

        a = AttestationActor(
            by_key[key], transport, assigned, SimProver(node_rng, cheat if liar else 0.0), g.publish,
            rng=node_rng, k=k, report=lie if liar else None, phase=node_rng.random(),
        )
        router.add(GOSSIP, g.handle)
        router.add(ATTEST, a.handle)
        nodes.append(SimNode(key, a, g, liar))
    return net, nodes, overlay


def run_network(n: int, seed: int, *, steps: int, settle: int, **kwargs: object) -> tuple[SimNetwork, list[SimNode], Overlay]:
    """Build the network and run it on a ``MockClock``: ``steps`` attestation steps, gossip throughout
    and ``settle`` more gossip periods after the last attestation."""
    net, nodes, overlay = build_network(n, seed, **kwargs)  # type: ignore[arg-type]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(node.gossip.run, steps + settle)
            for node in nodes:
                nursery.start_soon(node.attestation.run, steps)

    # Trio shuffles the order of runnable tasks with a module-level generator
    # (so code cannot depend on it); seed it so a run replays exactly.
    scheduler_random = getattr(trio._core._run, "_r", None)
    if isinstance(scheduler_random, random.Random):
        scheduler_random.seed(seed)
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return net, nodes, overlay
