"""The embedded node: :class:`Node`, a node directory opened in this process.

Its store (the ledger, in LMDB), its keystore, and its actors, which run in
this process (:class:`~missive.actors.runtime.Runtime`) while it holds the
node's executor lock.  When another process holds it (``missive serve``), a
waiting call polls the store until that process has handled the message.

Not thread-safe beyond what is stated: one :class:`Node` per node directory per
process (LMDB must not be opened twice by one process).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from missive.actors.runtime import ExecutorLock, NodeBusy, Runtime
from missive.keys import Key, Keystore, KeystoreError, ask_passphrase, unencrypted_by_default
from missive.mailbox import ledger_records
from missive.mailbox.admission import checker
from missive.mailbox.disk import NoStore
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
from missive.mailbox.ledger_records import GenesisRecord, ReceiptRecord
from missive.mailbox.records import Account, Receipt
from missive.mailbox.store import Store, check_whole
from missive.node.api import NodeAPI, Observer
from missive.node.base import BaseNode
from missive.node.errors import ArgumentError, NodeError, NodeTimeout, NotHandled
from missive.node.records import LedgerRecord, Wallet, ledger_record
from missive.node.sent import Chain
from missive.node.signing import Signed
from missive.node.values import to_address, to_message_id
from missive.replicas.slashing import check_evidence
from missive.vm.keccak import keccak256

#: How often a waiting call looks at the store while another process runs the actors.
POLL_INTERVAL: Final = 0.02
#: The file that makes a directory a cluster node's (``missive cluster up`` writes it).
CLUSTER_NODE_CONFIG: Final = "node.toml"


class Node(BaseNode):
    """A node directory: its ledger store, its keystore, and the actors it runs in-process."""

    scope = "node"
    atomic_batches = True  # one transaction for a send_many

    def __init__(self, path: Path, store: Store, keystore: Keystore) -> None:
        super().__init__(path, abi_dir=path)
        self.store = store
        store.evidence_check = check_evidence  # the registry re-checks wrong-diff evidence with it
        self._keystore = keystore
        self._check = checker(store)
        self._runtime = Runtime(store)
        self._running = False
        #: whether another process (``missive serve``) ran the actors when we last tried to
        self._served_elsewhere = False
        self._tickets: Any = None
        #: set when ``path`` is a cluster node's directory: only its node process may write there
        self.cluster_node = (path / CLUSTER_NODE_CONFIG).exists()
        self._reply_ids: dict[bytes, bytes] = {}

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def init(cls, path: str | os.PathLike[str], *, default_balance: int | None = None,
             encrypt_keys: bool | None = None) -> Node:
        """Create a node directory (error if one is there); with ``default_balance``, a funded "default" account.

        ``encrypt_keys``: whether the keystore encrypts seeds (None: unless ``$MISSIVE_UNENCRYPTED_KEYS``
        is set; see :mod:`missive.keys`)."""
        target = Path(path)
        check_whole(target)  # a damaged or lost ledger is named as such, never started over
        if (target / "data.mdb").exists():
            raise NodeError(f"a Missive node already exists at {target}")
        if target.exists() and not target.is_dir():
            raise NodeError(f"{target} exists and is not a directory")
        if (target / "keystore").exists():
            raise NodeError(f"{target} already holds a keystore; a node is made in a new directory")
        encrypted = not unencrypted_by_default() if encrypt_keys is None else encrypt_keys
        # the passphrase first: nothing is made until the whole node can be
        passphrase = ask_passphrase(target / "keystore", new=True) if encrypted else None
        existed = target.exists()
        store: Store | None = None
        try:
            try:
                store = Store(target, create=True)
            except OSError as exc:
                raise NodeError(f"cannot create a node at {target}: {exc.strerror or exc}") from None
            keystore = Keystore(target, create=True, encrypted=encrypted, passphrase=passphrase)
            node = cls(target, store, keystore)
            default = node.new_account("default", balance=default_balance) if default_balance is not None else None
            # the node is its own worker (its ledger key's account, with a stake of its own): fees to the default account
            store.register_own_worker(default.address if default is not None else None)
        except BaseException:  # (Ctrl-C too) no half-made node is left behind
            if store is not None:
                store.close()
            if not existed:
                shutil.rmtree(target, ignore_errors=True)
            else:  # an empty directory it was given (checked above: no store, no keystore in it)
                shutil.rmtree(target / "keystore", ignore_errors=True)
                for made in ("data.mdb", "lock.mdb", "ledger.key", "missive-ledger"):
                    (target / made).unlink(missing_ok=True)
            raise
        return node

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Node:
        """Open an existing node directory (StoreError naming the path if there is none)."""
        target = Path(path)
        check_whole(target)  # both files checked, and both there, before either is opened
        if not (target / "data.mdb").exists():
            raise NoStore(f"no Missive node at {target} (run `missive init` first)")
        Keystore.check(target)
        if (target / CLUSTER_NODE_CONFIG).exists() and not (target / "keystore" / "data.mdb").exists():
            root = target.parent
            raise NodeError(f"{target} is a node of the cluster at {root}: only its node process opens its store; "
                            f"use the cluster (`--cluster {root}`, `--node {target.name}` for this node's ledger)")
        if not (target / "keystore" / "data.mdb").exists():
            raise KeystoreError(f"no keystore at {target / 'keystore'} (a node directory made by `missive init` has "
                                "one; a cluster member's has none: use --cluster DIR)")
        store = Store(target)
        try:
            keystore = Keystore(target)
        except BaseException:
            store.close()
            raise
        return cls(target, store, keystore)

    def close(self) -> None:
        self.store.close()
        self._keystore.close()

    def __enter__(self) -> Node:
        return self

    def __repr__(self) -> str:
        return f"<Node {self.path}>"

    @property
    def keystore(self) -> Keystore:
        """The node directory's keystore."""
        return self._keystore

    @property
    def chain_id(self) -> int:
        """The ledger's id: what CHAINID gives its contracts, and what its external messages are
        signed for (a message signed for another ledger is refused).  Chosen at init, never 1."""
        return self.store.chain_id

    def clock(self) -> int:
        """The node's logical time (a scheduled message is due at a time on this clock)."""
        return self.store.clock()

    def ensure_writable(self, what: str) -> None:
        """Refuse to write into a cluster node's directory: its node process alone writes its
        ledger and runs its actors (a genesis record or a handled message written beside
        it would be a fork no peer knows of).  Reading it is fine."""
        if self.cluster_node:
            root = self.path.parent
            raise NodeError(f"{self.path} is a node of the cluster at {root}: only its node process writes there; "
                            f"{what} through the cluster instead (`--cluster {root}`)")

    # -- accounts ----------------------------------------------------------------------------

    def _create_account(self, name: str, balance: int) -> Key:
        self.ensure_writable("create accounts")
        key = self._keystore.new(name)
        self.store.create_account(key.address, key.public_key, balance)
        return key

    def raise_bid(self, message_id: bytes | str, new_bid: int, *, sender: object = None) -> int:
        """Raise the bid (fee per gas) of a message still waiting to ``new_bid``, signed by ``sender``
        (None: the message's sender if this keystore holds it, else the default account); the
        escrow is topped up from its balance.  Returns the top-up (gas × the raise).  Refused with
        one line (EnvelopeError), nothing changed: a bid not above the current one, a signer other
        than the sender, a message handled or unknown, a balance short of the top-up
        (:mod:`missive.market.raises`; docs/market.md)."""
        from missive.market.raises import sign_raise

        self.ensure_writable("raise bids")
        target = self.resolve_id(message_id) if isinstance(message_id, str) else to_message_id(message_id)
        if sender is None:
            found = self.store.message(target)
            if found is not None and self._keystore.find(found[0].sender.hex()) is not None:
                sender = found[0].sender
        key = self._key(sender)
        signature = sign_raise(key.signing_key, self.store.chain_id, target, new_bid)
        return self.store.raise_bid(target, new_bid, key.public_key, signature)

    def worker_op(self, op: str, *, sender: object = None, stake: int = 0, coinbase: object = None,
                  min_bid: int = 0) -> Any:
        """A signed operation on the worker registry (:mod:`missive.market.workers`) by ``sender``'s
        account (None: the default): ``register`` (locks ``stake``; fees to ``coinbase``, default the
        account; refuses bids below ``min_bid`` here), ``unbond``, ``withdraw`` (after the delay).
        Returns the worker's registry entry; refused with one line (EnvelopeError), nothing changed."""
        from missive.market.workers import args_of, digest

        self.ensure_writable("change the worker registry")
        store = self.store
        own = store.own_worker_key()
        sign: Callable[[bytes], bytes]
        if sender is None and op != "register" and own is not None:  # the node's own worker: its ledger key signs
            address, public_key, sign = keccak256(own.node_id)[12:], own.node_id, own.sign
        else:
            key = self._key(sender)
            address, public_key = key.address, key.public_key
            sign = lambda digest: bytes(key.signing_key.sign(digest).signature)  # noqa: E731
        args = args_of(op, stake, address if coinbase is None else to_address(coinbase, "coinbase"), min_bid,
                       store.clock())
        return store.worker_op(op, address, args, public_key, sign(digest(store.chain_id, op, address, args)))

    def accuse(self, evidence: bytes, *, sender: object = None) -> Any:
        """Submit wrong-diff evidence (an encoded :class:`missive.replicas.execution.WrongDiff`, as
        the trust store keeps it) to the worker registry, signed by ``sender``'s account (None: the
        default).  Re-checked, it forfeits the executor's pledge: a share to this accuser, the rest
        burned; the executor is deregistered.  Returns the :class:`missive.market.workers.Slash`;
        refused with one line (EnvelopeError), nothing changed: duplicate evidence, evidence that
        proves nothing, an executor with nothing to forfeit."""
        from missive.market.workers import digest

        self.ensure_writable("accuse a worker")
        key = self._key(sender)
        signature = bytes(key.signing_key.sign(digest(self.store.chain_id, "accuse", key.address,
                                                      [evidence])).signature)
        return self.store.accuse(key.address, evidence, key.public_key, signature)

    @property
    def tickets(self) -> Any:
        """Lottery-ticket payments on this node (:class:`missive.node.tickets.Tickets`; docs/tickets.md)."""
        from missive.node.tickets import Tickets

        if self._tickets is None:
            self._tickets = Tickets(self)
        return self._tickets

    def job_op(self, op: str, args: list[Any], *, sender: object = None) -> bytes:
        """A signed job board operation (:mod:`missive.market.jobs`) by ``sender`` (None: the default
        account); the job's id.  Refused with one line (EnvelopeError), nothing changed."""
        from missive.market.jobs import digest

        self.ensure_writable("change the job board")
        if op in ("take", "expire") and len(args) == 1:
            args = [*args, int(time.time())]  # when: the answer window counts from it
        key = self._key(sender)
        signature = bytes(key.signing_key.sign(digest(self.store.chain_id, op, key.address, args)).signature)
        return self.store.job_op(op, key.address, args, key.public_key, signature)

    def new_eth_account(self, name: str = "", balance: int = 0, *, private_key: bytes | None = None) -> Wallet:
        """A secp256k1 key (``private_key`` imported, else random) for an Ethereum account: it signs
        Ethereum transactions (``missive rpc``), not envelopes.  Its genesis account holds ``balance``,
        unless the address is on the ledger already (coins sent to it before its key was imported)."""
        from missive.keys import EthKey

        if not isinstance(balance, int) or isinstance(balance, bool) or balance < 0 or balance >> 256:
            raise ArgumentError(f"balance must be an integer in [0, 2**256), got {balance!r}")
        body = name.strip().removeprefix("0x").removeprefix("0X")
        if name.strip()[:2].lower() == "0x" or (len(body) == 40 and all(c in "0123456789abcdefABCDEF" for c in body)):
            raise ArgumentError(f"account name {name!r} looks like an address; pick another")
        self.ensure_writable("create accounts")
        if private_key is not None and balance and self.store.account(EthKey(name, private_key).address) is not None:
            raise ArgumentError(f"0x{EthKey(name, private_key).address.hex()} is on the ledger already: fund it by "
                                "sending it coins")  # (checked before the key is kept)
        key = self._keystore.new(name, kind="eth", private_key=private_key)
        if self.store.account(key.address) is None:
            self.store.create_account(key.address, key.public_key, balance)
        return Wallet(self, key)

    def wallets(self) -> list[Wallet]:
        """Keystore accounts, in the order they were created on this node's ledger (then the rest)."""
        keys = {k.address: k for k in self._keystore.all()}
        ordered: list[Wallet] = []
        for _, record in ledger_records.records(self.store):
            if isinstance(record, GenesisRecord) and record.address in keys:
                ordered.append(Wallet(self, keys.pop(record.address)))
        ordered.extend(Wallet(self, k) for k in keys.values())
        return ordered

    def account(self, address: object) -> Account | None:
        return self.store.account(to_address(address))

    def accounts(self) -> dict[bytes, Account]:
        return dict(self.store.accounts())

    # -- submitting (signing is BaseNode.submit's) -----------------------------------------------

    def _check_recipient(self, kind: Kind, to: bytes | None, payload: bytes) -> None:
        """Nothing here: the store's admission refuses what it would not run, saying why."""

    def _nonce(self, address: bytes) -> int:
        account = self.store.account(address)
        return account.nonce if account is not None else 0

    def _clock(self) -> int:
        return self.store.clock()

    def _admit(self, signed: list[Signed], *, all_or_nothing: bool) -> list[bool | EnvelopeError]:
        """The store admits them in one group commit (one transaction)."""
        results = self.store.accept(signed, self._check, all_or_nothing=all_or_nothing)
        return [result if isinstance(result, EnvelopeError) else result.duplicate for result in results]

    def observe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer`` with each round's (message, receipt) pairs as this process commits them.

        Returns a function that stops the observation.  The observer runs
        inside the runtime's loop: keep it quick.
        """
        def forward(outcomes: list[tuple[Envelope, Any]]) -> None:
            observer([(envelope, outcome.receipt) for envelope, outcome in outcomes])

        self._runtime.observers.append(forward)

        def stop() -> None:
            if forward in self._runtime.observers:
                self._runtime.observers.remove(forward)

        return stop

    # -- running and waiting ----------------------------------------------------------------------

    def is_idle(self) -> bool:
        """Nothing waiting: no pending message and no scheduled one."""
        return not self.store.pending(limit=1) and self.store.next_scheduled() is None

    async def _wait(self, done: Callable[[], bool], what: str, timeout: float | None, *,
                    until_idle: bool = False) -> int:
        """Run the actors (or poll, while another runs them) until ``done()``; return how many we handled."""
        handled = 0
        try:
            with trio.fail_after(timeout) if timeout is not None else contextlib.nullcontext():
                while not done():
                    if self._running:  # another task of this process is running the actors
                        await trio.sleep(POLL_INTERVAL)
                        continue
                    self.ensure_writable("run its actors")
                    lock = ExecutorLock(self.path)
                    try:
                        lock.acquire()
                    except NodeBusy:
                        self._served_elsewhere = True
                        await trio.sleep(POLL_INTERVAL)  # another process runs them: watch the store
                        continue
                    self._served_elsewhere = False
                    self._running = True
                    try:
                        handled += await self._runtime.run(until_idle=True, until=done)
                    finally:
                        self._running = False
                        lock.release()
                    if not done() and not until_idle:
                        idle = self.store.idle_reason()
                        raise NotHandled(f"the node is idle and {what}" + (f" ({idle})" if idle else ""))
        except trio.TooSlowError:
            raise NodeTimeout(f"gave up after {timeout} s: {what}") from None
        return handled

    async def arun_until_idle(self, timeout: float | None = None) -> int:
        """Handle every waiting message (and what they send); return how many this process handled."""
        return await self._wait(self.is_idle, "messages are still waiting", timeout, until_idle=True)

    async def afollow(self, message_id: bytes | str, timeout: float | None = None) -> Chain:
        """Wait until every message that ``message_id`` caused (its replies, the queries and
        calls its handler sent, what those sent, scheduled messages included) is handled, or
        ``timeout`` passes.  Return the chain: ``chain.unfinished`` names what is still
        waiting.  Never raises for an unfinished chain.

        When this process runs the actors (no ``missive serve`` holds the node), it runs
        them until the node is idle, not only until the chain is done: on one node nothing
        else would handle what earlier commands left waiting, and a scheduled message is
        released only when nothing else waits (logical time then jumps to it).
        """
        chain = Chain(self.store.receipt, to_message_id(message_id))

        def done() -> bool:
            return chain.done() and (self._served_elsewhere or self.is_idle())

        with contextlib.suppress(NodeTimeout, NotHandled):
            await self._wait(done, "messages it caused are still waiting", timeout)
        return chain

    def _reply_id(self, request_id: bytes, receipt: Receipt) -> bytes:
        found = self._reply_ids.get(request_id)
        if found is None:
            for message_id in reversed(receipt.outgoing):
                message = self.store.message(message_id)
                if message is not None and message[0].kind is Kind.REPLY and message[0].request_id == request_id:
                    found = self._reply_ids[request_id] = message_id
                    break
            else:
                raise NodeError(f"message 0x{request_id.hex()} was handled but sent no reply")
        return found

    def _reply_handled(self, request_id: bytes) -> bool:
        receipt = self.store.receipt(request_id)
        return receipt is not None and self.store.receipt(self._reply_id(request_id, receipt)) is not None

    def receipt_of(self, envelope: Envelope) -> Receipt | None:
        """The receipt of a message this node accepted, if it is handled."""
        return self.store.receipt(envelope.id)

    async def await_receipt(self, envelope: Envelope, what: str, timeout: float | None) -> Receipt:
        """Run the actors (or wait for the process running them) until ``envelope`` is handled."""
        await self._wait(lambda: self.store.receipt(envelope.id) is not None, what, timeout)
        found = self.store.receipt(envelope.id)
        assert found is not None
        return found

    async def await_reply(self, request: Envelope, what: str, timeout: float | None) -> tuple[Envelope, Receipt]:
        """Wait until the reply to ``request`` is in the requester's mailbox; (reply, request's receipt)."""
        request_id = request.id
        await self._wait(lambda: self._reply_handled(request_id), f"no reply to {what} arrived", timeout)
        receipt = self.store.receipt(request_id)
        assert receipt is not None
        message = self.store.message(self._reply_id(request_id, receipt))
        assert message is not None
        return message[0], receipt

    # -- inspecting -----------------------------------------------------------------------------

    def receipt(self, message_id: bytes | str) -> Receipt | None:
        return self.store.receipt(to_message_id(message_id))

    def storage(self, address: object) -> dict[int, int]:
        """An actor's storage slots (slot -> value)."""
        return self.store.storage(to_address(address))

    def replay_check(self, actor: object = None) -> tuple[int, str | None]:
        """Re-execute the ledger (SPEC §5): (receipts checked, the first divergence described, or None)."""
        from missive.actors.replay import replay

        report = replay(self.store, actor=to_address(actor) if actor is not None else None)
        if report.divergence is not None:
            return report.checked, report.divergence.describe()
        return report.checked, None

    def message(self, message_id: bytes | str) -> Envelope | None:
        found = self.store.message(to_message_id(message_id))
        return found[0] if found is not None else None

    def _ids_with_prefix(self, prefix: bytes) -> list[bytes]:
        return self.store.message_ids_with_prefix(prefix)

    def mailbox(self, address: object) -> list[tuple[Envelope, Receipt | None]]:
        """Messages ``address`` has handled, in order, with their receipts."""
        out: list[tuple[Envelope, Receipt | None]] = []
        for message_id in self.store.mailbox(to_address(address)):
            found = self.store.message(message_id)
            if found is not None:
                out.append((found[0], self.store.receipt(message_id)))
        return out

    def pending(self, address: object = None) -> list[Envelope]:
        """Messages waiting to be handled (for one actor, or all), in queue order."""
        out: list[Envelope] = []
        for _, message_id in self.store.pending(to_address(address) if address is not None else None):
            found = self.store.message(message_id)
            if found is not None:
                out.append(found[0])
        return out

    def scheduled(self) -> list[tuple[int, Envelope]]:
        out: list[tuple[int, Envelope]] = []
        for due, message_id in self.store.scheduled():
            found = self.store.message(message_id)
            if found is not None:
                out.append((due, found[0]))
        return out

    def ledger_length(self) -> int:
        """How many records the ledger holds (sequence numbers have gaps: the store shares its counter)."""
        with self.store.read() as txn:
            return int(txn.stat(self.store.db["ledger"])["entries"])

    def iter_ledger(self, start: int = 0) -> Iterator[LedgerRecord]:
        for seq, record in ledger_records.records(self.store, start):
            yield self._record(seq, record)

    def ledger(self, start: int = 0, limit: int | None = None, *, last: int | None = None) -> list[LedgerRecord]:
        """Ledger records from sequence number ``start`` (at most ``limit``), or the ``last`` N records."""
        if last is not None:
            with self.store.read() as txn:
                found = ledger_records.page(txn, self.store.db["ledger"], start, last=last)
            return [self._record(seq, record) for seq, record in found]
        out: list[LedgerRecord] = []
        for record in self.iter_ledger(start):
            if limit is not None and len(out) >= limit:
                break
            out.append(record)
        return out

    def _record(self, seq: int, record: ledger_records.Record) -> LedgerRecord:
        if not isinstance(record, ledger_records.MESSAGE_RECORDS):
            return ledger_record(seq, record)
        if isinstance(record, ReceiptRecord) and self.store.discarded(seq):
            # a receipt a rollback gave up (the sealed record itself stays as written)
            record = attrs.evolve(record, discarded=True)
        found = self.store.message(record.message_id)
        receipt = (self.store.receipt(record.message_id) if isinstance(record, ReceiptRecord) and not record.discarded
                   else None)
        return ledger_record(seq, record, found[0] if found is not None else None, receipt)


def _implements_the_api(node: Node) -> NodeAPI:
    """(For mypy: the embedded node implements :class:`NodeAPI` in full.)"""
    return node
