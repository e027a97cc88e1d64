"""RemoteNode.storage() and .scheduled() on a real 2-node cluster (K=2): the same answers one node gives.

Both went through the client door as requests of their own: ``storage`` is forwarded to the node
executing the actor and read a page (1,000 slots) at a time; ``scheduled`` is asked of every node,
each answering for the actors it executes (every holder keeps an actor's scheduled messages, but
only the executor releases them, so a copy's list may lag).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from missive.cluster import launcher
from missive.cluster.placement import executor
from missive.cluster.reads import STORAGE_PAGE
from missive.cluster.remote import RemoteNode
from missive.mailbox.envelope import MAX_GAS, Kind
from missive.mailbox.store import Store
from missive.vm.keccak import keccak256

TOKEN = Path(__file__).resolve().parents[1] / "examples" / "Token.vy"

#: ticks (a scheduled message to itself, far in logical time) until told to stop or out of gas: a
#: scheduled message carries gas its sender paid, so each tick forwards most of what it has left
#: (63/64 of it reaches the system contract: about 150 ticks from 30M gas)
TICKER = """# pragma version ^0.4.0
interface System:
    def schedule(delay: uint256, message_gas: uint256, payload: Bytes[4]) -> bytes32: nonpayable

SYSTEM: constant(address) = 0x000000000000000000000000006D697373697665

ticks: public(uint256)
stopped: public(bool)

@external
def start():
    extcall System(SYSTEM).schedule(1000, msg.gas * 63 // 64 - 50_000, method_id("tick()"))

@external
def tick():
    assert msg.sender == self, "tick() is the ticker's own scheduled message"
    self.ticks += 1
    if not self.stopped and msg.gas > 300_000:
        extcall System(SYSTEM).schedule(1000, msg.gas * 63 // 64 - 50_000, method_id("tick()"))

@external
def stop():
    self.stopped = True
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, RemoteNode]]:
    root = tmp_path_factory.mktemp("reads") / "cluster"
    launcher.up(root, 2, replicas=2)
    try:
        remote = RemoteNode.connect(cluster=root)
        try:
            yield root, remote
        finally:
            remote.close()
    finally:
        launcher.down(root)


def _executor_store(root: Path, address: bytes) -> Store:
    """The store of the node that executes ``address`` (all nodes up: the first of its holders)."""
    nodes: list[dict[str, Any]] = launcher.read_cluster(root)["nodes"]
    home = executor(address, sorted(bytes(n["id"]) for n in nodes))
    (state,) = [n for n in nodes if bytes(n["id"]) == home]
    return Store(Path(state["dir"]), readonly=True)


def test_storage_is_the_executors_over_more_than_one_page(cluster: tuple[Path, RemoteNode]) -> None:
    root, remote = cluster
    token = remote.deploy(TOKEN, "Tok", "TOK", 10**6)
    holders = [keccak256(b"holder%d" % i)[:20] for i in range(STORAGE_PAGE + 5)]
    sent = remote.send_many([(remote.default, token.address, token.transfer.encode(h, 1)) for h in holders])
    assert all(s.receipt(timeout=120).success for s in sent)

    slots = remote.storage(token.address)
    store = _executor_store(root, token.address)
    try:
        assert slots == store.storage(token.address)  # the executor's own copy, slot for slot
    finally:
        store.close()
    values = list(slots.values())
    assert len(slots) > STORAGE_PAGE  # so the client read two pages
    assert values.count(1) == len(holders) and 10**6 - len(holders) in values and 10**6 in values
    assert remote.storage(b"\x42" * 20) == {}  # no actor there: nothing, as on one node


def test_scheduled_lists_the_tick_waiting_then_nothing(cluster: tuple[Path, RemoteNode]) -> None:
    _, remote = cluster
    assert remote.scheduled() == []
    ticker = remote.deploy(TICKER)
    assert ticker.start(gas=MAX_GAS).receipt(timeout=30).success  # gas for hundreds of ticks
    seen: list[Any] = []
    deadline = time.monotonic() + 60
    while not seen and time.monotonic() < deadline:  # each tick waits from its commit until the node releases it
        seen = remote.scheduled()
    assert ticker.stop().receipt(timeout=30).success
    assert len(seen) == 1, seen  # one tick outstanding, listed once (by its executor only)
    due, envelope = seen[0]
    assert envelope.kind is Kind.SCHEDULED and envelope.recipient == ticker.address == envelope.sender
    assert envelope.payload == keccak256(b"tick()")[:4] and due == envelope.not_before > 0
    assert remote.scheduled_for(b"\x42" * 20) == []  # (the ticker's own may have run meanwhile)
    deadline = time.monotonic() + 60
    while remote.scheduled() and time.monotonic() < deadline:  # the tick after stop() schedules nothing
        time.sleep(0.05)
    assert remote.scheduled() == [] and ticker.ticks() >= 1
