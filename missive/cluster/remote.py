"""The node API against a running cluster: :class:`RemoteNode`.

Why a remote implementation of :class:`missive.node.NodeAPI` rather than separate
cluster commands: the CLI, the demo and user scripts are written once against
the API (deploy, contract functions, ``Sent.receipt()``/``reply()``, ledger
and inbox reads) and work unchanged on a cluster.  ``Contract``, ``Sent`` and
``Wallet`` are the very same classes, and what both implementations share
(signing and submitting messages among it) is :class:`missive.node.base.BaseNode`'s;
only the primitives underneath differ:

* messages are signed here with keys from a local keystore (``<dir>/keystore``,
  e.g. the cluster directory the launcher funded ``default`` in) and submitted
  to one node (the *home* node), which forwards them to the node executing the
  sender; reads of an actor are forwarded to the node executing it;
* waiting for a receipt is one open ``wait`` request that the node answers
  when it commits the receipt (polling only to feed observers), with a default
  time limit so a dead node gives an error rather than a hang;
* each node keeps its own ledger, so ledger reads and replay are per node:
  the home node's when it was named (``--node``), every node's otherwise.

Every request opens its own authenticated connection: simple, stateless, and
a few milliseconds, which is nothing next to a person at a terminal.  The
administrative requests (``create_account``, the development faucet, and
``replay``) connect with the cluster operator's key, found in the cluster
directory (or the keys directory given with ``--node``); the others with a
throwaway key.  (The
benchmark in ``tools/bench/cluster.py`` keeps connections open instead.)
Blocking methods run their own trio loop, as in ``Node``; the ``a``-prefixed
waits are trio-native, and observers run on a worker thread so they may call
the blocking methods.  Two reads have no request yet and are refused, saying so:
an actor's storage and the scheduled messages.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import trio

from missive.cluster.client import (
    ADMIN_METHODS,
    OPERATOR_FILE,
    ClusterError,
    acall,
    failure_text,
    load_operator,
    parse_node,
)
from missive.cluster.door import DISK_FULL
from missive.cluster.placement import executor
from missive.cluster.remote_raise import RaiseClient
from missive.cluster.remote_registry import RegistryClient
from missive.cluster.waiters import MAX_WAIT
from missive.errors import Failed, NotFound
from missive.keys import Key, Keystore
from missive.mailbox.disk import DiskFull
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
from missive.mailbox.ledger_records import ReceiptRecord, from_fields
from missive.mailbox.records import Account, Receipt
from missive.net import NetError, NodeIdentity, RemoteError
from missive.node.api import NodeAPI, Observer
from missive.node.base import BaseNode
from missive.node.errors import ArgumentError, NodeError, NodeTimeout
from missive.node.records import LedgerRecord, Wallet, ledger_record
from missive.node.sent import Chain
from missive.node.signing import Signed, pack_signed
from missive.node.twins import in_trio
from missive.node.values import hexstr, to_address, to_message_id

log = logging.getLogger(__name__)

#: A wait without an explicit timeout gives up after this long (a node may be down).
DEFAULT_WAIT = 60.0
#: Signed messages per ``submit`` request (well under the frame limit).
SUBMIT_CHUNK = 1000
#: How long a submit the sender's node turned away before admitting anything (it lost touch with
#: the cluster, is catching up, or its worker lost its stake: "...; try another node" / "try
#: again") is sent again, the same signed messages, while the cluster moves the sender's actor to
#: another holder.  Other refusals are final: some may follow an admission (a resend would then
#: meet a moved nonce), and the rest are about the message itself.
SUBMIT_RETRY = 10.0
RETRIED = ("; try another node", "; try again")


class NodeUnreachable(NodeError, Failed):
    """A node did not answer or refused the request; the text names it and says why."""


class UnknownNode(ArgumentError, NotFound):
    """No node of that name in the cluster."""


class RemoteDiskFull(NodeError, DiskFull):
    """The node refused a write because its disk is full (nothing was written there)."""


class UnknownCluster(NodeError, NotFound):
    """No cluster in the directory given."""


class RemoteNode(RaiseClient, RegistryClient, BaseNode):
    """The node API on a cluster whose nodes run the actors, reached through one of its nodes (the home node)."""

    scope = "cluster"
    atomic_batches = False  # each sender's node admits its own messages

    def __init__(self, host: str, port: int, keys_dir: Path | None, *, pinned: bool = False,
                 members: list[dict[str, Any]] | None = None, wait_timeout: float = DEFAULT_WAIT,
                 operator: NodeIdentity | None = None) -> None:
        super().__init__(Path(keys_dir) if keys_dir is not None else Path(), abi_dir=keys_dir)
        #: the cluster operator's key, for the administrative requests (None: this client may not make them)
        self.operator = operator
        self._keys_dir = keys_dir
        self._keystore: Keystore | None = None
        self.host, self.port = host, port
        #: the home node was named by the user: ledger reads and replay are about it alone
        self.pinned = pinned
        self.wait_timeout = wait_timeout
        #: how long a submit turned away by a node that does not serve now is tried again (:data:`SUBMIT_RETRY`)
        self.submit_retry = SUBMIT_RETRY
        self._members = members
        self._chain_id: int | None = None
        self._reply_ids: dict[bytes, bytes] = {}
        self._known: dict[bytes, Envelope] = {}  # messages seen: ids -> envelopes (to find their recipients)
        self._observers: list[Observer] = []
        self._cursors: dict[str, int] = {}

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def connect(cls, node: str | None = None, cluster: Path | None = None, keys_dir: Path | None = None,
                **kwargs: Any) -> RemoteNode:
        """A remote node from ``--node HOST:PORT|NAME`` and/or ``--cluster DIR``.

        With ``cluster``, the keystore is the cluster directory's (unless
        ``keys_dir``) and ``node`` may be a member's name; without ``node``, the
        first member that answers is used.  The operator's key is taken from the
        cluster directory, else from ``keys_dir``, if there is one.
        """
        if cluster is None and node is None:
            raise ArgumentError("give --node HOST:PORT or --cluster DIR")
        if "operator" not in kwargs:
            try:
                kwargs["operator"] = load_operator(cluster) or load_operator(keys_dir)
            except ClusterError as exc:
                raise (UnknownCluster if isinstance(exc, NotFound) else NodeError)(str(exc)) from None
        if cluster is not None:
            from missive.cluster.launcher import read_cluster

            try:
                members = [dict(m) for m in read_cluster(cluster)["nodes"]]
            except ClusterError as exc:
                raise (UnknownCluster if isinstance(exc, NotFound) else NodeError)(str(exc)) from None
            keys = keys_dir if keys_dir is not None else cluster
            if node is not None:
                named = [m for m in members if m["name"] == node or f"{m['host']}:{m['port']}" == node
                         or str(m["port"]) == node]
                if named:
                    return cls(named[0]["host"], named[0]["port"], keys, pinned=True, members=members, **kwargs)
                if ":" not in node:
                    names = ", ".join(m["name"] for m in members)
                    raise UnknownNode(f"--node {node!r}: no such node in the cluster at {cluster} ({names})")
                host, port = _parse(node)
                return cls(host, port, keys, pinned=True, members=members, **kwargs)
            for member in members:
                remote = cls(member["host"], member["port"], keys, members=members, **kwargs)
                try:
                    remote._call("progress", timeout=3.0)
                except NodeUnreachable:
                    continue
                return remote
            names = ", ".join(m["name"] for m in members)
            raise NodeUnreachable(f"no node of the cluster at {cluster} answers ({names}); is it up?")
        assert node is not None
        host, port = _parse(node)
        return cls(host, port, keys_dir, pinned=True, **kwargs)

    def close(self) -> None:
        if self._keystore is not None:
            self._keystore.close()
            self._keystore = None

    def __enter__(self) -> RemoteNode:
        return self

    @property
    def keystore(self) -> Keystore:
        """The local keystore that signs what this client sends (opened on first use)."""
        if self._keystore is None:
            if self._keys_dir is None:
                raise NodeError("no keystore: give --dir D (e.g. the cluster directory) or --cluster DIR")
            if not (self._keys_dir / "keystore").is_dir():
                raise NodeError(f"no keystore at {self._keys_dir} (the cluster directory has one)")
            self._keystore = Keystore(self._keys_dir)
        return self._keystore

    def __repr__(self) -> str:
        return f"<RemoteNode {self.host}:{self.port}>"

    # -- requests ---------------------------------------------------------------------------

    async def _acall(self, method: str, params: Any = None, *, at: tuple[str, int] | None = None,
                     timeout: float = 10.0) -> Any:
        host, port = at if at is not None else (self.host, self.port)
        identity = self._operator_for(method) if method in ADMIN_METHODS else None
        try:
            return await acall(host, port, method, params, timeout=timeout, identity=identity)
        except ClusterError as exc:
            raise NodeUnreachable(str(exc)) from None
        except NetError as exc:
            if isinstance(exc, RemoteError) and exc.message.startswith(DISK_FULL):
                raise RemoteDiskFull(f"node {host}:{port}: {exc.message.removeprefix(DISK_FULL)}") from None
            raise NodeUnreachable(failure_text(host, port, method, exc)) from None

    def _operator_for(self, method: str) -> NodeIdentity:
        """The operator's key, which administrative requests need; or one line saying where it is."""
        if self.operator is None:
            raise NodeError(f"{method} needs the cluster operator's key ({OPERATOR_FILE} in the cluster "
                            "directory): give --cluster DIR, or --dir DIR with --node")
        return self.operator

    def _call(self, method: str, params: Any = None, *, at: tuple[str, int] | None = None,
              timeout: float = 10.0) -> Any:
        if in_trio():
            raise NodeError(f"{method}: a blocking call inside trio code; use the a-prefixed twin")
        return trio.run(lambda: self._acall(method, params, at=at, timeout=timeout))

    @property
    def members(self) -> list[dict[str, Any]]:
        """Every node of the cluster: name, host, port, id (asked of the home node once)."""
        if self._members is None:
            self._members = [dict(m) for m in self._call("members")]
        return self._members

    @property
    def chain_id(self) -> int:
        """The cluster's chain id (CHAINID; what its external messages are signed for), asked once."""
        if self._chain_id is None:
            self._chain_id = int(self._call("status")["chain_id"])
        return self._chain_id

    def _member_ids(self) -> list[bytes]:
        return sorted(bytes(m["id"]) for m in self.members)

    def node_of(self, address: object) -> str:
        """The name of the node that executes ``address`` (rendezvous placement, as the nodes compute it)."""
        node_id = executor(to_address(address), self._member_ids())
        return next(str(m["name"]) for m in self.members if bytes(m["id"]) == node_id)

    def _scope(self) -> list[dict[str, Any]]:
        """The nodes whose own ledgers a read covers: the named home node, or all."""
        if self.pinned:
            home = [m for m in self.members if (m["host"], m["port"]) == (self.host, self.port)]
            return home or [{"name": f"{self.host}:{self.port}", "host": self.host, "port": self.port}]
        return self.members

    def _each(self, method: str, params: Any = None, scope: list[dict[str, Any]] | None = None,
              timeout: float = 10.0) -> list[tuple[str, Any]]:
        """Ask every node in ``scope`` (default: all) at once: (name, answer) in member order."""
        nodes = self.members if scope is None else scope

        async def ask_all() -> list[tuple[str, Any]]:
            out: list[Any] = [None] * len(nodes)

            async def ask(i: int, m: dict[str, Any]) -> None:
                out[i] = (str(m["name"]), await self._acall(method, params, at=(m["host"], m["port"]), timeout=timeout))

            async with trio.open_nursery() as nursery:
                for i, m in enumerate(nodes):
                    nursery.start_soon(ask, i, m)
            return out

        try:
            return trio.run(ask_all)
        except BaseExceptionGroup as group:
            raise _first(group) from None

    # -- accounts ---------------------------------------------------------------------------

    def _create_account(self, name: str, balance: int) -> Key:
        self._operator_for("create_account")  # before a key is made that could not be funded
        key = self.keystore.new(name)
        self._call("create_account", {"address": key.address, "public_key": key.public_key,
                                      "balance": balance.to_bytes(32, "big")})
        return key

    def wallets(self) -> list[Wallet]:
        return [Wallet(self, key) for key in self.keystore.all()]

    def account(self, address: object) -> Account | None:
        raw = self._call("account", to_address(address))
        return Account.decode(raw) if raw is not None else None

    def accounts(self) -> dict[bytes, Account]:
        out: dict[bytes, Account] = {}
        for _, answer in self._each("accounts"):
            out.update({bytes(a): Account.decode(raw) for a, raw in answer})
        return out

    def storage(self, address: object) -> dict[int, int]:
        """An actor's non-zero storage slots, from the node executing it, a page (1,000 slots) per
        request: an actor with more may change between two pages (one page is one read)."""
        target = to_address(address)
        out: dict[int, int] = {}
        params: dict[str, Any] = {"address": target}
        while True:
            page = self._call("storage", params)
            out.update((int.from_bytes(slot, "big"), int.from_bytes(value, "big")) for slot, value in page["slots"])
            if page["next"] is None:
                return out
            params = {"address": target, "after": page["next"]}

    # -- submitting (signing is BaseNode.submit's) -----------------------------------------------

    def ensure_writable(self, what: str) -> None:
        """Nothing here: the cluster's nodes decide what a client may write (the door)."""

    def _check_recipient(self, kind: Kind, to: bytes | None, payload: bytes) -> None:
        if kind is not Kind.DEPLOY and payload:
            # A node admits messages for actors elsewhere without seeing them; check here, as one node would.
            target = self.account(to)
            if target is None or not target.is_contract:
                raise EnvelopeError(f"unknown contract {hexstr(to or b'')}: no code there to call")

    def _nonce(self, address: bytes) -> int:
        account = self.account(address)
        if account is None:
            raise NodeError(f"account {hexstr(address)} does not exist on this cluster")
        return account.nonce

    def _clock(self) -> int:
        return 0  # the node that handles a message stamps its time

    def _admit(self, signed: list[Signed], *, all_or_nothing: bool) -> list[bool | EnvelopeError]:
        """``submit`` requests of up to :data:`SUBMIT_CHUNK` messages to the home node, which forwards
        each to its sender's node; never all-or-nothing (each node admits its own)."""
        timeout = 10.0 if len(signed) == 1 else 30.0
        out: list[bool | EnvelopeError] = []
        for start in range(0, len(signed), SUBMIT_CHUNK):
            chunk = signed[start:start + SUBMIT_CHUNK]
            answers = self._submit_chunk(chunk, timeout)
            for (envelope, _, _), answer in zip(chunk, answers, strict=True):
                if "error" in answer:
                    out.append(EnvelopeError(str(answer["error"])))
                else:
                    self._known[envelope.id] = envelope
                    out.append(bool(answer.get("duplicate")))
        return out

    def _submit_chunk(self, chunk: list[Signed], timeout: float) -> list[dict[str, Any]]:
        """One ``submit`` request's answers, the messages a node turned away before admitting them
        (:data:`RETRIED`) sent again, backing off, for up to :attr:`submit_retry` seconds."""
        answers: list[dict[str, Any]] = [{} for _ in chunk]
        todo = list(range(len(chunk)))
        deadline = time.monotonic() + self.submit_retry
        delay = 0.1
        while True:
            got = self._call("submit", [pack_signed(chunk[i]) for i in todo], timeout=timeout)
            again = []
            for i, answer in zip(todo, got, strict=True):
                answers[i] = answer
                if "error" in answer and str(answer["error"]).endswith(RETRIED):
                    again.append(i)
            if not again or time.monotonic() + delay > deadline:
                return answers
            log.info("%d message(s) turned away (%s): sent again in %.1f s", len(again),
                     answers[again[0]]["error"], delay)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            todo = again

    # -- waiting -----------------------------------------------------------------------------

    def receipt_of(self, envelope: Envelope) -> Receipt | None:
        found = self._call("receipt", {"id": envelope.id, "recipient": envelope.recipient})
        return self._found_receipt(found)

    async def _areceipt_of(self, envelope: Envelope) -> Receipt | None:
        found = await self._acall("receipt", {"id": envelope.id, "recipient": envelope.recipient})
        return self._found_receipt(found)

    def _found_receipt(self, found: dict[str, Any] | None) -> Receipt | None:
        if found is None:
            return None
        receipt = Receipt.decode(found["receipt"])
        for raw in found["sent"]:
            envelope = Envelope.decode(raw)
            self._known[envelope.id] = envelope
        return receipt

    async def _poll(self, done: Callable[[], Any], what: str, timeout: float | None) -> Any:
        """Call the async ``done`` until it returns something, feeding observers between looks."""
        limit = self.wait_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        delay = 0.002
        while True:
            found = await done()
            if found is not None:
                await self._afeed_observers()
                return found
            await self._afeed_observers()
            if time.monotonic() > deadline:
                raise NodeTimeout(f"gave up after {limit} s: {what}")
            await trio.sleep(delay)
            delay = min(delay * 1.5, 0.05)

    async def await_receipt(self, envelope: Envelope, what: str, timeout: float | None) -> Receipt:
        """The receipt, as soon as the node executing the recipient commits it (its ``wait`` request
        stays open until then).  With observers, the ledgers are polled instead, to feed them."""
        self._known[envelope.id] = envelope
        if self._observers:
            return await self._poll(lambda: self._areceipt_of(envelope), what, timeout)  # type: ignore[no-any-return]
        limit = self.wait_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            left = max(0.0, min(deadline - time.monotonic(), MAX_WAIT))
            found = await self._acall("wait", {"id": envelope.id, "recipient": envelope.recipient, "timeout": left},
                                      timeout=left + 10.0)
            receipt = self._found_receipt(found)
            if receipt is not None:
                return receipt
            if time.monotonic() >= deadline:
                raise NodeTimeout(f"gave up after {limit} s: {what}")

    async def await_reply(self, request: Envelope, what: str, timeout: float | None) -> tuple[Envelope, Receipt]:
        """The reply is sent by the handling of ``request`` and handled on the requester's node."""
        receipt = await self.await_receipt(request, f"no reply to {what} arrived", timeout)
        reply_id = self._reply_ids.get(request.id)
        if reply_id is None:
            for message_id in reversed(receipt.outgoing):
                message = self._known.get(message_id)
                if message is not None and message.kind is Kind.REPLY and message.request_id == request.id:
                    reply_id = self._reply_ids[request.id] = message_id
                    break
            else:
                raise NodeError(f"message {hexstr(request.id)} was handled but sent no reply")
        reply = self._known[reply_id]
        await self.await_receipt(reply, f"the reply to {what} is not handled yet", timeout)
        return reply, receipt

    async def afollow(self, message_id: bytes | str, timeout: float | None = None) -> Chain:
        """A cluster runs its actors all the time: watch the receipts of the chain's messages
        (each receipt's answer carries the messages it sent) until all are in or ``timeout``."""
        seen: dict[bytes, Receipt] = {}
        chain = Chain(seen.get, to_message_id(message_id))
        deadline = time.monotonic() + (self.wait_timeout if timeout is None else timeout)
        delay = 0.002
        while not chain.done() and time.monotonic() < deadline:
            for unfinished in chain.unfinished:
                envelope = self._known.get(unfinished)
                if envelope is None:
                    raw = await self._acall("message", {"id": unfinished, "spread": True})
                    if raw is None:
                        continue
                    envelope = self._known[unfinished] = Envelope.decode(raw)
                receipt = await self._areceipt_of(envelope)
                if receipt is not None:
                    seen[unfinished] = receipt
            if any(unfinished not in seen for unfinished in chain.unfinished):
                await trio.sleep(delay)
                delay = min(delay * 1.5, 0.05)
        return chain

    async def _progress_all(self) -> list[dict[str, int]]:
        out: list[dict[str, int]] = []
        for m in self.members:
            out.append(await self._acall("progress", at=(m["host"], m["port"]), timeout=5.0))
        return out

    async def arun_until_idle(self, timeout: float | None = None) -> int:
        """Wait until no node has anything left: nothing pending, scheduled, or on its way to another node.

        Two looks in a row must find every node idle with the same write
        counters: a message moving between nodes between the looks bumps its
        receiver's counter, so "idle" cannot be read from two half-states.
        """
        limit = self.wait_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        previous: list[int] | None = None
        while True:
            states = await self._progress_all()
            seqs = [s["seq"] for s in states]
            idle = all(s["pending"] == 0 and s["outbound"] == 0 and s["scheduled"] == 0 for s in states)
            await self._afeed_observers()
            if idle and seqs == previous:
                return 0  # the cluster handled everything; this process handled nothing itself
            previous = seqs if idle else None
            if time.monotonic() > deadline:
                raise NodeTimeout(f"gave up after {limit} s: the cluster is still busy")
            await trio.sleep(0.01)

    def is_idle(self) -> bool:
        states = [answer for _, answer in self._each("progress")]
        return all(s["pending"] == 0 and s["outbound"] == 0 and s["scheduled"] == 0 for s in states)

    # -- observing -----------------------------------------------------------------------------

    def observe(self, observer: Observer) -> Callable[[], None]:
        """Like :meth:`Node.observe`, for the whole cluster: handled messages, as waits poll the ledgers.

        Observers run on a worker thread during this node's waits (so they may
        call blocking methods); pairs come per node in ledger order, nodes
        merged by the messages' Lamport time.
        """
        if not self._cursors:
            for name, page in self._each("ledger", {"last": 1}):
                self._cursors[name] = int(page["next"])
        self._observers.append(observer)

        def stop() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return stop

    async def _afeed_observers(self) -> None:
        if not self._observers:
            return
        pairs: list[tuple[int, int, Envelope, Receipt]] = []
        for order, m in enumerate(self.members):
            name = str(m["name"])
            while True:
                page = await self._acall("ledger", {"start": self._cursors.get(name, 0)}, at=(m["host"], m["port"]))
                for _seq, fields, canonical, receipt in page["records"]:
                    record = from_fields(fields, wire=True)
                    if (isinstance(record, ReceiptRecord) and not record.discarded and canonical is not None
                            and receipt is not None):
                        envelope = Envelope.decode(canonical)
                        self._known[envelope.id] = envelope
                        pairs.append((envelope.time, order, envelope, Receipt.decode(receipt)))
                self._cursors[name] = int(page["next"])
                if not page["records"]:
                    break
        if not pairs:
            return
        pairs.sort(key=lambda p: (p[0], p[1]))
        batch = [(envelope, receipt) for _, _, envelope, receipt in pairs]
        for observer in list(self._observers):
            await trio.to_thread.run_sync(observer, batch)

    # -- inspecting -----------------------------------------------------------------------------

    def message(self, message_id: bytes | str) -> Envelope | None:
        wanted = to_message_id(message_id)
        found = self._known.get(wanted)
        if found is None:
            raw = self._call("message", {"id": wanted, "spread": True})
            if raw is not None:
                found = self._known[wanted] = Envelope.decode(raw)
        return found

    def receipt(self, message_id: bytes | str) -> Receipt | None:
        envelope = self.message(message_id)
        return self.receipt_of(envelope) if envelope is not None else None

    def _ids_with_prefix(self, prefix: bytes) -> list[bytes]:
        return [bytes(m) for m in self._call("resolve", {"prefix": prefix, "spread": True})]

    def mailbox(self, address: object) -> list[tuple[Envelope, Receipt | None]]:
        out: list[tuple[Envelope, Receipt | None]] = []
        for canonical, receipt in self._call("mailbox", to_address(address)):
            out.append((Envelope.decode(canonical), Receipt.decode(receipt) if receipt is not None else None))
        return out

    def pending(self, address: object = None) -> list[Envelope]:
        if address is not None:
            return [Envelope.decode(raw) for raw in self._call("inbox", to_address(address))]
        return [Envelope.decode(raw) for _, answer in self._each("pending") for raw in answer]

    def scheduled(self) -> list[tuple[int, Envelope]]:
        """Every node's scheduled messages for the actors it executes, soonest first (as one node lists them)."""
        found: dict[bytes, tuple[int, Envelope]] = {}
        for _, answer in self._each("scheduled"):
            for due, canonical in answer:
                envelope = Envelope.decode(canonical)
                found.setdefault(envelope.id, (int(due), envelope))  # (a change of executor may show one twice)
        return sorted(found.values(), key=lambda pair: (pair[0], pair[1].id))

    def ledger_length(self) -> int:
        return sum(int(page["total"]) for _, page in self._each("ledger", {"last": 0}, self._scope()))

    def iter_ledger(self, start: int = 0) -> Iterator[LedgerRecord]:
        """Each node's ledger in turn (the home node's alone when it was named)."""
        for m in self._scope():
            yield from self._iter_one(m, start)

    def ledger(self, start: int = 0, limit: int | None = None, *, last: int | None = None) -> list[LedgerRecord]:
        """Records of each node's ledger in scope: from ``start`` (at most ``limit`` per node), or the ``last`` N."""
        if last is None:
            out: list[LedgerRecord] = []
            for m in self._scope():
                taken = 0
                for record in self._iter_one(m, start):
                    if limit is not None and taken >= limit:
                        break
                    out.append(record)
                    taken += 1
            return out
        return [self._remote_record(name, item) for name, page in self._each("ledger", {"start": start, "last": last},
                                                                              self._scope())
                for item in page["records"]]

    def _iter_one(self, m: dict[str, Any], start: int) -> Iterator[LedgerRecord]:
        cursor = start
        while True:
            page = self._call("ledger", {"start": cursor}, at=(m["host"], m["port"]))
            yield from (self._remote_record(str(m["name"]), item) for item in page["records"])
            if not page["records"]:
                return
            cursor = int(page["next"])

    def _remote_record(self, name: str, item: list[Any]) -> LedgerRecord:
        """One record of a ``ledger`` page (:func:`missive.cluster.reads.ledger_page`)."""
        seq, fields, canonical, receipt = item
        envelope = Envelope.decode(canonical) if canonical is not None else None
        if envelope is not None:
            self._known.setdefault(envelope.id, envelope)
        return ledger_record(int(seq), from_fields(fields, wire=True), envelope,
                             Receipt.decode(receipt) if receipt is not None else None, name)

    # -- replay --------------------------------------------------------------------------------

    def replay_nodes(self, actor: object = None, until: bytes | None = None) -> list[dict[str, Any]]:
        """Each node in scope replays its own ledger (at once, in their processes): their reports."""
        params = {"actor": to_address(actor) if actor is not None else None, "until": until}
        return [answer for _, answer in self._each("replay", params, self._scope(), timeout=3600.0)]

    def replay_check(self, actor: object = None) -> tuple[int, str | None]:
        reports = self.replay_nodes(actor)
        problems = [f"{r['name']}: {r['divergence']}" for r in reports if r["divergence"]]
        return sum(int(r["checked"]) for r in reports), problems[0] if problems else None


def _parse(text: str) -> tuple[str, int]:
    try:
        return parse_node(text)
    except ClusterError as exc:
        raise ArgumentError(str(exc)) from None


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real error in a (nested) exception group, so callers see a NodeError, not a group."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        return exc
    return group  # pragma: no cover


def _implements_the_api(node: RemoteNode) -> NodeAPI:
    """(For mypy: the cluster client implements :class:`NodeAPI` in full.)"""
    return node
