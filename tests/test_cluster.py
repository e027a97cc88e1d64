"""A local cluster of real node processes on 127.0.0.1: cross-node messages, a killed node, hostile bytes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_abi import decode, encode

from missive.cluster import launcher
from missive.cluster.client import ClusterClient, load_operator
from missive.cluster.placement import executor
from missive.keys import Key, Keystore
from missive.mailbox.envelope import Kind
from missive.toolchain.compiler import compile_source
from missive.vm.creation import create_address
from missive.vm.keccak import keccak256

TOKEN = Path(__file__).resolve().parents[1] / "examples" / "Token.vy"


def sel(signature: str) -> bytes:
    return keccak256(signature.encode())[:4]


class Cluster:
    def __init__(self, root: Path, nodes: int, replicas: int = 1, failover_timeout: float = 2.0) -> None:
        self.root = root
        self.states = launcher.up(root, nodes, replicas=replicas, failover_timeout=failover_timeout)
        self.operator = load_operator(root)
        self.members = sorted(s["id"] for s in self.states)
        self.by_id = {s["id"]: s for s in self.states}
        self.keys = Keystore(root, create=True)
        self.alice = self.keys.find("default")
        assert self.alice is not None

    def client(self, i: int = 0) -> ClusterClient:
        """A client of node ``i`` connecting as the cluster's operator (it funds accounts, replays)."""
        return ClusterClient("127.0.0.1", self.states[i]["port"], self.operator)

    def stranger(self, i: int = 0) -> ClusterClient:
        """A client of node ``i`` with a throwaway key: what anyone on the network gets."""
        return ClusterClient("127.0.0.1", self.states[i]["port"])

    def home(self, address: bytes) -> dict[str, Any]:
        return self.by_id[executor(address, self.members)]

    def account_elsewhere(self, name: str, avoid: set[str]) -> Key:
        """A new funded account whose node is not one of ``avoid``."""
        for i in range(200):
            key = self.keys.new(f"{name}{i}")
            if self.home(key.address)["name"] not in avoid:
                self.client().create_account(key, 10**18)
                return key
        raise AssertionError("placement never left the avoided nodes")

    def stop(self) -> None:
        self.keys.close()
        launcher.down(self.root)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster", 3)
    try:
        yield c
    finally:
        c.stop()


def deploy_away_from(cluster: Cluster, init_code: bytes, avoid: set[str], gas: int = 1_000_000) -> bytes:
    """Deploy ``init_code`` from alice until it lands on a node not in ``avoid``; its address."""
    client = cluster.client()
    for _ in range(30):
        nonce = client.account(cluster.alice.address).nonce
        if cluster.home(create_address(cluster.alice.address, nonce))["name"] not in avoid:
            env = client.submit(cluster.alice, Kind.DEPLOY, None, init_code, gas=gas)
            receipt, _ = client.receipt(env)
            assert receipt.success, receipt.error
            return bytes(env.recipient)
        client.submit(cluster.alice, Kind.CALL, cluster.alice.address)  # spend a nonce
    raise AssertionError("no deploy address left the avoided nodes")


def deploy_token_away_from(cluster: Cluster, avoid: set[str]) -> bytes:
    """Deploy tokens from alice until one lands on a node not in ``avoid``; its address."""
    code = compile_source(TOKEN)
    return deploy_away_from(cluster, code.bytecode + encode(["string", "string", "uint256"], ["T", "T", 10**6]),
                            avoid, gas=5_000_000)


#: runtime code that counts down from 20,000 (about 520,000 gas, a millisecond or more a run): a
#: backlog of its messages takes longer to handle than to arrive, so the queue stays saturated
#: whatever the machine's speed (a backlog of plain transfers was handled as fast as it arrived)
BURNER = bytes.fromhex("614e205b600190038060035700")
BURNER_INIT = bytes([0x60, len(BURNER), 0x60, 12, 0x60, 0, 0x39, 0x60, len(BURNER), 0x60, 0, 0xF3]) + BURNER
#: enough gas for a run of BURNER
BURN_GAS = 600_000


