"""Execution trust in the store and on its own: re-executing state diffs, evidence of wrong ones.

An executor (a real store that replicates everything to one replica) runs
real contracts; the replica receives its messages and diffs as a cluster
node would, re-executes them, and refuses the one diff the test falsifies.
The evidence that refusal produces is then checked the way any node checks
it: with nothing but the evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
from eth_abi import encode
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ledger_actors import ASKER, TOKEN, Ledger, selector, transfer

from missive.cluster.membership import Membership
from missive.cluster.trust import TrustSettings
from missive.mailbox import digest
from missive.mailbox.diffs import DiffConflict, StateDiff
from missive.mailbox.envelope import Kind
from missive.mailbox.records import Receipt
from missive.mailbox.store import Store
from missive.net import NodeIdentity
from missive.replicas.execution import EvidenceError, PreState, WrongDiff, WrongResult
from missive.replicas.execution_trust import ExecutionTrust, NotYetCheckable, falsify
from missive.vm.keccak import keccak256
from tests.copies_support import copies_of

EXECUTOR = NodeIdentity.generate()
REPLICA = NodeIdentity.generate()


@attrs.frozen
class Holds:
    """Two nodes hold every actor; ``executes`` says whether ``me`` runs them."""

    me: bytes
    runs: bool

    def holders(self, address: bytes) -> list[bytes]:
        return [EXECUTOR.node_id, REPLICA.node_id]

    def executes(self, address: bytes) -> bool:
        return self.runs

    def peers(self) -> list[bytes]:
        return [n for n in self.holders(b"") if n != self.me]

    def epoch(self) -> int:
        return 0


class TrustNobody:
    """The trust layer as a new cluster has it: no attestations yet, so trust 0 in everyone."""

    def __init__(self) -> None:
        self.kept: dict[bytes, bytes] = {}
        self.state = self

    def trust_in(self, node: bytes) -> float:
        return 0.0

    def wrong_diffs(self) -> list[bytes]:
        return list(self.kept.values())

    def keep_wrong_diff(self, executor: bytes, raw: bytes) -> None:
        self.kept.setdefault(executor, raw)


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ledger, list[bytes], list[bytes]]:
    """A busy executor: its diffs for the replica and the messages it queued for it."""
    ledger = Ledger(tmp_path_factory.mktemp("executor") / "node", Holds(EXECUTOR.node_id, True))
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    asker = ledger.deploy(ledger.alice, ASKER)
    for i in range(6):
        ledger.submit(ledger.alice, Kind.CALL, token, transfer(ledger.bob.address, i + 1))
        ledger.submit(ledger.bob, Kind.CALL, ledger.alice.address, value=5 + i)
    ledger.submit(ledger.alice, Kind.CALL, asker,
                  selector("ask(address,address)") + encode(["address", "address"], [token, ledger.bob.address]))
    ledger.submit(ledger.alice, Kind.CALL, asker, selector("fail()"), value=77)  # revert + bounce
    ledger.run()
    diffs = [raw for _, raw in copies_of(ledger.store).queued("replicate", REPLICA.node_id, 10**6)]
    messages = [raw for _, raw in copies_of(ledger.store).queued("outbound", REPLICA.node_id, 10**6)]
    return ledger, diffs, messages


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[tuple[Store, ExecutionTrust, TrustNobody]]:
    store = Store(tmp_path / "replica", create=True)
    copies_of(store, Holds(REPLICA.node_id, False))
    trust = TrustNobody()
    names = {EXECUTOR.node_id: "executor", REPLICA.node_id: "replica"}
    membership = Membership(REPLICA.node_id, sorted(names), 2)
    execution = ExecutionTrust(REPLICA, store, names, {}, membership, trust, TrustSettings())  # type: ignore[arg-type]
    try:
        yield store, execution, trust
    finally:
        store.close()


def state_of(store: Store) -> dict[bytes, tuple[bytes, dict[int, int], list[bytes]]]:
    return {a: (account.encode(), store.storage(a), store.mailbox(a)) for a, account in store.accounts()}


def test_a_replica_that_re_executes_every_diff_ends_with_the_executors_state_and_digests(
        executed: tuple[Ledger, list[bytes], list[bytes]],
        replica: tuple[Store, ExecutionTrust, TrustNobody]) -> None:
    ledger, raws, messages = executed
    store, execution, _ = replica
    copies_of(store).receive(messages)
    diffs = [StateDiff.decode(raw) for raw in raws]
    done, problem = copies_of(store).apply_diffs(EXECUTOR.node_id, diffs, execution.checker(EXECUTOR.node_id))
    assert problem is None and done == len(diffs)
    assert execution.reexecuted[EXECUTOR.node_id] == sum(1 for d in diffs if d.receipts) >= 4
    assert execution.on_trust[EXECUTOR.node_id] == 0 and not execution.evidence
    assert state_of(store) == state_of(ledger.store)
    for address, _ in ledger.store.accounts():
        assert store.state_digest(address) == ledger.store.state_digest(address)
        # the incremental sum is the sum computed from scratch
        assert store.state_digest(address) == digest.state_digest(
            ledger.store.account(address).encode(), digest.storage_sum(ledger.store.storage(address).items()))  # type: ignore[union-attr]


def test_a_diff_that_needs_a_message_not_here_yet_waits_and_writes_nothing(
        executed: tuple[Ledger, list[bytes], list[bytes]],
        replica: tuple[Store, ExecutionTrust, TrustNobody]) -> None:
    _, raws, _ = executed
    store, execution, _ = replica
    diffs = [StateDiff.decode(raw) for raw in raws]
    first = next(i for i, d in enumerate(diffs) if d.receipts)
    done, problem = copies_of(store).apply_diffs(EXECUTOR.node_id, diffs, execution.checker(EXECUTOR.node_id))
    assert done == first and isinstance(problem, NotYetCheckable) and "is not here" in str(problem)
    assert store.mailbox(diffs[first].address) == []


def misreport_gas(raw: bytes) -> bytes:
    """A consistent lie: the state is right, a receipt's gas is not (only a re-run can tell)."""
    diff = StateDiff.decode(raw)
    if not diff.receipts:
        return raw
    first = Receipt.decode(diff.receipts[0])
    wrong = first.replace(gas_used=first.gas_used + 1).encode()
    return attrs.evolve(diff, receipts=(wrong, *diff.receipts[1:])).encode()


