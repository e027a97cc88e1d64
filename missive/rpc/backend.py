"""Where the Ethereum methods read and write: one node's store, or a cluster through its doors.

:class:`~missive.rpc.methods.EthApi` is written once against :class:`Backend`; two classes
implement it:

- :class:`LocalBackend`, an embedded node (:class:`missive.node.Node`): reads go to its store,
  transactions are admitted by the store's own admission check, blocks are its seals;
- :class:`ClusterBackend`, a running cluster (:class:`missive.cluster.remote.RemoteNode`): reads go
  to the node executing the actor asked about (the client door forwards them there), transactions
  are submitted to a node that forwards each to its sender's executor, and blocks are made by
  looking at every node's ledger (:mod:`missive.rpc.index`).  A cluster node answers with a
  message's envelope only, so this endpoint keeps the Ethereum transactions it admitted (hash,
  message id, the signed raw transaction) and the receipts it has seen, in its index.

On a node the endpoint's writes go through one :class:`~missive.mailbox.writer.GroupWriter`
(started by :func:`missive.rpc.server.serve`), as a cluster node's do: the transactions that
arrive together are admitted in one LMDB transaction on the event loop's thread, and the actors
handle them in that same transaction (:meth:`~missive.actors.runtime.Runtime.round_in_transaction`),
so a transaction is admitted, handled and sealed with one fsync.  Before, each admission was its
own transaction on a worker thread and each round's commit another, racing for LMDB's write lock
and the GIL; ``tools/bench/rpc.py`` measures the endpoint (examples/ETHEREUM_TOOLS.md, Speed).

Both run a read-only call (``eth_call``, ``eth_estimateGas``) the same way: one actor's code
against its current state, here in this process; on a cluster the state is fetched from the
actor's executor first, on a worker thread.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgpack
import trio

from missive.actors.handler import ActorState, run_handler
from missive.mailbox import ethtx, ledger_records
from missive.mailbox.admission import checker
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
from missive.mailbox.records import Account, Receipt
from missive.mailbox.store import Accepted, Store, u64
from missive.mailbox.writer import GroupWriter
from missive.node.sent import Chain, Trace
from missive.rpc.index import Index, NewBlock
from missive.vm.keccak import keccak256

log = logging.getLogger(__name__)

Submission = tuple[Envelope, bytes, bytes]
Record = tuple[Envelope, bytes, bytes]
#: how often at most a cluster endpoint looks at the nodes' ledgers for new blocks
CLUSTER_LOOK = 0.05
#: how often a wait for a message looks at the store when no round here tells it (the actors run elsewhere)
POLL = 0.005


class Backend(Protocol):
    index: Index
    #: "node" or "cluster", for the words of answers
    scope: str

    @property
    def chain_id(self) -> int: ...

    def clock(self) -> int:
        """The time an Ethereum transaction's envelope gets (the one field its signature does not cover)."""

    async def account(self, address: bytes) -> Account | None: ...

    async def code(self, address: bytes) -> bytes: ...

    async def slot(self, address: bytes, slot: int) -> int: ...

    async def message(self, message_id: bytes) -> Record | None: ...

    async def receipt(self, message_id: bytes) -> Receipt | None: ...

    async def eth_transaction(self, tx_hash: bytes) -> bytes | None:
        """The message an Ethereum transaction became (None: never admitted here)."""

    async def admit(self, submissions: list[Submission]) -> list[Accepted | EnvelopeError | Exception]:
        """Admit ``(tx.envelope(time), tx.public_key, tx.raw)`` of transactions :func:`ethtx.decode`
        checked: their signer is the key it recovered (a node need not recover it a second time)."""

    def change(self) -> trio.Event:
        """An event set when something may have been handled after this call (a round of this
        process's actors became durable); one that is never set where nothing here can tell."""

    async def run_call(self, envelope: Envelope) -> tuple[Receipt, list[Envelope]]:
        """Run ``envelope``'s handler against its recipient's current state, writing nothing."""

    async def trace(self, message_id: bytes) -> Trace: ...

    async def follow(self, message_id: bytes, timeout: float) -> Chain: ...

    async def refresh(self) -> None:
        """Take the blocks made since the last look into the index."""

    def close(self) -> None: ...


