"""The worker registry as an actor on the ledger (issue 23 on a cluster; docs/market.md "The
registry actor").

A node alone keeps its registry as signed ledger records (:mod:`missive.market.workers`).  A
cluster has no single ledger those records could go to: each actor's state lives with its
holders, and coin moves between actors only as messages.  So on a cluster the registry is an
actor of its own at the fixed address :data:`REGISTRY`, held and replicated like any actor: a
worker's pledge is coin it *sends* there, the stakes are that actor's balance, its entries are
the actor's storage, and every holder re-executes or applies its state diffs like any other
actor's.  Its handler is this module, not EVM code: its account's code is the marker
:data:`CODE`, which starts with 0xEF, so no deploy can ever produce it (EIP-3541), and
:func:`missive.actors.handler.run_handler` hands a run to :func:`execute` when it meets it.

Why native code rather than a contract: slashing re-checks wrong-diff evidence by re-running
the executor's handler (:func:`missive.replicas.slashing.check_evidence`), which no EVM
contract can do; and the rules stay those of :mod:`missive.market.workers` (the same minimum
stake, accuser share and refusal texts), one piece of code for both registries.

Operations are ``call`` messages whose payload is msgpack:

* ``["register", coinbase, min_bid]`` with the stake as the message's value (at least
  :data:`~missive.market.workers.MIN_STAKE`); ``coinbase`` b"" means the sender.  Only an
  external account, sending directly (its own message, not a contract's), can be a worker.
* ``["unbond"]``: the stake stops backing the worker; it can be withdrawn once the registry's
  clock (block.timestamp, the seconds its receipts record) has passed ``unbond_delay`` seconds,
  a setting written at the registry's genesis.
* ``["withdraw"]``: the unbonded stake is sent back to the worker, as a message.
* ``["accuse", evidence]``: the evidence is re-checked; a valid one forfeits the executor's
  worker's whole pledge: :data:`~missive.market.workers.ACCUSER_SHARE` percent is sent to the
  accuser, the rest is **burned**: it stays in the registry's balance, counted in its ``burned``
  slot, and nothing can ever move it out.  The worker is deregistered.

A refused operation reverts with one line saying why (the receipt's error), so its value
bounces back to the sender, as any failed call's does, and nothing else changes.

So the registry's balance is always the stakes + the unbonding stakes + the coin burned
(:func:`holdings`; the cluster's conservation checks, ``tools/faults.py``, count it as the
balance it is).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, cast

import attrs
import msgpack

from missive.errors import MissiveError
from missive.mailbox.envelope import EnvelopeError
from missive.market.defaults import DEFAULT_UNBOND_SECONDS
from missive.market.workers import MIN_STAKE, EvidenceCheck, Worker, judge
from missive.vm import ExecutionResult, Host, Log, MessageKind, OutgoingMessage, Status
from missive.vm.keccak import keccak256

#: the registry actor's address on a cluster
REGISTRY = bytes.fromhex("00000000000000000000000000000000000057a4")
#: its code: the marker the handler recognises (0xEF first: no deploy can produce it)
CODE = b"\xefmissive:worker-registry:1"
#: gas an operation costs (an accusation re-runs a handler: it costs more)
OP_GAS = 30_000
ACCUSE_GAS = 200_000
#: log topics (keccak256 of the event's name) the registry emits
TOPICS = {name: int.from_bytes(keccak256(name.encode()), "big")
          for name in ("Registered", "Unbonded", "Withdrawn", "Slashed")}

_FIELDS = ("stake", "coinbase", "min_bid", "unbonding", "release_at", "slashed", "listed")


def _slot(*parts: bytes) -> int:
    return int.from_bytes(keccak256(b"missive.registry:" + b":".join(parts)), "big")


def worker_slot(address: bytes, field: str) -> int:
    return _slot(b"worker", address, field.encode())


#: the registry's settings and totals
UNBOND_DELAY_SLOT = _slot(b"unbond-delay")
BURNED_SLOT = _slot(b"burned")
WORKERS_SLOT = _slot(b"workers")  # how many addresses are listed
SLASHES_SLOT = _slot(b"slashes")  # how many slashings


def listed_slot(index: int) -> int:
    return _slot(b"listed", index.to_bytes(8, "big"))


def evidence_slot(evidence_hash: bytes) -> int:
    return _slot(b"evidence", evidence_hash)


_SLASH_FIELDS = ("executor", "accuser", "reward", "burned", "evidence")


def slash_slot(index: int, field: str) -> int:
    return _slot(b"slash", index.to_bytes(8, "big"), field.encode())


def genesis_storage(unbond_seconds: int = DEFAULT_UNBOND_SECONDS) -> dict[int, int]:
    """The storage a cluster's registry starts with: its settings."""
    if not isinstance(unbond_seconds, int) or isinstance(unbond_seconds, bool) or not 0 <= unbond_seconds < 2**32:
        raise ValueError(f"the unbonding delay is a whole number of seconds, not {unbond_seconds!r}")
    return {UNBOND_DELAY_SLOT: unbond_seconds} if unbond_seconds else {}


