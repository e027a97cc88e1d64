"""Fault injection on a local cluster of real node processes, with the cluster's invariants
checked at the end of every run (issue 20).

Why real processes: the failures this is after (a node SIGKILLed between its commit and its
diffs leaving, a node frozen past its lease and thawed, two faults overlapping) only happen
with real LMDB files, real sockets and real timers; an in-process simulation would not have
them.  Why a seed: a failing run must be repeatable, so every choice the harness makes (the
fault kinds, which role each one hits, how long a node stays down or frozen, the gaps, the
workload's mix) comes from it.  The nodes themselves are not deterministic, so a seed gives
the same schedule, not the same interleaving.

A run:

1. ``missive cluster up`` with N nodes, K copies of each actor and a short failover timeout;
   a few funded external accounts (one per client thread), an ERC20 token (examples/Token.vy)
   and a relay contract (below) that forwards the value of each ``relay(target)`` call to the
   target with a CALL, so native value crosses nodes through a contract.
2. Client threads (like ``Load`` in tests/test_cluster_failover.py) submit ERC20 transfers,
   native transfers between external accounts and relay calls carrying value, through any
   node, moving to another node when one fails; every acknowledged envelope (the client got
   an id back, not an error) is recorded with its sender and nonce.
3. The fault schedule: each fault targets a node by its role for the token, the relay or a
   client's own account (the actor's executor, found by asking the nodes, or its replica, the
   holder next in line): ``kill`` (SIGKILL, then
   ``launcher.start``), ``freeze`` (SIGSTOP for longer than the failover timeout, then SIGCONT)
   or ``double`` (freeze the replica past the timeout, SIGKILL the executor while it is
   frozen, thaw the replica, restart the executor); ``mixed`` draws one of the three each time.
   After each fault the harness waits (bounded) for every node to serve again.
4. The end: load stopped, the cluster left to settle (bounded), a fresh submit must be
   acknowledged and handled, then ``cluster down`` and every invariant checked on the stores
   themselves (read-only), each node's ledger replayed.

Invariants (keys of ``report["violations"]``; the number is the issue's):

* ``lost`` (1): every acknowledged submission has a receipt on its recipient's executor, and
  every message a standing receipt sent (a relay's forward) is handled there or still waiting;
* ``duplicate`` (2): no message id in two mailbox positions of an actor, on any node;
* ``nonce_reuse`` (2): no two different handled (or acknowledged) external messages with
  the same (sender, nonce);
* ``value`` (3): the sum of every account's balance, each counted once from its executor's
  copy, plus the value of messages not yet handled (each counted once), equals what was
  minted; ``token`` (3): the token's balances sum to its supply;
* ``copies`` (4): every holder's copy of every account identical (account, storage,
  mailbox), and held by exactly its K holders;
* ``queues`` (5): nothing left in standby, pending, outbound or replicate once settled;
* ``replay`` (6): every node's ledger replays;
* ``gone`` (8): no message left a node with a record that a rollback later gave up (its node logs
  it: "had already left"); such a message stays credited where it went while the sender's
  standing copy handles the call again;
* ``serving`` (7): after the last fault a fresh submit is acknowledged and handled within a
  bound;
* ``recovery``: after each fault every node serves again within a bound (a wedged cluster
  shows here first).

Run: ``python tools/faults.py --nodes 3 --replicas 3 --faults 12 --kind kill --seed 1 --out
report.json``; prints the report and writes JSON; exit status 1 if any invariant is violated,
2 if the harness itself failed.  ``tests/test_cluster_faults.py`` runs short scenarios of it.
See docs/faults.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eth_abi import encode

from missive.cluster import launcher
from missive.cluster.client import ClusterClient
from missive.cluster.placement import executor as placement_executor
from missive.cluster.placement import ranking, replicas
from missive.keys import Key, Keystore
from missive.mailbox.envelope import Envelope, Kind
from missive.mailbox.records import Account
from missive.market.raises import raise_payload
from missive.replicas.records import open_tables
from missive.toolchain.compiler import compile_source
from missive.vm.creation import create_address
from missive.vm.keccak import keccak256

REPO = Path(__file__).resolve().parents[1]
TOKEN_SOURCE = REPO / "examples" / "Token.vy"

#: A contract that forwards value: ``relay(target)`` sends ``msg.value`` on to ``target`` with a
#: CALL (a message, under Missive's semantics), so a native transfer through it is debited on the
#: client's node, sits in the relay's mailbox on another node, and is credited on a third.  The
#: counter gives its state diffs something to carry.
RELAY_SOURCE = """# pragma version ^0.4.0
forwarded: public(uint256)
calls: public(uint256)


@external
@payable
def relay(target: address):
    self.forwarded += msg.value
    self.calls += 1
    raw_call(target, b"", value=msg.value, gas=50_000)
