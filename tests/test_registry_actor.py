"""The cluster's registry actor's rules, run directly (missive.market.registry_actor): value is conserved
through any sequence of operations, good or bad, and its balance is always exactly what it holds.

Its runs on real nodes (replicated, re-executed, slashing a liar) are in tests/test_cluster_stakes.py
and tests/test_execution_trust_cluster.py; here hypothesis drives thousands of operations through
the same ``execute`` the handler calls, with a stand-in evidence checker.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from missive.market import registry_actor
from missive.market.registry_actor import ACCUSE_GAS, execute, genesis_storage, holdings, payload, read_worker, reader
from missive.market.workers import ACCUSER_SHARE, MIN_STAKE
from missive.vm import Host
from missive.vm.keccak import keccak256

NODES = [bytes([i]) * 32 for i in range(1, 4)]  # node ids: their workers are keccak256(id)[12:]
WORKERS = [keccak256(n)[12:] for n in NODES]
OTHERS = [bytes([0xA0 + i]) * 20 for i in range(2)]
ACCOUNTS = WORKERS + OTHERS
CONTRACT = b"\xcc" * 20


class Ids(Host):
    def message_id(self, message: object, parent_id: bytes) -> bytes:
        return b"\x00" * 32


def fake_check(evidence: bytes, chain_id: int) -> tuple[bytes, list[str]]:
    """b"lie:" + node id (+ anything) proves its node lied; anything else proves nothing."""
    if evidence.startswith(b"lie:"):
        return evidence[4:36], ["storage slot 0x1: re-executed 1, the diff 2"]
    raise ValueError("not evidence")


@pytest.fixture(autouse=True)
def checker() -> Iterator[None]:
    kept = list(registry_actor._checks)
    registry_actor._checks[:] = [fake_check]
    try:
        yield
    finally:
        registry_actor._checks[:] = kept


class Registry:
    """The registry's storage and balance, and the accounts around it; what messages it sends land."""

    def __init__(self) -> None:
        self.storage = genesis_storage(10)
        self.balance = 0
        self.accounts = {a: 10**9 for a in ACCOUNTS + [CONTRACT]}
        self.now = 1_000

    def run(self, caller: bytes, op: str, *args: object, value: int = 0, origin: bytes | None = None,
            gas: int = ACCUSE_GAS + 1, static: bool = False) -> str:
        if value > self.accounts[caller]:
            value = self.accounts[caller]
        self.accounts[caller] -= value
        result = execute(caller=caller, origin=caller if origin is None else origin, value=value,
                         data=payload(op, *args), gas=gas, storage=self.storage, balance=self.balance + value,
                         nonce=0, timestamp=self.now, chain_id=7, host=Ids(), is_static=static)
        if result.status.value != "success":
            self.accounts[caller] += value  # a failed call's value bounces
            assert result.storage_writes == {} and result.outbox == ()
            return result.error
        for slot, word in result.storage_writes.items():
            if word:
                self.storage[slot] = word
            else:
                self.storage.pop(slot, None)
        self.balance = result.balance
        for message in result.outbox:
            assert message.value > 0 and message.sender == registry_actor.REGISTRY
            self.accounts[message.recipient] += message.value
        return ""

    def held(self) -> dict[str, int]:
        return holdings(reader(self.storage))


OPERATION = st.one_of(
    st.tuples(st.just("register"), st.sampled_from(ACCOUNTS), st.integers(0, 3 * MIN_STAKE), st.booleans()),
    st.tuples(st.just("unbond"), st.sampled_from(ACCOUNTS), st.just(0), st.booleans()),
    st.tuples(st.just("withdraw"), st.sampled_from(ACCOUNTS), st.just(0), st.booleans()),
    st.tuples(st.just("accuse"), st.sampled_from(ACCOUNTS), st.integers(0, len(NODES)), st.booleans()),
    st.tuples(st.just("wait"), st.just(b""), st.integers(0, 15), st.booleans()),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(OPERATION, max_size=40))