# -- evidence: the one thing the registry needs from above it ----------------------------------

_checks: list[EvidenceCheck] = []


def attach_evidence_check(check: EvidenceCheck) -> None:
    """Give the registry its evidence checker (:mod:`missive.replicas.slashing` does, when it is
    imported: the registry's room may not import re-execution).  The same pure function in every
    process, so every holder re-runs an accusation alike."""
    if check not in _checks:
        _checks[:] = [check]


# -- reading the registry back from its storage -------------------------------------------------

Reader = Callable[[int], int]


def reader(slots: dict[int, int]) -> Reader:
    """Reads of the registry's storage as a client holds it (a slot absent is 0)."""
    return lambda slot: slots.get(slot, 0)


def read_worker(read: Reader, address: bytes) -> Worker | None:
    values = {field: read(worker_slot(address, field)) for field in _FIELDS}
    if not values["listed"]:
        return None
    return Worker(values["stake"], values["coinbase"].to_bytes(20, "big"), values["min_bid"],
                  values["unbonding"], values["release_at"], values["slashed"])


def read_workers(read: Reader) -> list[tuple[bytes, Worker]]:
    """Every worker ever registered, in the order they first registered."""
    out = []
    for index in range(read(WORKERS_SLOT)):
        address = read(listed_slot(index)).to_bytes(20, "big")
        worker = read_worker(read, address)
        if worker is not None:
            out.append((address, worker))
    return out


def read_slashes(read: Reader) -> list[dict[str, Any]]:
    """Every slashing: executor (worker address), accuser, reward, burned, keccak256 of the evidence."""
    out = []
    for index in range(read(SLASHES_SLOT)):
        values = {field: read(slash_slot(index, field)) for field in _SLASH_FIELDS}
        out.append({"executor": values["executor"].to_bytes(20, "big"), "accuser": values["accuser"].to_bytes(20, "big"),
                    "reward": values["reward"], "burned": values["burned"],
                    "evidence": values["evidence"].to_bytes(32, "big")})
    return out


def holdings(read: Reader) -> dict[str, int]:
    """The registry's balance split into what it holds: stakes, unbonding stakes, burned coin."""
    workers = read_workers(read)
    return {"stakes": sum(w.stake for _, w in workers), "unbonding": sum(w.unbonding for _, w in workers),
            "burned": read(BURNED_SLOT)}


def view(storage: dict[int, int], balance: int) -> dict[str, Any]:
    """The registry as ``missive market`` and ``missive worker status`` show it on a cluster: its
    workers, slashings, holdings, and its balance (which the holdings add up to)."""
    read = reader(storage)
    return {"workers": read_workers(read), "slashes": read_slashes(read), "holdings": holdings(read),
            "balance": balance, "unbond_seconds": read(UNBOND_DELAY_SLOT)}


# -- the handler ----------------------------------------------------------------------------------


class Storage(Protocol):
    def get(self, key: int, default: int, /) -> int: ...


class Refused(MissiveError):
    """An operation the registry refuses: the run reverts with this line."""


