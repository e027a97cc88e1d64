"""Handling one message by one actor: the step the live runtime and replay share.

``handle`` is deterministic: its result depends only on the actor's state, the
message, the code of other accounts it inspects (recorded in the receipt
by code hash), the ledger's chain id and the clock reading it is given (``now``,
recorded in the receipt as block.timestamp; replay gives it back).

Ethereum's context (SPEC §3): block.timestamp is ``now`` in seconds but never
less than the actor's previous one; block.number is the actor's logical
(Lamport) time; CHAINID is the ledger's id; tx.origin is the external account at
the root of the message tree, carried in every internal envelope's ``origin``.  The runtime runs it live; replay runs it again from the ledger
and compares receipts.  It never touches the store: what it changes comes back
as an :class:`~missive.mailbox.store.Outcome` that the caller commits.

Per kind (SPEC §3):

* ``call``/``scheduled``: run the code with the payload as calldata and the
  value credited first (no code: just credit the value).
* ``query``: run read-only, no value.
* ``deploy``: run the payload as init code; its output becomes the code.
* ``reply``: run ``onReply(bytes32 requestId, bool success, bytes data)`` on a
  contract; an external account just receives it in its mailbox.
* ``bounce``: credit the value back; no code runs.

On failure nothing of the run stands and any value goes back in a ``bounce``.
A message that asked for a reply gets one, success or not, carrying the gas
the run did not use; the run is given the message's gas less a reserve for the
reply (:data:`REPLY_GAS_FLOOR`, at most half), so even a run that halted and
used all it was given leaves its reply that much.
"""

from __future__ import annotations

from collections.abc import Callable

from missive.mailbox.envelope import Envelope, Kind, int_bytes
from missive.mailbox.packing import packb
from missive.mailbox.records import Account, Receipt
from missive.mailbox.store import Outcome
from missive.market.registry_actor import CODE as REGISTRY_CODE
from missive.market.registry_actor import execute as registry_execute
from missive.vm import BlockContext, ExecutionResult, Host, MessageKind, OutgoingMessage, Status, execute
from missive.vm.creation import MAX_CODE_SIZE
from missive.vm.keccak import keccak256

ON_REPLY = keccak256(b"onReply(bytes32,bool,bytes)")[:4]
#: Gas kept back from a request that asks for a reply (at most half of what it
#: carries) so that the reply can run onReply even after the callee halted
#: exceptionally and used all the gas it ran with.  It comes out of the
#: request's own gas: a tree of messages never burns more than its root had.
REPLY_GAS_FLOOR = 100_000

#: reads another account's code by address: (code, code hash); b"" / b"" when none
CodeReader = Callable[[bytes], tuple[bytes, bytes]]
#: reads one committed storage slot of the actor
SlotReader = Callable[[int], int]


class ActorState:
    """An actor's state as its handler sees it; the runtime keeps it while the actor is loaded.

    A plain class, not attrs: mypyc compiles this module and makes it a native
    class, whose fields the handler reads and writes at C speed (mypyc cannot
    compile an attrs class with a factory default).
    """

    def __init__(self, address: bytes, account: Account, code: bytes, storage: dict[int, int] | None = None) -> None:
        self.address = address
        self.account = account
        self.code = code
        #: slots read or written so far (committed values, plus this actor's later writes)
        self.storage: dict[int, int] = {} if storage is None else storage

    def __repr__(self) -> str:
        return f"ActorState(address={self.address!r}, account={self.account!r}, code={self.code!r}, storage={self.storage!r})"


class _StorageView:
    """The VM's read-only view of the actor's storage: cache first, then the store."""

    __slots__ = ("cache", "load")

    def __init__(self, cache: dict[int, int], load: SlotReader) -> None:
        self.cache = cache
        self.load = load

    def get(self, key: int, default: int = 0) -> int:
        value = self.cache.get(key)
        if value is None:
            value = self.load(key)
            self.cache[key] = value
        return value