#: (how the executor lies, what the replica finds first)
LIES = [(falsify, "contradicts itself"), (misreport_gas, "gas_used")]


def _refused(executed: tuple[Ledger, list[bytes], list[bytes]], store: Store, execution: ExecutionTrust,
             lie: Callable[[bytes], bytes] = falsify) -> tuple[int, bytes, WrongResult]:
    """Make the first diff ``lie`` changes lie; apply everything; the refusal."""
    _, raws, messages = executed
    copies_of(store).receive(messages)
    bad = next(i for i, raw in enumerate(raws) if lie(raw) != raw)
    sent = raws[:bad] + [lie(raws[bad])] + raws[bad + 1:]
    done, problem = copies_of(store).apply_diffs(EXECUTOR.node_id, [StateDiff.decode(r) for r in sent],
                                      execution.checker(EXECUTOR.node_id))
    assert done == bad and isinstance(problem, WrongResult)
    return bad, sent[bad], problem


@pytest.mark.parametrize(("lie", "found"), LIES)
def test_a_wrong_diff_is_refused_whole_and_becomes_evidence_anyone_can_check(
        executed: tuple[Ledger, list[bytes], list[bytes]], replica: tuple[Store, ExecutionTrust, TrustNobody],
        lie: Callable[[bytes], bytes], found: str) -> None:
    store, execution, trust = replica
    bad, raw, wrong = _refused(executed, store, execution, lie)
    address = wrong.diff.address
    before = state_of(store).get(address)
    assert found in wrong.differences[0]

    evidence = execution.accuse(EXECUTOR.node_id, wrong, raw, EXECUTOR.sign(keccak256(raw)))
    assert execution.distrusts(EXECUTOR.node_id) and execution.trust_in(EXECUTOR.node_id) == 0.0
    assert execution.membership.distrusted == {EXECUTOR.node_id}
    assert trust.kept[EXECUTOR.node_id] == evidence.encode()  # kept for the slashing issue
    assert state_of(store).get(address) == before  # nothing of the wrong diff was written

    # any node: decode the bytes, re-run, see the difference
    received = WrongDiff.decode(evidence.encode())
    assert received == evidence and received.address == address
    differences = received.check()
    assert differences and found in differences[0]

    # what the evidence cannot be made to say
    with pytest.raises(EvidenceError, match="not signed by its accuser"):
        attrs.evolve(evidence, accuser=EXECUTOR.node_id).check()
    forged_state = attrs.evolve(evidence.state, storage=((1, 2), *evidence.state.storage))
    with pytest.raises(EvidenceError, match="not the one the executor"):  # a made-up pre-state
        WrongDiff.make(REPLICA, EXECUTOR.node_id, raw, evidence.diff_signature, forged_state).check()
    with pytest.raises(EvidenceError, match="not signed by the executor"):  # a diff the executor never signed
        WrongDiff.make(REPLICA, EXECUTOR.node_id, raw, REPLICA.sign(keccak256(raw)), evidence.state).check()
    if lie is misreport_gas:  # a re-run needs the messages (a contradiction does not)
        with pytest.raises(EvidenceError, match="incomplete"):
            WrongDiff.make(REPLICA, EXECUTOR.node_id, raw, evidence.diff_signature,
                           attrs.evolve(evidence.state, messages=())).check()
    for broken in (b"", b"\x92\x01", evidence.encode()[:-3], b"\xc1" * 10):
        with pytest.raises(EvidenceError):
            WrongDiff.decode(broken)