def simulate(envelope: Envelope, account: Account, code: bytes, read_slot: Callable[[int], int],
             read_code: Callable[[bytes], tuple[bytes, bytes]], chain_id: int) -> tuple[Receipt, list[Envelope]]:
    """One handler run that writes nothing (both backends' ``run_call``)."""
    target = envelope.recipient
    if envelope.kind is Kind.DEPLOY:
        account, code = Account(), b""
    state = ActorState(target, account, code)
    receipt, _writes, _code, outgoing, _delta = run_handler(state, envelope, envelope.id, read_slot, read_code,
                                                            int(time.time()), chain_id)
    return receipt, list(outgoing)


class LocalBackend:
    """An embedded node: its store (the actors run beside the endpoint: :func:`missive.rpc.server.run_actors`)."""

    scope = "node"

    def __init__(self, node: Any) -> None:
        self.node = node
        self.store: Store = node.store
        # signatures=False: every submission is a transaction ethtx.decode checked (see Backend.admit)
        self._check = checker(self.store, signatures=False)
        #: the endpoint's writer, while it runs (see the module docstring); None: each admission writes alone
        self.writer: GroupWriter | None = None
        self._round = trio.Event()
        self.index = Index(node.path, self.store.chain_id)
        self._verify_index()

    def _verify_index(self) -> None:
        """An index whose head is not this ledger's seal (a store restored from an older backup, say) is
        started again from the ledger."""
        head = self.index.block(self.index.head) if self.index.head >= 0 else None
        if head is None:
            return
        raw = self.store.get(None, "seals", u64(head.seq))
        if raw is None or bytes(msgpack.unpackb(raw)[0]) != head.hash:
            log.warning("the RPC index does not match the ledger at %s: rebuilding it", self.node.path)
            self.index.close()
            self.index = Index.rebuilt(self.node.path, self.store.chain_id)

    @property
    def chain_id(self) -> int:
        return int(self.store.chain_id)

    def clock(self) -> int:
        return int(self.store.clock())

    async def account(self, address: bytes) -> Account | None:
        found: Account | None = self.store.account(address)
        return found

    async def code(self, address: bytes) -> bytes:
        account = self.store.account(address)
        return bytes(self.store.code(account.code_hash)) if account is not None and account.code_hash else b""

    async def slot(self, address: bytes, slot: int) -> int:
        return int(self.store.slot(address, slot))

    async def message(self, message_id: bytes) -> Record | None:
        found: Record | None = self.store.message(message_id)
        return found

    async def receipt(self, message_id: bytes) -> Receipt | None:
        found: Receipt | None = self.store.receipt(message_id)
        return found

    async def eth_transaction(self, tx_hash: bytes) -> bytes | None:
        found: bytes | None = self.store.eth_transaction(tx_hash)
        return found

    async def admit(self, submissions: list[Submission]) -> list[Accepted | EnvelopeError | Exception]:
        results: list[Accepted | EnvelopeError]
        if self.writer is None:
            results = await trio.to_thread.run_sync(self.store.accept, submissions, self._check)
        else:
            results = await self.writer.write(functools.partial(self._accept_in, submissions))
        return list(results)

    def _accept_in(self, submissions: list[Submission], txn: Any) -> list[Accepted | EnvelopeError]:
        accepted: list[Accepted | EnvelopeError] = self.store.accept(submissions, self._check, txn=txn)
        return accepted

    def change(self) -> trio.Event:
        return self._round

    def rounds_done(self, _outcomes: object = None) -> None:
        """A runtime observer: a round is durable, so whoever waits for a change looks again."""
        done, self._round = self._round, trio.Event()
        done.set()

    def _read_code(self, who: bytes) -> tuple[bytes, bytes]:
        other = self.store.account(who)
        if other is None:
            known: tuple[bytes, bytes] = self.store.known_code(who)
            return known
        return (self.store.code(other.code_hash), other.code_hash) if other.code_hash else (b"", b"")

    async def run_call(self, envelope: Envelope) -> tuple[Receipt, list[Envelope]]:
        target = envelope.recipient
        found = self.store.account(target)
        account = found if found is not None else Account()
        code = self.store.code(account.code_hash) if account.code_hash else b""
        return simulate(envelope, account, code, lambda slot: self.store.slot(target, slot), self._read_code,
                        self.chain_id)

    async def trace(self, message_id: bytes) -> Trace:
        found: Trace = self.node.trace(message_id)
        return found

    async def follow(self, message_id: bytes, timeout: float) -> Chain:
        chain = Chain(self.store.receipt, message_id)
        with trio.move_on_after(timeout):
            while True:
                change = self._round  # taken before the look: a round that ends after it is not missed
                if chain.done():
                    break
                with trio.move_on_after(POLL):  # (another process may run the actors: no round seen here)
                    await change.wait()
        return chain

    async def refresh(self) -> None:
        self.index_seals()

    def index_seals(self) -> None:
        """Every seal written since the last look becomes a block (see :mod:`missive.rpc.index`)."""
        cursor = self.index.cursor("seals")
        store = self.store
        with store.read() as txn:
            seals = store.scan("seals", b"", txn=txn, after=cursor)
            if not seals:
                return
            start = int.from_bytes(cursor, "big") + 1 if cursor is not None else 0
            last = int.from_bytes(seals[-1][0], "big")
            records: list[tuple[int, bytes]] = []
            ledger = txn.cursor(db=store.db["ledger"])
            if ledger.set_range(u64(start)):
                for key, value in ledger:
                    seq = int.from_bytes(key, "big")
                    if seq > last:
                        break
                    record = ledger_records.decode_lean(value)  # a receipt: (kind, id), without msgpack
                    if type(record) is tuple and record[0] == ledger_records.RECEIPT:
                        records.append((seq, record[1]))
            blocks: list[NewBlock] = []
            position = 0
            for key, value in seals:
                seq = int.from_bytes(key, "big")
                new = NewBlock(seq, [], hash=bytes(msgpack.unpackb(value)[0]))
                while position < len(records) and records[position][0] <= seq:
                    message_id = bytes(records[position][1])
                    position += 1
                    receipt = store.receipt(message_id, txn)
                    if receipt is not None:
                        new.handled.append((message_id, receipt))
                blocks.append(new)
        self.index.append(blocks, {"seals": u64(last)})

    def close(self) -> None:
        self.index.close()


