"""What the `missive rpc` tests share: starting the endpoint, JSON-RPC requests, the web3.py ERC20 run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
TOKEN = REPO / "tests" / "solidity" / "OZToken.sol"


def start_rpc(node_dir: Path, *extra: str, where: str = "--dir") -> tuple[subprocess.Popen[str], str]:
    """``missive rpc`` on a free port for a node directory (``where="--cluster"``: a cluster's); (process, URL)."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "missive", "rpc", where, str(node_dir), "--port", "0", *extra],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    assert proc.stderr is not None
    line = seen = ""
    while line.strip() or not seen:  # warnings (an index rebuilt, say) may come before the line
        line = proc.stderr.readline()
        seen += line
        if (found := re.search(r"serving .* on (http://\S+) ", line)) is not None or not line:
            break
    line = seen
    if found is None:
        try:
            rest = proc.communicate(timeout=10)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            rest = proc.communicate()[1]
        raise AssertionError(f"missive rpc did not start: {line}{rest}")
    return proc, found.group(1)


def post(url: str, body: bytes | str) -> tuple[int, Any]:
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def rpc(url: str, method: str, *params: Any) -> Any:
    status, answer = post(url, json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}))
    assert status == 200, answer
    return answer


def erc20_scenario(url: str, alice: Any, chain_id: int, fund: int) -> dict[str, Any]:
    """web3.py against ``missive rpc`` at ``url`` (a node's or a cluster's): an OpenZeppelin-style ERC20
    compiled by solc-js deployed by ``alice`` (holding ``fund``), transferred, read, its Transfer logs
    filtered and pushed over a WebSocket subscription, a failing transfer's revert reason, the message
    tree.  What it made: {token, transfer, failed} (addresses and transaction hashes)."""
    import web3
    from eth_account import Account
    from websockets.sync import client as ws_client

    from missive.toolchain import solidity

    if solidity.missing_reason() is not None:
        pytest.skip(f"{solidity.missing_reason()} (.ci/run installs it)")
    from missive.toolchain.compiler import compile_source

    compiled = compile_source(TOKEN)
    w3 = web3.Web3(web3.Web3.HTTPProvider(url))
    assert w3.eth.chain_id == chain_id
    assert w3.eth.get_balance(alice.address) == fund

    def send(tx: dict[str, Any]) -> Any:
        tx = {**tx, "nonce": w3.eth.get_transaction_count(alice.address)}
        tx_hash = w3.eth.send_raw_transaction(alice.sign_transaction(tx).raw_transaction)
        return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.05)

    factory = w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
    deployed = send(factory.constructor("Token", "TOK", 10**24).build_transaction({"from": alice.address}))
    assert deployed.status == 1 and deployed.contractAddress
    token = w3.eth.contract(address=deployed.contractAddress, abi=compiled.abi)
    assert w3.eth.get_code(token.address) == compiled.runtime_bytecode
    assert token.functions.symbol().call() == "TOK"
    assert token.functions.balanceOf(alice.address).call() == 10**24

    bob = Account.create().address
    log_filter = w3.eth.filter({"address": token.address})
    ws = ws_client.connect(url.replace("http://", "ws://"))
    ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                        "params": ["logs", {"address": token.address}]}))
    subscription = json.loads(ws.recv(timeout=10))["result"]
    receipt = send(token.functions.transfer(bob, 12_345).build_transaction({"from": alice.address}))
    assert receipt.status == 1 and receipt.gasUsed > 0
    (event,) = token.events.Transfer().process_receipt(receipt)
    assert (event.args["from"], event.args["to"], event.args["value"]) == (alice.address, bob, 12_345)
    assert token.functions.balanceOf(bob).call() == 12_345
    assert token.functions.balanceOf(alice.address).call() == 10**24 - 12_345

    logs = token.events.Transfer.get_logs(from_block=0, argument_filters={"to": bob})
    assert [(e.args["value"], e.transactionHash) for e in logs] == [(12_345, receipt.transactionHash)]
    changes = log_filter.get_new_entries()
    assert [c["transactionHash"] for c in changes] == [receipt.transactionHash]
    assert log_filter.get_new_entries() == []
    with ws:  # the subscription pushed the same log
        note = json.loads(ws.recv(timeout=20))
        assert note["params"]["subscription"] == subscription
        assert note["params"]["result"]["transactionHash"] == receipt.transactionHash.to_0x_hex()
    block = w3.eth.get_block(receipt.blockNumber)
    assert receipt.transactionHash in block.transactions and block.hash == receipt.blockHash
    tx = w3.eth.get_transaction(receipt.transactionHash)
    assert tx["from"] == alice.address and tx["to"] == token.address and tx["nonce"] == 1

    # a failing transfer: the simulation says why, and so does the receipt of the one sent anyway
    with pytest.raises(web3.exceptions.ContractLogicError, match="transfer amount exceeds balance"):
        token.functions.transfer(alice.address, 10**6).call({"from": bob})
    failed = send(token.functions.transfer(bob, 10**30).build_transaction({"from": alice.address, "gas": 100_000}))
    assert failed.status == 0
    assert failed["revertReason"] == "ERC20: transfer amount exceeds balance"
    tree = rpc(url, "missive_traceTransaction", failed.transactionHash.to_0x_hex())["result"]
    assert tree["status"] == "revert" and tree["revertReason"] == "ERC20: transfer amount exceeds balance"
    waited = rpc(url, "missive_waitForTree", receipt.transactionHash.to_0x_hex(), 5)["result"]
    assert waited["done"] and waited["unfinished"] == []
    return {"token": token.address, "transfer": receipt.transactionHash, "failed": failed.transactionHash}
