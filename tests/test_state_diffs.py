"""State diffs: a replica that applies an executor's diffs holds exactly the executor's state."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import attrs
import msgpack
import pytest
from eth_abi import encode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ledger_actors import ASKER, TOKEN, Ledger, selector, transfer

from missive.actors.replay import replay
from missive.mailbox.diffs import DiffConflict, DiffError, DiffGap, StateDiff
from missive.mailbox.envelope import Kind
from missive.mailbox.records import Account
from missive.mailbox.store import Store
from missive.vm.keccak import keccak256
from tests.copies_support import copies_of

REPLICA = b"R" * 32
EXECUTOR = b"E" * 32


@attrs.frozen
class ExecutesAll:
    """A two-node placement: this node executes every actor and REPLICA keeps a copy of each."""

    me: bytes = EXECUTOR

    def holders(self, address: bytes) -> list[bytes]:
        return [EXECUTOR, REPLICA]

    def executes(self, address: bytes) -> bool:
        return True

    def peers(self) -> list[bytes]:
        return [REPLICA]

    def epoch(self) -> int:
        return 0


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ledger, list[bytes]]:
    """A busy node that replicates everything to REPLICA; its queued diffs."""
    ledger = Ledger(tmp_path_factory.mktemp("executor") / "node")
    copies_of(ledger.store, ExecutesAll())
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    asker = ledger.deploy(ledger.alice, ASKER)
    for i in range(8):
        ledger.submit(ledger.alice, Kind.CALL, token, transfer(ledger.bob.address, i))
        ledger.submit(ledger.bob, Kind.CALL, ledger.alice.address, value=5 + i)
    ledger.submit(ledger.alice, Kind.CALL, asker, selector("ask(address,address)") + encode(["address", "address"], [token, ledger.bob.address]))
    ledger.submit(ledger.alice, Kind.CALL, asker, selector("fail()"), value=77)  # revert + bounce
    ledger.run()
    return ledger, [raw for _, raw in copies_of(ledger.store).queued("replicate", REPLICA, 10**6)]


def state_of(store: Store) -> dict[bytes, tuple[bytes, dict[int, int], list[bytes], list[bytes | None]]]:
    out = {}
    for address, account in store.accounts():
        mailbox = store.mailbox(address)
        receipts = [r.encode() if (r := store.receipt(m)) else None for m in mailbox]
        out[address] = (account.encode(), store.storage(address), mailbox, receipts)
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(1, 12), min_size=1, max_size=40), resend=st.lists(st.integers(0, 6), max_size=40))
def test_replica_equals_executor_however_diffs_are_batched_and_resent(
    executed: tuple[Ledger, list[bytes]], cuts: list[int], resend: list[int]
) -> None:
    ledger, raws = executed
    diffs = [StateDiff.decode(raw) for raw in raws]
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "replica", create=True) as replica:
        at, step = 0, 0
        while at < len(diffs):
            size = cuts[step % len(cuts)]
            back = resend[step % len(resend)] if resend else 0
            start = max(0, at - back)  # a retry re-sends diffs the replica already has
            done, problem = copies_of(replica).apply_diffs(EXECUTOR, diffs[start:at + size])
            assert problem is None and done == len(diffs[start:at + size])
            at += size
            step += 1
        assert state_of(replica) == state_of(ledger.store)
        assert replay(replica).divergence is None  # its ledger records the diffs it applied
        # the messages each actor sent or had accepted are there to read
        for address in state_of(ledger.store):
            for message_id in ledger.store.mailbox(address):
                receipt = ledger.store.receipt(message_id)
                assert receipt is not None
                for sent in receipt.outgoing:
                    with ledger.store.read() as txn:
                        assert copies_of(replica).replica_message(sent) == txn.get(sent, db=ledger.store.db["messages"])
                    assert replica.message(sent) is None  # kept apart: a later delivery here is not a duplicate


def test_a_gap_an_overlap_or_wrong_code_is_refused_and_writes_nothing(executed: tuple[Ledger, list[bytes]], tmp_path: Path) -> None:
    ledger, raws = executed
    diffs = [StateDiff.decode(raw) for raw in raws]
    with Store(tmp_path / "replica", create=True) as replica:
        later = next(i for i, d in enumerate(diffs) if d.receipts and StateDiff.decode(raws[i]).decoded_receipts()[0].position > 0)
        done, problem = copies_of(replica).apply_diffs(EXECUTOR, [diffs[later]])
        assert done == 0 and isinstance(problem, DiffGap) and "this copy holds 0" in str(problem)
        assert replica.accounts() == []
        deploy = next(d for d in diffs if d.code)
        forged = attrs.evolve(deploy, code=deploy.code + b"\x00")
        done, problem = copies_of(replica).apply_diffs(EXECUTOR, diffs[: diffs.index(deploy)] + [forged])
        assert done == diffs.index(deploy) and problem is not None and "does not hash" in str(problem)
        assert replica.account(deploy.address) is None or replica.account(deploy.address).handled == 0  # type: ignore[union-attr]
        lying = attrs.evolve(deploy, account=deploy.account.replace(handled=deploy.account.handled + 1))
        done, problem = copies_of(replica).apply_diffs(EXECUTOR, [lying])
        assert done == 0 and problem is not None and "messages handled after" in str(problem)


@pytest.mark.parametrize("raw, message", [
    (b"\xc1", "not msgpack"),
    (b"\x93\x01\x02\x03", "expected an array of 13 fields"),
    (b"x" * (2 << 20), "at most"),
])
def test_malformed_diffs_are_named(raw: bytes, message: str) -> None:
    with pytest.raises(DiffError, match=message):
        StateDiff.decode(raw)


def test_a_diff_for_positions_a_copy_already_holds_is_a_conflict_naming_them(executed: tuple[Ledger, list[bytes]],
                                                                             tmp_path: Path) -> None:
    ledger, raws = executed
    diffs = [StateDiff.decode(raw) for raw in raws]
    with Store(tmp_path / "replica", create=True) as replica:
        assert copies_of(replica).apply_diffs(EXECUTOR, diffs) == (len(diffs), None)
        handled = next(d for d in reversed(diffs) if d.receipts)
        before = state_of(replica)
        # another record for a version this copy holds (another epoch's), from another holder
        first = handled.decoded_receipts()[0]
        other = first.replace(gas_used=first.gas_used + 1).encode()
        rival = attrs.evolve(handled, receipts=(other, *handled.receipts[1:]), epoch=handled.epoch + 1)
        done, problem = copies_of(replica).apply_diffs(b"X" * 32, [rival])
        assert done == 0 and isinstance(problem, DiffConflict)
        assert problem.address == handled.address and problem.position == first.position
        assert (problem.version, problem.theirs, problem.mine) == (handled.version, handled.epoch + 1, handled.epoch)
        # a record that follows another record of the version before it: the copies diverged there
        follower = next(d for d in diffs if d.address == handled.address and d.version == handled.version)
        stray = attrs.evolve(follower, version=handled.version + 1, prev_epoch=handled.epoch + 2, epoch=handled.epoch + 2)
        done, problem = copies_of(replica).apply_diffs(b"X" * 32, [stray])
        assert isinstance(problem, DiffConflict) and problem.version == handled.version
        assert (problem.theirs, problem.mine) == (handled.epoch + 2, handled.epoch)
        assert state_of(replica) == before


def test_a_diff_whose_receipts_name_messages_it_does_not_carry_is_refused(executed: tuple[Ledger, list[bytes]],
                                                                         tmp_path: Path) -> None:
    """An invariant kept in code: every message a receipt names travels with it (else a copy
    would hold receipts whose messages exist nowhere it can read or send them)."""
    ledger, raws = executed
    diffs = [StateDiff.decode(raw) for raw in raws]
    sending = next(i for i, d in enumerate(diffs) if any(r.outgoing for r in d.decoded_receipts()))
    with Store(tmp_path / "replica", create=True) as replica:
        assert copies_of(replica).apply_diffs(EXECUTOR, diffs[:sending]) == (sending, None)
        before = state_of(replica)
        for broken in (attrs.evolve(diffs[sending], messages=()),
                       attrs.evolve(diffs[sending], messages=(b"\xc1",))):
            done, problem = copies_of(replica).apply_diffs(EXECUTOR, [broken])
            assert done == 0 and isinstance(problem, DiffError)
            assert "does not carry" in str(problem) or "malformed" in str(problem)
        assert state_of(replica) == before


def test_a_diff_the_copy_already_holds_is_a_no_op_whoever_re_sends_it(executed: tuple[Ledger, list[bytes]],
                                                                      tmp_path: Path) -> None:
    """Issue 20, bug 1: a former executor re-sends a diff this copy holds byte for byte (it was
    killed before it dropped the diff from its queue, and another holder has taken over since).
    That is not a conflict: nothing is rolled back, nothing changes, and the sender may drop it."""
    ledger, raws = executed
    diffs = [StateDiff.decode(raw) for raw in raws]
    with Store(tmp_path / "replica", create=True) as replica:
        assert copies_of(replica).apply_diffs(EXECUTOR, diffs) == (len(diffs), None)
        before = state_of(replica)
        former = b"F" * 32  # not the executor whose diffs were applied last
        with_receipts = [d for d in diffs if d.receipts]
        admissions = [d for d in diffs if not d.receipts and d.messages]
        assert with_receipts and admissions
        for old in (with_receipts[0], with_receipts[len(with_receipts) // 2], admissions[0], admissions[-1], diffs[0]):
            assert copies_of(replica).apply_diffs(former, [old]) == (1, None)
        assert state_of(replica) == before
        assert replay(replica).divergence is None


def test_a_copy_missing_diffs_reports_a_gap_and_fills_it_from_a_snapshot(executed: tuple[Ledger, list[bytes]],
                                                                          tmp_path: Path) -> None:
    """Issue 20, bug 4: diffs a holder never got (dropped by its sender's rollback, or queued by a
    former executor) leave a gap; the holder is told it is one (not a conflict), and a snapshot
    from its own position fills it without discarding anything."""
    ledger, raws = executed
    diffs = [StateDiff.decode(raw) for raw in raws]
    token = next(d.address for d in diffs if d.code)
    with Store(tmp_path / "replica", create=True) as replica:
        handling = [i for i, d in enumerate(diffs) if d.address == token and d.receipts]
        assert len(handling) >= 3
        cut = handling[1]  # the replica lacks the token's second diff on: its third arrives alone
        assert copies_of(replica).apply_diffs(EXECUTOR, diffs[:cut])[1] is None
        held = replica.account(token).handled  # type: ignore[union-attr]
        version = copies_of(replica).head(token)[0]
        done, problem = copies_of(replica).apply_diffs(EXECUTOR, [diffs[handling[2]]])
        assert done == 0 and isinstance(problem, DiffGap) and problem.position == held and problem.version == version
        rolled = copies_of(replica).roll_back(EXECUTOR, token, version, copies_of(ledger.store).snapshot(token, version))  # type: ignore[arg-type]
        assert rolled.discarded == 0 and rolled.requeued == () and rolled.gone == ()
        assert replica.account(token) == ledger.store.account(token)
        assert replica.storage(token) == ledger.store.storage(token)
        assert replica.mailbox(token) == ledger.store.mailbox(token)


@attrs.frozen
class Replica:
    """REPLICA's side of the two-node placement: EXECUTOR executes every actor, this node keeps copies."""

    me: bytes = REPLICA

    def holders(self, address: bytes) -> list[bytes]:
        return [EXECUTOR, REPLICA]

    def executes(self, address: bytes) -> bool:
        return False

    def peers(self) -> list[bytes]:
        return [EXECUTOR]

    def epoch(self) -> int:
        return 0


