"""A cluster node's door for clients: what a client (or a member forwarding for one) may ask of a node.

Submits are admitted by the node executing the sender's account (forwarded there if that is
another node), reads are answered by the node executing the actor asked about, and waits are
answered by the commit that handles the message (:mod:`missive.cluster.waiters`).  The door is
handed what it works with (the store, the links, the node's admission and its placement); it
owns no task and runs no replication: the node process (:mod:`missive.cluster.node`) wires it.
Parameters are checked into one clear refusal (:mod:`missive.cluster.door`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from missive.cluster import door, reads
from missive.cluster.config import NodeConfig
from missive.cluster.tracing import Tracer
from missive.cluster.waiters import MAX_WAIT, Waiters
from missive.identity import short_id
from missive.mailbox.envelope import Envelope, EnvelopeError
from missive.mailbox.signed import SignedRecord, record_envelope
from missive.mailbox.store import Accepted, Store
from missive.market.registry_actor import CODE as REGISTRY_CODE
from missive.market.registry_actor import REGISTRY, genesis_storage
from missive.net import NetError, PeerLink

log = logging.getLogger(__name__)

#: storage slots one ``read_actor`` request may ask for
MAX_READ_SLOTS = 256


class ClientDoor:
    """The client-facing requests of one node (see the module docstring)."""

    def __init__(self, *, config: NodeConfig, me: bytes, names: dict[bytes, str], links: dict[bytes, PeerLink],
                 store: Store, waiters: Waiters, trace: Tracer,
                 admit: Callable[[list[tuple[Envelope, bytes, bytes]]], Awaitable[list[Accepted | EnvelopeError]]],
                 executor: Callable[[bytes], bytes], executes: Callable[[bytes], bool],
                 until_serving: Callable[[], Awaitable[None]], port: Callable[[], int],
                 stop: Callable[[], None]) -> None:
        self.config = config
        self.me = me
        self.names = names
        self.links = links
        self.store = store
        self.waiters = waiters
        self.trace = trace
        #: admit signed messages here, this node executing their senders (the node's admission)
        self.admit = admit
        #: which node executes an actor, and whether this one does
        self.executor = executor
        self.executes = executes
        #: wait while this node catches up (its actors' state is not yet current)
        self.until_serving = until_serving
        self.port = port
        #: stop the node, once the answer has left
        self.stop = stop

    def handlers(self) -> dict[str, Callable[[bytes, Any], Awaitable[Any]]]:
        """The door's methods by RPC name."""
        return {name: getattr(self, name) for name in (
            "submit", "submit_wait", "create_account", "create_registry", "account", "receipt", "wait", "wait_reply", "inbox",
            "local_state", "members", "ledger", "message", "resolve", "mailbox", "pending", "accounts", "replay",
            "shutdown", "read_actor", "storage", "scheduled")}

    async def at(self, address: bytes, method: str, params: Any,
                  local: Callable[[], Awaitable[Any]], *, timeout: float = 10.0) -> Any:
        """Run ``local`` if this node executes ``address``, else ask the node that does."""
        node_id = self.executor(address)
        if node_id == self.me:
            await self.until_serving()
            return await local()
        return await self.links[node_id].call(method, params, timeout=timeout)

    async def submit(self, peer: bytes, records: list[bytes]) -> list[dict[str, Any]]:
        """Signed external messages: admitted by the node executing their sender's account."""
        groups: dict[bytes, list[int]] = {}
        parsed: list[tuple[Envelope, bytes, bytes] | None] = []
        results: list[dict[str, Any]] = [{} for _ in records]
        for index, raw in enumerate(records):
            try:
                record = SignedRecord.decode(raw)
            except (EnvelopeError, ValueError, TypeError) as exc:
                results[index] = {"error": f"malformed message: {exc}"}
                parsed.append(None)
                continue
            envelope = record.envelope
            parsed.append(record.as_tuple())
            groups.setdefault(self.executor(envelope.sender), []).append(index)
        for node_id, indexes in groups.items():
            if node_id == self.me:
                mine = [p for i in indexes if (p := parsed[i]) is not None]  # all are: groups holds parsed ones
                self.trace.ids("submitted", (envelope.id for envelope, _, _ in mine))
                await self.until_serving()
                accepted = await self.admit(mine)
                self.trace.ids("admitted", (envelope.id for envelope, _, _ in mine))
                answers = [{"error": str(a)} if isinstance(a, EnvelopeError)
                           else {"id": a.message_id, "duplicate": a.duplicate} for a in accepted]
            else:
                answers = await self.links[node_id].call("submit", [records[i] for i in indexes], timeout=10.0)
            for i, answer in zip(indexes, answers, strict=True):
                results[i] = answer
        return results

    async def create_account(self, peer: bytes, params: dict[str, Any]) -> bool:
        """The development faucet: a new external account with a balance minted from nothing.

        The operator's request (or a member's, forwarding it to the account's executor), only
        in development mode, and checked whole before anything is written: a bad account
        written here would have its state diff refused by every peer, forever.
        """
        if peer not in self.names or peer == self.me:  # members only forward what the operator asked
            door.require_operator(peer, self.config.operator, "create_account")
        door.require_development(self.config.development, "create_account")
        door.table(params, "create_account", ("address", "public_key", "balance"))
        address = door.address(params["address"], "create_account")
        public_key = door.public_key(params["public_key"], "create_account")
        balance = door.u256(params["balance"], "create_account", "balance")

        async def local() -> bool:
            if self.store.account(address) is not None:
                raise door.BadRequest(f"create_account: account 0x{address.hex()} already exists")
            await trio.to_thread.run_sync(self.store.create_account, address, public_key, balance)
            return True

        return bool(await self.at(address, "create_account", params, local))

    async def create_registry(self, peer: bytes, params: dict[str, Any]) -> bool:
        """The cluster's worker registry (:mod:`missive.market.registry_actor`), made once by the
        operator when the cluster is made: an actor with Missive's own code, at its fixed address,
        holding no coin yet.  False if it exists already (``missive cluster up`` asks every time)."""
        if peer not in self.names or peer == self.me:
            door.require_operator(peer, self.config.operator, "create_registry")
        door.table(params, "create_registry", ("unbond_seconds",))
        seconds = params["unbond_seconds"]
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not 0 <= seconds < 2**32:
            raise door.BadRequest("create_registry: unbond_seconds must be a whole number of seconds")

        async def local() -> bool:
            if self.store.account(REGISTRY) is not None:
                return False
            await trio.to_thread.run_sync(self.store.create_system_actor, REGISTRY, REGISTRY_CODE,
                                          genesis_storage(seconds))
            return True

        return bool(await self.at(REGISTRY, "create_registry", params, local))

    async def account(self, peer: bytes, address: bytes) -> bytes | None:
        address = door.address(address, "account")

        async def local() -> bytes | None:
            account = self.store.account(address)
            return account.encode() if account is not None else None

        return await self.at(address, "account", address, local)  # type: ignore[no-any-return]

    def receipt_answer(self, message_id: bytes) -> dict[str, Any] | None:
        """A handled message's receipt and the messages its handling sent, as clients get them."""
        receipt = self.store.receipt(message_id)
        if receipt is None:
            return None
        sent = []
        for out in receipt.outgoing:
            found = self.store.message(out)
            if found is not None:
                sent.append(found[0].canonical())
        return {"receipt": receipt.encode(), "sent": sent}

    async def receipt(self, peer: bytes, params: dict[str, Any]) -> dict[str, Any] | None:
        """A message's receipt, from the node that executes its recipient, with the messages it sent."""
        door.table(params, "receipt", ("id", "recipient"))
        message_id = door.message_id(params["id"], "receipt")
        recipient = door.address(params["recipient"], "receipt", "recipient")

        async def local() -> dict[str, Any] | None:
            return self.receipt_answer(message_id)

        return await self.at(recipient, "receipt", params, local)  # type: ignore[no-any-return]

    async def wait(self, peer: bytes, params: dict[str, Any]) -> dict[str, Any] | None:
        """Like ``receipt``, but the answer waits (up to ``timeout`` s, at most 30) until the message
        is handled: the commit wakes it (missive/cluster/waiters.py).  None: not handled in time."""
        door.table(params, "wait", ("id", "recipient"), ("timeout",))
        message_id = door.message_id(params["id"], "wait")
        recipient = door.address(params["recipient"], "wait", "recipient")
        timeout = _wait_timeout(params)

        async def local() -> dict[str, Any] | None:
            return await self.waiters.receipt(message_id, lambda: self.receipt_answer(message_id), timeout)

        return await self.at(recipient, "wait", params, local, timeout=timeout + 10.0)  # type: ignore[no-any-return]

    async def wait_reply(self, peer: bytes, params: dict[str, Any]) -> dict[str, Any] | None:
        """The reply to request ``request`` (sent by account ``sender``) once the sender's node has
        handled it: {"reply": the reply message, "receipt": its receipt}.  None: not within
        ``timeout`` s (at most 30), or handled so long ago that it is no longer remembered by
        request (then ask for the request's receipt and ``wait`` for the reply it names)."""
        door.table(params, "wait_reply", ("request", "sender"), ("timeout",))
        request = door.message_id(params["request"], "wait_reply", "request")
        sender = door.address(params["sender"], "wait_reply", "sender")
        timeout = _wait_timeout(params)

        async def local() -> dict[str, Any] | None:
            reply_id = await self.waiters.reply(request, timeout)
            if reply_id is None:
                return None
            found, receipt = self.store.message(reply_id), self.store.receipt(reply_id)
            if found is None or receipt is None:
                return None
            return {"reply": found[0].canonical(), "receipt": receipt.encode()}

        return await self.at(sender, "wait_reply", params, local, timeout=timeout + 10.0)  # type: ignore[no-any-return]

    async def submit_wait(self, peer: bytes, params: dict[str, Any]) -> dict[str, Any]:
        """One signed message submitted and waited for in one request (one round trip for a client
        that wants the outcome, not two): ``{"record", "until", "timeout"}``.

        The answer is ``submit``'s (``{"id", "duplicate"}``, or ``{"error"}`` and
        nothing else), plus ``"handled"``: what ``wait`` answers for the message
        (``until="receipt"``, the default) or ``wait_reply`` for its reply
        (``until="reply"``); None if that did not come within ``timeout`` s.
        """
        if not isinstance(params, dict) or not isinstance(params.get("record"), bytes):
            raise ValueError("submit_wait takes {record: the bytes of one signed message, until, timeout}")
        until = params.get("until", "receipt")
        if until not in ("receipt", "reply"):
            raise ValueError(f'until must be "receipt" or "reply", not {until!r}')
        timeout = _wait_timeout(params)
        record = params["record"]
        (answer,) = await self.submit(peer, [record])
        if "error" in answer:
            return answer
        envelope = record_envelope(record, check=True)
        if until == "reply" and not envelope.wants_reply:
            return {**answer, "error": "the message was accepted, but it asks for no reply to wait for"}
        if until == "reply":
            handled = await self.wait_reply(peer, {"request": answer["id"], "sender": envelope.sender,
                                                       "timeout": timeout})
        else:
            handled = await self.wait(peer, {"id": answer["id"], "recipient": envelope.recipient,
                                                 "timeout": timeout})
        return {**answer, "handled": handled}

    async def inbox(self, peer: bytes, address: bytes) -> list[bytes]:
        address = door.address(address, "inbox")

        async def local() -> list[bytes]:
            out = []
            for _, message_id in self.store.pending(address):
                found = self.store.message(message_id)
                if found is not None:
                    out.append(found[0].canonical())
            return out

        return await self.at(address, "inbox", address, local)  # type: ignore[no-any-return]

    async def local_state(self, peer: bytes, address: bytes) -> dict[str, Any] | None:
        """This node's own copy of an actor (executor or replica): account, storage and mailbox."""
        address = door.address(address, "local_state")
        account = self.store.account(address)
        if account is None:
            return None
        storage = self.store.storage(address)
        return {"account": account.encode(), "storage": [[k.to_bytes(32, "big"), v.to_bytes(32, "big")]
                                                         for k, v in sorted(storage.items())],
                "mailbox": self.store.mailbox(address), "executor": self.executes(address)}

    async def read_actor(self, peer: bytes, params: dict[str, Any]) -> dict[str, Any] | None:
        """An actor's account, code and the storage slots asked for, from the node executing it (what
        ``missive rpc --cluster`` runs a read-only call against): ``{address, slots, code}``."""
        door.table(params, "read_actor", ("address",), ("slots", "code"))
        address = door.address(params["address"], "read_actor")
        slots = params.get("slots") or []
        if not isinstance(slots, list) or len(slots) > MAX_READ_SLOTS:
            raise door.BadRequest(f"read_actor: slots must be a list of at most {MAX_READ_SLOTS} 32-byte words")
        wanted = [int.from_bytes(door.sized(s, 32, "slot", "read_actor"), "big") for s in slots]
        with_code = door.flag(params.get("code"), "read_actor", "code")

        async def local() -> dict[str, Any] | None:
            account = self.store.account(address)
            if account is None:
                return None
            code = self.store.code(account.code_hash) if with_code and account.code_hash else b""
            return {"account": account.encode(), "code": code,
                    "slots": [self.store.slot(address, s).to_bytes(32, "big") for s in wanted]}

        return await self.at(address, "read_actor", params, local)  # type: ignore[no-any-return]

    async def storage(self, peer: bytes, params: dict[str, Any]) -> dict[str, Any]:
        """An actor's non-zero storage slots, a page at a time, from the node executing it:
        ``{address, after}`` (the last slot of the page before; absent: from the first slot)."""
        door.table(params, "storage", ("address",), ("after",))
        address = door.address(params["address"], "storage")
        after = params.get("after")
        start = None if after is None else door.sized(after, 32, "after", "storage")

        async def local() -> dict[str, Any]:
            return reads.storage_page(self.store, address, start)

        return await self.at(address, "storage", params, local)  # type: ignore[no-any-return]

    async def scheduled(self, peer: bytes, params: Any) -> list[list[Any]]:
        """The scheduled messages not yet due of the actors this node executes (a client asks every node)."""
        await self.until_serving()
        return reads.scheduled(self.store, self.executes)

    async def members(self, peer: bytes, params: Any) -> list[dict[str, Any]]:
        """Every member (this node included): how a client finds the others and computes placement."""
        me = {"name": self.config.name, "host": self.config.host, "port": self.port(), "id": self.me}
        return [me] + [{"name": p.name, "host": p.host, "port": p.port, "id": p.node_id}
                       for p in self.config.peers if p.node_id != self.me]

    async def ledger(self, peer: bytes, params: dict[str, Any]) -> dict[str, Any]:
        """This node's ledger (each node keeps its own): a page of records with messages and receipts."""
        door.table(params, "ledger", (), ("start", "limit", "last"))
        start = door.count(params.get("start"), "ledger", "start") or 0
        limit = door.count(params.get("limit"), "ledger", "limit")
        last = door.count(params.get("last"), "ledger", "last")
        return await trio.to_thread.run_sync(functools.partial(reads.ledger_page, self.store, start, limit, last))

    async def everywhere(self, method: str, params: Any) -> list[Any]:
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

    async def message(self, peer: bytes, params: dict[str, Any]) -> bytes | None:
        """A message by id: from here, else (``spread``) from whichever peer has it."""
        door.table(params, "message", ("id",), ("spread",))
        message_id = door.message_id(params["id"], "message")
        found = reads.message(self.store, message_id)
        if found is None and door.flag(params.get("spread"), "message", "spread"):
            found = next((a for a in await self.everywhere("message", {"id": message_id}) if a), None)
        return found

    async def resolve(self, peer: bytes, params: dict[str, Any]) -> list[bytes]:
        """Message ids starting with a prefix, here and (``spread``) on every peer."""
        door.table(params, "resolve", ("prefix",), ("spread",))
        start = door.prefix(params["prefix"], "resolve")
        matches = set(self.store.message_ids_with_prefix(start))
        if door.flag(params.get("spread"), "resolve", "spread"):
            for answer in await self.everywhere("resolve", {"prefix": start}):
                matches.update(bytes(m) for m in answer)
        return sorted(matches)[:2]

    async def mailbox(self, peer: bytes, address: bytes) -> list[list[Any]]:
        address = door.address(address, "mailbox")

        async def local() -> list[list[Any]]:
            return reads.mailbox(self.store, address)

        return await self.at(address, "mailbox", address, local)  # type: ignore[no-any-return]

    async def pending(self, peer: bytes, params: Any) -> list[bytes]:
        """Every message waiting on this node (``inbox`` asks for one actor's, wherever it lives)."""
        return reads.pending(self.store)

    async def accounts(self, peer: bytes, params: Any) -> list[list[bytes]]:
        return reads.accounts(self.store)

    async def replay(self, peer: bytes, params: dict[str, Any] | None) -> dict[str, Any]:
        """Replay this node's ledger on a worker thread (the node keeps serving) and report.
        The operator's request: a replay re-executes the whole ledger."""
        door.require_operator(peer, self.config.operator, "replay")
        params = door.table({} if params is None else params, "replay", (), ("actor", "until"))
        actor = door.optional_address(params.get("actor") or None, "replay", "actor")
        until = door.optional_message_id(params.get("until") or None, "replay", "until")
        started = time.perf_counter()
        report = await trio.to_thread.run_sync(reads.replay_report, self.store, actor, until)
        return {**report, "seconds": time.perf_counter() - started, "name": self.config.name}

    async def shutdown(self, peer: bytes, params: Any) -> bool:
        """Stop this node (the operator's request: ``missive cluster down``)."""
        door.require_operator(peer, self.config.operator, "shutdown")

        self.stop()
        return True


def _wait_timeout(params: dict[str, Any]) -> float:
    """A client's ``timeout`` for a wait, in seconds: from 0 to MAX_WAIT (default MAX_WAIT)."""
    raw = params.get("timeout", MAX_WAIT)
    if not isinstance(raw, int | float) or isinstance(raw, bool) or not 0 <= raw <= MAX_WAIT:
        shown = raw if isinstance(raw, int | float | str) and len(repr(raw)) < 40 else type(raw).__name__
        raise door.BadRequest(f"timeout must be a number of seconds from 0 to {MAX_WAIT:g}, not {shown!r}")
    return float(raw)