def query_balance(client: ClusterClient, asker: Key, token: bytes, who: bytes) -> int:
    env = client.submit(asker, Kind.QUERY, token, sel("balanceOf(address)") + encode(["address"], [who]), wants_reply=True)
    receipt, sent = client.receipt(env)
    assert receipt.success and sent[0].kind is Kind.REPLY
    reply_receipt, _ = client.receipt(sent[0])  # the reply crossed back to the asker's node and was handled there
    assert reply_receipt.success
    return int(decode(["uint256"], sent[0].payload)[0])


def native_total(cluster: Cluster) -> int:
    """Sum of balances over every node's accounts plus value waiting to leave a node."""
    from missive.mailbox.store import Store
    from missive.replicas.records import in_transit_value

    total = 0
    for state in launcher.read_cluster(cluster.root)["nodes"]:
        store = Store(Path(state["dir"]), readonly=True)
        try:
            total += sum(a.balance for _, a in store.accounts()) + in_transit_value(store)
            total += sum(store.message(m)[0].value + store.message(m)[0].gas * store.message(m)[0].bid  # type: ignore[index]
                         for _, m in store.pending())
        finally:
            store.close()
    return total


def test_cross_node_transfers_query_reply_and_conservation(cluster: Cluster) -> None:
    alice_node = cluster.home(cluster.alice.address)["name"]
    bob = cluster.account_elsewhere("bob", {alice_node})
    bob_node = cluster.home(bob.address)["name"]
    token = deploy_token_away_from(cluster, {alice_node})
    assert cluster.home(token)["name"] != alice_node  # every transfer crosses nodes
    # submitted through a node that is neither alice's nor (maybe) the token's: it forwards
    client = cluster.client(2)
    sent = [client.submit(cluster.alice, Kind.CALL, token, sel("transfer(address,uint256)") + encode(["address", "uint256"], [bob.address, i]))
            for i in range(1, 21)]
    for env in sent:
        receipt, _ = client.receipt(env)
        assert receipt.success
    # FIFO per pair: the token handled alice's transfers in the order she sent them
    positions = [client.receipt(env)[0].position for env in sent]
    assert positions == sorted(positions)
    assert query_balance(client, bob, token, bob.address) == sum(range(1, 21))
    assert query_balance(cluster.client(1), bob, token, cluster.alice.address) == 10**6 - sum(range(1, 21))
    # native value from alice's node to bob's node
    before = client.account(bob.address).balance
    payment = client.submit(cluster.alice, Kind.CALL, bob.address, value=12345)
    client.receipt(payment)
    assert client.account(bob.address).balance == before + 12345
    genesis = launcher.minted(len(cluster.states)) + 10**18
    deadline = time.monotonic() + 10
    while native_total(cluster) != genesis and time.monotonic() < deadline:
        time.sleep(0.05)  # a reply may still be on its way between nodes
    assert native_total(cluster) == genesis
    assert bob_node != alice_node
    statuses = launcher.status(cluster.root)
    assert sum(s["forwarded"] for s in statuses) > 0 and all(s["up"] for s in statuses)


def test_fees_cross_nodes_as_messages_and_are_conserved(cluster: Cluster) -> None:
    """Pay by bid on a cluster (issue 23): the token's executor records fee and refund in the receipt;
    since alice's account and its coinbase may be held by other nodes, both travel as messages
    (bounce-kind, gas 0) sent with the receipt, and every node's ledger replays."""
    from missive.mailbox.store import Store
    from missive.market.fees import credit_messages

    alice_node = cluster.home(cluster.alice.address)["name"]
    token = deploy_token_away_from(cluster, {alice_node})
    token_node = cluster.home(token)
    client = cluster.client(0)
    before = client.account(cluster.alice.address).balance
    env = client.submit(cluster.alice, Kind.CALL, token, sel("transfer(address,uint256)")
                        + encode(["address", "uint256"], [cluster.alice.address, 1]), gas=300_000, bid=5)
    receipt, _ = client.receipt(env)
    assert receipt.success and receipt.fee == receipt.gas_used * 5 and receipt.refund == (300_000 - receipt.gas_used) * 5
    (token_dir,) = [n["dir"] for n in launcher.read_cluster(cluster.root)["nodes"] if n["name"] == token_node["name"]]
    with Store(Path(token_dir), readonly=True) as store:
        assert receipt.coinbase == store.coinbase()  # the executing node's worker
    for credit in credit_messages(receipt, cluster.alice.address):
        client.receipt(credit)  # handled by the node holding the account it pays
    deadline = time.monotonic() + 10
    while client.account(cluster.alice.address).balance != before - receipt.fee and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.account(cluster.alice.address).balance == before - receipt.fee
    assert client.account(receipt.coinbase).balance >= receipt.fee
    genesis = launcher.minted(len(cluster.states))
    while native_total(cluster) != genesis and time.monotonic() < deadline:
        time.sleep(0.05)
    assert native_total(cluster) == genesis
    from missive.actors.replay import replay

    for state in launcher.read_cluster(cluster.root)["nodes"]:
        with Store(Path(state["dir"]), readonly=True) as store:
            report = replay(store)
            assert report.ok, report.divergence and report.divergence.describe()


