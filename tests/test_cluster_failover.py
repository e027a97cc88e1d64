"""Failover: an executor killed under load, the next holder takes over, the old one catches up.

Real node processes on 127.0.0.1 with K=2 copies of each actor.  What a user
relies on: every message the cluster acknowledged is handled, once, in order;
after the dead node returns it catches up from its peers before serving, and
both copies of each actor end identical.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode
from test_cluster import Cluster, deploy_token_away_from, query_balance, sel
from test_cluster_replicas import copies, settled

from missive.cluster import launcher
from missive.cluster.placement import replicas
from missive.mailbox.envelope import Kind
from missive.mailbox.records import Account

K = 2
TIMEOUT = 1.0  # failover_timeout: seconds of silence before a node counts as down


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster", 3, replicas=K, failover_timeout=TIMEOUT)
    try:
        yield c
    finally:
        c.stop()


class Load:
    """Transfers of one token unit from alice to bob, submitted one after another in a thread;
    ``acked`` holds each envelope the cluster acknowledged (durable) and nothing else."""

    def __init__(self, cluster: Cluster, node: int, token: bytes, to: bytes) -> None:
        self.client = cluster.client(node)
        self.alice, self.token, self.to = cluster.alice, token, to
        self.acked: list[Any] = []
        self.refused: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        payload = sel("transfer(address,uint256)") + encode(["address", "uint256"], [self.to, 1])
        while not self.stop.is_set():
            try:
                self.acked.append(self.client.submit(self.alice, Kind.CALL, self.token, payload))
            except Exception as exc:  # noqa: BLE001 - an unacknowledged submit is allowed to fail
                self.refused.append(str(exc))
                time.sleep(0.05)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def test_executor_killed_under_load_next_holder_takes_over_and_old_one_catches_up(cluster: Cluster) -> None:
    alice_node = cluster.home(cluster.alice.address)["name"]
    bob = cluster.account_elsewhere("bob", set())
    token = deploy_token_away_from(cluster, {alice_node})
    first, second = (cluster.by_id[n] for n in replicas(token, cluster.members, K))
    assert first["name"] != alice_node
    at = cluster.states.index(cluster.home(cluster.alice.address))

    with Load(cluster, at, token, bob.address) as load:
        time.sleep(1.5)
        os.kill(first["pid"], signal.SIGKILL)  # the token's executor dies mid-stream
        killed_at = len(load.acked)
        time.sleep(TIMEOUT * 4)
    assert len(load.acked) > killed_at + 5, "the cluster kept acknowledging transfers after the kill"

    client = cluster.client(at)
    for envelope in load.acked:  # handled by the next holder while the first is down
        receipt, _ = client.receipt(envelope, timeout=60)
        assert receipt.success
    (survivor,) = [s for s in launcher.status(cluster.root) if s["name"] == second["name"]]
    assert survivor["view_changes"] >= 1 and first["name"] not in survivor["up"]

    started = subprocess.run([sys.executable, "-m", "missive", "cluster", "start", first["name"], "--dir", str(cluster.root)],
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    assert "catching up" not in started.stdout  # the command returns once the node serves
    (back,) = [s for s in launcher.status(cluster.root) if s["name"] == first["name"]]
    assert back["serving"] and set(back["up"]) == {s["name"] for s in cluster.states}
    with Load(cluster, at, token, bob.address) as more:
        time.sleep(1.0)
    for envelope in more.acked:
        receipt, _ = client.receipt(envelope, timeout=60)
        assert receipt.success
    settled(cluster)

    total = len(load.acked) + len(more.acked)
    assert query_balance(client, bob, token, bob.address) == total  # every acknowledged transfer, once
    found = copies(cluster, token)
    held = {name: copy for name, copy in found.items() if copy is not None}
    assert set(held) == {first["name"], second["name"]}
    accounts = {name: Account.decode(copy["account"]) for name, copy in held.items()}
    assert len({(a.state_root, a.handled) for a in accounts.values()}) == 1, accounts
    assert held[first["name"]]["storage"] == held[second["name"]]["storage"]
    mailbox = held[first["name"]]["mailbox"]
    assert mailbox == held[second["name"]]["mailbox"]
    assert len(mailbox) == len(set(mailbox))  # none handled twice
    assert {bytes(e.id) for e in load.acked + more.acked} <= set(mailbox)
    assert held[first["name"]]["executor"] and not held[second["name"]]["executor"]  # handed back
    reports = {state["name"]: cluster.client(i).call("replay", {}, timeout=120) for i, state in enumerate(cluster.states)}
    # each node's own ledger replays (what it ran, re-run and checked; what it applied from others, taken as signed)
    assert all(r["divergence"] is None for r in reports.values()), reports
    assert reports[first["name"]]["checked"] > 0 and reports[second["name"]]["checked"] > 0

    for name, complaint in ((first["name"], "already running"), ("n9", "no node 'n9'")):
        refused = subprocess.run([sys.executable, "-m", "missive", "cluster", "start", name, "--dir", str(cluster.root)],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and complaint in refused.stderr + refused.stdout


def test_executor_frozen_past_its_lease_stops_serving_and_catches_up_before_executing_again(cluster: Cluster) -> None:
    """A partition seen from one side: the token's executor is frozen (SIGSTOP) for longer than
    the failover timeout while transfers go on, then thawed.  Its lease ran out, so it must not
    run a round on its stale copy: it stops serving, takes the next holder's receipts (rolling
    back any of its own that never got out), and only then executes the token again."""
    alice_node = cluster.home(cluster.alice.address)["name"]
    bob = cluster.account_elsewhere("bob", set())
    token = deploy_token_away_from(cluster, {alice_node})
    first, second = (cluster.by_id[n] for n in replicas(token, cluster.members, K))
    at = cluster.states.index(cluster.home(cluster.alice.address))

    with Load(cluster, at, token, bob.address) as load:
        time.sleep(1.0)
        os.kill(first["pid"], signal.SIGSTOP)
        try:
            frozen_at = len(load.acked)
            time.sleep(TIMEOUT * 4)
            assert len(load.acked) > frozen_at + 5, "the next holder took over while the executor was frozen"
        finally:
            os.kill(first["pid"], signal.SIGCONT)
        time.sleep(TIMEOUT * 3)  # transfers go on while the thawed node catches up and takes the token back
    settled(cluster)

    (thawed,) = [s for s in launcher.status(cluster.root) if s["name"] == first["name"]]
    assert thawed["leases_lost"] >= 1 and thawed["serving"]
    client = cluster.client(at)
    for envelope in load.acked:
        receipt, _ = client.receipt(envelope, timeout=60)
        assert receipt.success
    assert query_balance(client, bob, token, bob.address) == len(load.acked)  # each acknowledged transfer, once
    deadline = time.monotonic() + 30
    while True:  # a delivery the freeze held up may still be on its way: the copies converge
        held = {name: copy for name, copy in copies(cluster, token).items() if copy is not None}
        accounts = {name: Account.decode(copy["account"]) for name, copy in held.items()}
        if len({(a.state_root, a.handled) for a in accounts.values()}) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert set(held) == {first["name"], second["name"]}
    assert len({(a.state_root, a.handled) for a in accounts.values()}) == 1, accounts
    mailbox = held[first["name"]]["mailbox"]
    assert mailbox == held[second["name"]]["mailbox"] and len(mailbox) == len(set(mailbox))
    assert held[first["name"]]["executor"] and not held[second["name"]]["executor"]  # handed back
    reports = {state["name"]: cluster.client(i).call("replay", {}, timeout=120) for i, state in enumerate(cluster.states)}
    assert all(r["divergence"] is None for r in reports.values()), reports