class ClusterBackend:
    """A running cluster, through its nodes' client doors (see the module docstring)."""

    scope = "cluster"

    def __init__(self, remote: Any, directory: Any) -> None:
        self.remote = remote
        self.members: list[dict[str, Any]] = [dict(m) for m in remote.members]  # asked once, before serving
        self._chain_id = int(remote.chain_id)
        self.index = Index(directory, self._chain_id)
        self._looked = 0.0
        self._lock = trio.Lock()

    @property
    def chain_id(self) -> int:
        return self._chain_id

    def clock(self) -> int:
        return 0  # the node that handles a message stamps its time (as RemoteNode signs)

    async def _call(self, method: str, params: Any, at: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
        return await self.remote._acall(method, params, at=(at["host"], at["port"]) if at else None, timeout=timeout)

    async def account(self, address: bytes) -> Account | None:
        raw = await self._call("account", address)
        return Account.decode(raw) if raw is not None else None

    async def _actor(self, address: bytes, slots: list[int], code: bool = False) -> dict[str, Any] | None:
        """The account, code (if asked) and storage slots of an actor, from the node executing it
        (its client door forwards the request there)."""
        answer = await self._call("read_actor", {"address": address, "slots": [s.to_bytes(32, "big") for s in slots],
                                                 "code": code})
        return dict(answer) if answer is not None else None

    async def code(self, address: bytes) -> bytes:
        state = await self._actor(address, [], code=True)
        return bytes(state["code"]) if state is not None else b""

    async def slot(self, address: bytes, slot: int) -> int:
        state = await self._actor(address, [slot])
        return int.from_bytes(state["slots"][0], "big") if state is not None else 0

    async def message(self, message_id: bytes) -> Record | None:
        kept = self.index.record(message_id)
        if kept is not None:
            return Envelope.decode(kept[0]), kept[1], kept[2]
        raw = await self._call("message", {"id": message_id, "spread": True})
        return (Envelope.decode(raw), b"", b"") if raw is not None else None

    async def receipt(self, message_id: bytes) -> Receipt | None:
        kept = self.index.receipt(message_id)
        if kept is not None:
            return kept
        found = await self.message(message_id)
        if found is None:
            return None
        answer = await self._call("receipt", {"id": message_id, "recipient": found[0].recipient})
        return Receipt.decode(answer["receipt"]) if answer is not None else None

    async def eth_transaction(self, tx_hash: bytes) -> bytes | None:
        return self.index.tx(tx_hash)

    async def admit(self, submissions: list[Submission]) -> list[Accepted | EnvelopeError | Exception]:
        from missive.node.signing import pack_signed

        try:
            answers = await self._call("submit", [pack_signed(s) for s in submissions], timeout=30.0)
        except Exception as exc:  # the node did not answer: every submission is told
            return [exc] * len(submissions)
        out: list[Accepted | EnvelopeError | Exception] = []
        for (envelope, public_key, signature), answer in zip(submissions, answers, strict=True):
            if "error" in answer:
                out.append(EnvelopeError(str(answer["error"])))
                continue
            if ethtx.is_eth_public_key(public_key):
                self.index.remember(keccak256(signature), envelope.id,  # (the transaction's hash)
                                    [envelope.canonical(), public_key, signature])
            out.append(Accepted(envelope.id, bool(answer.get("duplicate"))))
        return out

    async def run_call(self, envelope: Envelope) -> tuple[Receipt, list[Envelope]]:
        """The handler runs on a worker thread; each storage slot and other contract's code it reads is
        asked of the actor's executor through the trio loop (one request each, remembered for the run)."""
        target = envelope.recipient
        state = await self._actor(target, [], code=True) if envelope.kind is not Kind.DEPLOY else None
        account = Account.decode(state["account"]) if state is not None else Account()
        code = bytes(state["code"]) if state is not None else b""
        slots: dict[int, int] = {}
        codes: dict[bytes, tuple[bytes, bytes]] = {}
        token = trio.lowlevel.current_trio_token()

        def read_slot(slot: int) -> int:  # on the worker thread
            if slot not in slots:
                slots[slot] = trio.from_thread.run(self.slot, target, slot, trio_token=token)
            return slots[slot]

        def read_code(who: bytes) -> tuple[bytes, bytes]:
            if who not in codes:
                other = trio.from_thread.run(self._actor, who, [], True, trio_token=token)
                if other is None or not other["code"]:
                    codes[who] = (b"", b"")
                else:
                    codes[who] = (bytes(other["code"]), Account.decode(other["account"]).code_hash)
            return codes[who]

        return await trio.to_thread.run_sync(simulate, envelope, account, code, read_slot, read_code, self.chain_id)

    def change(self) -> trio.Event:
        return trio.Event()  # the cluster's rounds are not seen from here: the caller polls

    async def trace(self, message_id: bytes) -> Trace:
        found: Trace = await trio.to_thread.run_sync(self.remote.trace, message_id)
        return found

    async def follow(self, message_id: bytes, timeout: float) -> Chain:
        found: Chain = await self.remote.afollow(message_id, timeout)
        return found

    async def refresh(self) -> None:
        """One look at every node's ledger, at most every :data:`CLUSTER_LOOK` seconds (a caller that
        arrives during a look waits for it)."""
        if time.monotonic() - self._looked < CLUSTER_LOOK:
            return
        async with self._lock:
            if time.monotonic() - self._looked < CLUSTER_LOOK:
                return
            await self._look()
            self._looked = time.monotonic()

    async def _look(self) -> None:
        found: list[tuple[int, int, bytes, Receipt, bytes]] = []
        cursors: dict[str, bytes] = {}
        seen: set[bytes] = set()
        for order, member in enumerate(self.members):
            name = "node:" + str(member["name"])
            kept = self.index.cursor(name)
            start = int.from_bytes(kept, "big") if kept is not None else 0
            try:
                while True:
                    page = await self._call("ledger", {"start": start}, at=member)
                    for _seq, fields, canonical, raw_receipt in page["records"]:
                        record = ledger_records.from_fields(fields, wire=True)
                        if (type(record) is not ledger_records.ReceiptRecord or record.discarded
                                or canonical is None or raw_receipt is None):
                            continue
                        message_id = record.message_id
                        if message_id in seen or self.index.where(message_id) is not None:
                            continue  # a replica's copy, or a receipt seen through another node
                        seen.add(message_id)
                        receipt = Receipt.decode(raw_receipt)
                        found.append((receipt.time, order, message_id, receipt, bytes(canonical)))
                    start = int(page["next"])
                    if not page["records"]:
                        break
            except Exception as exc:  # a node that is down: its blocks come at a later look
                log.info("ledger of %s: %s", member["name"], exc)
            cursors[name] = u64(start)
        found.sort(key=lambda f: (f[0], f[1]))
        blocks = []
        if found:
            blocks.append(NewBlock(0, [(m, r) for _, _, m, r, _ in found],
                                   records={m: [c, b"", b""] for _, _, m, _, c in found}))
        self.index.append(blocks, cursors, keep_receipts=True)

    def close(self) -> None:
        self.index.close()
        self.remote.close()
