"""`missive rpc` end to end: web3.py against the endpoint on an embedded node (a solc-compiled
ERC20 deployed, transferred, read, its Transfer logs filtered, a failing transfer's revert reason),
Ethereum transactions refused as Ethereum nodes refuse them (another chain, a reused or future
nonce, an underpriced fee), hypothesis-generated bad requests, and the ledger replayed afterwards
with every signature (Ethereum ones included) checked again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rpc_support import erc20_scenario, post, rpc, start_rpc

from missive.mailbox import ethtx
from missive.mailbox.envelope import EnvelopeError

web3 = pytest.importorskip("web3", reason="web3.py is a test extra (pip install -e '.[test]')")
eth_account = pytest.importorskip("eth_account")

REPO = Path(__file__).resolve().parent.parent
FUND = 10**21
STANDARD_CODES = {-32700, -32600, -32601, -32602, -32603, -32000, -32005, 3}


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from missive.node import Node

    where = tmp_path_factory.mktemp("rpc") / "node"
    alice = eth_account.Account.create()
    with Node.init(where, default_balance=10**24) as node:
        node.send(bytes.fromhex(alice.address[2:]), b"", value=FUND)
        node.run_until_idle(30)
        chain_id = node.chain_id
    proc, url = start_rpc(where, "--nonce-queue", "64")  # as geth's pool: a wallet may send ahead
    try:
        yield {"url": url, "dir": where, "alice": alice, "chain_id": chain_id, "proc": proc}
    finally:
        proc.terminate()
        proc.wait(10)


def signed(account: Any, chain_id: int, nonce: int, **fields: Any) -> bytes:
    tx = {"chainId": chain_id, "nonce": nonce, "gas": 100_000, "maxFeePerGas": 3 * 10**9,
          "maxPriorityFeePerGas": 10**9, "to": account.address, "value": 1, "data": b""}
    tx.update(fields)
    return bytes(account.sign_transaction(tx).raw_transaction)


# -- decoding: every kind eth-account signs, and what is refused ------------------------------------


@pytest.mark.parametrize("kind", ["legacy", "2930", "1559"])
def test_decode_matches_eth_account(kind: str) -> None:
    account = eth_account.Account.create()
    fields: dict[str, Any] = {"chainId": 77_123, "nonce": 5, "gas": 50_000, "to": account.address, "value": 7,
                              "data": b"\x12\x34"}
    if kind == "1559":
        fields.update(maxFeePerGas=2 * 10**9, maxPriorityFeePerGas=10**9)
    else:
        fields["gasPrice"] = 2 * 10**9
        if kind == "2930":
            fields.update(type=1, accessList=[{"address": account.address, "storageKeys": ["0x" + "00" * 32]}])
    raw = bytes(account.sign_transaction(fields).raw_transaction)
    tx = ethtx.decode(raw)
    assert tx.sender.hex() == account.address[2:].lower()
    assert (tx.chain_id, tx.nonce, tx.gas, tx.value, tx.data, tx.gas_price) == (77_123, 5, 50_000, 7, b"\x12\x34",
                                                                               2 * 10**9)
    assert tx.hash == web3.Web3.keccak(raw)
    assert ethtx.tx_type(raw) == tx.type == {"legacy": 0, "2930": 1, "1559": 2}[kind]  # (what receipts say)
    envelope = tx.envelope(3)
    assert ethtx.verify(envelope, tx.public_key, raw) == tx
    with pytest.raises(EnvelopeError, match="is not the transaction"):  # a field changed: the raw tx no longer matches
        ethtx.verify(type(envelope)(envelope.kind, envelope.sender, envelope.recipient, value=8,
                                    payload=envelope.payload, gas=envelope.gas, bid=envelope.bid,
                                    nonce=envelope.nonce, time=3, chain_id=envelope.chain_id),
                     tx.public_key, raw)


def test_decode_refuses_what_ethereum_nodes_refuse() -> None:
    account = eth_account.Account.create()
    pre155 = bytes(account.sign_transaction({"nonce": 0, "gas": 21_000, "gasPrice": 10**9, "to": account.address,
                                             "value": 0}).raw_transaction)
    with pytest.raises(EnvelopeError, match="pre-EIP-155"):
        ethtx.decode(pre155)
    with pytest.raises(EnvelopeError, match="type-3"):
        ethtx.decode(b"\x03\xc0")
    with pytest.raises(EnvelopeError, match="not RLP|expected"):
        ethtx.decode(b"\x02\x01\x02")
    good = signed(account, 5, 0)
    with pytest.raises(EnvelopeError):  # a flipped byte: another signer, or no valid signature at all
        tx = ethtx.decode(good[:-3] + bytes([good[-3] ^ 1]) + good[-2:])
        assert tx.sender.hex() != account.address[2:].lower()
        raise EnvelopeError("recovered another signer")


# -- web3.py against `missive rpc` -------------------------------------------------------------------


def test_web3_erc20_end_to_end(endpoint: dict[str, Any]) -> None:
    erc20_scenario(endpoint["url"], endpoint["alice"], endpoint["chain_id"], FUND)


def test_refusals_change_nothing(endpoint: dict[str, Any]) -> None:
    url, chain_id = endpoint["url"], endpoint["chain_id"]
    carol = eth_account.Account.create()
    alice = endpoint["alice"]
    nonce = int(rpc(url, "eth_getTransactionCount", alice.address, "latest")["result"], 16)
    balance = rpc(url, "eth_getBalance", alice.address)["result"]
    head = rpc(url, "eth_blockNumber")["result"]
    cases = [
        (signed(alice, chain_id + 1, nonce), "invalid chain id"),
        (signed(alice, chain_id, nonce + 100), "nonce too high"),  # beyond what waits for earlier nonces
        (signed(alice, chain_id, nonce, maxFeePerGas=10**8, maxPriorityFeePerGas=0), "underpriced"),
        (signed(alice, chain_id, nonce, gas=20_000), "intrinsic gas too low"),
        (signed(alice, chain_id, nonce, value=FUND * 10), "insufficient funds"),
        (signed(carol, chain_id, 0), "insufficient funds"),
    ]
    for raw, words in cases:
        answer = rpc(url, "eth_sendRawTransaction", "0x" + raw.hex())
        assert answer["error"]["code"] == -32000 and words in answer["error"]["message"], (words, answer)
    assert rpc(url, "eth_getBalance", alice.address)["result"] == balance
    assert int(rpc(url, "eth_getTransactionCount", alice.address)["result"], 16) == nonce
    assert rpc(url, "eth_blockNumber")["result"] == head  # nothing was written

    good = "0x" + signed(alice, chain_id, nonce).hex()
    first = rpc(url, "eth_sendRawTransaction", good)["result"]
    assert rpc(url, "eth_sendRawTransaction", good)["result"] == first  # the same transaction again: known
    reused = rpc(url, "eth_sendRawTransaction", "0x" + signed(alice, chain_id, nonce, value=2).hex())
    assert "nonce too low" in reused["error"]["message"]
    deadline = time.monotonic() + 20
    while rpc(url, "eth_getTransactionReceipt", first)["result"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_transactions_ahead_of_their_nonce_wait_in_a_bounded_queue(endpoint: dict[str, Any]) -> None:
    """A wallet's transactions arriving out of order: those ahead wait and go in once the gap is filled;
    "pending" counts what is admitted (handled or not); the queue is bounded and says so."""
    from missive.rpc.pool import MAX_PER_SENDER

    url, chain_id, alice = endpoint["url"], endpoint["chain_id"], endpoint["alice"]
    dave = eth_account.Account.create()

    def count(who: Any, tag: str) -> int:
        return int(rpc(url, "eth_getTransactionCount", who.address, tag)["result"], 16)

    def send(raw: bytes) -> Any:
        return rpc(url, "eth_sendRawTransaction", "0x" + raw.hex())

    def handled(tx_hash: str) -> None:
        deadline = time.monotonic() + 20
        while rpc(url, "eth_getTransactionReceipt", tx_hash)["result"] is None:
            assert time.monotonic() < deadline, tx_hash
            time.sleep(0.05)

    handled(send(signed(alice, chain_id, count(alice, "pending"), to=dave.address, value=10**19))["result"])
    assert count(dave, "pending") == count(dave, "latest") == 0
    later = [send(signed(dave, chain_id, n))["result"] for n in (2, 1)]  # ahead of nonce 0: they wait
    queued = rpc(url, "eth_getTransactionByHash", later[0])["result"]
    assert queued["missiveQueued"] and queued["blockHash"] is None and queued["nonce"] == "0x2"
    assert count(dave, "pending") == 0 and rpc(url, "eth_getTransactionReceipt", later[0])["result"] is None
    first = send(signed(dave, chain_id, 0))["result"]
    assert count(dave, "pending") == 3  # all three admitted by now, handled or not
    for tx_hash in (first, *later):
        handled(tx_hash)
    assert count(dave, "latest") == 3

    ahead = [send(signed(dave, chain_id, n)) for n in range(5, 5 + MAX_PER_SENDER + 1)]  # nonce 3 and 4 missing
    assert all("result" in answer for answer in ahead[:MAX_PER_SENDER]), ahead
    assert ahead[-1]["error"]["code"] == -32000 and "txpool is full" in ahead[-1]["error"]["message"]
    again = send(signed(dave, chain_id, 5, value=2))  # the same nonce at the same fee: not a replacement
    assert "replacement transaction underpriced" in again["error"]["message"]
    assert count(dave, "pending") == 3
    gap = [send(signed(dave, chain_id, n))["result"] for n in (3, 4)]
    assert count(dave, "pending") == 5 + MAX_PER_SENDER
    handled(gap[1])
    handled(ahead[MAX_PER_SENDER - 1]["result"])


def test_protocol_errors(endpoint: dict[str, Any]) -> None:
    url = endpoint["url"]
    assert post(url, "{nope")[1]["error"]["code"] == -32700
    assert post(url, "[]")[1]["error"]["code"] == -32600
    assert post(url, "3")[1]["error"]["code"] == -32600
    assert post(url, '{"jsonrpc": "2.0", "id": 1, "method": "eth_nothing"}')[1]["error"]["code"] == -32601
    assert rpc(url, "eth_getBalance", "0x12")["error"]["code"] == -32602
    assert rpc(url, "eth_getBalance")["error"]["code"] == -32602
    assert rpc(url, "eth_sendRawTransaction", "0x02c0")["error"]["code"] == -32602
    status, answer = post(url, b"[" + b"1," * (1 << 20) + b"1]")
    assert status == 413 and answer["error"]["code"] == -32600
    batch = post(url, json.dumps([{"jsonrpc": "2.0", "id": i, "method": "eth_chainId"} for i in range(3)]))[1]
    assert [a["id"] for a in batch] == [0, 1, 2]
    assert post(url, '{"jsonrpc": "2.0", "method": "eth_chainId"}') == (200, None)  # a notification: no answer


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
METHODS = st.sampled_from(["eth_getBalance", "eth_call", "eth_sendRawTransaction", "eth_getLogs", "eth_getBlockByNumber",
                           "eth_getTransactionReceipt", "eth_estimateGas", "eth_getStorageAt", "eth_feeHistory",
                           "eth_newFilter", "eth_getFilterChanges", "missive_waitForTree", "missive_traceTransaction",
                           "eth_chainId", "nonsense"])
HEXISH = st.one_of(st.binary(max_size=40).map(lambda b: "0x" + b.hex()), st.text(max_size=10), JSON)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(
    st.binary(max_size=200),
    JSON.map(json.dumps),
    st.builds(lambda m, p, i: json.dumps({"jsonrpc": "2.0", "id": i, "method": m, "params": p}),
              METHODS, st.lists(HEXISH, max_size=4) | JSON, st.integers() | st.text(max_size=5) | st.none()),
))
def test_bad_requests_get_standard_errors(endpoint: dict[str, Any], body: str | bytes) -> None:
    status, answer = post(endpoint["url"], body)
    assert status in (200, 413, 429)
    if answer is None:
        return
    for one in answer if isinstance(answer, list) else [answer]:
        assert one["jsonrpc"] == "2.0"
        if "error" in one:
            assert one["error"]["code"] in STANDARD_CODES, one
            assert one["error"]["code"] != -32603, one  # a bad request is never an internal error
            assert "Traceback" not in one["error"]["message"]


def test_flood_is_limited_and_the_server_lives(endpoint: dict[str, Any]) -> None:
    url = endpoint["url"]
    batch = json.dumps([{"jsonrpc": "2.0", "id": i, "method": "eth_chainId"} for i in range(100)])
    statuses = [post(url, batch)[0] for _ in range(30)]
    assert 429 in statuses
    time.sleep(1.0)
    assert rpc(url, "eth_chainId")["result"] == hex(endpoint["chain_id"])


def test_websocket_subscriptions(endpoint: dict[str, Any]) -> None:
    """eth_subscribe over WebSocket: newHeads and logs notifications; other methods answer there too."""
    ws_client = pytest.importorskip("websockets.sync.client")
    url, alice, chain_id = endpoint["url"], endpoint["alice"], endpoint["chain_id"]
    with ws_client.connect(url.replace("http://", "ws://")) as ws:
        def ask(method: str, *params: Any) -> Any:
            ws.send(json.dumps({"jsonrpc": "2.0", "id": method, "method": method, "params": list(params)}))
            while True:
                answer = json.loads(ws.recv(timeout=10))
                if answer.get("id") == method:
                    return answer

        assert ask("eth_chainId")["result"] == hex(chain_id)
        heads = ask("eth_subscribe", "newHeads")["result"]
        logs = ask("eth_subscribe", "logs", {"address": alice.address})["result"]  # no contract: no logs
        assert ask("eth_subscribe", "nonsense")["error"]["code"] == -32602
        ws.send("{broken")
        assert json.loads(ws.recv(timeout=10))["error"]["code"] == -32700
        nonce = int(ask("eth_getTransactionCount", alice.address)["result"], 16)
        tx_hash = ask("eth_sendRawTransaction", "0x" + signed(alice, chain_id, nonce).hex())["result"]
        seen: set[str] = set()
        deadline = time.monotonic() + 20
        while heads not in seen:
            assert time.monotonic() < deadline
            note = json.loads(ws.recv(timeout=10))
            if note.get("method") == "eth_subscription":
                seen.add(note["params"]["subscription"])
                assert note["params"]["subscription"] != logs
        assert ask("eth_unsubscribe", heads)["result"] is True
        assert tx_hash.startswith("0x")


def test_replay_checks_ethereum_signatures(endpoint: dict[str, Any]) -> None:
    """Last in this module: the endpoint is stopped and the ledger replayed, every signature again."""
    proc = endpoint["proc"]
    proc.terminate()
    proc.wait(10)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "missive", "replay", "--dir", str(endpoint["dir"]),
                           "--check-signatures"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ethereum_accounts_in_the_keystore(tmp_path: Path) -> None:
    """`account new --kind eth` and `account import`: secp256k1 keys beside the Ed25519 ones, their
    Ethereum addresses on the ledger; such a key signs Ethereum transactions, never envelopes."""
    from missive.keys import KeystoreError
    from missive.node import Node

    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "missive", *args, "--dir", str(tmp_path / "n")], input=stdin,
                              capture_output=True, text=True, env=env, timeout=60)

    assert cli("init").returncode == 0
    made = cli("account", "new", "eve", "--kind", "eth", "--fund", "1000")
    assert made.returncode == 0 and "(Ethereum, secp256k1)" in made.stdout
    known = eth_account.Account.create()
    imported = cli("account", "import", "imp", "--key-file", "-", "--fund", "7", stdin=known.key.hex())
    assert imported.returncode == 0 and known.address.lower() in imported.stdout
    assert cli("account", "import", "again", "--key-file", "-", stdin=known.key.hex()).returncode == 2
    assert cli("account", "import", "bad", "--key-file", "-", stdin="zz").returncode == 2
    refused = cli("send", "--from", "eve", "0x" + "01" * 20, "f()")
    assert refused.returncode == 2 and "signs Ethereum transactions" in refused.stderr
    with Node.open(tmp_path / "n") as node:
        eve = node.wallet("eve").key
        assert eve.kind == "eth" and node.balance(eve.address) == 1000
        assert node.balance(bytes.fromhex(known.address[2:])) == 7
        raw = eve.sign_transaction({"chainId": node.chain_id, "nonce": 0, "gas": 21_000, "gasPrice": 10**9,
                                    "to": bytes(20), "value": 5})
        assert ethtx.decode(raw).sender == eve.address
        with pytest.raises(KeystoreError):
            node.new_eth_account("again", private_key=bytes.fromhex(known.key.hex().removeprefix("0x")))