def test_a_rollback_to_identical_receipts_forgets_nothing_and_clears_standby(tmp_path: Path) -> None:
    """Issue 20, bugs 2 and 3: the holder whose receipts stand often re-ran the same messages from
    the same state, so its receipts are identical and send the same message ids.  Rolling back to
    them must not delete those messages (here a delivered but unhandled one would be lost for
    good, and a handled one would lose its body, breaking replay) nor call them gone; and what
    the standing receipts handled must not wait in standby for ever."""
    ledger = Ledger(tmp_path / "executor", placement=ExecutesAll())  # genesis replicated too
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    asker = ledger.deploy(ledger.alice, ASKER)
    for _ in range(6):
        ledger.submit(ledger.alice, Kind.CALL, asker, selector("ask(address,address)") + encode(["address", "address"], [token, ledger.bob.address]))
        ledger.run()
    store = ledger.store
    with Store(tmp_path / "replica", create=True) as replica:
        copies_of(replica, Replica())
        # every message reached the replica (standby), and every diff: its copy is the executor's
        copies_of(replica).receive([raw for _, raw in copies_of(store).queued("outbound", REPLICA, 10**6)])
        assert copies_of(replica).apply_diffs(EXECUTOR, [StateDiff.decode(raw) for _, raw in copies_of(store).queued("replicate", REPLICA, 10**6)])[1] is None
        version = 2
        identical = copies_of(replica).snapshot(token, version)
    assert identical is not None
    since = identical["since"]
    records = copies_of(store).head(token)[0] - version
    outbound_before = copies_of(store).queued("outbound", REPLICA, 10**6)
    sent = {out for m in store.mailbox(token)[since:] for out in store.receipt(m).outgoing}  # type: ignore[union-attr]
    assert sent and records > 0

    rolled = copies_of(store).roll_back(REPLICA, token, version, identical)

    assert rolled.gone == () and rolled.discarded == 0  # the same records: nothing was given up
    assert copies_of(store).queued("outbound", REPLICA, 10**6) == outbound_before  # nothing that still had to leave is lost
    for message_id in sent:
        assert store.message(message_id) is not None  # the standing receipts name them
    assert store.pending() == [] and store.scheduled() == []  # nothing handled waits again
    report = replay(store)
    assert report.divergence is None

    # the replica's side: a gap filled from the executor drops what the snapshot handled from standby
    with Store(tmp_path / "replica2", create=True) as replica:
        copies_of(replica, Replica())
        copies_of(replica).receive([raw for _, raw in copies_of(store).queued("outbound", REPLICA, 10**6)])
        with replica.read() as txn:
            assert txn.stat(replica.db["standby"])["entries"] > 0
        queued = [StateDiff.decode(raw) for _, raw in copies_of(store).queued("replicate", REPLICA, 10**6)]
        prefix = [d for d in queued if d.address != token or d.version <= version]
        assert copies_of(replica).apply_diffs(EXECUTOR, prefix)[1] is None
        assert copies_of(replica).head(token)[0] == version
        copies_of(replica).roll_back(EXECUTOR, token, version, copies_of(store).snapshot(token, version))  # type: ignore[arg-type]
        waiting = {m for _, m in replica.scan("standby", token)}
        assert not waiting & set(store.mailbox(token))