class _Run:
    """One operation: reads see its own writes; writes, messages and logs are kept until it ends."""

    def __init__(self, storage: Storage, host: Host, caller: bytes, balance: int) -> None:
        self.storage, self.host, self.caller, self.balance = storage, host, caller, balance
        self.writes: dict[int, int] = {}
        self.outbox: list[OutgoingMessage] = []
        self.logs: list[Log] = []

    def read(self, slot: int) -> int:
        if slot in self.writes:
            return self.writes[slot]
        return self.storage.get(slot, 0)

    def write(self, slot: int, value: int) -> None:
        self.writes[slot] = value

    def put_worker(self, address: bytes, worker: Worker) -> None:
        if not self.read(worker_slot(address, "listed")):
            count = self.read(WORKERS_SLOT)
            self.write(listed_slot(count), int.from_bytes(address, "big"))
            self.write(WORKERS_SLOT, count + 1)
            self.write(worker_slot(address, "listed"), count + 1)
        for field, value in (("stake", worker.stake), ("coinbase", int.from_bytes(worker.coinbase, "big")),
                             ("min_bid", worker.min_bid), ("unbonding", worker.unbonding),
                             ("release_at", worker.release_at), ("slashed", worker.slashed)):
            self.write(worker_slot(address, field), value)

    def pay(self, to: bytes, value: int) -> None:
        """Send ``value`` to ``to`` (a message: the coin leaves the registry's balance)."""
        message = OutgoingMessage(kind=MessageKind.CALL, sender=REGISTRY, recipient=to, value=value, payload=b"",
                                  gas=0, wants_reply=False, index=len(self.outbox))
        self.outbox.append(_stamped(message, self.host))
        self.balance -= value

    def log(self, event: str, *fields: Any) -> None:
        self.logs.append(Log(REGISTRY, (TOPICS[event],), cast(bytes, msgpack.packb(list(fields), use_bin_type=True))))


def _stamped(message: OutgoingMessage, host: Host) -> OutgoingMessage:
    """The message with the id the ledger will give it (as the VM stamps its outbox)."""
    return attrs.evolve(message, message_id=host.message_id(message, b""))


def execute(*, caller: bytes, origin: bytes, value: int, data: bytes, gas: int, storage: Storage, balance: int,
            nonce: int, timestamp: int, chain_id: int, host: Host, is_static: bool) -> ExecutionResult:
    """Run one registry operation (``balance`` already holds ``value``).  Deterministic: it reads
    only the message, the registry's storage, the receipt's timestamp and the chain id."""
    run = _Run(storage, host, caller, balance)
    try:
        op, args = _decode(data)
        cost = ACCUSE_GAS if op == "accuse" else OP_GAS
        if gas < cost:
            return _failed(Status.OUT_OF_GAS, gas, balance - value, nonce,
                           f"the registry's {op} costs {cost} gas; the message carries {gas}")
        if is_static:
            raise Refused("the registry changes state: send it a call, not a query")
        if op != "register" and value:
            raise Refused(f"a {op} carries no value (it carries {value})")
        _OPS[op](run, args, value, origin, timestamp, chain_id)
    except Refused as refused:
        return _failed(Status.REVERT, OP_GAS if gas >= OP_GAS else gas, balance - value, nonce, str(refused))
    return ExecutionResult(Status.SUCCESS, b"", cost, 0, run.writes, tuple(run.logs), tuple(run.outbox), run.balance,
                           nonce)


def _failed(status: Status, gas_used: int, balance: int, nonce: int, error: str) -> ExecutionResult:
    return ExecutionResult(status, error.encode(), gas_used, 0, {}, (), (), balance, nonce, error)


def _decode(data: bytes) -> tuple[str, list[Any]]:
    try:
        fields = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=1 << 20, max_str_len=64,
                                 max_array_len=8)
    except Exception:  # noqa: BLE001 - any undecodable payload is one refusal
        raise Refused("malformed registry operation: the payload is not msgpack") from None
    if not isinstance(fields, list) or not fields or fields[0] not in _OPS:
        raise Refused(f"no registry operation {fields[0] if isinstance(fields, list) and fields else fields!r} "
                      f"(one of {', '.join(_OPS)})")
    return fields[0], fields[1:]


