"""The one-node CLI against a real 2-node cluster (``--node``/``--cluster``), and ``demo --cluster``.

Node processes run on 127.0.0.1; every command is a subprocess with a time
limit, and the fixture stops the cluster whatever happens.
"""

from __future__ import annotations

import os
import subprocess
import sys
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
