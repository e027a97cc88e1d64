"""One cluster node process: ``python -m missive.cluster.node CONFIG``.

A node is a single-node Missive (store, runtime) plus three things:

* an RPC server (:func:`missive.net.serve`) for clients and peers;
* a link to every peer (:class:`missive.net.PeerLink`), reconnecting on its own;
* the **forwarder**: the store queues a message for an actor another node
  executes in its ``outbound`` table (durable, in send order); the forwarder
  hands those, oldest first and in order per destination, to the executing
  node's ``deliver``, and drops them only once that node has them durably.
  Delivery is retried until it succeeds and deduplicated by id at the
  receiver, so a message is handled exactly once and, since one sender's
  messages to one recipient leave in send order, in FIFO order.

Client requests may arrive at any node: ``submit`` goes to the node that
executes the sending account (it holds the nonce and the balance), reads of an
actor go to the node that executes it.  Placement is rendezvous hashing over
the configured members (:mod:`missive.cluster.placement`).

**Replicas** (``replicas = K`` in the config): each actor is held by the first
K nodes of its ranking; the first executes it.  Every commit that changes an
actor queues a state diff for the other K-1 in the same LMDB transaction; the
**replicator** sends them, oldest first, signed by this node's key, to each
replica's ``apply``, which checks that the signer is the actor's executor and
that the diff continues its copy exactly, applies it atomically, and
acknowledges; the diff leaves the queue only then.  So each replica holds
every actor state its executor committed, in order, once.

Not yet here (issue 4): failover to the next replica when an executor dies,
catch-up and rollback, and membership as an actor; an actor's node being down
means messages to it wait, durably, in their senders' ``outbound`` queues.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import msgpack
import trio

from missive.actors.handler import MAX_CODE_SIZE
from missive.actors.runtime import ExecutorLock, Runtime
from missive.cluster import reads
from missive.cluster.config import ConfigError, NodeConfig, load
from missive.cluster.placement import executor, replicas
from missive.cluster.trust import TrustService
from missive.mailbox.admission import checker
from missive.mailbox.diffs import DiffError, StateDiff
from missive.mailbox.envelope import Envelope, EnvelopeError
from missive.mailbox.store import Store
from missive.net import NetError, NodeIdentity, PeerLink, allow_any, serve
from missive.net.identity import short_id, verify
from missive.vm.keccak import keccak256

log = logging.getLogger(__name__)

#: Messages the forwarder moves per ``deliver`` call.
FORWARD_BATCH = 512
#: State diffs the replicator sends per ``apply`` call.
REPLICATE_BATCH = 256
IDENTITY_FILE = "node.key"


@attrs.define
class _Admission:
    """One submit's messages waiting for the admission batch they join, and its results."""

    items: list[tuple[Envelope, bytes, bytes]]
    done: trio.Event = attrs.field(factory=trio.Event)
    results: list[Any] = attrs.field(factory=list)
    error: Exception | None = None