"""

TOKEN_SUPPLY = 10**9
CLIENT_BALANCE = 10**18  # native value each client account is created with
CLIENT_TOKENS = 10**5  # token units alice gives each client before the load starts
#: with --bids, the share of a client's messages whose bid it then raises (by a raise message)
RAISES = 0.15
BIDS = (0, 1, 1, 3)  # what a client offers per unit of gas with --bids (the gas limit is the client's 1,000,000)
KINDS = ("kill", "freeze", "double", "mixed")
#: Every RPC a client thread makes is capped at this many seconds, so that a thread talking to a
#: frozen node moves on to another one instead of waiting for the default 10 s.
CLIENT_CALL_CAP = 5.0
EXAMPLES = 8  # examples kept per violated invariant

INVARIANTS = {
    "lost": "1. every acknowledged submission, and every message a standing receipt sent, is handled or waiting",
    "duplicate": "2. no message id in two mailbox positions of an actor",
    "nonce_reuse": "2. no two different handled (or acknowledged) external messages with one (sender, nonce)",
    "value": "3. balances (each account once, from its executor) plus value in flight = total minted",
    "token": "3. the token's balances sum to its supply",
    "copies": "4. every holder's copy identical once settled (account, storage, mailbox), on exactly K holders",
    "queues": "5. nothing left in standby, pending, outbound or replicate once settled",
    "replay": "6. every node's ledger replays",
    "serving": "7. after the last fault a fresh submit is acknowledged and handled within a bound",
    "recovery": "after each fault every node serves again within a bound",
    "gone": "8. no message left with a record that a rollback then gave up (it would be credited twice)",
}


def sel(signature: str) -> bytes:
    return keccak256(signature.encode())[:4]


def hx(data: bytes | None, n: int | None = None) -> str | None:
    """Bytes as 0x-hex for the report (the first ``n`` bytes if given)."""
    if data is None:
        return None
    return "0x" + bytes(data)[:n].hex() if n else "0x" + bytes(data).hex()


# -- the scenario and its schedule ----------------------------------------------------------


@dataclass
class Scenario:
    """Everything a run depends on; with the seed it fixes the fault schedule."""

    nodes: int = 3
    replicas: int = 2
    faults: int = 3
    kind: str = "kill"
    seed: int = 1
    failover_timeout: float = 1.0
    clients: int = 3
    #: seconds each client sleeps between submits (keeps a 2-core machine from saturating)
    pace: float = 0.02
    #: seconds of load before the first fault and after the last
    warmup: float = 1.5
    #: bounds (seconds): a node to serve again after a fault, the cluster to settle, a fresh
    #: submit to be handled after the last fault
    recover_timeout: float = 30.0
    settle_timeout: float = 45.0
    serve_timeout: float = 20.0
    #: clients offer mixed bids (:data:`BIDS`, per unit of gas), so the executors' rounds are
    #: taken highest bid first through the bid-order index; False: every bid 0 (served in turn)
    bids: bool = False

    def check(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"--kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if not 1 <= self.replicas <= self.nodes:
            raise ValueError(f"--replicas must be from 1 to --nodes ({self.nodes})")
        if self.kind in ("double", "mixed") and self.replicas < 2 and self.faults:
            raise ValueError("a double fault needs a replica: --replicas 2 or more")
        if self.clients < 2:
            raise ValueError("--clients must be at least 2 (they pay each other)")


@dataclass
class Fault:
    """One planned fault.  Roles, not nodes: the node is found when the fault starts, since
    the executor of an actor moves with every failover."""

    index: int
    kind: str  # kill | freeze | double
    #: whose executor or replica: ``token``, ``relay`` or ``clientN`` (client N's own account: its
    #: executor admits that client's submits and holds its nonce and balance)
    actor: str
    role: str  # executor | replica (for double: the executor is killed, its successor frozen)
    #: seconds the node stays down (kill) or frozen (freeze; for double: frozen before the kill)
    hold: float
    #: double only: seconds between the kill and the thaw of the replica
    overlap: float
    #: seconds of load after the node serves again, before the next fault
    gap: float


def schedule(scenario: Scenario) -> list[Fault]:
    """The faults of a run, drawn from its seed alone (same seed, same schedule)."""
    rng = random.Random(f"faults/{scenario.seed}")
    timeout = scenario.failover_timeout
    plan = []
    for index in range(scenario.faults):
        kind = rng.choice(("kill", "freeze", "double")) if scenario.kind == "mixed" else scenario.kind
        if kind == "double" and scenario.replicas < 2:
            kind = "kill"
        actor = rng.choice(("token", "relay", f"client{rng.randrange(scenario.clients)}"))
        role = "executor" if kind == "double" or scenario.replicas < 2 else rng.choice(("executor", "replica"))
        if kind == "kill":
            hold = rng.uniform(0.2, 2.5 * timeout)
        else:  # frozen for longer than the failover timeout: its peers fail it over
            hold = rng.uniform(1.5 * timeout, 3.0 * timeout)
        overlap = rng.uniform(0.2, 1.0 * timeout) if kind == "double" else 0.0
        plan.append(Fault(index, kind, actor, role, round(hold, 3), round(overlap, 3),
                          round(rng.uniform(0.5, 1.5) * timeout + 0.5, 3)))
    return plan


# -- violations -----------------------------------------------------------------------------


class Violations:
    """Violations per invariant: a count and the first few examples, as JSON-ready dicts."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[Any]] = defaultdict(list)
        #: per invariant, counts of the ways it was violated (e.g. for ``lost``: no receipt
        #: anywhere, or receipts on other holders only), so that a report tells them apart
        self.details: dict[str, Counter[str]] = defaultdict(Counter)

    def add(self, invariant: str, example: Any, count: int = 1, how: str | None = None) -> None:
        assert invariant in INVARIANTS, invariant
        self.counts[invariant] += count
        if how is not None:
            self.details[invariant][how] += count
        if len(self.examples[invariant]) < EXAMPLES:
            self.examples[invariant].append(example)

    def report(self) -> dict[str, Any]:
        return {name: {"invariant": INVARIANTS[name], "count": self.counts[name],
                       **({"how": dict(self.details[name])} if self.details[name] else {}),
                       "examples": self.examples[name]}
                for name in INVARIANTS if self.counts[name]}


# -- the workload ---------------------------------------------------------------------------


class CappedClient(ClusterClient):
    """A :class:`ClusterClient` whose every call gives up after ``CLIENT_CALL_CAP`` seconds."""

    def call(self, method: str, params: Any = None, *, timeout: float = 10.0) -> Any:
        return super().call(method, params, timeout=min(timeout, CLIENT_CALL_CAP))


@dataclass
class Acked:
    """An envelope the cluster acknowledged: what invariants 1 and 2 are checked against."""

    id: bytes
    sender: bytes
    nonce: int
    recipient: bytes
    what: str  # token | native | relay | fresh-*
    value: int
    at: float  # seconds since the run started

    def show(self) -> dict[str, Any]:
        return {"id": hx(self.id), "sender": hx(self.sender), "nonce": self.nonce, "recipient": hx(self.recipient),
                "what": self.what, "value": self.value, "acked_at": round(self.at, 3)}


class ClientThread(threading.Thread):
    """One external account submitting a seeded mix of token transfers, native transfers and
    relay calls, one after another, through one node at a time (the next one after an error).
    Only acknowledged submissions are recorded as such: a refused or timed-out one may or may
    not have been admitted, and nothing is promised about it."""

    def __init__(self, run: Run, index: int, key: Key, peers: list[Key]) -> None:
        super().__init__(name=f"client-{index}", daemon=True)
        self.run_, self.index, self.key, self.peers = run, index, key, peers
        self.rng = random.Random(f"client/{run.scenario.seed}/{index}")
        #: a stream of its own: the workload's mix and targets are the same with bids or without
        self.bid_rng = random.Random(f"bids/{run.scenario.seed}/{index}")
        self.node = index % run.scenario.nodes
        self.acked: list[Acked] = []
        self.refused = 0
        self.errors: Counter[str] = Counter()
        self.stop = threading.Event()

    def run(self) -> None:
        run = self.run_
        assert run.token is not None and run.relay is not None
        while not self.stop.is_set():
            target = self.rng.choice(self.peers)
            roll = self.rng.random()
            if roll < 0.5:
                what, to, value = "token", run.token, 0
                payload = sel("transfer(address,uint256)") + encode(["address", "uint256"], [target.address, 1])
            elif roll < 0.75:
                what, to, value, payload = "native", target.address, self.rng.randint(1, 1000), b""
            else:
                what, to, value = "relay", run.relay, self.rng.randint(1, 1000)
                payload = sel("relay(address)") + encode(["address"], [target.address])
            bid = self.bid_rng.choice(BIDS) if run.scenario.bids else 0
            try:
                envelope = run.client(self.node).submit(self.key, Kind.CALL, to, payload, value=value, bid=bid)
            except Exception as exc:  # noqa: BLE001 - an unacknowledged submit may fail in any way
                self.refused += 1
                self.errors[_short_error(exc)] += 1
                self.node = (self.node + 1) % run.scenario.nodes
                self.stop.wait(0.05)
                continue
            self.acked.append(Acked(bytes(envelope.id), bytes(envelope.sender), envelope.nonce,
                                    bytes(envelope.recipient), what, value, run.now()))
            if run.scenario.bids and self.bid_rng.random() < RAISES:
                self._raise(envelope)
            self.stop.wait(run.scenario.pace)

    def _raise(self, envelope: Envelope) -> None:
        """Raise the bid of the message just sent by 2 (a raise message, docs/market.md): applied if it
        meets the message before it runs, refunded whole if not; either way, one more message."""
        run = self.run_
        new_bid = envelope.bid + 2
        try:
            raised = run.client(self.node).submit(self.key, Kind.RAISE, envelope.recipient,
                                                  raise_payload(envelope.id, new_bid), gas=envelope.gas, bid=2)
        except Exception as exc:  # noqa: BLE001 - as for any submit
            self.refused += 1
            self.errors[_short_error(exc)] += 1
            return
        self.acked.append(Acked(bytes(raised.id), bytes(raised.sender), raised.nonce, bytes(raised.recipient), "raise",
                                0, run.now()))


