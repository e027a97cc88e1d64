"""One cluster node process: ``python -m missive.cluster.node CONFIG``.

A node is a single-node Missive (store, runtime) plus:

* an RPC server (:func:`missive.net.serve`) for clients and peers;
* a link to every peer (:class:`missive.net.PeerLink`), reconnecting on its own;
* **placement**: each actor is held by the first K members of its rendezvous
  ranking (``replicas = K`` in the config; :mod:`missive.cluster.placement`);
  the first of them that is up executes it (:mod:`missive.cluster.membership`);
* **delivery**: a message is queued, in the transaction that creates it, for
  every holder of its recipient (``outbound``, one queue per peer, in send
  order); a task per peer hands its queue, oldest first, to that peer's
  ``deliver`` and drops what the peer has durably.  Deliveries are retried
  until they succeed and deduplicated by id at the receiver, which queues the
  message to run (``pending``) if it executes the recipient, or keeps it in
  ``standby`` if it holds a copy: so a message is handled exactly once, in
  FIFO order per sender and recipient, by whichever holder executes it;
* **replication**: every commit that changes an actor queues a state diff for
  its other holders in the same LMDB transaction; a task per peer sends them,
  oldest first, signed by this node's key, to the peer's ``apply``, which
  checks the signer holds the actor and that the diff continues its copy
  exactly, applies it atomically, drops the messages it handled from its
  queues, and acknowledges.  Code of each deploy goes to every peer likewise;
* **membership and failover**: heartbeats between every pair of nodes feed
  the membership actor.  When an executor has not been heard from for
  ``failover_timeout`` seconds, the next holder of each of its actors takes
  over at the mailbox position its copy holds, with the messages it already
  has in standby.  A (re)starting node first *catches up*: its peers stop
  executing the actors it prefers, send it the diffs they hold for them, and
  only when none are left does it serve.

Client requests may arrive at any node: ``submit`` goes to the node that
executes the sending account (it holds the nonce and the balance), reads of an
actor go to the node that executes it.  ``wait`` and ``wait_reply`` stay open
until the message (or the reply to it) is handled (missive/cluster/waiters.py).

Every write the node makes for these (admissions, deliveries, the runtime's
commits, dequeues) goes through one writer, which puts whatever is waiting
into one LMDB transaction and one fsync (missive/mailbox/writer.py).  When the
runtime is idle, that transaction also handles what it queued, so a message
that arrives is stored and handled in one fsync, not two.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from missive.actors.runtime import ExecutorLock, Runtime
from missive.cluster import door, stakes
from missive.cluster.accusations import accuser
from missive.cluster.client_door import ClientDoor
from missive.cluster.config import ConfigError, NodeConfig, load
from missive.cluster.epochs import EpochService, load_history
from missive.cluster.membership import Heard, Membership
from missive.cluster.node_door import NodeDoor
from missive.cluster.placement import replicas
from missive.cluster.tracing import Tracer
from missive.cluster.trust import WRONG_DIFFS, TrustService
from missive.cluster.waiters import Waiters
from missive.mailbox.admission import check_signatures, checker
from missive.mailbox.envelope import Envelope, EnvelopeError
from missive.mailbox.store import Accepted, Outcome
from missive.mailbox.writer import GroupWriter
from missive.market.registry_actor import REGISTRY, attach_evidence_check
from missive.net import Limits, NetError, NodeIdentity, PeerLink, allow_any, serve
from missive.replicas.copies import Copies
from missive.replicas.execution_trust import EVIDENCE_METHOD, ExecutionTrust, falsify
from missive.replicas.receiver import Receiver
from missive.replicas.sender import NotServing, Sender
from missive.replicas.slashing import check_evidence

log = logging.getLogger(__name__)

IDENTITY_FILE = "node.key"
#: seconds a read of the registry's stakes may take before it is given up until the next
STAKES_READ_TIMEOUT = 5.0
#: Admissions with at most this many signatures check them on the event loop (about 60 µs each).
INLINE_SIGNATURES = 4
#: seconds a thread may hold the GIL while another waits (see main())
SWITCH_INTERVAL = 0.0005


class ClusterNode:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.identity = NodeIdentity.load_or_generate(config.dir / IDENTITY_FILE)
        self.me = self.identity.node_id
        self.names = {p.node_id: p.name for p in config.peers} | {self.me: config.name}
        self.members = sorted(self.names)
        self.k = min(config.replicas, len(self.members))
        # the store, and this node's copies of the actors it holds with others (missive/replicas)
        self.copies = Copies.open(config.dir, self, chain_id=config.chain_id)
        self.store = self.copies.store
        # the epochs this node installed (missive/replicas/epochs.py): who executes and acknowledges what
        history, acceptor_state = load_history(self.copies, self.members, self.holders)
        self.membership = Membership(self.me, self.members, self.k, timeout=config.failover_timeout,
                                     history=history)
        # signatures are checked before the admission's transaction (see _admit)
        #: each member's worker's minimum bid, as this node last read the registry (cluster/stakes.py)
        self.min_bids: dict[bytes, int] = {}
        self.check = checker(self.store, self.executes, signatures=False, minimum=self._below_minimum)
        self.writer = GroupWriter(self.store)  # every write of this node: one transaction per turn
        # rounds run only while this node holds its lease (see missive/cluster/membership.py, Quorum)
        self.runtime = Runtime(self.store, committer=self._commit_round, may_run=self.membership.may_execute)
        # what a transaction queued is handled in it when the runtime is idle: stored and handled, one fsync
        self.writer.last = self.runtime.round_in_transaction
        self.links = {
            p.node_id: PeerLink(self.identity, p.host, p.port, p.node_id, backoff_max=1.0)
            for p in config.peers if p.node_id != self.me
        }
        self.stopping = trio.Event()
        self.port = 0
        self._nursery: trio.Nursery | None = None
        # set once the latest submit to arrive has its place in the writer's line (see _admit)
        self._admitted = trio.Event()
        self._admitted.set()
        self.runtime.observers.append(lambda _outcomes: self._queued())
        self.waiters = Waiters()  # clients waiting for a receipt or a reply (the `wait` RPCs)
        self.runtime.observers.append(self.waiters.observe)
        self.trace = Tracer(config.name)  # per-message step times, if MISSIVE_TRACE_DIR is set
        if self.trace.on:
            self.runtime.observers.append(lambda outcomes: self.trace.handled(e for e, _ in outcomes))
        self._serving = trio.Event()
        if self.membership.serving:
            self._serving.set()
        # trust layer (attestation + gossip between members): all of it lives in missive/cluster/trust.py
        self.trust = TrustService(self.identity, config.dir, self.names, self.links, self.store, config.trust)
        # execution trust: apply each state diff, or re-execute it first (missive/replicas/execution_trust.py)
        self.execution = ExecutionTrust(self.identity, self.store, self.names, self.links, self.membership,
                                        self.trust, config.trust)
        lies = config.trust.fault == WRONG_DIFFS  # tests and simulation only
        self.door = ClientDoor(config=config, me=self.me, names=self.names, links=self.links, store=self.store,
                               waiters=self.waiters, trace=self.trace, admit=self._admit, executor=self.executor,
                               executes=self.executes, until_serving=self._until_serving, port=lambda: self.port,
                               stop=self._stop_soon)
        # the registry actor re-checks accusations with the same function on every holder (re-executing
        # its diffs too), so it is attached here, before any handler runs (missive/market/registry_actor.py)
        attach_evidence_check(check_evidence)
        self.store.evidence_check = check_evidence
        # what execution trust catches, the worker registry is told of (missive/cluster/accusations.py)
        self.execution.submit_accusation = accuser(self.door, self.identity, self.store.chain_id)
        # replication (missive/replicas): sending this node's queues, and receiving the others'
        self.receiver = Receiver(me=self.me, names=self.names, links=self.links, copies=self.copies,
                                 writer=self.writer, runtime=self.runtime, membership=self.membership,
                                 execution=self.execution, k=self.k, trace=self.trace, queued=self._queued)
        self.sender = Sender(name=config.name, identity=self.identity, names=self.names, links=self.links,
                             copies=self.copies, writer=self.writer, membership=self.membership, k=self.k,
                             trace=self.trace, distrusted=self.execution.distrusts, act_on=self.receiver.act_on,
                             queued=self._queued, sign=falsify if lies else None)
        # epochs: choosing them (every member an acceptor), learning them, catching up (cluster/epochs.py)
        self.epochs = EpochService(self.me, self.names, self.links, self.membership, self.copies, self.writer,
                                   acceptor_state, self.receiver.reconcile, interval=self.heartbeat_interval,
                                   timeout=config.failover_timeout / 2)
        # what anyone may ask about this node itself, and a member's heartbeat (missive/cluster/node_door.py)
        self.node_door = NodeDoor(name=config.name, me=self.me, names=self.names, links=self.links, k=self.k,
                                  store=self.store, copies=self.copies, runtime=self.runtime, writer=self.writer,
                                  membership=self.membership, epochs=self.epochs, sender=self.sender,
                                  receiver=self.receiver, trust=self.trust, execution=self.execution,
                                  executes=self.executes, port=lambda: self.port)
        # the doors (missive/cluster/door.py): the operator alone may shutdown, create_account (only in
        # development mode) and replay; members and the operator are exempt from client connection limits
        self.limits = Limits(max_per_key=config.connections_per_key, idle_timeout=config.idle_timeout,
                             is_privileged=lambda node_id: node_id in self.names or node_id == config.operator)
        if config.operator is None:
            log.warning("no operator in the config: shutdown, create_account and replay are refused to everybody")

    async def _commit_round(self, outcomes: list[Outcome]) -> None:
        await self.writer.write(functools.partial(self.store.commit, outcomes))

    def _queued(self) -> None:
        """A transaction committed: wake the peer queues' senders, and the runtime (it may have
        queued messages for actors this node executes)."""
        self.sender.wake()
        self.runtime.wake()

    # -- placement (the copies' view of it: missive.replicas.records.Placement) ---------------

    def holders(self, address: bytes) -> list[bytes]:
        """The K nodes that keep ``address``'s actor, in preference order."""
        return replicas(address, self.members, self.k)

    def executes(self, address: bytes) -> bool:
        return self.membership.executes(address)

    def peers(self) -> list[bytes]:
        return [n for n in self.members if n != self.me]

    def epoch(self) -> int:
        """The epoch this node acts in: every record it makes carries it."""
        return self.membership.number

    def executor(self, address: bytes) -> bytes:
        """The node that executes ``address`` as this node sees it (itself, even while catching up)."""
        return self.membership.executor(address)

    # -- running -------------------------------------------------------------------------

    async def run(self) -> None:
        lock = ExecutorLock(self.config.dir)
        lock.acquire()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self.writer.run)
                self.port = await nursery.start(functools.partial(
                    serve, self.identity, self.config.host, self.config.port, self.handlers(), allow_any,
                    limits=self.limits))
                (self.config.dir / "port").write_text(str(self.port))
                for link in self.links.values():
                    nursery.start_soon(link.run)
                nursery.start_soon(self._run_actors)
                nursery.start_soon(self.sender.run)  # messages, diffs and code to the other holders
                nursery.start_soon(self.receiver.run)
                for node_id in self.links:
                    nursery.start_soon(self._heartbeat, node_id)
                nursery.start_soon(self.membership.run, self._adopt, self.heartbeat_interval)
                if self.k > 1 and self.links:
                    nursery.start_soon(self.epochs.run)  # choosing, learning, catching up (cluster/epochs.py)
                nursery.start_soon(self.node_door.measure)  # messages/s, for status
                nursery.start_soon(self.trust.run)  # trust layer (missive/cluster/trust.py)
                nursery.start_soon(self.execution.run)  # spreads evidence of wrong diffs
                if self.k > 1 and self.links:
                    nursery.start_soon(self._watch_stakes)  # members without a stake serve nothing
                print(f"serving {self.config.name} on {self.config.host}:{self.port} id {self.me.hex()}", flush=True)
                await self.stopping.wait()
                nursery.cancel_scope.cancel()
        finally:
            self.store.close()
            self.trace.close()
            lock.release()

    async def _run_actors(self) -> None:
        await self.runtime.run(until_idle=False, poll_interval=0.05)  # woken by _queued() meanwhile

    async def _admit(self, submissions: list[tuple[Envelope, bytes, bytes]]) -> list[Accepted | EnvelopeError]:
        """Admit ``submissions`` (from one ``submit``), in the order submits arrived.

        Signatures are checked first, outside any transaction (on a worker thread,
        where the crypto runs beside the event loop, unless there are so few that
        handing them over costs more than checking them), while earlier submits are
        still being checked or written.  Then the submit joins the writer's line
        behind every submit that arrived before it (so one client's nonces stay in
        order), and its messages are accepted in the writer's next transaction,
        with whatever else is waiting: one fsync for many submits.
        """
        earlier, mine = self._admitted, trio.Event()
        self._admitted = mine
        try:
            if len(submissions) <= INLINE_SIGNATURES:
                bad = check_signatures(submissions)
            else:
                bad = await trio.to_thread.run_sync(check_signatures, submissions)
            signed = [item for item, problem in zip(submissions, bad, strict=True) if problem is None]
            await earlier.wait()
            joined = self.writer.join(lambda txn: self.store.accept(signed, self._lease_check(), txn=txn))
        finally:
            mine.set()
        results: list[Accepted | EnvelopeError] = await self.writer.result(joined)
        accepted = iter(results)
        if self.k > 1:  # (the next seq is a read of the store: not for nothing on every submit)
            admitted = [r.message_id for r in results if isinstance(r, Accepted)]
            await self.sender.until_replicated(self.store.next_seq(), {envelope.sender for envelope, _, _ in signed},
                                               admitted)
        self._queued()
        return [next(accepted) if problem is None else problem for problem in bad]

    def _lease_check(self) -> Callable[..., Any]:
        """The admission check, asked again inside the transaction: a node that lost its lease
        while the submit waited for the writer admits nothing (another holder may serve now)."""
        if not self.membership.may_execute():
            if self.me in self.membership.unstaked:
                raise NotServing(f"{self.config.name} executes nothing: its worker has no stake in the registry "
                                 "(unbonded or slashed); its actors move to their other holders; try another node")
            raise NotServing(f"{self.config.name} has lost touch with most of the cluster and does not serve "
                               "until it has caught up again; try another node")
        return self.check

    @property
    def heartbeat_interval(self) -> float:
        return self.config.failover_timeout / 8

    async def _heartbeat(self, node_id: bytes) -> None:
        """Tell ``node_id`` we are alive (and whether we serve); its answer says the same of it."""
        link = self.links[node_id]
        while True:
            try:
                said = {"serving": self.membership.serving, "epoch": self.membership.history.latest.number,
                        "complete": self.epochs.complete}
                answer = await link.call("heartbeat", said, timeout=self.config.failover_timeout / 2)
                epoch = answer["epoch"]
                if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
                    raise ValueError("its epoch must be a number")
                self.membership.heard(Heard(node_id, bool(answer["serving"]), epoch, bool(answer.get("complete"))))
            except NetError:
                pass  # silence is the signal: the membership actor counts the time since last heard
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("bad heartbeat answer from %s: %s", self.names[node_id], exc)
            await trio.sleep(self.heartbeat_interval)

    async def _watch_stakes(self) -> None:
        """Read the registry's stakes now and then (missive/cluster/stakes.py); each read gives up
        after a few seconds (the registry's executor may be this node, waiting to serve)."""
        async def read_storage(after: bytes | None) -> dict[str, Any] | None:
            params: dict[str, Any] = {"address": REGISTRY} if after is None else {"address": REGISTRY, "after": after}
            with trio.move_on_after(STAKES_READ_TIMEOUT):
                return await self.door.storage(self.me, params)
            return None

        async def has_registry() -> bool:
            with trio.move_on_after(STAKES_READ_TIMEOUT):
                return await self.door.account(self.me, REGISTRY) is not None
            return False

        async def pay_to(coinbase: bytes) -> None:
            if coinbase != self.store.coinbase():
                log.info("fees go to 0x%s, the coinbase this node's worker registered", coinbase.hex())
                await trio.to_thread.run_sync(self.store.set_coinbase, coinbase)

        def update(unstaked: frozenset[bytes], min_bids: dict[bytes, int]) -> None:
            self.membership.set_unstaked(unstaked)
            self.min_bids = min_bids

        await stakes.watch(self.membership.members, read_storage, has_registry, update, self.me, pay_to)

    def _below_minimum(self, envelope: Envelope) -> str | None:
        """Why ``envelope`` bids too little for the worker of the node that executes its recipient."""
        executor = self.membership.executor(envelope.recipient)
        floor = self.min_bids.get(executor, 0)
        if envelope.bid >= floor:
            return None
        return (f"bid {envelope.bid} is below the minimum bid {floor} of {self.names.get(executor, 'its executor')}'s "
                f"worker, which executes 0x{envelope.recipient.hex()} (`missive worker status --cluster`)")

    async def _adopt(self) -> None:
        """Act in the newest installed epoch: between rounds, move each actor's waiting messages to
        the queue its new role needs (run them here, or keep them in standby)."""
        async with self.runtime.paused():
            if not self.membership.adopt():
                return
            taken, handed = await trio.to_thread.run_sync(self.copies.rehome)
        if taken or handed:
            log.info("took over %d waiting message(s), handed back %d", taken, handed)
        if self.membership.serving:
            self._serving.set()
        elif self._serving.is_set():  # left the serving nodes: requests wait again until it has caught up
            self._serving = trio.Event()
        self._queued()

    # -- RPC -----------------------------------------------------------------------------

    def handlers(self) -> dict[str, Callable[[bytes, Any], Awaitable[Any]]]:
        """Every RPC method; those that take no parameters refuse any (missive/cluster/door.py)."""
        methods: dict[str, Callable[[bytes, Any], Awaitable[Any]]] = {
            **self.door.handlers(),  # what clients ask (missive/cluster/client_door.py)
            "snapshot": self.receiver.snapshot,
            "deliver": self.receiver.deliver,
            "apply": self.receiver.apply,
            "learn_code": self.receiver.learn_code,
            **self.trust.handlers(),  # trust, trust_view (missive/cluster/trust.py)
            **self.epochs.handlers(),  # epoch_prepare, epoch_accept, epoch_learn, epochs, sync (cluster/epochs.py)
            # status, heartbeat, progress and trust_view (missive/cluster/node_door.py; after the trust layer's,
            # whose trust_view it replaces with one that adds execution trust's view)
            **self.node_door.handlers(),
            EVIDENCE_METHOD: self.execution.rpc_evidence,  # missive/replicas/execution_trust.py
        }
        bare = ("status", "members", "progress", "pending", "accounts", "trust_view", "scheduled")
        return {name: door.refusing_on_full_disk(door.without_params(name, handler) if name in bare else handler)
                for name, handler in methods.items()}

    async def _until_serving(self) -> None:
        """Wait while this node catches up (its actors' state is not yet current)."""
        if self._serving.is_set():
            return
        with trio.move_on_after(self.config.failover_timeout * 4):
            await self._serving.wait()
        if not self._serving.is_set():
            raise NotServing(f"{self.config.name} is still catching up from its peers; try again")

    def _stop_soon(self) -> None:
        """Stop this node once the answer to ``shutdown`` has left."""

        async def later() -> None:
            await trio.sleep(0.05)  # let the answer leave first
            self.stopping.set()

        assert self._nursery is not None
        self._nursery.start_soon(later)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m missive.cluster.node CONFIG.toml", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # The event loop shares the GIL with worker threads (signature checks of large submits, state
    # diffs being applied, catch-up); at Python's default switch interval (5 ms) every socket send
    # or receive may wait that long to get it back.  Half a millisecond keeps a cross-node
    # query -> reply from queueing behind them at every hop.
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        config = load(Path(args[0]))
    except ConfigError as exc:
        print(f"missive node: {exc}", file=sys.stderr)
        return 2

    async def main_task(node: ClusterNode) -> None:
        async def stop_on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    node.stopping.set()
                    break

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_signal)
            await node.run()  # returns when stopped by a signal or by the shutdown RPC
            nursery.cancel_scope.cancel()  # so the signal watcher does not keep the process alive

    # A store the node cannot go on with (its disk full when it starts, a store LMDB gave up on, a
    # wrong format, another process running its actors) stops it with one line naming the store and
    # exit status 74 for the disk (EXIT_DISK), 1 for the rest; nothing acknowledged is lost, and it
    # restarts where it stopped.  A disk that fills while it runs only refuses writes
    # (missive/mailbox/writer.py), unless a change of who executes what, which writes outside the
    # writer, meets it: that stops the node here too.
    from missive.mailbox.disk import exit_status, fatal_error

    try:
        trio.run(main_task, ClusterNode(config))
    except Exception as exc:  # (a group, from the nurseries, as often as not)
        failure = fatal_error(exc, config.dir)
        if failure is None:
            raise
        print(f"missive node {config.name}: {failure}", file=sys.stderr)
        return exit_status(failure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
