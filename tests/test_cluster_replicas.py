"""Replicas: every actor is held by K nodes; its executor's state diffs keep the others identical."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from eth_abi import encode
from test_cluster import Cluster, deploy_token_away_from, query_balance, sel

from missive.cluster import launcher
from missive.cluster.placement import executor, replicas
from missive.mailbox.diffs import StateDiff
from missive.mailbox.envelope import Kind
from missive.mailbox.records import Account
from missive.net import NodeIdentity
from missive.net.handshake import initiate
from missive.net.rpc import open_rpc
from missive.vm.keccak import keccak256

K = 2


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster", 3, replicas=K)
    try:
        yield c
    finally:
        c.stop()


def settled(cluster: Cluster, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Wait until no node has messages or diffs left to handle or send."""
    deadline = time.monotonic() + timeout
    while True:
        states = launcher.status(cluster.root)
        if all(s["up"] and not s["backlog"] and not s["standby"] and not s["outbound"] and not s["replicating"]
               for s in states):
            return states
        assert time.monotonic() < deadline, states
        time.sleep(0.1)


def copies(cluster: Cluster, address: bytes) -> dict[str, dict[str, Any] | None]:
    """Each node's own copy of ``address`` (None where it has none)."""
    return {s["name"]: cluster.client(i).call("local_state", address) for i, s in enumerate(cluster.states)}


def test_replicas_hold_identical_state_and_only_they_hold_it(cluster: Cluster) -> None:
    alice_node = cluster.home(cluster.alice.address)["name"]
    bob = cluster.account_elsewhere("bob", {alice_node})
    token = deploy_token_away_from(cluster, {alice_node})
    client = cluster.client(1)
    for i in range(20):
        client.submit(cluster.alice, Kind.CALL, token, sel("transfer(address,uint256)") + encode(["address", "uint256"], [bob.address, i]))
        client.submit(bob, Kind.CALL, cluster.alice.address, value=1_000 + i)  # native value, external to external
    settled(cluster)  # bob's query is not ordered after alice's transfers (FIFO is per sender)
    assert query_balance(client, bob, token, bob.address) == sum(range(20))
    states = settled(cluster)
    assert sum(s["diffs_applied"] for s in states) > 0 and all(s["replicas"] == K for s in states)

    for address in (token, cluster.alice.address, bob.address):
        holders = {cluster.by_id[n]["name"] for n in replicas(address, cluster.members, K)}
        found = copies(cluster, address)
        assert {name for name, copy in found.items() if copy is not None} == holders
        held = [found[name] for name in sorted(holders)]
        accounts = [Account.decode(c["account"]) for c in held if c]
        assert len({(a.state_root, a.handled, a.balance, a.nonce, a.code_hash) for a in accounts}) == 1, accounts
        assert all(c == held[0] or (c and c["storage"] == held[0]["storage"] and c["mailbox"] == held[0]["mailbox"])
                   for c in held)
        assert sum(1 for c in held if c and c["executor"]) == 1
    assert Account.decode(copies(cluster, token)[cluster.home(token)["name"]]["account"]).handled >= 21  # type: ignore[index]


def _as_member(cluster: Cluster, name: str, target: int, method: str, params: Any) -> Any:
    """Call ``method`` on node ``target`` authenticated as member ``name`` (its key from its directory)."""
    identity = NodeIdentity.load_or_generate(cluster.root / name / "node.key")

    async def go() -> Any:
        stream = await trio.open_tcp_stream("127.0.0.1", cluster.states[target]["port"])
        channel = await initiate(stream, identity, expected_peer=cluster.states[target]["id"])
        async with open_rpc(channel) as conn:
            return await conn.call(method, params, timeout=10.0)

    return trio.run(go)


def test_a_replica_refuses_diffs_not_from_the_executor_and_forged_ones(cluster: Cluster) -> None:
    address = cluster.alice.address
    holders = replicas(address, cluster.members, K)
    replica = next(i for i, s in enumerate(cluster.states) if s["id"] == holders[1])
    outsider = next(s["name"] for s in cluster.states if s["id"] not in holders)
    executor_name = cluster.by_id[executor(address, cluster.members)]["name"]
    settled(cluster)
    before = cluster.client(replica).call("local_state", address)
    rich = StateDiff(address, 10**9, Account(balance=10**30, nonce=7)).encode()
    outsider_key = NodeIdentity.load_or_generate(cluster.root / outsider / "node.key")

    done, problem, *_ = _as_member(cluster, outsider, replica, "apply", {"diffs": [[rich, outsider_key.sign(keccak256(rich))]], "epoch": 0})
    assert done == 0 and problem == f"{outsider} does not hold 0x{address.hex()}"
    done, problem, *_ = _as_member(cluster, executor_name, replica, "apply", {"diffs": [[rich, outsider_key.sign(keccak256(rich))]], "epoch": 0})
    assert done == 0 and problem == f"bad signature from {executor_name} on a state diff"
    done, problem, *_ = _as_member(cluster, executor_name, replica, "apply", {"diffs": [[b"\xc1junk", bytes(64)]], "epoch": 0})
    assert done == 0 and "bad signature" in problem
    with pytest.RaisesGroup(pytest.RaisesExc(Exception, match="apply takes"), flatten_subgroups=True):
        _as_member(cluster, executor_name, replica, "apply", [[rich, bytes(64)]])  # no word on its epoch
    with pytest.raises(Exception, match="cluster members"):
        cluster.client(replica).call("apply", {"diffs": [[rich, bytes(64)]], "epoch": 0})
    assert cluster.client(replica).call("local_state", address) == before  # nothing written
    assert msgpack.packb(launcher.status(cluster.root))  # and every node still answers