def _short_error(exc: BaseException) -> str:
    """An error's kind and text with ports, ids and numbers masked, so that alike errors from
    different nodes count together."""
    return f"{type(exc).__name__}: {_masked(str(exc).splitlines()[0] if str(exc) else '')}"[:220]


# -- the run --------------------------------------------------------------------------------


class Run:
    """One scenario on one fresh cluster under ``root``: setup, load, faults, checks.

    Every wait is bounded; :meth:`cleanup` thaws and kills whatever is left whatever happened.
    """

    def __init__(self, scenario: Scenario, root: Path, say: Callable[[str], None] = print) -> None:
        scenario.check()
        self.scenario, self.root, self.say = scenario, root, say
        self.started = time.monotonic()
        self.violations = Violations()
        self.events: list[dict[str, Any]] = []
        self.timings: dict[str, float] = {}
        self.members: list[bytes] = []
        self.names: dict[bytes, str] = {}
        self.ports: dict[str, int] = {}
        self.pids: set[int] = set()  # every node process this run started (for the final sweep)
        self.frozen: set[int] = set()
        self.keys: Keystore | None = None
        self.alice: Key | None = None
        self.accounts: list[Key] = []
        self.minted = 0
        self.token: bytes | None = None
        self.relay: bytes | None = None
        self.balance_slot: Callable[[bytes], int] | None = None
        self.threads: list[ClientThread] = []
        self.fresh: list[Acked] = []
        #: status counters per (node, pid): a restarted process starts its counters again
        self.counters: dict[tuple[str, int], dict[str, int]] = {}
        self.final_status: list[dict[str, Any]] | None = None
        #: a node did not serve again after a fault: the schedule stopped, and the end waits less
        self.wedged = False
        #: whether the cluster settled at the end (if not, invariants 1, 3 and 4 were read off an
        #: unsettled cluster: their violations may be consequences of the one under ``queues``)
        self.settled = False
        self.store_summary: dict[str, Any] | None = None

    def now(self) -> float:
        return time.monotonic() - self.started

    def event(self, name: str, /, **details: Any) -> None:
        entry = {"t": round(self.now(), 3), "event": name, **details}
        self.events.append(entry)
        self.say(f"[{entry['t']:7.2f}] {name} " + " ".join(f"{k}={v}" for k, v in details.items()))

    def client(self, index: int) -> ClusterClient:
        records = launcher.read_cluster(self.root)["nodes"]
        return CappedClient("127.0.0.1", records[index % len(records)]["port"])

    def node_client(self, name: str, cap: bool = True) -> ClusterClient:
        return (CappedClient if cap else ClusterClient)("127.0.0.1", self.ports[name])

    def admin_client(self, index: int = 0) -> ClusterClient:
        """A client of node ``index`` connecting as the cluster's operator, when the cluster has
        one (``create_account`` is the operator's): other clients use throwaway keys, as anyone
        on the network would."""
        port = launcher.read_cluster(self.root)["nodes"][index]["port"]
        try:
            from missive.cluster.client import load_operator
        except ImportError:  # a Missive from before operator keys: anyone may fund accounts
            return ClusterClient("127.0.0.1", port)
        operator = load_operator(self.root)
        return ClusterClient("127.0.0.1", port, operator) if operator is not None else ClusterClient("127.0.0.1", port)

    def records(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in launcher.read_cluster(self.root)["nodes"]}

    # -- setup --

    def setup(self) -> None:
        """A fresh cluster, accounts, the token and the relay, tokens for every client."""
        s = self.scenario
        states = launcher.up(self.root, s.nodes, replicas=s.replicas, failover_timeout=s.failover_timeout, timeout=60,
                             encrypt_keys=False)  # a test cluster: its keys are throw-away
        self.members = sorted(st["id"] for st in states)
        self.names = {st["id"]: st["name"] for st in states}
        self.ports = {st["name"]: st["port"] for st in states}
        self.pids.update(r["pid"] for r in self.records().values())
        self.keys = Keystore(self.root)  # made unencrypted by launcher.up
        self.alice = self.keys.find("default")
        assert self.alice is not None
        self.minted = launcher.minted(len(states))  # the default account and the workers' stakes
        client = self.client(0)
        admin = self.admin_client(0)
        for i in range(s.clients):
            key = self.keys.new(f"client{i}")
            admin.create_account(key, CLIENT_BALANCE)
            self.minted += CLIENT_BALANCE
            self.accounts.append(key)
        alice_node = self.executor_by_placement(self.alice.address)
        token_code = compile_source(TOKEN_SOURCE)
        self.token = self.deploy_away(token_code.bytecode + encode(["string", "string", "uint256"], ["F", "F", TOKEN_SUPPLY]),
                                      {alice_node})
        relay_code = compile_source(RELAY_SOURCE)
        self.relay = self.deploy_away(relay_code.bytecode, {alice_node, self.executor_by_placement(self.token)})
        self.balance_slot = self.find_balance_slot()
        sent = [client.submit(self.alice, Kind.CALL, self.token, sel("transfer(address,uint256)")
                              + encode(["address", "uint256"], [key.address, CLIENT_TOKENS])) for key in self.accounts]
        for envelope in sent:
            receipt, _ = client.receipt(envelope, timeout=30)
            assert receipt.success, receipt.error
        self.event("setup", token=hx(self.token), token_executor=self.executor_by_placement(self.token),
                   relay=hx(self.relay), relay_executor=self.executor_by_placement(self.relay),
                   alice_executor=alice_node)

    def executor_by_placement(self, address: bytes) -> str:
        return self.names[placement_executor(address, self.members)]

    def deploy_away(self, code: bytes, avoid: set[str]) -> bytes:
        """Deploy from alice so that the contract's first executor is not in ``avoid`` if that is
        possible (spending nonces until it is): messages to it then cross nodes."""
        assert self.alice is not None
        client = self.client(0)
        avoid = avoid if len(avoid) < self.scenario.nodes else set()
        for _ in range(40):
            nonce = client.account(self.alice.address).nonce
            if self.executor_by_placement(create_address(self.alice.address, nonce)) not in avoid:
                envelope = client.submit(self.alice, Kind.DEPLOY, None, code, gas=5_000_000)
                receipt, _ = client.receipt(envelope, timeout=30)
                assert receipt.success, receipt.error
                return bytes(envelope.recipient)
            client.submit(self.alice, Kind.CALL, self.alice.address)  # spend a nonce
        raise RuntimeError("no deploy address left the avoided nodes")

    def find_balance_slot(self) -> Callable[[bytes], int]:
        """Where the token keeps ``balanceOf[a]``: the storage key holding alice's whole supply,
        among Vyper's and Solidity's ways of placing a HashMap entry.  Found once, then the
        token's balances can be read from any copy's storage without sending a query."""
        assert self.alice is not None and self.token is not None
        state = self.node_client(self.executor_by_placement(self.token)).call("local_state", self.token)
        storage = {int.from_bytes(k, "big"): int.from_bytes(v, "big") for k, v in state["storage"]}
        for slot in range(16):
            for order in (0, 1):
                def at(address: bytes, slot: int = slot, order: int = order) -> int:
                    a, s = address.rjust(32, b"\x00"), slot.to_bytes(32, "big")
                    return int.from_bytes(keccak256(s + a if order == 0 else a + s), "big")
                if storage.get(at(self.alice.address)) == TOKEN_SUPPLY:
                    return at
        raise RuntimeError("cannot find the token's balanceOf slot in its storage")

    # -- roles and waiting --

    def alive_names(self) -> list[str]:
        """Nodes whose process runs and is not frozen (the ones worth asking)."""
        records = self.records()
        return [name for name, r in records.items() if launcher.alive(r["pid"]) and r["pid"] not in self.frozen]

    def executors_of(self, address: bytes) -> list[str]:
        """The nodes (of those running) that say they execute ``address`` now."""
        return self.executors([address])[address]

    def executors(self, addresses: list[bytes]) -> dict[bytes, list[str]]:
        """For each address, the nodes (of those running) that say they execute it now.  A node
        that does not answer is not asked again (a wedged one would cost a timeout a question)."""
        found: dict[bytes, list[str]] = {address: [] for address in addresses}
        for name in self.alive_names():
            for address in addresses:
                try:
                    state = self.node_client(name).call("local_state", address, timeout=3.0)
                except Exception:  # noqa: BLE001 - not answering: says nothing
                    break
                if state is not None and state.get("executor"):
                    found[address].append(name)
        return found

    def role(self, address: bytes, role: str) -> tuple[str, str]:
        """(executor, the node with ``role``): the executor as the nodes say (placement if they
        do not agree on one), and for ``replica`` the holder next in line after it, the one
        that would take over."""
        said = self.executors_of(address)
        holders = [self.names[n] for n in replicas(address, self.members, self.scenario.replicas)]
        ex = said[0] if len(said) == 1 else holders[0]
        if role == "executor":
            return ex, ex
        order = [self.names[n] for n in ranking(address, self.members)]
        after = [n for n in order[order.index(ex) + 1:] + order[:order.index(ex)] if n in holders]
        return ex, after[0]

    def all_serving(self, timeout: float) -> tuple[bool, list[dict[str, Any]]]:
        """Wait until every node answers, serves and is connected to every peer (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                states = launcher.status(self.root)
            except Exception as exc:  # noqa: BLE001 - the cluster file is being rewritten: ask again
                states = [{"up": False, "error": str(exc)}]
            if all(st.get("up") and st.get("serving") and all(st.get("peers", {}).values()) for st in states):
                self.note_counters(states)
                return True, states
            if time.monotonic() > deadline:
                self.note_counters(states)
                return False, states
            time.sleep(0.2)

    def note_counters(self, states: list[dict[str, Any]]) -> None:
        for st in states:
            if st.get("up"):
                self.counters[(st["name"], st["pid"])] = {k: st.get(k, 0) for k in COUNTERS}

    # -- faults --

    def start_node(self, name: str) -> bool:
        try:
            state = launcher.start(self.root, name, timeout=self.scenario.recover_timeout)
        except Exception as exc:  # noqa: BLE001 - recorded as a violation; the run goes on
            self.violations.add("recovery", {"fault": "restart", "node": name, "error": str(exc)[:300]})
            self.event("restart-failed", node=name, error=str(exc)[:200])
            return False
        self.pids.add(state["pid"])
        return True

    def signal_node(self, name: str, sig: signal.Signals) -> int:
        """Send ``sig`` to node ``name``'s process (only if that PID is still this run's node)."""
        pid = int(self.records()[name]["pid"])
        if not _is_node_of(pid, self.root):
            raise RuntimeError(f"pid {pid} is not node {name} of this run any more")
        self.pids.add(pid)
        os.kill(pid, sig)
        if sig == signal.SIGSTOP:
            self.frozen.add(pid)
        elif sig == signal.SIGCONT:
            self.frozen.discard(pid)
        return pid

    def inject(self, fault: Fault) -> bool:
        """Carry out one fault, then wait for every node to serve again; False if one did not
        (recorded under ``recovery``: the schedule stops there, since the cluster is wedged)."""
        address = self.address_of(fault.actor)
        acked = self.acked_count()
        if fault.kind == "kill":
            ex, target = self.role(address, fault.role)
            pid = self.signal_node(target, signal.SIGKILL)
            self.event("kill", fault=fault.index, node=target, role=f"{fault.role} of {fault.actor}", pid=pid,
                       hold=fault.hold, acked=acked)
            time.sleep(fault.hold)
            restarted = self.start_node(target)
            self.event("restarted" if restarted else "not-restarted", node=target, acked=self.acked_count())
            if not restarted:
                return False
        elif fault.kind == "freeze":
            ex, target = self.role(address, fault.role)
            pid = self.signal_node(target, signal.SIGSTOP)
            self.event("freeze", fault=fault.index, node=target, role=f"{fault.role} of {fault.actor}", pid=pid,
                       hold=fault.hold, acked=acked)
            try:
                time.sleep(fault.hold)
            finally:
                self.signal_node(target, signal.SIGCONT)
            self.event("thawed", node=target, acked=self.acked_count())
        else:  # double: freeze the successor past the timeout, kill the executor while it is frozen
            ex, successor = self.role(address, "replica")
            frozen = self.signal_node(successor, signal.SIGSTOP)
            self.event("double:freeze", fault=fault.index, node=successor, role=f"replica of {fault.actor}",
                       pid=frozen, hold=fault.hold, acked=acked)
            try:
                time.sleep(fault.hold)
                killed = self.signal_node(ex, signal.SIGKILL)
                self.event("double:kill", fault=fault.index, node=ex, role=f"executor of {fault.actor}", pid=killed,
                           overlap=fault.overlap)
                time.sleep(fault.overlap)
            finally:
                self.signal_node(successor, signal.SIGCONT)
            self.event("double:thawed", node=successor, acked=self.acked_count())
            time.sleep(min(fault.overlap, self.scenario.failover_timeout))
            restarted = self.start_node(ex)
            self.event("double:restarted" if restarted else "double:not-restarted", node=ex, acked=self.acked_count())
            if not restarted:
                return False
        ok, states = self.all_serving(self.scenario.recover_timeout)
        if not ok:
            self.violations.add("recovery", {"fault": asdict(fault), "after_s": self.scenario.recover_timeout,
                                             "nodes": [_brief_status(st) for st in states]})
            self.event("not-serving", fault=fault.index, nodes=[_brief_status(st) for st in states])
            return False
        self.event("serving", fault=fault.index, acked=self.acked_count())
        time.sleep(fault.gap)
        return True

    def address_of(self, actor: str) -> bytes:
        """The address a fault's ``actor`` names: the token, the relay, or client N's account."""
        if actor == "token" and self.token is not None:
            return self.token
        if actor == "relay" and self.relay is not None:
            return self.relay
        return self.accounts[int(actor.removeprefix("client"))].address

    def acked_count(self) -> int:
        return sum(len(t.acked) for t in self.threads)

    # -- the whole run --

    def execute(self) -> dict[str, Any]:
        """Set up, load, inject the schedule, check; the report (the cluster is down afterwards)."""
        s = self.scenario
        plan = schedule(s)
        self.setup()
        self.timings["setup"] = self.now()
        for i, key in enumerate(self.accounts):
            thread = ClientThread(self, i, key, [k for k in self.accounts if k is not key])
            self.threads.append(thread)
            thread.start()
        faults_started = self.now()
        try:
            time.sleep(s.warmup)
            for fault in plan:
                if not self.inject(fault):
                    self.wedged = True
                    self.event("schedule-stopped", at_fault=fault.index, why="a node did not serve again")
                    break
            else:
                time.sleep(s.warmup)
        finally:
            for thread in self.threads:
                thread.stop.set()
            joined = time.monotonic() + CLIENT_CALL_CAP * 3  # a submit in flight: two capped calls at most
            for thread in self.threads:
                thread.join(max(0.0, joined - time.monotonic()))
        self.event("load-stopped", acked=self.acked_count(), refused=sum(t.refused for t in self.threads))
        self.timings["load_and_faults"] = self.now() - faults_started
        checks_started = self.now()
        self.finish()
        self.timings["checks"] = self.now() - checks_started
        return self.report(plan)

    def finish(self) -> None:
        """The end of a run: every node back, settled, serving; then down, and the stores checked."""
        s = self.scenario
        for name, record in self.records().items():  # nothing is left frozen or down by the schedule, normally
            if record["pid"] in self.frozen:
                self.signal_node(name, signal.SIGCONT)
            if not launcher.alive(record["pid"]):
                self.start_node(name)
        ok, states = self.all_serving(min(5.0, s.recover_timeout) if self.wedged else s.recover_timeout)
        if not ok and not self.wedged:
            self.violations.add("recovery", {"fault": "end of the schedule", "after_s": s.recover_timeout,
                                             "nodes": [_brief_status(st) for st in states]})
        started = time.monotonic()
        states = self.settle(s.settle_timeout)
        self.timings["settle"] = time.monotonic() - started
        self.check_serving()
        if self.settled:  # settled once: the fresh messages settle too
            self.settle(min(15.0, s.settle_timeout), record=False)
        executors = self.executors(self.tracked())
        with suppress(Exception):
            states = launcher.status(self.root)
            self.note_counters(states)
        self.final_status = [_brief_status(st) for st in states]
        self.keys_close()
        launcher.down(self.root, timeout=5.0)
        self.sweep()
        self.event("down")
        started = time.monotonic()
        check_stores(self, executors)
        self.timings["store_checks"] = time.monotonic() - started
        # 8. a message leaves only with a record that stands: one that left with a record later given
        # up stays credited where it went while the record's sender runs the call again (issue 20,
        # seed 43: value created); every node logs such messages, so its log is the witness
        for name, seen in scan_logs(self.root).items():
            if seen.get("gone_after_rollback"):
                self.violations.add("gone", {"node": name, "log_lines": seen["gone_after_rollback"]})

    def tracked(self) -> list[bytes]:
        assert self.alice is not None and self.token is not None and self.relay is not None
        return [self.alice.address, self.token, self.relay, *(k.address for k in self.accounts)]

    def settle(self, timeout: float, record: bool = True) -> list[dict[str, Any]]:
        """Invariant 5: wait (bounded) until no node has messages or diffs left to handle or send
        (``settled`` in tests/test_cluster_replicas.py); what is left at the bound is a violation."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                states = launcher.status(self.root)
            except Exception as exc:  # noqa: BLE001
                states = [{"up": False, "error": str(exc)}]
            if all(st.get("up") and not st.get("backlog") and not st.get("standby") and not st.get("outbound")
                   and not st.get("replicating") for st in states):
                self.event("settled")
                self.settled = self.settled or record
                return states
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if record:
            for st in states:
                left = {q: st.get(q) for q in QUEUES if st.get(q)}
                if left or not st.get("up"):
                    self.violations.add("queues", {"node": st.get("name"), "after_s": timeout,
                                                   **({"up": False, "error": st.get("error")} if not st.get("up") else left)},
                                        count=sum(v for v in left.values() if isinstance(v, int)) or 1)
            self.event("not-settled", nodes=[_brief_status(st) for st in states])
        return states

    def check_serving(self) -> None:
        """Invariant 7: a fresh token transfer and a fresh relay payment from alice, each
        acknowledged and then handled, both within ``serve_timeout``.  A node that refuses or
        does not answer is not the end: the next node is tried until the bound, since a client
        would do the same.  What is acknowledged is recorded (invariant 1 covers it too)."""
        assert self.alice is not None and self.token is not None and self.relay is not None
        target = self.accounts[0].address
        deadline = time.monotonic() + self.scenario.serve_timeout  # for both: a wedged cluster costs it once
        for what, to, value, payload in (
                ("fresh-token", self.token, 0, sel("transfer(address,uint256)") + encode(["address", "uint256"], [target, 1])),
                ("fresh-relay", self.relay, 7, sel("relay(address)") + encode(["address"], [target]))):
            started = time.monotonic()
            errors: list[str] = []
            node = 0
            envelope = None
            while envelope is None and time.monotonic() < deadline:
                try:
                    envelope = self.client(node).submit(self.alice, Kind.CALL, to, payload, value=value)
                except Exception as exc:  # noqa: BLE001 - the bound decides, not one refusal
                    errors.append(_short_error(exc))
                    node += 1
                    time.sleep(0.2)
            handled = False
            if envelope is not None:
                self.fresh.append(Acked(bytes(envelope.id), bytes(envelope.sender), envelope.nonce,
                                        bytes(envelope.recipient), what, value, self.now()))
                while not handled and time.monotonic() < deadline:
                    left = max(0.1, deadline - time.monotonic())
                    try:
                        ClusterClient("127.0.0.1", self.ports[self.names[self.members[node % len(self.members)]]]) \
                            .receipt(envelope, timeout=left)
                        handled = True
                    except Exception as exc:  # noqa: BLE001
                        errors.append(_short_error(exc))
                        node += 1
                        time.sleep(0.2)
            seconds = round(time.monotonic() - started, 3)
            if handled:
                self.event("fresh-handled", what=what, seconds=seconds)
            else:
                self.violations.add("serving", {"what": what, "bound_s": self.scenario.serve_timeout,
                                                "acknowledged": envelope is not None, "errors": errors[-4:]})
                self.event("fresh-not-handled", what=what, acknowledged=envelope is not None, errors=errors[-2:])

    def keys_close(self) -> None:
        if self.keys is not None:
            self.keys.close()
            self.keys = None

    def sweep(self) -> None:
        """Thaw and kill any node process of this run still alive (``down`` waits 10 s for each
        and cannot stop a frozen one), and reap the ones that are our children."""
        for pid in sorted(self.pids):
            if launcher.alive(pid) and _is_node_of(pid, self.root):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
        for pid in sorted(self.pids):
            with suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)

    def cleanup(self) -> None:
        """Whatever happened: stop the clients, thaw every node, ``cluster down``, kill leftovers."""
        for thread in self.threads:
            thread.stop.set()
        self.keys_close()
        with suppress(Exception):
            for record in self.records().values():
                self.pids.add(record["pid"])
        for pid in sorted(self.pids):
            if launcher.alive(pid) and _is_node_of(pid, self.root):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        with suppress(Exception):
            launcher.down(self.root, timeout=10.0)
        self.sweep()

    def report(self, plan: list[Fault]) -> dict[str, Any]:
        acked = [a for t in self.threads for a in t.acked]
        totals: dict[str, int] = Counter()
        for counters in self.counters.values():
            for k, v in counters.items():
                totals[k] += v
        errors: Counter[str] = Counter()
        for t in self.threads:
            errors.update(t.errors)
        violations = self.violations.report()
        return {
            "scenario": asdict(self.scenario),
            "passed": not violations,
            "settled": self.settled,
            "wedged": self.wedged,
            "violations": violations,
            "schedule": [asdict(f) for f in plan],
            "workload": {
                "acknowledged": len(acked), "by_kind": dict(Counter(a.what for a in acked)),
                "refused": sum(t.refused for t in self.threads), "refusals": dict(errors.most_common(8)),
                "fresh": [a.show() for a in self.fresh],
            },
            "observed": {
                "counters": dict(totals), "per_process": {f"{n}/{p}": c for (n, p), c in sorted(self.counters.items())},
                "logs": scan_logs(self.root), "final_status": self.final_status,
                "stores": self.store_summary,
            },
            "events": self.events,
            "timings": {k: round(v, 2) for k, v in {**self.timings, "total": self.now()}.items()},
            "code": code_version(),
        }


