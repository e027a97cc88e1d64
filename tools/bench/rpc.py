"""Benchmark: the JSON-RPC endpoint beside the Python API, on the same work in one run.

* **RPC**: ``missive rpc`` on a node directory (a separate process, as a user runs it); a client
  sends pre-signed EIP-1559 ERC20 ``transfer`` transactions from ``--senders`` Ethereum accounts with
  ``eth_sendRawTransaction`` over keep-alive HTTP connections (``--clients`` threads), then polls
  ``eth_getTransactionReceipt`` until every one is handled: transactions admitted and handled per
  second, first send to last receipt.  Then ``eth_call`` of ``balanceOf`` (p50/p99 latency).
* **Python API**: a second node directory with the same token; the same number of ``transfer``
  messages through ``Node.send`` (one signed message made durable per call, as the endpoint admits
  one transaction per request) from as many Ed25519 accounts, then ``run_until_idle``: messages per
  second.  Then a ``balanceOf`` read: the API has no read-only call, so it sends a query and waits
  for its reply (a message round trip, two durable writes), p50/p99.

The endpoint runs twice: as it starts by default (``eth_sendRawTransaction`` answers once the
transaction is handled, as anvil's automine: each client thread has one transaction in flight)
and with ``--handled-wait 0`` (it answers once the transaction is admitted; the client then polls
receipts).  Target (issue 28): the endpoint keeps at least half of the API's throughput.  The
load average before the run is recorded (the machine is shared).  Anvil is not
installed here (no Foundry), so no anvil figures.  Prints a table and writes JSON
(default tools/bench/results/rpc.json).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from eth_abi import encode  # noqa: E402

from missive.mailbox import ethtx  # noqa: E402
from missive.node import Node  # noqa: E402
from missive.vm.keccak import keccak256  # noqa: E402

TOKEN = REPO / "examples" / "Token.vy"
TRANSFER = keccak256(b"transfer(address,uint256)")[:4]
BALANCE_OF = keccak256(b"balanceOf(address)")[:4]


def start_rpc(node_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], str, int]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "missive", "rpc", "--dir", str(node_dir), "--port", "0",
                             "--rate", "1000000", *extra], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=env)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    found = re.search(r"on http://([\d.]+):(\d+) ", line)
    if found is None:
        proc.kill()
        raise SystemExit(f"missive rpc did not start: {line}")
    return proc, found.group(1), int(found.group(2))


class Client:
    def __init__(self, host: str, port: int) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=60)
        self.ident = 0

    def call(self, method: str, *params: Any) -> Any:
        self.ident += 1
        body = json.dumps({"jsonrpc": "2.0", "id": self.ident, "method": method, "params": list(params)})
        self.conn.request("POST", "/", body, {"content-type": "application/json"})
        answer = json.loads(self.conn.getresponse().read())
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(1000 * statistics.median(ordered), 3),
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3)}


def setup(node_dir: Path, eth_keys: list[bytes], ed_senders: int) -> tuple[Node, bytes, list[Any]]:
    node = Node.init(node_dir, default_balance=10**30, encrypt_keys=False)
    token = node.deploy(TOKEN, "Tok", "TOK", 10**30)
    wallets = [node.new_account(f"s{i}", balance=10**20) for i in range(ed_senders)]
    recipients = [bytes.fromhex(eth_account_address(k)) for k in eth_keys] + [w.address for w in wallets]
    calls = []
    for who in recipients:
        calls.append((None, token.address, TRANSFER + encode(["address", "uint256"], [who, 10**24])))
        calls.append((None, who, b""))
    node.send_many([(s, t, d) for s, t, d in calls if d], gas=200_000)
    for who in recipients[:len(eth_keys)]:
        node.send(who, b"", value=10**21)
    node.run_until_idle(120)
    return node, token.address, wallets


def eth_account_address(private_key: bytes) -> str:
    from eth_keys import keys

    return str(keys.PrivateKey(private_key).public_key.to_canonical_address().hex())


def bench_rpc(work: Path, senders: int, per_sender: int, clients: int, calls: int,
              handled_wait: float) -> dict[str, Any]:
    keys = [os.urandom(32) for _ in range(senders)]
    work = work / f"rpc-{handled_wait:g}"
    node, token, _ = setup(work, keys, 0)
    chain_id = node.chain_id
    node.close()
    bob = bytes(range(20))
    raws = [[ethtx.sign_transaction(k, {"chainId": chain_id, "nonce": n, "gas": 100_000, "maxFeePerGas": 2 * 10**9,
                                        "maxPriorityFeePerGas": 10**9, "to": token,
                                        "data": TRANSFER + encode(["address", "uint256"], [bob, 1])})
             for n in range(per_sender)] for k in keys]
    proc, host, port = start_rpc(work, "--handled-wait", str(handled_wait))
    try:
        hashes: list[str] = []
        lock = threading.Lock()
        # each client thread takes whole senders, so one sender's nonces arrive in order
        shares = [raws[i::clients] for i in range(clients)]

        def send(share: list[list[bytes]]) -> None:
            client = Client(host, port)
            mine = []
            for round_ in range(per_sender):
                for sender in share:
                    mine.append(client.call("eth_sendRawTransaction", "0x" + sender[round_].hex()))
            with lock:
                hashes.extend(mine)

        start = time.perf_counter()
        threads = [threading.Thread(target=send, args=(share,)) for share in shares if share]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        admitted = time.perf_counter() - start
        client = Client(host, port)
        for tx_hash in hashes:
            while client.call("eth_getTransactionReceipt", tx_hash) is None:
                time.sleep(0.002)
        elapsed = time.perf_counter() - start
        statuses = {client.call("eth_getTransactionReceipt", h_)["status"] for h_ in hashes[-senders:]}
        assert statuses == {"0x1"}, statuses
        data = "0x" + (BALANCE_OF + encode(["address"], [bob])).hex()
        latencies = []
        for _ in range(calls):
            t0 = time.perf_counter()
            client.call("eth_call", {"to": "0x" + token.hex(), "data": data}, "latest")
            latencies.append(time.perf_counter() - t0)
    finally:
        proc.terminate()
        proc.wait(10)
    total = senders * per_sender
    return {"transactions": total, "handled_wait": handled_wait, "admitted_per_s": round(total / admitted, 1),
            "handled_per_s": round(total / elapsed, 1), "seconds": round(elapsed, 3),
            "eth_call": percentiles(latencies)}


def bench_api(work: Path, senders: int, per_sender: int, calls: int) -> dict[str, Any]:
    node, token, wallets = setup(work / "api", [], senders)
    bob = bytes(range(20))
    payload = TRANSFER + encode(["address", "uint256"], [bob, 1])
    start = time.perf_counter()
    for _ in range(per_sender):
        for wallet in wallets:
            node.send(token, payload, sender=wallet, gas=100_000)
    admitted = time.perf_counter() - start
    node.run_until_idle(300)
    elapsed = time.perf_counter() - start
    latencies = []
    query = BALANCE_OF + encode(["address"], [bob])
    for _ in range(calls):
        t0 = time.perf_counter()
        node.query(token, query).reply(timeout=30)
        latencies.append(time.perf_counter() - t0)
    node.close()
    total = senders * per_sender
    return {"messages": total, "admitted_per_s": round(total / admitted, 1), "handled_per_s": round(total / elapsed, 1),
            "seconds": round(elapsed, 3), "query_reply": percentiles(latencies)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--senders", type=int, default=20)
    parser.add_argument("--per-sender", type=int, default=25)
    parser.add_argument("--clients", type=int, default=4, help="HTTP client threads sending at once")
    parser.add_argument("--calls", type=int, default=300, help="eth_call / query samples")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "rpc.json")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        api = bench_api(work, args.senders, args.per_sender, args.calls)
        rpc = bench_rpc(work, args.senders, args.per_sender, args.clients, args.calls, 5.0)
        rpc_nowait = bench_rpc(work, args.senders, args.per_sender, args.clients, args.calls, 0.0)
    ratio = rpc["handled_per_s"] / api["handled_per_s"]
    ratio_nowait = rpc_nowait["handled_per_s"] / api["handled_per_s"]
    figures = {"rpc": rpc, "rpc_handled_wait_0": rpc_nowait, "api": api, "rpc_over_api": round(ratio, 3),
               "rpc_handled_wait_0_over_api": round(ratio_nowait, 3), "target": ">= 0.5",
               "load_before": load_before, "anvil": "not installed here",
               "args": {**vars(args), "out": str(args.out)}}
    for label, run, r in (("default (answers once handled)", rpc, ratio),
                          ("--handled-wait 0 (answers once admitted)", rpc_nowait, ratio_nowait)):
        print(f"RPC   eth_sendRawTransaction -> receipt, {label}: {run['handled_per_s']} tx/s (admitted "
              f"{run['admitted_per_s']}/s; {run['transactions']} in {run['seconds']} s, {args.clients} clients); "
              f"endpoint / API {r:.2f} (target >= 0.5)")
    print(f"API   Node.send -> handled:               {api['handled_per_s']:>8} msg/s (admitted {api['admitted_per_s']}/s)")
    print(f"RPC   eth_call balanceOf: p50 {rpc['eth_call']['p50_ms']} ms, p99 {rpc['eth_call']['p99_ms']} ms")
    print(f"API   query balanceOf and wait for the reply: p50 {api['query_reply']['p50_ms']} ms, "
          f"p99 {api['query_reply']['p99_ms']} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
