"""The one-node CLI against a real 2-node cluster (``--node``/``--cluster``), and ``demo --cluster``.

Node processes run on 127.0.0.1; every command is a subprocess with a time
limit, and the fixture stops the cluster whatever happens.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from missive.cluster import launcher
from missive.cluster.placement import executor

TOKEN = Path(__file__).resolve().parents[1] / "examples" / "Token.vy"
ENV = {**os.environ, "COLUMNS": "200"}


def missive(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "missive", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def ok(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def failed(run: subprocess.CompletedProcess[str], expected: str) -> None:
    assert run.returncode != 0, run.stdout
    assert "Traceback" not in run.stderr and expected in run.stderr, run.stderr


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("cli") / "cluster"
    launcher.up(root, 2)
    try:
        yield root
    finally:
        launcher.down(root)


def nodes(root: Path) -> list[dict[str, object]]:
    return list(msgpack.unpackb((root / launcher.CLUSTER_FILE).read_bytes())["nodes"])


def test_deploy_on_one_node_send_and_query_through_the_other(cluster: Path) -> None:
    n1, n2 = nodes(cluster)
    other = f"127.0.0.1:{n2['port']}"
    members = sorted(bytes(n["id"]) for n in (n1, n2))  # type: ignore[arg-type]
    homes: dict[bytes, str] = {}  # node id -> an account living there
    for i in range(12):
        made = ok(missive("account", "new", f"acct{i}", "--fund", "10**18".replace("**", "e"), "--cluster", str(cluster)))
        address = bytes.fromhex(made.split()[2][2:])
        homes.setdefault(executor(address, members), f"acct{i}")
        if len(homes) == 2:
            break
    assert len(homes) == 2, "placement put a dozen accounts on one node"
    deployed = ok(missive("deploy", str(TOKEN), "T", "T", "1000000", "--cluster", str(cluster), "--node", "n1"))
    token = deployed.split("deployed  Token at ")[1].split()[0]
    token_home = executor(bytes.fromhex(token[2:]), members)
    away = next(name for node_id, name in homes.items() if node_id != token_home)  # its messages cross nodes
    # through n2 by address, keys and ABIs from the cluster directory
    sent = ok(missive("send", token, "transfer", away, "25", "--node", other, "--dir", str(cluster)))
    assert "status:    success" in sent and "Transfer(" in sent
    message_id = sent.split("message   ")[1].split()[0]
    # a query from an account on the other node than the token's: request and reply cross
    assert ok(missive("query", token, "balanceOf", away, "--from", away, "--node", other, "--dir",
                      str(cluster))).strip() == "25"
    assert ok(missive("query", token, "balanceOf(address)(uint256)", "default", "--from", away, "--cluster",
                      str(cluster), "--node", "n1")).strip() == str(10**6 - 25)
    receipt = ok(missive("receipt", message_id[:18], "--cluster", str(cluster)))
    assert "status:    success" in receipt and "transfer(" in receipt
    inbox = ok(missive("inbox", token, "--handled", "--cluster", str(cluster), "--node", "n2"))
    assert "handled message(s)" in inbox and "transfer(" in inbox
    assert "0 message(s) waiting" in ok(missive("inbox", token, "--cluster", str(cluster)))
    ledger = ok(missive("ledger", "--cluster", str(cluster)))
    assert "n1#" in ledger and "n2#" in ledger  # every node's own ledger
    only = ok(missive("ledger", "--cluster", str(cluster), "--node", "n1"))
    assert "n2#" not in only
    replayed = ok(missive("replay", "--cluster", str(cluster)))
    assert "n1: replay ok" in replayed and "n2: replay ok" in replayed and "all 2 nodes" in replayed
    assert "n2: replay ok" in ok(missive("replay", "--node", other, "--dir", str(cluster)))  # the operator's key
    failed(missive("replay", "--node", other, "--dir", str(cluster / "n2")), "replay needs the cluster operator's key")
    listed = ok(missive("account", "list", "--contracts", "--cluster", str(cluster)))
    assert away in listed and "[Token]" in listed


def test_errors_are_one_line_and_non_zero(cluster: Path) -> None:
    failed(missive("query", "0x" + "ab" * 20, "balanceOf(address)(uint256)", "default", "--node", "127.0.0.1:1",
                   "--dir", str(cluster)), "cannot reach node 127.0.0.1:1")
    failed(missive("inbox", "0x" + "ab" * 20, "--cluster", str(cluster), "--node", "n9"), "no such node")
    failed(missive("query", "0x" + "ab" * 20, "balanceOf(address)(uint256)", "default", "--cluster", str(cluster)),
           "no code")
    failed(missive("send", "0x" + "ab" * 20, "transfer(address,uint256)", "default", "many", "--cluster",
                   str(cluster)), "not an integer")
    failed(missive("receipt", "0xdeadbeefdead", "--cluster", str(cluster)), "no message")
    failed(missive("replay", "--cluster", str(cluster.parent / "none")), "no cluster at")
    n1 = f"127.0.0.1:{nodes(cluster)[0]['port']}"
    failed(missive("account", "new", "nokey", "--fund", "5", "--node", n1, "--dir", str(cluster / "n1")),
           "create_account needs the cluster operator's key")  # the node directory holds no operator key
    failed(missive("deploy", str(TOKEN), "T", "T", "1", "--node", "127.0.0.1:1"), "")


def test_demo_on_a_cluster_shows_crossings_and_stops_it(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    run = missive("demo", "--cluster", "--nodes", "2", "--messages", "60", "--senders", "4", "--pace", "0",
                  "--dir", str(root), timeout=300)
    out = ok(run)
    assert "⇒" in out and "crossed between nodes" in out
    # the escrow checks the token's code, which another node may execute: deployed code reaches every node
    assert "RELEASED" in out and "CANCELLED" in out, out
    for expected in ("token supply conserved", "native coin conserved", "every receipt matches", "the cluster is stopped"):
        assert expected in out
    for node in nodes(root):
        assert not launcher.alive(int(node["pid"]))


def test_a_cluster_node_directory_is_not_written_behind_its_back(cluster: Path) -> None:
    """Before: `account new eve --fund 99 --dir CLUSTER/n1` wrote a genesis record into the running
    node's ledger (and `send`/`serve` there would have run its actors outside the node)."""
    n1 = cluster / "n1"
    before = ok(missive("ledger", "--cluster", str(cluster), "--node", "n1"))  # read it through the cluster
    for command in (["account", "new", "eve", "--fund", "99"], ["serve"], ["ledger"]):
        failed(missive(*command, "--dir", str(n1)), f"{n1} is a node of the cluster at {cluster}")
    assert not (n1 / "keystore").exists()
    after = ok(missive("ledger", "--cluster", str(cluster), "--node", "n1"))
    assert after.count(" genesis ") == before.count(" genesis ")