def test_a_rollback_names_the_messages_its_discarded_receipts_sent_that_had_already_left(tmp_path: Path) -> None:
    """The losing side of a conflict gives up its receipts and drops what they sent that is still
    queued; what the other holders had already acknowledged cannot be taken back, and the
    rollback says which messages those are (the node logs them and counts them)."""
    ledger = Ledger(tmp_path / "executor")
    copies_of(ledger.store, ExecutesAll())
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    asker = ledger.deploy(ledger.alice, ASKER)
    for _ in range(6):  # each ask is a query to the token, whose receipt sends a reply to the asker
        ledger.submit(ledger.alice, Kind.CALL, asker, selector("ask(address,address)") + encode(["address", "address"], [token, ledger.bob.address]))
        ledger.run()  # one at a time: a diff of the token's per query
    store = ledger.store
    mailbox = store.mailbox(token)
    since = 3
    discarded_sent = {out for m in mailbox[since:] for out in store.receipt(m).outgoing}  # type: ignore[union-attr]
    assert len(discarded_sent) == len(mailbox) - since
    queued = {keccak256(msgpack.unpackb(raw)[0]): key for key, raw in copies_of(store).queued("outbound", REPLICA, 10**6)}
    assert discarded_sent <= set(queued)  # every reply was also queued for the asker's other holder
    delivered = sorted(discarded_sent)[:2] + [next(iter(set(queued) - discarded_sent))]  # REPLICA acknowledged these
    store.write_together([lambda txn: copies_of(store).dequeue("outbound", [queued[m] for m in delivered], txn)])
    with Store(tmp_path / "replica", create=True) as replica:
        snapshot_diffs = [StateDiff.decode(raw) for _, raw in copies_of(store).queued("replicate", REPLICA, 10**6)]
        prefix = [d for d in snapshot_diffs if d.address != token or d.account.handled <= since]
        assert copies_of(replica).apply_diffs(EXECUTOR, prefix)[1] is None
        assert replica.account(token).handled == since  # type: ignore[union-attr]
        version = copies_of(replica).head(token)[0]
        snapshot = copies_of(replica).snapshot(token, version)
    assert snapshot is not None

    rolled = copies_of(store).roll_back(REPLICA, token, version, snapshot)

    assert set(rolled.gone) == set(delivered) & discarded_sent  # not the one a standing receipt sent
    assert set(rolled.requeued) == set(mailbox[since:])
    left_queued = {keccak256(msgpack.unpackb(raw)[0]) for _, raw in copies_of(store).queued("outbound", REPLICA, 10**6)}
    assert not left_queued & discarded_sent  # what had not left went with its receipt