def test_value_is_conserved_and_the_balance_is_what_it_holds(operations: list[tuple[str, bytes, int, bool]]) -> None:
    registry = Registry()
    supply = sum(registry.accounts.values())
    for op, who, number, twist in operations:
        if op == "wait":
            registry.now += number
            continue
        if op == "register":
            registry.run(who, "register", b"" if twist else OTHERS[0], number % 5, value=number)
        elif op == "accuse":
            evidence = b"lie:" + NODES[number] if number < len(NODES) else b"junk"
            registry.run(who, "accuse", evidence, origin=CONTRACT if twist and who == OTHERS[1] else None)
        else:
            registry.run(who, op, value=number)
        held = registry.held()
        assert registry.balance == held["stakes"] + held["unbonding"] + held["burned"]
        assert sum(registry.accounts.values()) + registry.balance == supply


def test_slashing_takes_the_whole_pledge_once() -> None:
    registry = Registry()
    liar = WORKERS[0]
    assert registry.run(liar, "register", b"", 0, value=10_000) == ""
    assert registry.run(liar, "unbond") == ""  # unbonding does not save a pledge from evidence
    accuser = OTHERS[0]
    before = registry.accounts[accuser]
    assert registry.run(accuser, "accuse", b"lie:" + NODES[0]) == ""
    assert registry.accounts[accuser] == before + 10_000 * ACCUSER_SHARE // 100
    worker = read_worker(reader(registry.storage), liar)
    assert worker is not None and (worker.stake, worker.unbonding, worker.slashed) == (0, 0, 10_000)
    assert registry.held() == {"stakes": 0, "unbonding": 0, "burned": 9_000}
    assert "duplicate evidence" in registry.run(OTHERS[1], "accuse", b"lie:" + NODES[0])
    assert "no pledge left" in registry.run(OTHERS[1], "accuse", b"lie:" + NODES[0] + b"other evidence")
    registry.now += 100
    assert "no unbonded stake" in registry.run(liar, "withdraw")
    assert registry.run(liar, "register", b"", 0, value=MIN_STAKE) == ""  # a fresh stake: a worker again


def test_refusals_name_what_was_wrong() -> None:
    registry = Registry()
    a, b = OTHERS
    assert "below the registry's minimum stake" in registry.run(a, "register", b"", 0, value=MIN_STAKE - 1)
    assert "only an account can be a worker" in registry.run(a, "register", b"", 0, value=MIN_STAKE, origin=CONTRACT)
    assert "only an account can accuse" in registry.run(a, "accuse", b"lie:" + NODES[0], origin=CONTRACT)
    assert "the evidence proves nothing" in registry.run(a, "accuse", b"junk")
    assert "is not a worker in this registry" in registry.run(a, "accuse", b"lie:" + NODES[1])
    assert "not a registered worker" in registry.run(a, "unbond")
    assert "send it a call, not a query" in registry.run(a, "unbond", static=True)
    assert "costs 200000 gas" in registry.run(a, "accuse", b"x", gas=1_000)
    assert registry.run(a, "register", b"", 0, value=MIN_STAKE) == ""
    assert "registered already" in registry.run(a, "register", b"", 0, value=MIN_STAKE)
    assert registry.run(a, "unbond") == ""
    assert "a second unbond changes nothing" in registry.run(a, "unbond")
    assert "10 s to go" in registry.run(a, "withdraw")
    registry.now += 10
    assert registry.run(a, "withdraw") == ""
    assert "no unbonded stake to withdraw" in registry.run(a, "withdraw")
    assert "carries no value" in registry.run(b, "unbond", value=1)
    result = execute(caller=a, origin=a, value=0, data=b"\xc1", gas=10**6, storage={}, balance=0, nonce=0,
                     timestamp=0, chain_id=7, host=Ids(), is_static=False)
    assert "not msgpack" in result.error