def _cluster_processes(root: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"{root}/n[0-9]+/node.toml"], capture_output=True, text=True)
    return found.stdout.split()


def test_cluster_shape_is_kept_or_refused(tmp_path: Path) -> None:
    """Before: `cluster up --nodes 3` over a stopped 2-node cluster answered "unknown contract" for
    half the contracts, and `--replicas 2` silently became 1 on a plain restart."""
    root = tmp_path / "shaped"
    try:
        ok(missive("cluster", "up", "--nodes", "2", "--replicas", "2", "--dir", str(root)))
        counters = [ok(missive("deploy", str(TOKEN.parent / "Counter.vy"), "0x" + "00" * 20, "-q", "--cluster",
                               str(root))).strip() for _ in range(4)]
        ok(missive("cluster", "down", "--dir", str(root)))
        for options, shown in ((["--nodes", "3"], "3 node(s) and 2"), (["--replicas", "1"], "2 node(s) and 1")):
            refused = missive("cluster", "up", *options, "--dir", str(root))
            assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
            assert "has 2 node(s) and 2 holder(s) per actor" in refused.stderr and shown in refused.stderr
            assert _cluster_processes(root) == []  # nothing was started
        ok(missive("cluster", "up", "--dir", str(root)))  # its own shape
        assert msgpack.unpackb((root / launcher.CLUSTER_FILE).read_bytes())["replicas"] == 2
        for counter in counters:
            assert ok(missive("query", counter, "count", "--cluster", str(root))).strip() == "0"
    finally:
        if (root / launcher.CLUSTER_FILE).exists():
            launcher.down(root)


def test_interrupted_cluster_up_stops_what_it_started(tmp_path: Path) -> None:
    """Before: Ctrl-C during `cluster up` left node processes running and no keystore."""
    root = tmp_path / "half"
    process = subprocess.Popen([sys.executable, "-m", "missive", "cluster", "up", "--nodes", "3", "--dir", str(root)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 60
        while not (root / launcher.CLUSTER_FILE).exists():  # every node process is spawned
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, (out, err)
    assert "Traceback" not in err and "interrupted" in err
    assert _cluster_processes(root) == []
    assert not root.exists()  # a first `up` that did not finish leaves no half-made cluster
