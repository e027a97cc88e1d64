"""`missive rpc --cluster`: web3.py against the endpoint of a real 3-node cluster (node processes on
127.0.0.1): the ERC20 run of the embedded node's test, then the endpoint restarted, and what it
answered before (the receipt, the block, the logs) answered the same from its index."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rpc_support import REPO, erc20_scenario, rpc, start_rpc

from missive.cli.common import EXIT_USAGE
from missive.cluster import launcher
from missive.cluster.remote import RemoteNode

eth_account = pytest.importorskip("eth_account")

FUND = 10**21


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("rpc-cluster") / "cluster"
    launcher.up(root, 3)
    try:
        alice = eth_account.Account.create()
        remote = RemoteNode.connect(cluster=root)
        try:
            remote.send(bytes.fromhex(alice.address[2:]), b"", value=FUND).receipt(timeout=30)
            chain_id = remote.chain_id
        finally:
            remote.close()
        yield {"root": root, "alice": alice, "chain_id": chain_id}
    finally:
        launcher.down(root)


def test_web3_erc20_on_a_cluster_and_the_index_survives_a_restart(cluster: dict[str, Any]) -> None:
    proc, url = start_rpc(cluster["root"], where="--cluster")
    try:
        made = erc20_scenario(url, cluster["alice"], cluster["chain_id"], FUND)
        transfer = made["transfer"].to_0x_hex()
        receipt = rpc(url, "eth_getTransactionReceipt", transfer)["result"]
        logs = rpc(url, "eth_getLogs", {"fromBlock": "0x0", "address": made["token"]})["result"]
        block = rpc(url, "eth_getBlockByNumber", receipt["blockNumber"], False)["result"]
        head = int(rpc(url, "eth_blockNumber")["result"], 16)
    finally:
        proc.terminate()
        proc.wait(10)
    assert len(logs) >= 2 and transfer in [entry["transactionHash"] for entry in logs]  # the mint and the transfer
    assert transfer in block["transactions"]

    proc, url = start_rpc(cluster["root"], where="--cluster")
    try:
        assert int(rpc(url, "eth_blockNumber")["result"], 16) >= head
        assert rpc(url, "eth_getTransactionReceipt", transfer)["result"] == receipt
        assert rpc(url, "eth_getLogs", {"fromBlock": "0x0", "address": made["token"]})["result"] == logs
        assert rpc(url, "eth_getBlockByNumber", receipt["blockNumber"], False)["result"] == block
        assert rpc(url, "eth_getBlockByHash", block["hash"], False)["result"] == block
        tx = rpc(url, "eth_getTransactionByHash", transfer)["result"]
        assert tx["from"].lower() == cluster["alice"].address.lower() and tx["to"].lower() == made["token"].lower()
    finally:
        proc.terminate()
        proc.wait(10)


def test_cluster_endpoint_refuses_dir_and_cluster_together(tmp_path: Path, cluster: dict[str, Any]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "missive", "rpc", "--cluster", str(cluster["root"]), "--dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == EXIT_USAGE and "not both" in done.stderr, done.stderr
