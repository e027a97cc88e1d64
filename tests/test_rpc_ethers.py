"""ethers (npm, installed beside solc-js by `missive toolchain install`, as CI does) against `missive rpc`,
on an embedded node and on a real 3-node cluster: tests/js/ethers_erc20.cjs deploys a solc-compiled
ERC20, transfers, reads balances and filtered logs, reads a failing transfer's revert reason,
waits for the message tree and receives the Transfer log over a WebSocket subscription."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rpc_support import REPO, TOKEN, start_rpc

eth_account = pytest.importorskip("eth_account")

FUND = 10**21
SCRIPT = REPO / "tests" / "js" / "ethers_erc20.cjs"


@pytest.fixture(params=["node", "cluster"])
def endpoint(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``missive rpc`` for a node directory or a 3-node cluster, with a funded Ethereum account."""
    from missive.toolchain import ethers, solidity

    for reason in (solidity.missing_reason(), ethers.missing_reason()):
        if reason is not None:
            pytest.skip(f"{reason} (.ci/run installs it)")
    alice = eth_account.Account.create()
    if request.param == "node":
        from missive.node import Node

        where = tmp_path / "node"
        with Node.init(where, default_balance=10**24) as node:
            node.send(bytes.fromhex(alice.address[2:]), b"", value=FUND)
            node.run_until_idle(30)
            chain_id = node.chain_id
        proc, url = start_rpc(where)
        stop = None
    else:
        from missive.cluster import launcher
        from missive.cluster.remote import RemoteNode

        where = tmp_path / "cluster"
        launcher.up(where, 3)
        with RemoteNode.connect(cluster=where) as remote:
            remote.send(bytes.fromhex(alice.address[2:]), b"", value=FUND).receipt(timeout=30)
            chain_id = remote.chain_id
        proc, url = start_rpc(where, where="--cluster")
        stop = where
    try:
        yield {"url": url, "alice": alice, "chain_id": chain_id}
    finally:
        proc.terminate()
        proc.wait(10)
        if stop is not None:
            from missive.cluster import launcher

            launcher.down(stop)


def test_ethers_erc20_end_to_end(endpoint: dict[str, Any], tmp_path: Path) -> None:
    from missive.toolchain import ethers
    from missive.toolchain.compiler import compile_source

    compiled = compile_source(TOKEN)
    artifact = tmp_path / "token.json"
    artifact.write_text(json.dumps({"abi": compiled.abi, "bytecode": "0x" + compiled.bytecode.hex()}))
    alice = endpoint["alice"]
    env = {**ethers.node_env(), "ALICE_KEY": alice.key.hex()}
    script = subprocess.Popen(["node", str(SCRIPT), endpoint["url"], str(artifact)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = script.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        script.kill()
        out, err = script.communicate()
        raise AssertionError(f"the ethers script did not finish in 120 s: {err}{out}") from None
    assert script.returncode == 0, err + out
    seen = json.loads(out.strip().splitlines()[-1])
    bob = seen["bob"]
    assert seen["chainId"] == str(endpoint["chain_id"]) and seen["status"] == 1
    assert seen["logged"] == [[bob, "12345"]]
    assert seen["filtered"] == [[bob, "12345", seen["transfer"]]]
    assert (seen["bobBalance"], seen["aliceBalance"]) == ("12345", str(10**24 - 12345))
    assert seen["reason"] == "ERC20: transfer amount exceeds balance"
    assert seen["treeDone"] is True
    assert seen["pushed"] == {"to": bob, "value": "12345", "tx": seen["transfer"]}