QUEUES = ("backlog", "standby", "outbound", "replicating")
COUNTERS = ("conflicts", "rolled_back", "gone_after_rollback", "leases_lost", "view_changes", "diffs_applied",
            "handled")


def _brief_status(st: dict[str, Any]) -> dict[str, Any]:
    if not st.get("up"):
        return {"name": st.get("name"), "up": False, "error": str(st.get("error"))[:120]}
    return {"name": st["name"], "serving": st.get("serving"), "view": st.get("up"),
            **{q: st.get(q) for q in QUEUES if st.get(q)},
            **{c: st.get(c) for c in ("conflicts", "rolled_back", "gone_after_rollback", "leases_lost") if st.get(c)}}


def _is_node_of(pid: int, root: Path) -> bool:
    """Whether ``pid`` is a node process of the cluster at ``root`` (a pid can be reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace")
    except OSError:
        return False
    return "missive.cluster.node" in cmdline and str(root) in cmdline


def scan_logs(root: Path) -> dict[str, dict[str, Any]]:
    """What each node's log says went wrong or was undone: counts of telling lines, and the
    most frequent warnings and errors with ids and numbers masked (observations that explain a
    violation, not invariants themselves)."""
    patterns = {"errors": " ERROR ", "tracebacks": "Traceback", "rolled_back": "rolled back 0x",
                "gone_after_rollback": "had already left", "refused_diffs": "refused a state diff",
                "lost_majority": "lost touch with a majority", "could_not_take_copy": "could not take"}
    out: dict[str, dict[str, Any]] = {}
    for log in sorted(root.glob("n*/node.log")):
        counts: Counter[str] = Counter()
        said: Counter[str] = Counter()
        last_exception = None
        with suppress(OSError):
            for line in log.read_text(errors="replace").splitlines():
                for name, text in patterns.items():
                    if text in line:
                        counts[name] += 1
                for level in (" ERROR ", " WARNING "):
                    if level in line:
                        said[level.strip() + ": " + _masked(line.split(level, 1)[1])] += 1
                if line and not line[:1].isspace() and ("Error: " in line or "Error" == line.split(":")[0][-5:]) \
                        and " INFO " not in line and " WARNING " not in line and " ERROR " not in line:
                    last_exception = line[:300]
        out[log.parent.name] = {**counts, "said": dict(said.most_common(6)),
                                **({"last_exception": last_exception} if last_exception else {})}
    return out


def _masked(text: str) -> str:
    """A log message with hex ids and numbers masked, so alike messages count together."""
    import re

    text = re.sub(r"0x[0-9a-f]+", "0x…", text)
    text = re.sub(r"127\.0\.0\.1:\d+", "HOST:PORT", text)
    text = re.sub(r"\b[0-9a-f]{16,}\b", "…", text)
    return re.sub(r"\b\d+\b", "N", text)[:200]


def code_version() -> dict[str, Any]:
    """Which Missive ran: where it was imported from, and its commit and changed files (others
    edit the package while this runs: a result belongs to the code it ran on).  A copy outside
    git (a snapshot taken to measure a fixed state) says what it is in a ``SNAPSHOT`` file."""
    import missive

    where = Path(missive.__file__).resolve().parent.parent
    marker = where / "SNAPSHOT"
    if marker.exists():
        return {"path": str(where), "snapshot": marker.read_text().strip()}

    def git(*args: str) -> str:
        with suppress(Exception):
            return subprocess.run(["git", "--no-optional-locks", *args], cwd=where, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        return ""

    diff = git("diff", "HEAD")
    return {"path": str(where), "head": git("rev-parse", "--short", "HEAD"),
            "changed": git("diff", "--name-only", "HEAD").split(),
            "diff_hash": keccak256(diff.encode()).hex()[:12] if diff else None}


# -- the invariants, on the stores ----------------------------------------------------------


@contextmanager
def open_stores(run: Run) -> Iterator[dict[str, Any]]:
    """Every node's store, read-only (the cluster is down)."""
    from missive.mailbox.store import Store

    stores: dict[str, Any] = {}
    try:
        for name, record in sorted(run.records().items()):
            stores[name] = Store(Path(record["dir"]), readonly=True)
        yield stores
    finally:
        for store in stores.values():
            store.close()