def outgoing_envelope(message: OutgoingMessage, parent: bytes, time: int, origin: bytes, bid: int = 0) -> Envelope:
    """The envelope a VM outbox entry becomes; its id is what the handler was told.
    ``origin``: the external account at the root of the tree (tx.origin), carried on; ``bid``:
    the parent's fee per gas, carried on with the gas it forwards (its escrow travels with it)."""
    return Envelope(
        kind=message.kind,
        sender=message.sender,
        recipient=message.recipient,
        value=message.value,
        payload=message.payload,
        gas=message.gas,
        bid=bid,
        nonce=message.index,
        time=time,
        wants_reply=message.wants_reply,
        parent=parent,
        not_before=time + message.delay if message.kind is MessageKind.SCHEDULED else 0,
        origin=origin,
    )


class ActorHost(Host):
    """What a handler may see beyond its own state: immutable code, and message ids."""

    def __init__(self, parent: bytes, time: int, origin: bytes, read_code: CodeReader, bid: int = 0) -> None:
        self.parent = parent
        self.time = time
        self.origin = origin
        self.bid = bid
        self.read_code = read_code
        self.reads: dict[bytes, bytes] = {}

    def code_at(self, address: bytes) -> bytes:
        code, code_hash = self.read_code(address)
        self.reads[address] = code_hash
        return code

    def message_id(self, message: OutgoingMessage, parent_id: bytes) -> bytes:
        return outgoing_envelope(message, self.parent, self.time, self.origin, self.bid).id


def reply_payload_for_contract(envelope: Envelope) -> bytes:
    """Calldata of ``onReply(bytes32 requestId, bool success, bytes data)``."""
    data = envelope.payload
    return (
        ON_REPLY
        + envelope.request_id
        + (1 if envelope.success else 0).to_bytes(32, "big")
        + (96).to_bytes(32, "big")
        + len(data).to_bytes(32, "big")
        + data
        + bytes(-len(data) % 32)
    )


def next_root(root: bytes, message_id: bytes, writes: dict[int, int], balance_delta: int, nonce: int, code_hash: bytes,
              timestamp: int) -> bytes:
    """The actor's state root: a hash chain over every state change, so equal roots mean equal histories.

    It covers the run's block.timestamp too, which the caller chose from its clock: a receipt whose
    recorded time was changed no longer matches the root it was recorded with.

    It hashes the balance *change*, not the balance: an external account's
    balance also moves when its own messages are accepted, at points that
    depend on batching, while the change a handler makes does not.
    """
    slots = [[int_bytes(k), int_bytes(writes[k])] for k in sorted(writes)] if writes else []
    diff = packb([slots, balance_delta < 0, int_bytes(abs(balance_delta)), nonce, code_hash, timestamp])
    return keccak256(root + message_id + diff)


#: What handling one message did: (receipt, storage writes, new code or None,
#: messages sent, balance change).  A plain tuple, not a class: replay makes
#: one per message and keeps only the receipt and the code.
Handled = tuple[Receipt, dict[int, int], "bytes | None", list[Envelope], int]


def handle(
    actor: ActorState,
    envelope: Envelope,
    message_id: bytes,
    queue_key: tuple[str, bytes],
    read_slot: SlotReader | None,
    read_code: CodeReader,
    now: int,
    chain_id: int,
    coinbase: bytes = b"",
) -> Outcome:
    """Handle ``envelope`` as ``actor``; update ``actor`` in place and return what to commit.
    ``coinbase``: the executing worker's account, paid the run's fee (see :func:`run_handler`)."""
    receipt, writes, new_code, outgoing, balance_delta = run_handler(actor, envelope, message_id, read_slot, read_code,
                                                                     now, chain_id, coinbase)
    return Outcome(message_id, actor.address, queue_key, receipt, actor.account, balance_delta, writes,
                   new_code if new_code else None, tuple(outgoing), envelope.origin or envelope.sender, envelope.bid)