def test_rolling_back_to_another_holders_earlier_copy_then_running_again_ends_where_it_was(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "executor")
    # one second for the whole test: the messages run again after the rollback must see the same
    # block.timestamp to end in the same state (it failed about one run in eight when the second
    # run fell in the next second)
    now = time.time()
    ledger.store.wall_clock = lambda: now
    copies_of(ledger.store, ExecutesAll())
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    asker = ledger.deploy(ledger.alice, ASKER)
    for i in range(6):
        ledger.submit(ledger.alice, Kind.CALL, token, transfer(ledger.bob.address, i))
        ledger.submit(ledger.alice, Kind.CALL, asker, selector("ask(address,address)") + encode(["address", "address"], [token, ledger.bob.address]))
    ledger.run()
    before = state_of(ledger.store)
    handled = ledger.store.account(token).handled  # type: ignore[union-attr]
    diffs = [StateDiff.decode(raw) for _, raw in copies_of(ledger.store).queued("replicate", REPLICA, 10**6)]
    with Store(tmp_path / "replica", create=True) as replica:
        # the replica got only the diffs up to the middle of the token's mailbox
        prefix = [d for d in diffs if d.address != token or d.account.handled <= handled // 2]
        assert copies_of(replica).apply_diffs(EXECUTOR, prefix)[1] is None
        since = replica.account(token).handled  # type: ignore[union-attr]
        assert 0 < since < handled
        version = copies_of(replica).head(token)[0]
        snapshot = copies_of(replica).snapshot(token, version)
    assert snapshot is not None
    rolled = copies_of(ledger.store).roll_back(REPLICA, token, version, snapshot)
    assert len(rolled.requeued) == handled - since and rolled.gone == ()  # nothing had left: all still queued
    assert ledger.store.account(token).handled == since  # type: ignore[union-attr]
    left = [d for raw in (r for _, r in copies_of(ledger.store).queued("replicate", REPLICA, 10**6))
            if (d := StateDiff.decode(raw)).address == token]
    assert all(d.version <= version for d in left)  # the discarded receipts' diffs are gone too
    # (issue 20, bug 4) those of the receipts that stand are not: a holder that lacks them still gets them
    assert {d.version for d in left} == {d.version for d in diffs if d.address == token and d.version <= version}
    ledger.run()  # the messages queued again are handled again, in their order, from the same state
    assert state_of(ledger.store) == before
    report = replay(ledger.store)  # the discarded receipts are skipped, the rollback taken as recorded
    assert report.divergence is None and report.checked == sum(len(ledger.store.mailbox(a)) for a, _ in ledger.store.accounts())


def test_a_message_made_here_waits_for_its_record_and_goes_with_it_if_given_up(tmp_path: Path) -> None:
    """Issue 20 (found by tools/faults.py): an admitted message for an actor this node executes was
    handled at once, before the admission was acknowledged; when the admission was then given
    up (another holder's copy stood), its message had already moved value and spent its
    sender's nonce, so two messages with one nonce were handled.  Now it waits like messages for
    other nodes do, and goes with its record; the ledger still replays (the accept record is
    listed as given up)."""
    ledger = Ledger(tmp_path / "executor", placement=ExecutesAll())
    store = ledger.store
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    with Store(tmp_path / "replica", create=True) as replica:
        copies_of(replica, Replica())
        assert copies_of(replica).apply_diffs(EXECUTOR, [StateDiff.decode(raw) for _, raw in
                                              copies_of(store).queued("replicate", REPLICA, 10**6)])[1] is None
        version = copies_of(replica).head(ledger.alice.address)[0]
        before = copies_of(replica).snapshot(ledger.alice.address, version)
    assert before is not None
    message_id = ledger.submit(ledger.alice, Kind.CALL, token, transfer(ledger.bob.address, 5))
    assert store.pending() == []  # not handled: its admission is not acknowledged yet
    assert [keccak256(msgpack.unpackb(raw)[0]) for _, raw in copies_of(store).queued("outbound", EXECUTOR, 10**6)] == [message_id]

    rolled = copies_of(store).roll_back(REPLICA, ledger.alice.address, version, before)  # the admission is given up

    assert rolled.discarded == 1 and rolled.gone == ()
    assert copies_of(store).queued("outbound", EXECUTOR, 10**6) == [] and store.message(message_id) is None
    ledger.run()
    assert store.receipt(message_id) is None
    assert store.account(ledger.alice.address) == Account.decode(before["account"])
    assert replay(store).divergence is None


def test_a_message_whose_admission_was_given_up_is_not_queued_again_by_its_recipients_rollback(
        tmp_path: Path) -> None:
    """Found by tools/faults.py (4 nodes, K=3, freezes; the rare case of issue 20 half-way): a
    node admitted a message and handled it on its copy of the recipient; then it lost both copies
    to another holder's.  The sender's rollback gave the admission up (the message has a receipt
    here, so its body stayed for replay); the recipient's rollback then queued again every
    message its given-up receipts had handled, this one included, although nothing admits it any
    more.  Left in a queue it was waiting to be handled a second time: its nonce reused, its value
    created."""
    ledger = Ledger(tmp_path / "executor", placement=ExecutesAll())
    store = ledger.store
    alice, bob = ledger.alice.address, ledger.bob.address
    with Store(tmp_path / "replica", create=True) as replica:
        copies_of(replica, Replica())
        copies_of(replica).receive([raw for _, raw in copies_of(store).queued("outbound", REPLICA, 10**6)])
        assert copies_of(replica).apply_diffs(EXECUTOR, [StateDiff.decode(raw) for _, raw in copies_of(store).queued("replicate", REPLICA, 10**6)])[1] is None
        versions = {a: copies_of(replica).head(a)[0] for a in (alice, bob)}
        snapshots = {a: copies_of(replica).snapshot(a, versions[a]) for a in (alice, bob)}  # the copies without the message
    message = ledger.submit(ledger.alice, Kind.CALL, bob, value=5)
    ledger.run()
    assert store.receipt(message) is not None

    copies_of(store).roll_back(REPLICA, alice, versions[alice], snapshots[alice])  # type: ignore[arg-type]
    rolled = copies_of(store).roll_back(REPLICA, bob, versions[bob], snapshots[bob])  # type: ignore[arg-type]

    assert message not in rolled.requeued
    assert all(message_id != message for _, message_id in store.pending())
    assert all(message_id != message for _, message_id in store.scan("standby", b""))
    assert store.account(alice) == Account.decode(snapshots[alice]["account"])  # type: ignore[index]


def test_a_message_given_up_here_then_sent_again_by_the_standing_record_stands_again(tmp_path: Path) -> None:
    """Issue 20 (a lost internal message, value destroyed): a node handled a query on its copy of
    the token, then lost its copy of the asker that sent it to another holder's.  The query has
    a receipt here, so its body stayed, marked given up (nothing sends it any more).  The holder
    whose copy stands runs the ask again from the same state and sends the very same query (same
    id); its delivery here was taken for a copy of what this node already had, so the mark
    stayed.  When the token's copy was rolled back too, the query was not queued again: a message
    that a standing receipt sent, and that no node would ever handle."""
    ledger = Ledger(tmp_path / "executor", placement=ExecutesAll())
    store = ledger.store
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    asker = ledger.deploy(ledger.alice, ASKER)
    ledger.run()
    with Store(tmp_path / "replica", create=True) as replica:
        copies_of(replica, Replica())
        copies_of(replica).receive([raw for _, raw in copies_of(store).queued("outbound", REPLICA, 10**6)])
        assert copies_of(replica).apply_diffs(EXECUTOR, [StateDiff.decode(raw) for _, raw in
                                              copies_of(store).queued("replicate", REPLICA, 10**6)])[1] is None
        versions = {a: copies_of(replica).head(a)[0] for a in (asker, token)}
        snapshots = {a: copies_of(replica).snapshot(a, versions[a]) for a in (asker, token)}  # before the ask
    ask = ledger.submit(ledger.alice, Kind.CALL, asker, selector("ask(address,address)")
                        + encode(["address", "address"], [token, ledger.bob.address]))
    ledger.run()
    (query,) = store.receipt(ask).outgoing  # type: ignore[union-attr]
    assert store.receipt(query) is not None  # the token answered it here
    record = store.message(query, check=False)
    assert record is not None
    copies_of(store).roll_back(REPLICA, asker, versions[asker], snapshots[asker])  # type: ignore[arg-type]
    assert copies_of(store).given_up([query]) == [query]

    # the holder whose copy of the asker stands runs the ask again and delivers the same query
    (raw_query,) = [raw for _, raw in copies_of(store).queued("outbound", REPLICA, 10**6)
                    if keccak256(msgpack.unpackb(raw)[0]) == query] or [store.get(None, "messages", query)]
    assert copies_of(store).receive([raw_query]) == [query]
    assert copies_of(store).given_up([query]) == []  # sent by a record that stands: it stands here again

    rolled = copies_of(store).roll_back(REPLICA, token, versions[token], snapshots[token])  # type: ignore[arg-type]

    assert query in rolled.requeued
    assert query in {m for _, m in store.pending()}  # handled again here, not lost
