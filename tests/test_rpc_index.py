"""`missive rpc` on a node: eth_sendTransaction for a key the operator unlocked, and the block and log
index kept on disk: a restarted endpoint answers blocks, receipts and logs as before, and a deleted
or damaged index is rebuilt from the ledger into the same blocks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rpc_support import REPO, rpc, start_rpc

from missive.cli.common import EXIT_NOT_FOUND, EXIT_USAGE
from missive.rpc.index import INDEX_DIR

TOPIC = "0x" + "ab" * 32
#: runtime: LOG1(memory[0:32], TOPIC); STOP.  Init code: copy the runtime out and return it.
RUNTIME = bytes.fromhex("7f" + "ab" * 32 + "60206000a100")
INIT = bytes.fromhex(f"60{len(RUNTIME):02x}80600b6000396000f3") + RUNTIME


def receipt_of(url: str, tx_hash: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while (found := rpc(url, "eth_getTransactionReceipt", tx_hash)["result"]) is None:
        assert time.monotonic() < deadline, tx_hash
        time.sleep(0.05)
    return dict(found)


def answers(url: str, emitter: str, tx_hashes: list[str]) -> dict[str, Any]:
    """What an Ethereum tool reads back: the head's number, each block, the receipts, the logs."""
    head = int(rpc(url, "eth_blockNumber")["result"], 16)
    return {"blocks": [rpc(url, "eth_getBlockByNumber", hex(n), False)["result"] for n in range(head + 1)],
            "receipts": [rpc(url, "eth_getTransactionReceipt", t)["result"] for t in tx_hashes],
            "logs": rpc(url, "eth_getLogs", {"fromBlock": "earliest", "address": emitter, "topics": [TOPIC]})["result"]}


def test_unlocked_key_sends_and_the_index_survives_restarts(tmp_path: Path) -> None:
    from missive.node import Node

    where = tmp_path / "node"
    with Node.init(where, default_balance=10**24) as node:
        alice = node.keystore.new("alice", kind="eth")
        node.send(alice.address, b"", value=10**21)
        node.run_until_idle(30)
    proc, url = start_rpc(where, "--unlock", "alice")
    try:
        assert rpc(url, "eth_accounts")["result"] == ["0x" + alice.address.hex()]
        me = "0x" + alice.address.hex()
        deployed = receipt_of(url, rpc(url, "eth_sendTransaction", {"from": me, "data": "0x" + INIT.hex()})["result"])
        emitter = deployed["contractAddress"]
        assert deployed["status"] == "0x1" and rpc(url, "eth_getCode", emitter)["result"] == "0x" + RUNTIME.hex()
        sent = [rpc(url, "eth_sendTransaction", {"from": me, "to": emitter})["result"] for _ in range(3)]
        for tx_hash in sent:
            assert receipt_of(url, tx_hash)["logs"][0]["topics"] == [TOPIC]
        stranger = rpc(url, "eth_sendTransaction", {"from": "0x" + "12" * 20, "to": emitter})
        assert stranger["error"]["code"] == -32000 and "--unlock" in stranger["error"]["message"]
        before = answers(url, emitter, sent)
    finally:
        proc.terminate()
        proc.wait(10)
    assert [entry["transactionHash"] for entry in before["logs"]] == sent
    with Node.open(where) as node:
        signer = node.keystore.get("alice")
        nonce = node.store.account(alice.address).nonce  # type: ignore[union-attr]
        chain_id = node.chain_id

    def same_after_restart() -> None:
        proc, url = start_rpc(where)  # nothing unlocked now
        try:
            assert answers(url, emitter, sent) == before
            assert rpc(url, "eth_accounts")["result"] == []
            # without --nonce-queue a future nonce is a bad request (issue 28): an error, nothing kept
            ahead = rpc(url, "eth_sendRawTransaction", "0x" + signer.sign_transaction(
                {"chainId": chain_id, "nonce": nonce + 5, "gas": 100_000, "gasPrice": 10**9, "to": bytes.fromhex(emitter[2:]),
                 "value": 0}).hex())
            assert ahead.get("error", {}).get("code") == -32000 and "nonce too high" in ahead["error"]["message"], ahead
            assert rpc(url, "eth_getTransactionCount", me, "pending")["result"] == hex(nonce)
        finally:
            proc.terminate()
            proc.wait(10)

    same_after_restart()  # the same blocks, receipts and logs, from the index on disk
    shutil.rmtree(where / INDEX_DIR)  # derived data: rebuilt from the ledger, into the same blocks
    same_after_restart()
    (where / INDEX_DIR / "data.mdb").write_bytes(b"damaged" * 1000)  # unreadable: rebuilt too
    same_after_restart()


def test_unlock_is_refused_beyond_loopback_and_for_missive_keys(tmp_path: Path) -> None:
    from missive.node import Node

    where = tmp_path / "node"
    with Node.init(where) as node:
        node.keystore.new("alice", kind="eth")
        node.keystore.new("bob")  # an Ed25519 key: it signs Missive messages only
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "missive", "rpc", "--dir", str(where), "--port", "0", *args],
                              capture_output=True, text=True, timeout=60, env=env)

    wide = run("--unlock", "alice", "--host", "0.0.0.0")
    assert wide.returncode == EXIT_USAGE and "--allow-insecure-unlock" in wide.stderr, wide.stderr
    missive_key = run("--unlock", "bob")
    assert missive_key.returncode == EXIT_USAGE and "Ed25519" in missive_key.stderr, missive_key.stderr
    unknown = run("--unlock", "carol")
    assert unknown.returncode == EXIT_NOT_FOUND and "carol" in unknown.stderr, unknown.stderr
    assert "Traceback" not in wide.stderr + missive_key.stderr + unknown.stderr
