"""The doors of a cluster node (issue 20), on real node processes on 127.0.0.1.

* administrative requests (shutdown, create_account, replay) need the operator's key;
* the faucet exists only in development mode, and a node with no operator says so;
* every request's parameters are checked at the door: junk to every method gets one error
  line each, the node keeps serving, and its log has no traceback;
* bug 7: a create_account with a 19-byte address is refused before anything is written,
  so the cluster keeps acknowledging submits;
* bug 10: ``cluster down`` never signals a PID that is no longer its node.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from test_cluster import Cluster

from missive.cluster import launcher
from missive.cluster.client import ClusterClient, ClusterError, acall, connect
from missive.cluster.config import ConfigError, NodeConfig, load
from missive.cluster.node import ClusterNode
from missive.mailbox.disk import StoreError
from missive.mailbox.envelope import Kind
from missive.mailbox.store import Store
from missive.net import NodeIdentity, RemoteError

#: Parameters no method takes: each is the wrong type, size or shape for every one of them.
JUNK: list[Any] = [
    0, -1, 2**64 - 1, 1.5, True, "x", b"", b"\x00" * 19, b"\x00" * 33, [1, "a"], [[b"x"]], {b"k": 1},
    {"address": 5}, {"id": "x", "recipient": 1}, {"start": -1}, {"timeout": -5}, {"record": 7},
    {"prefix": b""}, {"actor": b"x"}, {"diffs": "x", "executing": 3},
    {"address": b"\x01" * 19, "public_key": b"\x02" * 32, "balance": b"\x01"},
    {"id": b"\x00" * 32, "recipient": b"\x00" * 20, "timeout": "soon"},
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("doors") / "cluster", 2, replicas=2)
    try:
        yield c
    finally:
        c.stop()


def node_log(cluster: Cluster, name: str) -> str:
    return (cluster.root / name / "node.log").read_text(errors="replace")


def test_the_operator_key_is_the_clusters_own_and_private(cluster: Cluster) -> None:
    key_file = cluster.root / "operator.key"
    assert cluster.operator is not None and key_file.stat().st_mode & 0o777 == 0o600
    for state in cluster.states:
        config = (cluster.root / state["name"] / "node.toml").read_text()
        assert f'operator = "{cluster.operator.node_id.hex()}"' in config and "development = true" in config


def test_administrative_requests_need_the_operator_key(cluster: Cluster) -> None:
    stranger = cluster.stranger(0)
    with pytest.raises(ClusterError, match="shutdown needs the cluster operator's key"):
        stranger.call("shutdown")
    newcomer = cluster.keys.new("newcomer")
    with pytest.raises(ClusterError, match="create_account needs the cluster operator's key"):
        stranger.create_account(newcomer, 10**30)
    with pytest.raises(ClusterError, match="replay needs the cluster operator's key"):
        stranger.call("replay", {})
    # nothing happened: both nodes serve, no account was minted
    assert all(s["up"] and s["serving"] for s in launcher.status(cluster.root))
    assert stranger.account(newcomer.address) is None
    # the operator may
    report = cluster.client(1).call("replay", {}, timeout=60)
    assert report["divergence"] is None and report["name"] == cluster.states[1]["name"]
    cluster.client(0).create_account(newcomer, 5)
    assert stranger.account(newcomer.address).balance == 5
    log = node_log(cluster, cluster.states[0]["name"])
    assert "bad shutdown request" in log and "Traceback" not in log


def test_a_bad_create_account_is_refused_and_submits_are_still_acknowledged(cluster: Cluster) -> None:
    """Bug 7: an account with a 19-byte address was written, its state diff refused by every peer
    and resent every second forever, and the node never acknowledged a submit again."""
    operator = cluster.client(0)
    for params, why in (
        ({"address": b"\x07" * 19, "public_key": b"\x01" * 32, "balance": (5).to_bytes(32, "big")},
         "address must be 20 bytes, not 19 bytes"),
        ({"address": b"\x07" * 20, "public_key": b"\x01" * 31, "balance": (5).to_bytes(32, "big")},
         "public_key must be 32 bytes, not 31 bytes"),
        ({"address": b"\x07" * 20, "public_key": b"\x01" * 32, "balance": b"\x01" * 33},
         "balance must be a non-negative amount below 2\\*\\*256"),
        ({"address": b"\x07" * 20, "public_key": b"\x01" * 32, "balance": -1},
         "balance must be a non-negative amount below 2\\*\\*256"),
    ):
        with pytest.raises(ClusterError, match=f"create_account: {why}") as info:
            operator.call("create_account", params)
        assert "\n" not in str(info.value)
    assert operator.account(b"\x07" * 20) is None
    # a good submit through either node is acknowledged (it waits for its diff to reach the replica)
    for i in range(2):
        client = cluster.client(i)
        envelope = client.submit(cluster.alice, Kind.CALL, cluster.alice.address)
        receipt, _ = client.receipt(envelope, timeout=20)
        assert receipt.success
    deadline = time.monotonic() + 10
    while any(s["replicating"] for s in launcher.status(cluster.root)):
        assert time.monotonic() < deadline, "state diffs still waiting: a peer refuses them"
        time.sleep(0.1)
    for state in cluster.states:
        assert "refused a state diff" not in node_log(cluster, state["name"])


def method_names(tmp_path: Path) -> list[str]:
    """Every RPC method a node serves, from ``ClusterNode.handlers()`` itself."""
    node = ClusterNode(NodeConfig("probe", tmp_path / "probe", "127.0.0.1", 0))
    try:
        return sorted(node.handlers())
    finally:
        node.store.close()
        node.trust.state.close()


def _is_error(method: str, answer: Any) -> bool:
    """Whether an answer refuses the request: an error line, or for the batch methods (``submit``
    answers each record, ``submit_wait`` its one) nothing but refusals."""
    if isinstance(answer, RemoteError):
        return "\n" not in answer.message and bool(answer.message)
    if method == "submit":
        return isinstance(answer, list) and all("error" in a for a in answer)
    if method == "submit_wait":
        return isinstance(answer, dict) and set(answer) == {"error"}
    return False


async def _throw_junk(port: int, identity: NodeIdentity | None, methods: list[str]) -> list[tuple[str, Any, Any]]:
    """Every junk parameter to every method on one connection; (method, params, answer) each."""
    answers = []
    async with connect("127.0.0.1", port, identity=identity) as conn:
        for method in methods:
            for params in JUNK:
                try:
                    answer: Any = await conn.call(method, params, timeout=10)
                except RemoteError as exc:
                    answer = exc
                answers.append((method, params, answer))
    return answers


def test_junk_to_every_method_gets_one_error_line_and_no_traceback(cluster: Cluster, tmp_path: Path) -> None:
    methods = method_names(tmp_path) + ["no_such_method"]
    assert {"shutdown", "create_account", "replay", "submit", "apply", "status"} <= set(methods)
    target = cluster.states[0]
    log_file = cluster.root / target["name"] / "node.log"
    logged_before = len(log_file.read_bytes())
    answers = trio.run(_throw_junk, target["port"], None, methods)
    # as the operator too (but not shutdown: the operator may stop the node, whatever it sends)
    answers += trio.run(_throw_junk, target["port"], cluster.operator, [m for m in methods if m != "shutdown"])
    wrong = [(m, p, a) for m, p, a in answers if not _is_error(m, a)]
    assert not wrong, wrong[:5]
    assert len(answers) > 1000
    # the node keeps serving, both of them
    assert all(s["up"] and s["serving"] and all(s["peers"].values()) for s in launcher.status(cluster.root))
    assert trio.run(acall, "127.0.0.1", target["port"], "progress")
    time.sleep(0.5)  # the node's log lines reach its file
    log = log_file.read_bytes()[logged_before:].decode(errors="replace")
    assert "Traceback" not in node_log(cluster, target["name"])
    assert " ERROR " not in log
    # logged once each: one line per error answered (unknown methods only at DEBUG, not in the log)
    refused = sum(1 for m, _, a in answers if isinstance(a, RemoteError) and m != "no_such_method")
    assert len(re.findall(r"missive\.net\.rpc (?:INFO|WARNING) bad ", log)) == refused


def test_store_create_account_refuses_malformed_accounts_before_writing(tmp_path: Path) -> None:
    store = Store(tmp_path / "node", create=True)
    try:
        before = store.next_seq()
        for address, key, balance, why in ((b"\x01" * 19, b"\x02" * 32, 1, "address is 20 bytes"),
                                           (b"\x01" * 20, b"\x02" * 33, 1, "public key is 32 bytes"),
                                           (b"\x01" * 20, b"\x02" * 32, -1, "balance is a whole number"),
                                           (b"\x01" * 20, b"\x02" * 32, 2**256, "balance is a whole number")):
            with pytest.raises(StoreError, match=why):
                store.create_account(address, key, balance)
        assert store.next_seq() == before and store.accounts() == []  # nothing written
        store.create_account(b"\x01" * 20, b"\x02" * 32, 2**256 - 1)
        assert store.account(b"\x01" * 20).balance == 2**256 - 1  # type: ignore[union-attr]
    finally:
        store.close()


def _run_node(tmp_path: Path, name: str, **fields: Any) -> tuple[subprocess.Popen[bytes], Path, int]:
    """One node alone (``python -m missive.cluster.node``), with ``fields`` in its config."""
    node_dir = tmp_path / name
    node_dir.mkdir()
    config = node_dir / "node.toml"
    config.write_text(NodeConfig(name, node_dir, "127.0.0.1", 0, **fields).dump())
    log = node_dir / "node.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "missive.cluster.node", str(config)],
                                   stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not (node_dir / "port").exists() or "serving" not in log.read_text():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the node did not start"
        time.sleep(0.05)
    return process, log, int((node_dir / "port").read_text())


def _ask(port: int, method: str, params: Any, identity: NodeIdentity | None = None) -> str:
    client = ClusterClient("127.0.0.1", port, identity)
    try:
        return repr(client.call(method, params))
    except ClusterError as exc:
        return str(exc)


def test_a_node_without_operator_or_development_mode_refuses_and_says_so(tmp_path: Path) -> None:
    operator = NodeIdentity.generate()
    account = {"address": b"\x05" * 20, "public_key": b"\x06" * 32, "balance": (10**18).to_bytes(32, "big")}
    bare, bare_log, port = _run_node(tmp_path, "bare")
    try:
        for method, params in (("create_account", account), ("shutdown", None), ("replay", {})):
            answer = _ask(port, method, params, operator)
            assert answer.endswith(f"{method} needs the cluster operator's key, and this node has none configured "
                                   '(operator = "hex id" in its config)'), answer
        assert _ask(port, "account", account["address"]) == "None"
        warned = [line for line in bare_log.read_text().splitlines() if "no operator in the config" in line]
        assert len(warned) == 1 and "shutdown, create_account and replay are refused to everybody" in warned[0]
    finally:
        bare.terminate()
        bare.wait(10)
    production, _, port = _run_node(tmp_path, "production", operator=operator.node_id)
    try:
        answer = _ask(port, "create_account", account, operator)
        assert answer.endswith("create_account is the development faucet, and it is off on this node "
                               "(development = true in the config turns it on)"), answer
        assert _ask(port, "account", account["address"]) == "None"
        assert _ask(port, "replay", {}, operator).startswith("{")  # the operator's other requests work
        assert _ask(port, "shutdown", None, operator) == "True"
        assert production.wait(10) == 0
    finally:
        if production.poll() is None:
            production.kill()
            production.wait(10)


def test_cluster_down_leaves_a_process_that_took_a_dead_nodes_pid_alone(tmp_path: Path) -> None:
    """Bug 10: ``down`` signalled the recorded PID of a dead node without checking it was still
    that node; the system may have given the PID to anyone since."""
    root = tmp_path / "c"
    launcher.up(root, 1)
    data = msgpack.unpackb((root / launcher.CLUSTER_FILE).read_bytes())
    (record,) = data["nodes"]
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        assert launcher._is_node(record["pid"], record) and not launcher._is_node(stranger.pid, record)
        os.kill(record["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while launcher.alive(record["pid"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        record["pid"] = stranger.pid  # as if the system had given the dead node's PID to `sleep`
        (root / launcher.CLUSTER_FILE).write_bytes(msgpack.packb(data))
        said: list[str] = []
        assert launcher.down(root, timeout=1.0, say=said.append) == ["n1"]
        assert stranger.poll() is None, "down killed a process that was not its node"
        assert said == [f"left pid {stranger.pid} alone: it is not node n1 any more (that node is not running)"]
    finally:
        stranger.kill()
        stranger.wait(10)


def test_config_carries_the_doors_settings(tmp_path: Path) -> None:
    operator = NodeIdentity.generate().node_id
    config = NodeConfig("n1", tmp_path, "127.0.0.1", 0, operator=operator, development=True,
                        connections_per_key=4, idle_timeout=0.5)
    path = tmp_path / "node.toml"
    path.write_text(config.dump())
    assert load(path) == config
    path.write_text(NodeConfig("n1", tmp_path, "127.0.0.1", 0).dump())
    plain = load(path)
    assert plain.operator is None and not plain.development  # refuses admin requests; no faucet
    for line, expected in (('operator = "abcd"', "operator must be 64 hex digits"),
                           ('development = "yes"', "development must be true or false"),
                           ("connections_per_key = 0", "connections_per_key must be an integer from 1"),
                           ("idle_timeout = -1", "idle_timeout must be a number of seconds")):
        path.write_text(f'name = "n1"\ndir = "{tmp_path}"\n{line}\n')
        with pytest.raises(ConfigError, match=expected):
            load(path)