def test_waits_are_answered_when_the_receipt_or_the_reply_is_committed(cluster: Cluster) -> None:
    """``wait``/``wait_reply`` stay open until the message is handled (no polling), wherever it runs."""
    from missive.cluster.client import ClusterError
    from missive.mailbox.envelope import Envelope, EnvelopeError
    from missive.mailbox.records import Receipt

    alice_node = cluster.home(cluster.alice.address)["name"]
    token = deploy_token_away_from(cluster, {alice_node})
    client = cluster.client(1)
    query = client.submit(cluster.alice, Kind.QUERY, token,
                          sel("balanceOf(address)") + encode(["address"], [cluster.alice.address]), wants_reply=True)
    answer = client.call("wait_reply", {"request": query.id, "sender": cluster.alice.address, "timeout": 20},
                         timeout=30)
    reply, reply_receipt = Envelope.decode(answer["reply"]), Receipt.decode(answer["receipt"])
    assert reply.kind is Kind.REPLY and reply.request_id == query.id and reply_receipt.success
    assert decode(["uint256"], reply.payload)[0] == 10**6  # the deployer holds the whole supply
    # `wait` for the query answers what `receipt` does, from the token's node
    waited = client.call("wait", {"id": query.id, "recipient": token, "timeout": 20}, timeout=30)
    assert waited == client.call("receipt", {"id": query.id, "recipient": token})
    assert Receipt.decode(waited["receipt"]).success
    # a message never handled: an empty answer once the timeout is up
    assert client.call("wait", {"id": bytes(32), "recipient": token, "timeout": 0.2}) is None
    for bad in (-1, 31, "soon", True):
        with pytest.raises(ClusterError, match="timeout must be a number of seconds"):
            client.call("wait", {"id": query.id, "recipient": token, "timeout": bad})
    # submit and wait in one request, through a node that is not alice's (it forwards both)
    away = next(i for i, s in enumerate(cluster.states) if s["name"] != alice_node)
    asking = cluster.client(away)
    query, handled = asking.submit_wait(cluster.alice, Kind.QUERY, token,
                                        sel("balanceOf(address)") + encode(["address"], [cluster.alice.address]),
                                        wants_reply=True, until="reply", timeout=20)
    reply = Envelope.decode(handled["reply"])
    assert reply.request_id == query.id and decode(["uint256"], reply.payload)[0] == 10**6
    payment, handled = asking.submit_wait(cluster.alice, Kind.CALL, token, sel("transfer(address,uint256)")
                                          + encode(["address", "uint256"], [token, 5]), timeout=20)
    assert Receipt.decode(handled["receipt"]).success
    assert handled == client.call("receipt", {"id": payment.id, "recipient": token})
    with pytest.raises(EnvelopeError, match="asks for no reply"):  # accepted, but nothing to wait for
        asking.submit_wait(cluster.alice, Kind.CALL, token, b"", until="reply", timeout=1)
    with pytest.raises(ClusterError, match='until must be "receipt" or "reply"'):
        asking.call("submit_wait", {"record": b"x", "until": "soon"})
    # a record that is not a signed message: refused by name, the node keeps serving
    assert "malformed message" in asking.call("submit_wait", {"record": b"\x93\x01", "timeout": 1})["error"]


