"""Issue 23 on a cluster: the worker registry is an actor, every node is registered in it as a
worker by `missive cluster up`, and a node executes only while its worker has a stake.

Three node processes on 127.0.0.1, two holders per actor, a registry whose unbonding takes one
second.  A node's worker (the account of its node key) unbonds: every node stops counting it, its
actors move to their other holders and keep working; it withdraws its stake, registers again, and
serves again.  Bad operations are refused by the registry in one line and change nothing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_execution_trust_cluster import until

from missive.cluster import launcher
from missive.cluster.client import ClusterClient, load_operator
from missive.keys import Key, Keystore
from missive.mailbox.envelope import Kind
from missive.mailbox.records import Receipt
from missive.market import registry_actor
from missive.market.registry_actor import REGISTRY, payload
from missive.market.workers import MIN_STAKE, OWN_STAKE


class StakedCluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.states = launcher.up(root, 3, replicas=2, unbond_seconds=1, encrypt_keys=False)
        self.operator = load_operator(root)
        self.keys = Keystore(root)
        self.alice = self.keys.find("default")
        assert self.alice is not None

    def client(self, i: int = 0) -> ClusterClient:
        return ClusterClient("127.0.0.1", self.states[i]["port"], self.operator)

    def worker(self, name: str) -> Key:
        return launcher.worker_key(self.root, name)

    def registry_op(self, key: Key, op: str, *args: Any, value: int = 0, gas: int = 300_000, via: int = 0,
                    bid: int = 0) -> Receipt:
        _, handled = self.client(via).submit_wait(key, Kind.CALL, REGISTRY, payload(op, *args), value=value, gas=gas,
                                                  bid=bid)
        return Receipt.decode(handled["receipt"])

    def registry(self) -> dict[str, Any]:
        client = self.client()
        slots = {int.from_bytes(k, "big"): int.from_bytes(v, "big")
                 for k, v in client.call("storage", {"address": REGISTRY})["slots"]}
        return registry_actor.view(slots, client.account(REGISTRY).balance)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StakedCluster]:
    root = tmp_path_factory.mktemp("stakes") / "cluster"
    c = StakedCluster(root)
    try:
        yield c
    finally:
        launcher.down(root)


def test_cluster_up_registers_every_node_as_a_worker_with_a_stake(cluster: StakedCluster) -> None:
    shown = cluster.registry()
    workers = dict(shown["workers"])
    for state in cluster.states:
        assert workers[cluster.worker(state["name"]).address].stake == OWN_STAKE
    assert shown["holdings"] == {"stakes": 3 * OWN_STAKE, "unbonding": 0, "burned": 0}
    assert shown["balance"] == 3 * OWN_STAKE and shown["unbond_seconds"] == 1
    assert all(s["serving"] and s["unstaked"] == [] for s in launcher.status(cluster.root))


def test_bad_registry_operations_are_refused_in_one_line_and_change_nothing(cluster: StakedCluster) -> None:
    alice = cluster.alice
    before = cluster.registry()
    balance = cluster.client().account(alice.address).balance
    refused = [
        (cluster.registry_op(alice, "register", b"", 0, value=MIN_STAKE - 1), "below the registry's minimum stake"),
        (cluster.registry_op(alice, "unbond"), "not a registered worker"),
        (cluster.registry_op(alice, "withdraw"), "no unbonded stake to withdraw"),
        (cluster.registry_op(alice, "accuse", b"\x93\x01\x02\x03"), "the evidence proves nothing"),
        (cluster.registry_op(alice, "accuse", b"\x93\x01\x02\x03", gas=100_000), "accuse costs 200000 gas"),
        (cluster.registry_op(alice, "steal"), "no registry operation"),
        (cluster.registry_op(alice, "register", b"\x01" * 7, 0, value=MIN_STAKE), "malformed register"),
        (cluster.registry_op(alice, "unbond", value=5), "carries no value"),
    ]
    for receipt, words in refused:
        assert not receipt.success and words in receipt.error, receipt.error
        assert "\n" not in receipt.error
    raw = cluster.client().call("submit_wait", {"record": b"\x00", "until": "receipt", "timeout": 1})
    assert "malformed" in raw["error"]
    # a refused operation still pays for its run: with a bid, its fee goes to the coinbase that the executing
    # node's worker registered (each node reads it from the registry; the first fee may predate that read)
    paid: list[Receipt] = []

    def paid_to_a_worker() -> bool:
        paid.append(cluster.registry_op(alice, "unbond", bid=3))
        return paid[-1].coinbase in {cluster.worker(s["name"]).address for s in cluster.states}
    until("the nodes pay their fees to their workers", paid_to_a_worker)
    assert all(not r.success and r.fee == r.gas_used * 3 > 0 for r in paid)

    def settled() -> bool:  # the refused stakes bounced back; the fees' escrow came back, less the fees paid
        return cluster.client().account(alice.address).balance == balance - sum(r.fee for r in paid)
    until("every refused value is back", settled)
    assert cluster.registry() == before


def test_a_node_whose_worker_unbonds_serves_nothing_until_it_registers_again(cluster: StakedCluster) -> None:
    name = cluster.states[0]["name"]
    key = cluster.worker(name)
    receipt = cluster.registry_op(key, "unbond")
    assert receipt.success, receipt.error

    def left_out() -> bool:
        states = launcher.status(cluster.root)
        return all(s["unstaked"] == [name] for s in states) and \
            not next(s for s in states if s["name"] == name)["serving"] and \
            all(s["serving"] and name not in s["up"] for s in states if s["name"] != name)  # an epoch without it
    until(f"every node leaves {name} out", left_out)
    second = cluster.registry_op(key, "unbond", via=1)
    assert not second.success and second.error.endswith("a second unbond changes nothing")

    # the cluster works on: a transfer between two fresh accounts, wherever they live
    client = cluster.client(1)
    bob = cluster.keys.new("bob-stakes")
    client.create_account(bob, 0)
    _, handled = client.submit_wait(cluster.alice, Kind.CALL, bob.address, value=777)
    assert Receipt.decode(handled["receipt"]).success
    assert client.account(bob.address).balance == 777

    time.sleep(1.2)  # the registry's unbonding delay (seconds of its clock)
    held = cluster.client(1).account(key.address).balance  # (its node's fees, if any, go there too)
    assert cluster.registry_op(key, "withdraw", via=1).success
    until("the stake is back", lambda: cluster.client(1).account(key.address).balance >= held + OWN_STAKE)
    assert cluster.registry_op(key, "register", b"", 0, value=OWN_STAKE, via=1).success
    until(f"{name} serves again", lambda: all(s["unstaked"] == [] and s["serving"] for s in launcher.status(cluster.root)))
    assert cluster.registry()["holdings"] == {"stakes": 3 * OWN_STAKE, "unbonding": 0, "burned": 0}


def test_worker_commands_on_a_cluster(cluster: StakedCluster) -> None:
    def missive(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "missive", *args, "--cluster", str(cluster.root)],
                              capture_output=True, text=True, timeout=120, env={**__import__("os").environ,
                                                                                 "COLUMNS": "200"})

    shown = missive("worker", "status")
    assert shown.returncode == 0 and shown.stdout.count("stake 1000000") == 3, shown.stderr
    low = missive("worker", "register", "--stake", "5")
    assert low.returncode == 2 and "below the registry's minimum stake" in low.stderr and "Traceback" not in low.stderr
    ok = missive("worker", "register", "--stake", "5000", "--min-bid", "2")
    assert ok.returncode == 0 and "stake 5000 locked" in ok.stdout, ok.stderr
    again = missive("worker", "register", "--stake", "5000")
    assert again.returncode == 2 and "registered already" in again.stderr
    market = missive("market", "--json")
    assert market.returncode == 0, market.stderr
    import json

    view = json.loads(market.stdout)
    mine = next(w for w in view["workers"] if w["address"] == "0x" + cluster.alice.address.hex())
    assert (mine["stake"], mine["min_bid"]) == (5000, 2)
    assert view["registry_balance"] == 3 * OWN_STAKE + 5000 and view["slashes"] == []
    # the fees the bid-3 registry runs paid (test above), per coinbase, each run once: a node's worker's
    # (the first may have gone to the node's ledger key's account, before the node read the registry)
    workers = {"0x" + cluster.worker(s["name"]).address.hex() for s in cluster.states}
    assert set(view["fees"]) & workers
    assert all(earned["fees"] == earned["runs"] * registry_actor.OP_GAS * 3 for earned in view["fees"].values())
    assert view["waiting"] == len(view["pending"])
    shown = missive("market")
    assert shown.returncode == 0 and "fees earned, per coinbase" in shown.stdout and "highest bid first" in shown.stdout


def test_only_the_operator_makes_the_registry_and_only_once(cluster: StakedCluster) -> None:
    from missive.cluster.client import ClusterError

    stranger = ClusterClient("127.0.0.1", cluster.states[1]["port"])
    with pytest.raises(ClusterError, match="create_registry needs the cluster operator's key"):
        stranger.call("create_registry", {"unbond_seconds": 0})
    with pytest.raises(ClusterError, match="unbond_seconds must be a whole number"):
        cluster.client(1).call("create_registry", {"unbond_seconds": -1})
    assert cluster.client(1).call("create_registry", {"unbond_seconds": 0}) is False  # there is one: unchanged
    assert cluster.registry()["unbond_seconds"] == 1


def test_a_message_bidding_below_the_executing_workers_minimum_is_refused(cluster: StakedCluster) -> None:
    """Each node reads every worker's minimum bid from the registry; admission refuses a message
    whose recipient is executed by a node whose worker asks more, naming the minimum (nothing changes)."""
    from missive.cluster.placement import executor

    name = cluster.states[1]["name"]
    key = cluster.worker(name)
    assert cluster.registry_op(key, "unbond", via=2).success
    until(f"{name} is left out", lambda: all(name not in s["up"] for s in launcher.status(cluster.root)
                                             if s["name"] != name))
    time.sleep(1.2)
    assert cluster.registry_op(key, "withdraw", via=2).success
    until("the stake is back", lambda: cluster.client(2).account(key.address).balance >= OWN_STAKE)
    assert cluster.registry_op(key, "register", b"", 5, value=OWN_STAKE, via=2).success
    until(f"{name} serves again", lambda: all(s["unstaked"] == [] and s["serving"]
                                              for s in launcher.status(cluster.root)))
    members = sorted(s["id"] for s in cluster.states)
    target = next(k for k in (cluster.keys.new(f"carol{i}") for i in range(60))
                  if executor(k.address, members) == cluster.states[1]["id"])
    client = cluster.client(0)
    client.create_account(target, 0)
    balance = client.account(cluster.alice.address).balance
    from missive.mailbox.envelope import EnvelopeError

    def refused() -> str | None:
        try:
            client.submit(cluster.alice, Kind.CALL, target.address, value=1, bid=1)
        except EnvelopeError as exc:
            return str(exc)
        return None
    said = until("the minimum is known everywhere", refused)
    assert said == (f"bid 1 is below the minimum bid 5 of {name}'s worker, which executes 0x{target.address.hex()} "
                    "(`missive worker status --cluster`)")
    for _ in range(3):  # and stays refused: nothing admitted, nothing debited
        assert refused() is not None
    _, handled = client.submit_wait(cluster.alice, Kind.CALL, target.address, value=1, bid=5)
    receipt = Receipt.decode(handled["receipt"])
    assert receipt.success and client.account(target.address).balance == 1
    assert client.account(cluster.alice.address).balance <= balance - 1