def _table(store: Any, name: str) -> list[tuple[bytes, bytes]]:
    with store.read() as txn:
        return [(bytes(k), bytes(v)) for k, v in txn.cursor(db=open_tables(store)[name])]


def check_stores(run: Run, live_executors: dict[bytes, list[str]]) -> None:
    """Invariants 1–6 on the stores of the stopped cluster (one read-only pass per node)."""

    from missive.actors.replay import replay

    v = run.violations
    k = run.scenario.replicas
    with open_stores(run) as stores:
        accounts = {name: dict(store.accounts()) for name, store in stores.items()}
        mailboxes: dict[str, dict[bytes, list[bytes]]] = {}
        for name, store in stores.items():
            boxes: dict[bytes, list[bytes]] = defaultdict(list)
            for key, message_id in _table(store, "mailbox"):
                boxes[key[:20]].append(message_id)
            mailboxes[name] = boxes
        addresses = sorted({a for held in accounts.values() for a in held})

        def executor_of(address: bytes) -> str:
            said = live_executors.get(address) or []
            return said[0] if len(said) == 1 else run.executor_by_placement(address)

        ex_of = {a: executor_of(a) for a in addresses}
        # read off a cluster that never settled, copies differ and the executors' copies may be
        # stale: value and copies violations are then likely consequences of what is stuck
        unsettled = "" if run.settled else " (cluster not settled)"
        for address, said in live_executors.items():
            if len(said) != 1:
                v.add("copies", {"address": hx(address), "problem": f"{len(said)} nodes say they execute it",
                                 "nodes": said}, how=f"{'several' if said else 'no'} executors" + unsettled)

        # 1. every acknowledged submission has a receipt on its recipient's executor
        acked = {a.id: a for t in run.threads for a in t.acked} | {a.id: a for a in run.fresh}
        queued_where, queued = _queued(stores)
        for a in acked.values():
            home = ex_of.get(a.recipient, run.executor_by_placement(a.recipient))
            if stores[home].receipt(a.id) is None:
                receipt_on = [n for n, s in stores.items() if s.receipt(a.id) is not None]
                stored_on = [n for n, s in stores.items() if s.message(a.id, check=False) is not None]
                how = ("receipt only on other nodes" if receipt_on else "waiting, no receipt yet"
                       if a.id in queued_where else "stored, neither handled nor queued" if stored_on else "gone")
                v.add("lost", {**a.show(), "executor": home, "receipt_on": receipt_on, "stored_on": stored_on,
                               "queued_on": sorted(queued_where.get(a.id, ()))}, how=how)

        # 1b. every message a standing receipt sent (a relay's forward, a reply) arrives too: an
        # internal message is acknowledged to nobody, so only this check sees one go missing
        # (its value would vanish from the value invariant with no other violation)
        for address in addresses:
            home = ex_of[address]
            for message_id in stores[home].mailbox(address):
                receipt = stores[home].receipt(message_id)
                for sent in receipt.outgoing if receipt is not None else ():
                    sent_found = next((found for s in stores.values()
                                       if (found := s.message(sent, check=False)) is not None), None)
                    if sent_found is None:
                        v.add("lost", {"id": hx(sent), "sent_by": hx(message_id), "sender": hx(address),
                                       "executor": home}, how="internal message stored nowhere")
                        continue
                    target = bytes(sent_found[0].recipient)
                    there = ex_of.get(target, run.executor_by_placement(target))
                    if stores[there].receipt(sent) is None and sent not in queued_where:
                        v.add("lost", {"id": hx(sent), "sent_by": hx(message_id), "sender": hx(address),
                                       "recipient": hx(target), "value": sent_found[0].value, "executor": there,
                                       "receipt_on": [n for n, s in stores.items() if s.receipt(sent) is not None],
                                       "stored_on": [n for n, s in stores.items()
                                                     if s.message(sent, check=False) is not None]},
                              how="internal message neither handled nor waiting")

        # 2. none handled twice: one id in two positions; two handled external messages with one (sender, nonce)
        for name, boxes in mailboxes.items():
            for address, ids in boxes.items():
                for message_id, times in Counter(ids).items():
                    if times > 1:
                        v.add("duplicate", {"node": name, "actor": hx(address), "id": hx(message_id),
                                            "positions": [i for i, m in enumerate(ids) if m == message_id]})
        # every node's mailboxes, not only the executors': a holder that handled a message and was
        # never brought back in line has handled it all the same (and its copy differs: see copies)
        by_nonce: dict[tuple[bytes, int], dict[bytes, set[str]]] = defaultdict(dict)
        for name, boxes in mailboxes.items():
            for ids in boxes.values():
                for message_id in ids:
                    found = stores[name].message(message_id, check=False)
                    if found is not None and found[0].is_external:
                        envelope: Envelope = found[0]
                        by_nonce[(bytes(envelope.sender), envelope.nonce)].setdefault(message_id, set()).add(name)
        for a in acked.values():
            by_nonce[(a.sender, a.nonce)].setdefault(a.id, set())
        for (sender, nonce), ids in by_nonce.items():
            if len(ids) > 1:
                handled = sum(1 for where in ids.values() if where)
                waiting = sum(1 for m, where in ids.items() if m in acked and not where)
                how = ("two handled" if handled > 1 else "one handled, another acknowledged" if handled and waiting
                       else "two acknowledged")
                v.add("nonce_reuse", {"sender": hx(sender), "nonce": nonce,
                                      "messages": {hx(m): {"handled_on": sorted(where), "acknowledged": m in acked}
                                                   for m, where in ids.items()}}, how=how)

        # 3. value: each account once, from its executor's copy, plus value not yet handled, once
        in_accounts = 0
        for address in addresses:
            copy = accounts[ex_of[address]].get(address)
            if copy is None:  # the executor has no copy: counted from a holder that has one (see copies)
                copy = next(held[address] for held in accounts.values() if address in held)
            in_accounts += copy.balance
        flight: dict[bytes, Envelope] = {}  # each message not yet handled, once, wherever it waits
        for message_id, envelope in queued.items():
            recipient = bytes(envelope.recipient)
            home = ex_of.get(recipient, run.executor_by_placement(recipient))
            if stores[home].receipt(message_id) is None:
                flight[message_id] = envelope
        # (with the fee each escrows, gas x bid, as missive.replicas.records.in_transit_value counts it)
        in_flight = sum(envelope.value + envelope.gas * envelope.bid for envelope in flight.values())
        total = in_accounts + in_flight
        if total != run.minted:
            v.add("value", {"minted": run.minted, "in_accounts": in_accounts, "in_flight": in_flight,
                            "total": total, "created" if total > run.minted else "destroyed": abs(total - run.minted),
                            "messages_in_flight": len(flight)},
                  how=("created" if total > run.minted else "destroyed") + unsettled)
        assert run.token is not None and run.balance_slot is not None and run.alice is not None
        token_storage = stores[ex_of[run.token]].storage(run.token)
        holders = [run.alice.address, run.token, run.relay, *(key.address for key in run.accounts)]
        tokens = sum(token_storage.get(run.balance_slot(h), 0) for h in holders if h is not None)
        if tokens != TOKEN_SUPPLY:
            v.add("token", {"supply": TOKEN_SUPPLY, "sum_of_balances": tokens, "executor": ex_of[run.token]})

        # 4. every holder's copy identical, and only the K holders have one
        for address in addresses:
            holders_ = {run.names[n] for n in replicas(address, run.members, k)}
            having = {name for name, held in accounts.items() if address in held}
            if having != holders_:
                v.add("copies", {"address": hx(address), "holders": sorted(holders_), "copies_on": sorted(having)},
                      how="held by other nodes than its holders" + unsettled)
            views = {}
            for name in sorted(having & holders_):
                a: Account = accounts[name][address]
                views[name] = {"account": {"state_root": hx(a.state_root, 8), "handled": a.handled, "balance": a.balance,
                                           "nonce": a.nonce, "code_hash": hx(a.code_hash, 8)},
                               "storage": stores[name].storage(address), "mailbox": mailboxes[name].get(address, [])}
            if len({repr(x) for x in views.values()}) > 1:
                v.add("copies", {"address": hx(address), **_differences(views)}, how="copies differ" + unsettled)

        # 5 (on the stores as well as in status): queues left over
        summary = {}
        for name, store in stores.items():
            with store.read() as txn:
                left = {table: txn.stat(open_tables(store)[table])["entries"]
                        for table in ("pending", "standby", "outbound", "replicate", "scheduled")}
            summary[name] = {"accounts": len(accounts[name]), "ledger_records": store.next_seq(),
                             **{t: n for t, n in left.items() if n}}
            if any(left[t] for t in ("pending", "standby", "outbound", "replicate")) and not run.violations.counts["queues"]:
                v.add("queues", {"node": name, "after_down": {t: n for t, n in left.items() if n}})
        run.store_summary = summary

        # 6. every node's ledger replays
        for name, store in stores.items():
            started = time.monotonic()
            try:
                result = replay(store)
            except Exception as exc:  # noqa: BLE001 - a replay that crashes fails the invariant too
                v.add("replay", {"node": name, "error": f"{type(exc).__name__}: {exc}"[:400]})
                continue
            summary[name]["replay"] = {"checked": result.checked, "seconds": round(time.monotonic() - started, 2)}
            if result.divergence is not None:
                v.add("replay", {"node": name, "checked": result.checked, "divergence": result.divergence.describe()[:600]})