def test_killed_node_gets_its_messages_after_restart_exactly_once(cluster: Cluster) -> None:
    alice_node = cluster.home(cluster.alice.address)["name"]
    bob = cluster.account_elsewhere("bob", {alice_node})
    token = deploy_token_away_from(cluster, {alice_node})
    token_state = cluster.home(token)
    client = cluster.client(cluster.states.index(cluster.home(cluster.alice.address)))
    os.kill(token_state["pid"], signal.SIGKILL)
    # alice's node accepts (durably) while the token's node is dead: the messages wait in outbound
    sent = [client.submit(cluster.alice, Kind.CALL, token, sel("transfer(address,uint256)") + encode(["address", "uint256"], [bob.address, 1]))
            for _ in range(30)]
    time.sleep(0.5)
    (record,) = [n for n in launcher.read_cluster(cluster.root)["nodes"] if n["name"] == token_state["name"]]
    node_dir = Path(record["dir"])
    log = open(node_dir / "node.log", "ab")
    restarted = subprocess.Popen([sys.executable, "-m", "missive.cluster.node", str(node_dir / "node.toml")],
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for env in sent:
            receipt, _ = client.receipt(env, timeout=60)
            assert receipt.success
        assert query_balance(client, bob, token, bob.address) == 30  # each handled once
    finally:
        restarted.terminate()
        restarted.wait(10)
        log.close()


def test_hostile_bytes_do_not_take_a_node_down(cluster: Cluster) -> None:
    port = cluster.states[0]["port"]
    for junk in (b"", b"\x00" * 64, b"\xff\xff\xff\xff" + b"x" * 100, os.urandom(4096), b"\x00\x00\x00\x05hello"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(5)
            try:
                while s.recv(4096):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
    status = launcher.status(cluster.root)[0]
    assert status["up"] and all(status["peers"].values())


def test_the_cluster_has_one_chain_id_and_refuses_messages_signed_for_another(cluster: Cluster) -> None:
    import msgpack

    from missive.mailbox.envelope import Envelope

    chain_id = launcher.read_cluster(cluster.root)["chain_id"]
    assert {s["chain_id"] for s in launcher.status(cluster.root)} == {chain_id} and chain_id != 1
    for state in cluster.states:
        assert f"chain_id = {chain_id}\n" in (cluster.root / state["name"] / "node.toml").read_text()
    client = cluster.client(1)
    nonce = client.account(cluster.alice.address).nonce
    for wrong in (chain_id + 1, 1):
        signed = cluster.alice.sign(Envelope(Kind.CALL, cluster.alice.address, bytes(20), value=1, nonce=nonce,
                                             gas=50_000, chain_id=wrong))
        (answer,) = client.call("submit", [msgpack.packb([signed[0].canonical(), signed[1], signed[2]])])
        assert answer["error"] == (f"the message is signed for chain id {wrong}, not this ledger's ({chain_id}): "
                                   "it was made for another ledger")
    env = client.submit(cluster.alice, Kind.CALL, bytes(20), value=1)  # signed for the cluster: accepted
    assert env.chain_id == chain_id and client.receipt(env)[0].success


def test_cluster_cli_up_status_down(tmp_path: Path) -> None:
    root = tmp_path / "c"
    env = {**os.environ, "COLUMNS": "200"}

    def missive(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "missive", "cluster", *args, "--dir", str(root)],
                              capture_output=True, text=True, env=env, timeout=120)

    try:
        started = missive("up", "--nodes", "2")
        assert started.returncode == 0, started.stderr
        assert "n1" in started.stdout and "n2" in started.stdout and "n2✓" in started.stdout
        again = missive("up", "--nodes", "2")
        assert again.returncode != 0 and "already running" in again.stderr
        status = missive("status")
        chain_id = launcher.read_cluster(root)["chain_id"]
        assert status.returncode == 0 and f"chain id {chain_id} (CHAINID" in status.stdout
    finally:
        stopped = missive("down")
    assert stopped.returncode == 0 and "stopped n1, n2" in stopped.stdout
    after = missive("status")
    assert after.returncode != 0 and "down" in after.stdout