def _uint(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**256:
        raise Refused(f"malformed registry operation: {what} is not a whole number")
    return value


def _register(run: _Run, args: list[Any], value: int, origin: bytes, timestamp: int, chain_id: int) -> None:
    shown = f"0x{run.caller.hex()}"
    if len(args) != 2 or not isinstance(args[0], bytes) or len(args[0]) not in (0, 20):
        raise Refused("malformed register: it is [\"register\", coinbase (20 bytes or empty), min bid]")
    if origin != run.caller:
        raise Refused(f"{shown} is not an external account sending its own message: only an account can be a worker")
    min_bid = _uint(args[1], "the minimum bid")
    current = read_worker(run.read, run.caller) or Worker()
    if current.stake:
        raise Refused(f"{shown} is registered already (stake {current.stake}); unbond it first")
    if value < MIN_STAKE:
        raise Refused(f"a stake of {value} is below the registry's minimum stake ({MIN_STAKE})")
    coinbase = args[0] or run.caller
    run.put_worker(run.caller, Worker(value, coinbase, min_bid, current.unbonding, current.release_at,
                                      current.slashed))
    run.log("Registered", run.caller, value, coinbase, min_bid)


def _unbond(run: _Run, args: list[Any], value: int, origin: bytes, timestamp: int, chain_id: int) -> None:
    shown = f"0x{run.caller.hex()}"
    current = read_worker(run.read, run.caller)
    if current is not None and current.unbonding:
        raise Refused(f"{shown} is unbonding already ({current.unbonding} until {current.release_at}, in seconds "
                      "of the registry's clock): a second unbond changes nothing")
    if current is None or not current.stake:
        raise Refused(f"{shown} is not a registered worker: nothing to unbond")
    release_at = timestamp + run.read(UNBOND_DELAY_SLOT)
    run.put_worker(run.caller, Worker(0, current.coinbase, current.min_bid, current.stake, release_at,
                                      current.slashed))
    run.log("Unbonded", run.caller, current.stake, release_at)


def _withdraw(run: _Run, args: list[Any], value: int, origin: bytes, timestamp: int, chain_id: int) -> None:
    shown = f"0x{run.caller.hex()}"
    current = read_worker(run.read, run.caller)
    if current is None or not current.unbonding:
        raise Refused(f"{shown} has no unbonded stake to withdraw")
    if timestamp < current.release_at:
        raise Refused(f"the stake of {shown} unbonds until {current.release_at} (now {timestamp}, seconds of the "
                      f"registry's clock): {current.release_at - timestamp} s to go")
    run.put_worker(run.caller, Worker(current.stake, current.coinbase, current.min_bid, 0, 0, current.slashed))
    run.pay(run.caller, current.unbonding)
    run.log("Withdrawn", run.caller, current.unbonding)


def _accuse(run: _Run, args: list[Any], value: int, origin: bytes, timestamp: int, chain_id: int) -> None:
    if len(args) != 1 or not isinstance(args[0], bytes) or not args[0]:
        raise Refused("malformed accusation: it is [\"accuse\", evidence bytes]")
    if origin != run.caller:  # its reward is sent as a plain transfer, which only an account takes
        raise Refused(f"0x{run.caller.hex()} is not an external account sending its own message: only an account "
                      "can accuse")
    evidence = args[0]
    evidence_hash = keccak256(evidence)
    if run.read(evidence_slot(evidence_hash)):
        raise Refused("duplicate evidence: it has slashed its executor already; it changes nothing")
    try:
        executor, after, reward, burned, finding = judge(evidence, chain_id, _checks[0] if _checks else None,
                                                         lambda address: read_worker(run.read, address))
    except EnvelopeError as refused:
        raise Refused(str(refused)) from None
    run.put_worker(executor, after)
    run.write(evidence_slot(evidence_hash), 1)
    run.write(BURNED_SLOT, run.read(BURNED_SLOT) + burned)
    index = run.read(SLASHES_SLOT)
    for field, number in (("executor", int.from_bytes(executor, "big")), ("accuser", int.from_bytes(run.caller, "big")),
                          ("reward", reward), ("burned", burned), ("evidence", int.from_bytes(evidence_hash, "big"))):
        run.write(slash_slot(index, field), number)
    run.write(SLASHES_SLOT, index + 1)
    if reward:
        run.pay(run.caller, reward)
    run.log("Slashed", executor, run.caller, reward, burned, evidence_hash, finding[:200])


_OPS: dict[str, Callable[[_Run, list[Any], int, bytes, int, int], None]] = {
    "register": _register, "unbond": _unbond, "withdraw": _withdraw, "accuse": _accuse}


def payload(op: str, *args: Any) -> bytes:
    """The payload of a registry operation (what ``missive worker ... --cluster`` sends)."""
    return cast(bytes, msgpack.packb([op, *args], use_bin_type=True))


__all__ = ["ACCUSE_GAS", "BURNED_SLOT", "CODE", "DEFAULT_UNBOND_SECONDS", "OP_GAS", "REGISTRY", "TOPICS",
           "attach_evidence_check", "execute", "genesis_storage", "holdings", "payload", "read_slashes", "read_worker",
           "read_workers", "reader", "view"]
