"""A real node process killed with SIGKILL at random moments under load, 20 times.

Afterwards: nothing acknowledged is lost, nothing is handled twice, value is
conserved, and replay agrees with the live state.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import trio
from eth_abi import encode
from test_ledger_actors import TOKEN, Ledger, transfer

from missive.actors.replay import replay
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind

KILLS = 20


def start_node(node_dir: Path) -> subprocess.Popen[bytes]:
    """Start a node process and wait until it is serving (it logs one line when it is)."""
    node = subprocess.Popen(
        [sys.executable, "-m", "missive.actors.serve", str(node_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    assert node.stderr is not None
    line = node.stderr.readline().decode()
    assert "serving" in line, f"node did not start: {line}{node.stderr.read().decode()}"
    return node


def test_sigkill_under_load_loses_nothing_and_handles_nothing_twice(tmp_path: Path) -> None:
    node_dir = tmp_path / "node"
    ledger = Ledger(node_dir)
    supply = 10**9
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [supply]))
    rng = random.Random(20261121)
    acknowledged: list[bytes] = []
    nonce = ledger.nonce(ledger.alice)
    for _ in range(KILLS):
        node = start_node(node_dir)
        deadline = time.monotonic() + rng.uniform(0.2, 0.8)
        while time.monotonic() < deadline:
            batch = []
            for _ in range(rng.randint(1, 40)):
                to = ledger.bob.address if rng.random() < 0.5 else bytes([rng.randint(1, 255)]) * 20
                env = Envelope(Kind.CALL, ledger.alice.address, token, payload=transfer(to, rng.randint(0, 5)),
                               gas=200_000, nonce=nonce, chain_id=ledger.store.chain_id)
                batch.append(ledger.alice.sign(env))
                nonce += 1
            results = ledger.store.accept(batch, ledger.check)
            assert not any(isinstance(r, EnvelopeError) for r in results)
            acknowledged += [r.message_id for r in results]  # type: ignore[union-attr]
        node.send_signal(signal.SIGKILL)
        node.wait()
    handled_by_killed_nodes = ledger.store.account(token).handled - 1  # type: ignore[union-attr]
    assert handled_by_killed_nodes > len(acknowledged) // 4, "the node processes did too little work to test anything"
    # Finish what is left with a clean in-process run.
    trio.run(ledger.runtime.run)
    store = ledger.store
    missing = [m for m in acknowledged if store.receipt(m) is None]
    assert not missing, f"{len(missing)} acknowledged messages were never handled"
    mailbox = store.mailbox(token)
    assert len(mailbox) == len(set(mailbox)) == len(acknowledged) + 1  # + the deploy: each handled exactly once
    assert store.account(token).handled == len(mailbox)  # type: ignore[union-attr]
    assert sum(store.storage(token).values()) == supply  # token value conserved
    assert store.pending() == []
    report = replay(store)
    assert report.ok, report.divergence and report.divergence.describe()
    assert report.checked == len(mailbox)  # alice and bob are external: they handled nothing here
    assert os.path.exists(node_dir / "executor.lock")