class ClusterNode:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.identity = NodeIdentity.load_or_generate(config.dir / IDENTITY_FILE)
        self.me = self.identity.node_id
        self.names = {p.node_id: p.name for p in config.peers} | {self.me: config.name}
        self.members = sorted(self.names)
        self.k = min(config.replicas, len(self.members))
        self.store = Store(config.dir, create=True, is_local=self.is_local,
                           replicas_of=self.other_replicas if self.k > 1 else None,
                           announce_to=lambda: [n for n in self.members if n != self.me])
        self.check = checker(self.store, self.is_local)
        self.runtime = Runtime(self.store)
        self.links = {
            p.node_id: PeerLink(self.identity, p.host, p.port, p.node_id, backoff_max=1.0)
            for p in config.peers if p.node_id != self.me
        }
        self.stopping = trio.Event()
        self.started = time.monotonic()
        self.forwarded = 0
        self.diffs_sent = 0
        self.diffs_applied = 0
        self.rate = 0.0
        self.port = 0
        self._nursery: trio.Nursery | None = None
        # submits from all connections are admitted together, one LMDB transaction (one fsync) per batch
        self._accepts_in, self._accepts_out = trio.open_memory_channel[_Admission](1024)
        # set when something may have been queued in ``outbound``: the forwarder wakes at once
        self._outbound_ready = trio.Event()
        # likewise for each replicator: set when a commit may have queued state diffs
        self._diffs_ready: dict[tuple[bytes, str], trio.Event] = {}
        self.runtime.observers.append(lambda _outcomes: self._queued())
        # trust layer (attestation + gossip between members): all of it lives in missive/cluster/trust.py
        self.trust = TrustService(self.identity, config.dir, self.names, self.links, self.store, config.trust)

    def _queued(self) -> None:
        """A transaction committed: wake the forwarder and the replicators."""
        self._outbound_ready.set()
        for ready in list(self._diffs_ready.values()):
            ready.set()

    def is_local(self, address: bytes) -> bool:
        return executor(address, self.members) == self.me

    def other_replicas(self, address: bytes) -> list[bytes]:
        """The nodes besides this one that keep a copy of ``address``'s actor."""
        return [n for n in replicas(address, self.members, self.k) if n != self.me]

    # -- running -------------------------------------------------------------------------

    async def run(self) -> None:
        lock = ExecutorLock(self.config.dir)
        lock.acquire()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.port = await nursery.start(serve, self.identity, self.config.host, self.config.port,
                                                self.handlers(), allow_any)
                (self.config.dir / "port").write_text(str(self.port))
                for link in self.links.values():
                    nursery.start_soon(link.run)
                nursery.start_soon(self._run_actors)
                nursery.start_soon(self._admit)
                nursery.start_soon(self._forward)
                for node_id in self.links:
                    nursery.start_soon(self._announce_to, node_id)
                    if self.k > 1:
                        nursery.start_soon(self._replicate_to, node_id)
                nursery.start_soon(self._measure)
                nursery.start_soon(self.trust.run)  # trust layer (missive/cluster/trust.py)
                print(f"serving {self.config.name} on {self.config.host}:{self.port} id {self.me.hex()}", flush=True)
                await self.stopping.wait()
                nursery.cancel_scope.cancel()
        finally:
            self.store.close()
            lock.release()

    async def _run_actors(self) -> None:
        await self.runtime.run(until_idle=False, poll_interval=0.002)

    async def _measure(self) -> None:
        last, then = self.runtime.handled_total, time.monotonic()
        while True:
            await trio.sleep(1.0)
            now = time.monotonic()
            self.rate = (self.runtime.handled_total - last) / (now - then)
            last, then = self.runtime.handled_total, now

    async def _admit(self) -> None:
        """Group commit of client submits: whatever arrived while the last batch was being
        made durable goes into the next one, in arrival order (so one client's nonces stay
        in order), and each caller gets its own results back.

        Why: one ``submit`` per message is how interactive clients send, and a
        transaction per message means an fsync per message, which caps a node at
        a few hundred submits per second and queues everything behind it.
        """
        async for first in self._accepts_out:
            batch = [first]
            while len(batch) < 256:
                try:
                    batch.append(self._accepts_out.receive_nowait())
                except trio.WouldBlock:
                    break
            flat = [item for admission in batch for item in admission.items]
            try:
                results = await trio.to_thread.run_sync(self.store.accept, flat, self.check)
            except Exception as exc:  # the store failed: tell every waiter, keep serving
                log.exception("admitting %d message(s) failed", len(flat))
                for admission in batch:
                    admission.error = exc
                    admission.done.set()
                continue
            self._queued()
            start = 0
            for admission in batch:
                admission.results = results[start:start + len(admission.items)]
                start += len(admission.items)
                admission.done.set()

    async def _forward(self) -> None:
        """Move ``outbound`` messages to the nodes executing their recipients, in order, durably."""
        while True:
            self._outbound_ready = trio.Event()
            batch = await trio.to_thread.run_sync(self.store.outbound, FORWARD_BATCH * 4)
            if not batch:
                with trio.move_on_after(0.05):  # woken by a commit or an admission that may have queued some
                    await self._outbound_ready.wait()
                continue
            by_node: dict[bytes, list[tuple[bytes, bytes]]] = {}
            for key, _message_id, record in batch:
                recipient = Envelope.decode(msgpack.unpackb(record)[0], check=False).recipient
                by_node.setdefault(executor(recipient, self.members), []).append((key, record))
            progressed = False
            for node_id, items in by_node.items():
                items = items[:FORWARD_BATCH]
                try:
                    await self.links[node_id].call("deliver", [record for _, record in items], timeout=5.0)
                except NetError as exc:
                    log.warning("forwarding %d message(s) to %s failed (%s); will retry", len(items),
                                self.names.get(node_id, short_id(node_id)), exc)
                    continue
                await trio.to_thread.run_sync(self.store.forwarded, [key for key, _ in items])
                self.forwarded += len(items)
                progressed = True
            if not progressed:
                await trio.sleep(0.2)  # every destination is unreachable: back off

    async def _replicate_to(self, node_id: bytes) -> None:
        """Send the state diffs queued for replica ``node_id``, in order, signed, until it has them durably."""
        await self._drain(node_id, "replicate", "apply",
                          lambda raw: [raw, self.identity.sign(keccak256(raw))])

    async def _announce_to(self, node_id: bytes) -> None:
        """Tell peer ``node_id`` the code of every actor deployed here (EXTCODE* there needs it)."""
        await self._drain(node_id, "announce", "learn_code", lambda raw: raw)

    async def _drain(self, node_id: bytes, table: str, method: str, wrap: Callable[[bytes], Any]) -> None:
        """Send what ``table`` holds for ``node_id`` to its ``method``, oldest first; drop it once
        acknowledged.  The peer answers (how many it has durably, what was wrong with the next)."""
        link = self.links[node_id]
        name = self.names.get(node_id, short_id(node_id))
        while True:
            ready = self._diffs_ready[node_id, table] = trio.Event()
            batch = await trio.to_thread.run_sync(self.store.queued, table, node_id, REPLICATE_BATCH)
            if not batch:
                with trio.move_on_after(0.05):  # woken by a commit that may have queued some
                    await ready.wait()
                continue
            try:
                done, problem = await link.call(method, [wrap(raw) for _, raw in batch], timeout=10.0)
            except NetError as exc:
                log.warning("%s of %d record(s) to %s failed (%s); will retry", method, len(batch), name, exc)
                await trio.sleep(0.2)
                continue
            if done:
                await trio.to_thread.run_sync(self.store.dequeue, table, [key for key, _ in batch[:done]])
                if table == "replicate":
                    self.diffs_sent += done
            if problem is not None:
                log.error("%s refused %s: %s", name, method, problem)
                await trio.sleep(1.0)

    # -- RPC -----------------------------------------------------------------------------

    def handlers(self) -> dict[str, Callable[[bytes, Any], Awaitable[Any]]]:
        return {
            "status": self.rpc_status,
            "submit": self.rpc_submit,
            "deliver": self.rpc_deliver,
            "create_account": self.rpc_create_account,
            "account": self.rpc_account,
            "receipt": self.rpc_receipt,
            "inbox": self.rpc_inbox,
            "apply": self.rpc_apply,
            "local_state": self.rpc_local_state,
            "learn_code": self.rpc_learn_code,
            "shutdown": self.rpc_shutdown,
            "members": self.rpc_members,
            "progress": self.rpc_progress,
            "ledger": self.rpc_ledger,
            "message": self.rpc_message,
            "resolve": self.rpc_resolve,
            "mailbox": self.rpc_mailbox,
            "pending": self.rpc_pending,
            "accounts": self.rpc_accounts,
            "replay": self.rpc_replay,
            **self.trust.handlers(),  # trust, trust_view (missive/cluster/trust.py)
        }

    async def _at(self, address: bytes, method: str, params: Any,
                  local: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``local`` if this node executes ``address``, else ask the node that does."""
        node_id = executor(address, self.members)
        if node_id == self.me:
            return await local()
        return await self.links[node_id].call(method, params, timeout=10.0)

    async def rpc_status(self, peer: bytes, params: Any) -> dict[str, Any]:
        with self.store.read() as txn:
            backlog = txn.stat(self.store.db["pending"])["entries"]
            outbound = txn.stat(self.store.db["outbound"])["entries"]
            replicating = txn.stat(self.store.db["replicate"])["entries"]
            held = txn.stat(self.store.db["replica"])["entries"]
        actors = sum(1 for address, account in self.store.accounts() if account.is_contract and self.is_local(address))
        return {
            "name": self.config.name, "id": self.me, "pid": os.getpid(), "port": self.port,
            "uptime": time.monotonic() - self.started, "actors": actors, "backlog": backlog,
            "outbound": outbound, "handled": self.runtime.handled_total, "rate": self.rate,
            "forwarded": self.forwarded, "replicas": self.k, "replicating": replicating, "replicas_held": held,
            "diffs_sent": self.diffs_sent, "diffs_applied": self.diffs_applied,
            "peers": {self.names[n]: link.connected for n, link in self.links.items()},
        }

    async def rpc_submit(self, peer: bytes, records: list[bytes]) -> list[dict[str, Any]]:
        """Signed external messages: admitted by the node executing their sender's account."""
        groups: dict[bytes, list[int]] = {}
        parsed: list[tuple[Envelope, bytes, bytes] | None] = []
        results: list[dict[str, Any]] = [{} for _ in records]
        for index, raw in enumerate(records):
            try:
                canonical, public_key, signature = msgpack.unpackb(raw)
                envelope = Envelope.decode(canonical)
            except (EnvelopeError, ValueError, TypeError) as exc:
                results[index] = {"error": f"malformed message: {exc}"}
                parsed.append(None)
                continue
            parsed.append((envelope, public_key, signature))
            groups.setdefault(executor(envelope.sender, self.members), []).append(index)
        for node_id, indexes in groups.items():
            if node_id == self.me:
                admission = _Admission([parsed[i] for i in indexes])  # type: ignore[misc]
                await self._accepts_in.send(admission)
                await admission.done.wait()
                if admission.error is not None:
                    raise admission.error
                accepted = admission.results
                answers = [{"error": str(a)} if isinstance(a, EnvelopeError)
                           else {"id": a.message_id, "duplicate": a.duplicate} for a in accepted]
            else:
                answers = await self.links[node_id].call("submit", [records[i] for i in indexes], timeout=10.0)
            for i, answer in zip(indexes, answers, strict=True):
                results[i] = answer
        return results

    async def rpc_deliver(self, peer: bytes, records: list[bytes]) -> int:
        if peer not in self.names or peer == self.me:
            raise PermissionError(f"deliver is for cluster members; {short_id(peer)} is not one")
        results = await trio.to_thread.run_sync(self.store.receive, records)
        bad = [r for r in results if isinstance(r, EnvelopeError)]
        if bad:
            log.warning("%s delivered %d bad message(s): %s", self.names[peer], len(bad), bad[0])
        return len(results) - len(bad)

    async def rpc_create_account(self, peer: bytes, params: dict[str, Any]) -> bool:
        address = bytes(params["address"])

        async def local() -> bool:
            balance = int.from_bytes(bytes(params["balance"]), "big")
            await trio.to_thread.run_sync(self.store.create_account, address, bytes(params["public_key"]), balance)
            return True

        return bool(await self._at(address, "create_account", params, local))

    async def rpc_account(self, peer: bytes, address: bytes) -> bytes | None:
        async def local() -> bytes | None:
            account = self.store.account(address)
            return account.encode() if account is not None else None

        return await self._at(address, "account", address, local)  # type: ignore[no-any-return]

    async def rpc_receipt(self, peer: bytes, params: dict[str, Any]) -> dict[str, Any] | None:
        """A message's receipt, from the node that executes its recipient, with the messages it sent."""
        message_id, recipient = bytes(params["id"]), bytes(params["recipient"])

        async def local() -> dict[str, Any] | None:
            receipt = self.store.receipt(message_id)
            if receipt is None:
                return None
            sent = []
            for out in receipt.outgoing:
                found = self.store.message(out)
                if found is not None:
                    sent.append(found[0].canonical())
            return {"receipt": receipt.encode(), "sent": sent}

        return await self._at(recipient, "receipt", params, local)  # type: ignore[no-any-return]

    async def rpc_inbox(self, peer: bytes, address: bytes) -> list[bytes]:
        async def local() -> list[bytes]:
            out = []
            for _, message_id in self.store.pending(address):
                found = self.store.message(message_id)
                if found is not None:
                    out.append(found[0].canonical())
            return out

        return await self._at(address, "inbox", address, local)  # type: ignore[no-any-return]

    async def rpc_apply(self, peer: bytes, signed: list[list[bytes]]) -> tuple[int, str | None]:
        """State diffs from the executor of their actors (see the module docstring)."""
        if peer not in self.names or peer == self.me:
            raise PermissionError(f"apply is for cluster members; {short_id(peer)} is not one")
        diffs = []
        problem = None
        for raw, signature in signed:
            try:
                if not verify(peer, keccak256(raw), signature):
                    raise DiffError(f"bad signature from {self.names[peer]} on a state diff")
                diff = StateDiff.decode(raw)
                if executor(diff.address, self.members) != peer:
                    raise DiffError(f"{self.names[peer]} does not execute 0x{diff.address.hex()}")
                if self.me not in replicas(diff.address, self.members, self.k):
                    raise DiffError(f"this node does not replicate 0x{diff.address.hex()}")
            except DiffError as err:
                problem = str(err)
                break
            diffs.append(diff)
        done, refused = await trio.to_thread.run_sync(self.store.apply_diffs, peer, diffs)
        self.diffs_applied += done
        problem = refused or problem
        if problem:
            log.warning("refused a state diff from %s: %s", self.names[peer], problem)
        return done, problem

    async def rpc_learn_code(self, peer: bytes, records: list[bytes]) -> tuple[int, str | None]:
        """Code of actors ``peer`` executes and deployed (see the store's ``announce``)."""
        if peer not in self.names or peer == self.me:
            raise PermissionError(f"learn_code is for cluster members; {short_id(peer)} is not one")
        entries, problem = [], None
        for raw in records:
            try:
                address, code = msgpack.unpackb(raw)
                if not isinstance(address, bytes) or len(address) != 20 or not isinstance(code, bytes):
                    raise ValueError("expected [20-byte address, code]")
                if len(code) > MAX_CODE_SIZE:
                    raise ValueError(f"code of {len(code)} bytes exceeds {MAX_CODE_SIZE}")
                if executor(address, self.members) != peer:
                    raise ValueError(f"{self.names[peer]} does not execute 0x{address.hex()}")
            except (ValueError, TypeError) as exc:
                problem = f"bad code announcement: {exc}"
                break
            entries.append((address, code))
        done = await trio.to_thread.run_sync(self.store.learn_code, entries)
        if problem:
            log.warning("refused code from %s: %s", self.names[peer], problem)
        return done, problem

    async def rpc_local_state(self, peer: bytes, address: bytes) -> dict[str, Any] | None:
        """This node's own copy of an actor (executor or replica): account, storage and mailbox."""
        account = self.store.account(address)
        if account is None:
            return None
        storage = self.store.storage(address)
        return {"account": account.encode(), "storage": [[k.to_bytes(32, "big"), v.to_bytes(32, "big")]
                                                         for k, v in sorted(storage.items())],
                "mailbox": self.store.mailbox(address), "executor": self.is_local(address)}

    # -- reads for clients (see missive.cluster.reads): this node's own store, or the actor's node --

    async def rpc_members(self, peer: bytes, params: Any) -> list[dict[str, Any]]:
        """Every member (this node included): how a client finds the others and computes placement."""
        me = {"name": self.config.name, "host": self.config.host, "port": self.port, "id": self.me}
        return [me] + [{"name": p.name, "host": p.host, "port": p.port, "id": p.node_id}
                       for p in self.config.peers if p.node_id != self.me]

    async def rpc_progress(self, peer: bytes, params: Any) -> dict[str, int]:
        return reads.progress(self.store)

    async def rpc_ledger(self, peer: bytes, params: dict[str, Any]) -> dict[str, Any]:
        """This node's ledger (each node keeps its own): a page of records with messages and receipts."""
        return await trio.to_thread.run_sync(functools.partial(
            reads.ledger_page, self.store, int(params.get("start") or 0), params.get("limit"), params.get("last")))

    async def _everywhere(self, method: str, params: Any) -> list[Any]:
        """Ask every reachable peer (their answers; an unreachable peer is left out)."""
        answers: list[Any] = []

        async def ask(link: PeerLink) -> None:
            try:
                answers.append(await link.call(method, params, timeout=5.0))
            except NetError as exc:
                log.info("%s to %s failed: %s", method, short_id(link.peer_id), exc)

        async with trio.open_nursery() as nursery:
            for link in self.links.values():
                nursery.start_soon(ask, link)
        return answers

    async def rpc_message(self, peer: bytes, params: dict[str, Any]) -> bytes | None:
        """A message by id: from here, else (``spread``) from whichever peer has it."""
        found = reads.message(self.store, bytes(params["id"]))
        if found is None and params.get("spread"):
            found = next((a for a in await self._everywhere("message", {"id": params["id"]}) if a), None)
        return found

    async def rpc_resolve(self, peer: bytes, params: dict[str, Any]) -> list[bytes]:
        """Message ids starting with a prefix, here and (``spread``) on every peer."""
        matches = set(self.store.message_ids_with_prefix(bytes(params["prefix"])))
        if params.get("spread"):
            for answer in await self._everywhere("resolve", {"prefix": params["prefix"]}):
                matches.update(bytes(m) for m in answer)
        return sorted(matches)[:2]

    async def rpc_mailbox(self, peer: bytes, address: bytes) -> list[list[Any]]:
        async def local() -> list[list[Any]]:
            return reads.mailbox(self.store, address)

        return await self._at(address, "mailbox", address, local)  # type: ignore[no-any-return]

    async def rpc_pending(self, peer: bytes, params: Any) -> list[bytes]:
        """Every message waiting on this node (``inbox`` asks for one actor's, wherever it lives)."""
        return reads.pending(self.store)

    async def rpc_accounts(self, peer: bytes, params: Any) -> list[list[bytes]]:
        return reads.accounts(self.store)

    async def rpc_replay(self, peer: bytes, params: dict[str, Any] | None) -> dict[str, Any]:
        """Replay this node's ledger on a worker thread (the node keeps serving) and report."""
        params = params or {}
        actor = bytes(params["actor"]) if params.get("actor") else None
        until = bytes(params["until"]) if params.get("until") else None
        started = time.perf_counter()
        report = await trio.to_thread.run_sync(reads.replay_report, self.store, actor, until)
        return {**report, "seconds": time.perf_counter() - started, "name": self.config.name}

    async def rpc_shutdown(self, peer: bytes, params: Any) -> bool:
        async def later() -> None:
            await trio.sleep(0.05)  # let the answer leave first
            self.stopping.set()

        assert self._nursery is not None
        self._nursery.start_soon(later)
        return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m missive.cluster.node CONFIG.toml", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = load(Path(args[0]))
    except ConfigError as exc:
        print(f"missive node: {exc}", file=sys.stderr)
        return 2
    node = ClusterNode(config)

    async def main_task() -> None:
        async def stop_on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    node.stopping.set()
                    break

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_signal)
            await node.run()  # returns when stopped by a signal or by the shutdown RPC
            nursery.cancel_scope.cancel()  # so the signal watcher does not keep the process alive

    trio.run(main_task)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