def test_accusing_an_honest_diff_proves_nothing_against_it(
        executed: tuple[Ledger, list[bytes], list[bytes]],
        replica: tuple[Store, ExecutionTrust, TrustNobody]) -> None:
    """The same pre-state with the diff the executor really sent: the re-run agrees, so no differences."""
    _, raws, _ = executed
    store, execution, _ = replica
    bad, raw, wrong = _refused(executed, store, execution, misreport_gas)
    honest = raws[bad]
    false = WrongDiff.make(REPLICA, EXECUTOR.node_id, honest, EXECUTOR.sign(keccak256(honest)), wrong.evidence)
    assert false.check() == []


def test_a_copy_that_diverged_is_a_conflict_named_by_its_digests(
        executed: tuple[Ledger, list[bytes], list[bytes]],
        replica: tuple[Store, ExecutionTrust, TrustNobody]) -> None:
    _, raws, messages = executed
    store, _, _ = replica
    diffs = [StateDiff.decode(raw) for raw in raws]
    copies_of(store).receive(messages)
    with_storage = next(i for i, d in enumerate(diffs) if d.storage)
    assert copies_of(store).apply_diffs(EXECUTOR.node_id, diffs[:with_storage + 1]) == (with_storage + 1, None)
    address = diffs[with_storage].address
    later = next(d for d in diffs[with_storage + 1:] if d.address == address)
    with store.env.begin(write=True) as txn:  # this copy drifts: its balance changes behind the ledger's back
        account = store.account(address, txn)
        assert account is not None
        txn.put(address, account.replace(balance=account.balance + 1).encode(), db=store.db["accounts"])
    skipped = diffs[with_storage + 1:diffs.index(later)]
    assert copies_of(store).apply_diffs(EXECUTOR.node_id, skipped)[1] is None
    done, problem = copies_of(store).apply_diffs(EXECUTOR.node_id, [later])
    assert done == 0 and isinstance(problem, DiffConflict) and "another state than this copy" in str(problem)


@settings(max_examples=60, deadline=None)
@given(writes=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3)), max_size=40))
def test_the_storage_sum_kept_one_write_at_a_time_is_the_sum_of_the_storage(writes: list[tuple[int, int]]) -> None:
    storage: dict[int, int] = {}
    total = 0
    for slot, value in writes:
        total = digest.rewrite(total, slot, storage.get(slot, 0), value)
        if value:
            storage[slot] = value
        else:
            storage.pop(slot, None)
    assert total == digest.storage_sum(storage.items())
    assert (total == 0) == (not storage) or total != 0  # an empty storage sums to 0
    if storage:  # any other value in any slot gives another sum
        slot = next(iter(storage))
        assert digest.rewrite(total, slot, storage[slot], storage[slot] + 1) != total


def test_pre_state_carries_only_what_the_re_run_reads() -> None:
    state = PreState(b"", ((1, 2),), b"", (), ())
    assert digest.state_digest(state.account, digest.storage_sum(state.storage)) == \
        digest.state_digest(b"", digest.rewrite(0, 1, 0, 2))