def _queued(stores: dict[str, Any]) -> tuple[dict[bytes, set[str]], dict[bytes, Envelope]]:
    """Messages waiting anywhere (pending, standby, scheduled, outbound): id -> the nodes where
    it waits, and id -> its envelope (an outbound record carries its own; the others are read
    from the node's messages)."""
    import msgpack

    where: dict[bytes, set[str]] = defaultdict(set)
    envelopes: dict[bytes, Envelope] = {}
    for name, store in stores.items():
        ids = [message_id for table in ("pending", "standby") for _, message_id in _table(store, table)]
        ids += [key[32:] for key, _ in _table(store, "scheduled")]
        for message_id in ids:
            where[message_id].add(name)
            found = store.message(message_id, check=False)
            if found is not None:
                envelopes.setdefault(message_id, found[0])
        for _, record in _table(store, "outbound"):
            envelope = Envelope.decode(msgpack.unpackb(record)[0], check=False)
            where[bytes(envelope.id)].add(name)
            envelopes.setdefault(bytes(envelope.id), envelope)
    return where, envelopes


def _differences(views: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What differs between copies of one account: fields, storage slots, mailbox positions."""
    names = sorted(views)
    out: dict[str, Any] = {"holders": names}
    accounts = {n: views[n]["account"] for n in names}
    if len({repr(a) for a in accounts.values()}) > 1:
        out["account"] = accounts
    storages = {n: views[n]["storage"] for n in names}
    slots = set().union(*storages.values())
    differing = sorted(s for s in slots if len({storages[n].get(s, 0) for n in names}) > 1)
    if differing:
        out["storage_slots_differing"] = len(differing)
    boxes = {n: views[n]["mailbox"] for n in names}
    if len({tuple(b) for b in boxes.values()}) > 1:
        first = next((i for i in range(max(len(b) for b in boxes.values()))
                      if len({b[i] if i < len(b) else None for b in boxes.values()}) > 1), None)
        out["mailbox"] = {"lengths": {n: len(b) for n, b in boxes.items()}, "first_difference_at": first,
                          "there": {n: hx(b[first], 8) if first is not None and first < len(b) else None
                                    for n, b in boxes.items()}}
    return out


# -- running and printing -------------------------------------------------------------------


def run_scenario(scenario: Scenario, root: Path | None = None, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run one scenario on a fresh cluster (in a temporary directory unless ``root``) and return
    its report; the cluster is down and every node process gone when this returns."""
    with tempfile.TemporaryDirectory(prefix="missive-faults-") as tmp:
        base = root if root is not None else Path(tmp) / "cluster"
        run = Run(scenario, base, say)
        try:
            return run.execute()
        except Exception as exc:
            report = {"scenario": asdict(scenario), "passed": False, "violations": run.violations.report(),
                      "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
                      "events": run.events, "logs": scan_logs(base), "timings": {"total": round(run.now(), 2)},
                      "code": code_version()}
            return report
        finally:
            run.cleanup()


def print_report(report: dict[str, Any], plain: bool = False) -> None:
    """The report for people: the verdict per invariant with its count and first example."""
    s = report["scenario"]
    title = (f"{s['nodes']} nodes, K={s['replicas']}, {s['faults']} × {s['kind']}, seed {s['seed']}: "
             + ("PASSED" if report["passed"] else "FAILED" if "error" not in report else "HARNESS ERROR"))
    rows = []
    for name, description in INVARIANTS.items():
        found = report["violations"].get(name)
        example = json.dumps(found["examples"][0], default=str)[:300] if found else ""
        rows.append((description, "FAIL" if found else "ok", str(found["count"]) if found else "0", example))
    workload = report.get("workload", {})
    extra = [f"acknowledged {workload.get('acknowledged')} {workload.get('by_kind')}, refused {workload.get('refused')}",
             f"counters {report.get('observed', {}).get('counters')}",
             f"timings {report.get('timings')}"]
    if "error" in report:
        extra.append(f"error: {report['error']}")
    if plain:
        print(title)
        for description, verdict, count, example in rows:
            print(f"  {verdict:4} {count:>6}  {description}" + (f"\n              e.g. {example}" if example else ""))
        for line in extra:
            print("  " + line)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in ("invariant", "", "count", "first example"):
        table.add_column(column, overflow="fold")
    for description, verdict, count, example in rows:
        table.add_row(description, f"[red]{verdict}[/]" if verdict == "FAIL" else f"[green]{verdict}[/]", count, example)
    console = Console()
    console.print(table)
    for line in extra:
        console.print(line, highlight=False)


def summary(report: dict[str, Any]) -> str:
    """One line per violated invariant (for a test's assertion message)."""
    if "error" in report:
        return f"harness error: {report['error']}\n{report.get('traceback', '')}"
    lines = []
    for name, found in report["violations"].items():
        lines.append(f"{name} ({found['invariant']}): {found['count']}; e.g. "
                     + json.dumps(found["examples"][:2], default=str)[:600])
    return "\n".join(lines) or "no violations"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--faults", type=int, default=6)
    parser.add_argument("--kind", choices=KINDS, default="mixed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1.0, help="failover timeout (s)")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--pace", type=float, default=0.02)
    parser.add_argument("--settle-timeout", type=float, default=45.0)
    parser.add_argument("--recover-timeout", type=float, default=30.0)
    parser.add_argument("--serve-timeout", type=float, default=20.0)
    parser.add_argument("--dir", type=Path, help="keep the cluster here (a new directory) instead of a temporary one")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--plain", action="store_true", help="plain text instead of rich")
    parser.add_argument("--quiet", action="store_true", help="no event lines while running")
    parser.add_argument("--bids", action="store_true",
                        help="clients offer mixed bids (0, 1 or 3 per gas) instead of 0, so executors serve "
                             "highest bid first (the bid-order index under faults), and raise the bid of about "
                             "one message in seven by a raise message")
    args = parser.parse_args(argv)
    scenario = Scenario(nodes=args.nodes, replicas=args.replicas, faults=args.faults, kind=args.kind, seed=args.seed,
                        failover_timeout=args.timeout, clients=args.clients, pace=args.pace,
                        settle_timeout=args.settle_timeout, recover_timeout=args.recover_timeout,
                        serve_timeout=args.serve_timeout, bids=args.bids)
    try:
        scenario.check()
    except ValueError as exc:
        parser.error(str(exc))
    if args.dir is not None and args.dir.exists() and any(args.dir.iterdir()):
        parser.error(f"--dir {args.dir} is not empty")
    report = run_scenario(scenario, args.dir, (lambda _: None) if args.quiet else print)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print_report(report, plain=args.plain)
    if "error" in report:
        print(report.get("traceback", ""), file=sys.stderr)
        return 2
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