def run_handler(
    actor: ActorState,
    envelope: Envelope,
    message_id: bytes,
    read_slot: SlotReader | None,
    read_code: CodeReader,
    now: int,
    chain_id: int,
    coinbase: bytes = b"",
) -> Handled:
    """Handle ``envelope`` as ``actor``; update ``actor`` in place and return what it did.

    ``now``: the executing node's clock in seconds (live), or the receipt's recorded
    timestamp (replay, re-execution); block.timestamp is that, but never less than the
    actor's previous one.  ``chain_id``: the ledger's id (CHAINID).  block.number is the
    actor's logical (Lamport) time, as the system contract's now().

    ``read_slot`` reads the committed storage slots ``actor.storage`` does not
    hold yet; ``None`` says it holds them all (replay, which starts from
    nothing), and the VM then reads the dict directly.

    Fees (SPEC §7, docs/market.md): a message escrows ``gas × bid``.  The run
    pays its own gas (what it used less the gas it forwarded in the messages it
    sent) times the bid to ``coinbase`` (live: the executing worker's; replay and
    re-execution: the receipt's); the messages it sends carry their gas, and
    that much of the escrow, on with the same bid; what nobody used is refunded
    to the payer (tx.origin).  The receipt records fee, refund and coinbase; the
    store credits them in the receipt's commit.
    """
    account = actor.account
    # A scheduled message runs no earlier than it was due, so now() >= its due time.
    time = max(account.clock, envelope.time, envelope.not_before) + 1
    timestamp = now if now > account.timestamp else account.timestamp
    origin = envelope.origin or envelope.sender
    bid = envelope.bid
    host = ActorHost(message_id, time, origin, read_code, bid)
    kind = envelope.kind
    value = envelope.value if kind in (Kind.CALL, Kind.DEPLOY, Kind.SCHEDULED, Kind.BOUNCE) else 0
    code = actor.code
    run_code = b""
    data = envelope.payload
    if kind is Kind.DEPLOY:
        run_code = envelope.payload
        data = b""
    elif kind is Kind.REPLY:
        if code:
            run_code = code
            data = reply_payload_for_contract(envelope)
    elif kind is not Kind.BOUNCE and kind is not Kind.RAISE:  # a raise runs nothing (missive.market.raises)
        run_code = code

    result: ExecutionResult | None = None
    status, output, gas_used, error = "success", b"", 0, ""
    run_gas = envelope.gas
    if envelope.wants_reply and kind in (Kind.CALL, Kind.QUERY):
        run_gas -= min(REPLY_GAS_FLOOR, envelope.gas // 2)  # kept for the reply, out of the request's own gas
    writes: dict[int, int] = {}
    balance, nonce, new_code = account.balance + value, account.nonce, None
    outgoing: list[Envelope] = []
    logs: tuple[tuple[bytes, tuple[int, ...], bytes], ...] = ()

    if kind is Kind.DEPLOY and account.code_hash:
        status, error, gas_used = "failed", f"address 0x{actor.address.hex()} already has code", envelope.gas
    elif run_code and kind is not Kind.REPLY and data[:4] == ON_REPLY:
        # Only a reply message may run onReply: otherwise anyone could forge an answer.
        status, error, gas_used = "failed", "onReply can only be delivered by a reply message", 0
    elif run_code == REGISTRY_CODE:
        # a cluster's worker registry: an actor whose handler is Missive's own (no deploy can make its
        # 0xEF code; missive.market.registry_actor); what it returns is taken as a contract's run is, below
        result = registry_execute(caller=envelope.sender, origin=origin, value=value, data=data, gas=run_gas,
                                  storage=actor.storage if read_slot is None else _StorageView(actor.storage, read_slot),
                                  balance=balance, nonce=nonce, timestamp=timestamp, chain_id=chain_id, host=host,
                                  is_static=kind is Kind.QUERY)
    elif run_code:
        result = execute(
            run_code,
            address=actor.address,
            caller=envelope.sender,
            value=value,
            data=data,
            gas=run_gas,
            storage=actor.storage if read_slot is None else _StorageView(actor.storage, read_slot),
            balance=balance,
            nonce=nonce,
            block=BlockContext(logical_time=time, timestamp=timestamp, number=time, origin=origin, chain_id=chain_id),
            host=host,
            is_static=kind is Kind.QUERY,
            message_id=message_id,
        )
    if result is not None:
        status, output, gas_used, error = result.status.value, result.output, result.gas_used, result.error
        if kind is Kind.DEPLOY and result.status is Status.SUCCESS:
            if len(output) > MAX_CODE_SIZE:
                status, error = "failed", f"deployed code of {len(output)} bytes exceeds {MAX_CODE_SIZE} (EIP-170)"
            elif output[:1] == b"\xef":
                status, error = "failed", "deployed code starts with 0xEF (EIP-3541)"
        if status == "success":
            writes = result.storage_writes
            balance, nonce = result.balance, result.nonce
            if result.outbox:
                outgoing = [outgoing_envelope(m, message_id, time, origin, bid) for m in result.outbox]
            if result.logs:
                logs = tuple([(log.address, log.topics, log.data) for log in result.logs])
            if kind is Kind.DEPLOY:
                new_code = output
        else:
            gas_used = gas_used if result.status is Status.REVERT else run_gas

    succeeded = status == "success"
    if not succeeded:
        balance, nonce = account.balance, account.nonce
    forwarded = 0  # gas the run's own messages carry on (charged in its gas_used)
    if bid:
        for sent in outgoing:
            forwarded += sent.gas
    reply_gas = 0
    follow = len(outgoing)
    if not succeeded and value and kind is not Kind.BOUNCE:
        outgoing.append(
            Envelope(kind=Kind.BOUNCE, sender=actor.address, recipient=envelope.sender, value=value, gas=0,
                     nonce=follow, time=time, request_id=message_id, parent=message_id, origin=origin)
        )
        follow += 1
    if envelope.wants_reply and kind in (Kind.CALL, Kind.QUERY):
        reply_gas = envelope.gas - gas_used
        outgoing.append(
            Envelope(kind=Kind.REPLY, sender=actor.address, recipient=envelope.sender, payload=output,
                     gas=reply_gas, bid=bid, nonce=follow, time=time, request_id=message_id,
                     success=succeeded, parent=message_id, origin=origin)
        )
    fee, refund, paid_to = 0, 0, b""
    if bid:
        own = gas_used - forwarded if gas_used > forwarded else 0
        fee = own * bid
        refund = (envelope.gas - own - forwarded - reply_gas) * bid
        if fee:
            paid_to = coinbase

    code_hash = account.code_hash
    if new_code is not None:
        code_hash = keccak256(new_code) if new_code else b""
        actor.code = new_code
    # An external account's nonce is moved by the acceptance of its own messages, not by
    # handlers, at points that depend on batching: like its balance, it stays out of the root.
    root = next_root(account.state_root, message_id, writes, balance - account.balance,
                     nonce if code_hash else 0, code_hash, timestamp)
    if writes:
        actor.storage.update(writes)
    actor.account = Account(balance, nonce, code_hash, account.handled + 1, time, root, account.public_key, timestamp)
    receipt = Receipt(
        message_id=message_id,
        recipient=actor.address,
        position=account.handled,
        status=status,
        gas_used=gas_used,
        output=output,
        state_root=root,
        logs=logs,
        outgoing=tuple([e.id for e in outgoing]) if outgoing else (),
        code_reads=tuple(sorted(host.reads.items())) if host.reads else (),
        time=time,
        error=error,
        timestamp=timestamp,
        fee=fee,
        refund=refund,
        coinbase=paid_to,
    )
    return receipt, writes, new_code, outgoing, balance - account.balance
