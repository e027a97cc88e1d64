"""A node asked to roll back (or fill a gap) by a peer that cannot hand over its copy.

Issue 20, bug 6: the node took the peer's copy in a task of its own nursery with no error
handling, so a peer that was frozen or gone (``CallTimeout``), or that answered with
something unusable, ended the whole node process.  The node must keep its copy as it is,
say so in one line, and go on serving: the next diff that finds its copy behind asks again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
import trio.testing

from missive.cluster.config import NodeConfig, Peer
from missive.cluster.node import IDENTITY_FILE, ClusterNode
from missive.mailbox.records import Account
from missive.net import NodeIdentity
from missive.net.errors import CallTimeout


def _node(tmp_path: Path) -> tuple[ClusterNode, bytes]:
    peer = NodeIdentity.load_or_generate(tmp_path / "peer" / IDENTITY_FILE)
    me = NodeIdentity.load_or_generate(tmp_path / "me" / IDENTITY_FILE)
    members = (Peer("me", "127.0.0.1", 1, me.node_id), Peer("peer", "127.0.0.1", 2, peer.node_id))
    return ClusterNode(NodeConfig("me", tmp_path / "me", "127.0.0.1", 0, members, replicas=2)), peer.node_id


def _three_nodes(tmp_path: Path) -> tuple[ClusterNode, tuple[bytes, bytes, bytes]]:
    """Node "me" of a 3-node cluster (me, h, z; K=2), not started, and the three node ids."""
    ids = [NodeIdentity.load_or_generate(tmp_path / name / IDENTITY_FILE) for name in ("me", "h", "z")]
    members = tuple(Peer(name, "127.0.0.1", 1 + n, i.node_id) for n, (name, i) in enumerate(zip(("me", "h", "z"), ids,
                                                                                                 strict=True)))
    node = ClusterNode(NodeConfig("me", tmp_path / "me", "127.0.0.1", 0, members, replicas=2))
    return node, (ids[0].node_id, ids[1].node_id, ids[2].node_id)


def _waiting_for_z(node: ClusterNode, tmp_path: Path, ids: tuple[bytes, bytes, bytes],
                   count: int = 1) -> tuple[Any, list[Any], bytes]:
    """``count`` senders that this node and h hold, each with one call (value 7) admitted here to a
    recipient that z holds and this node does not: (their keystore, the senders, the recipient).
    Each message waits in this node's outbound queue for z."""
    from missive.keys import Keystore
    from missive.mailbox.envelope import Envelope, Kind

    me, h, z = ids
    keys = Keystore(tmp_path / "keys", create=True)
    senders = [k for k in (keys.new(f"s{i}") for i in range(400)) if node.holders(k.address) == [me, h]][:count]
    recipient = next(a for a in (bytes([i]) * 20 for i in range(256)) if z in node.holders(a) and me not in node.holders(a))
    for sender in senders:
        node.store.create_account(sender.address, sender.public_key, 10**18)
        envelope = Envelope(Kind.CALL, sender.address, recipient, value=7, nonce=0, chain_id=node.store.chain_id)
        (accepted,) = node.store.accept([sender.sign(envelope)], node.check)
        assert not isinstance(accepted, Exception), accepted
    return keys, senders, recipient


@pytest.mark.parametrize("answer", [CallTimeout("snapshot", 10.0), {"account": b"\x01junk", "storage": [],
                                                                     "receipts": [], "seq": 0, "since": 0,
                                                                     "base": None, "entries": []}])
def test_a_peer_that_cannot_hand_over_its_copy_leaves_the_node_running(tmp_path: Path, answer: Any,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    node, peer = _node(tmp_path)
    address = next(a for a in (bytes([i]) * 20 for i in range(256)) if node.holders(a)[0] == peer)

    async def snapshot(method: str, params: Any = None, *, timeout: float | None = None) -> Any:
        assert method == "snapshot"
        if isinstance(answer, Exception):
            raise answer
        return answer

    node.links[peer].call = snapshot  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.WARNING):
            trio.run(node.receiver.reconcile, peer, address, 0)  # returns: it does not raise into the node's nursery
        assert node.receiver.rolled_back == 0
        assert any(f"could not take peer's copy of 0x{address.hex()}" in r.getMessage() for r in caplog.records)
        assert node.store.account(address) is None  # nothing written
    finally:
        node.store.close()


def test_a_copy_taken_from_a_peer_that_no_longer_executes_the_actor_is_not_applied(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Found by tools/faults.py: a joining node asked the executor for its copy, was made to serve
    (and so to execute the actor) before the copy arrived, and then applied it over the records
    it had made and got acknowledged as executor.  A copy stands only while its sender executes
    the actor in the epoch this node acts in; otherwise it is dropped."""
    node, peer = _node(tmp_path)
    address = next(a for a in (bytes([i]) * 20 for i in range(256)) if node.holders(a)[0] == node.me)
    assert node.executes(address)  # epoch 0: every member serves, and this node comes first
    snapshot = {"account": Account(balance=5).encode(), "storage": [], "receipts": [], "seq": 0, "since": 0,
                "base": None, "entries": [[1, 0, b"\x00" * 32, 0, []]], "messages": []}

    async def answer(method: str, params: Any = None, *, timeout: float | None = None) -> Any:
        return snapshot

    node.links[peer].call = answer  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.INFO):
            trio.run(node.receiver.reconcile, peer, address, 0)
        assert node.store.account(address) is None and node.receiver.rolled_back == 0
        assert any("no longer executes" in r.getMessage() for r in caplog.records)
    finally:
        node.store.close()


def test_a_message_waits_for_its_record_to_be_acknowledged_in_the_epoch_it_was_made_in(tmp_path: Path) -> None:
    """Found by tools/faults.py (3 nodes, K=2, 50 double faults: value created, two messages with
    one nonce handled): a node admitted a message in one epoch, the other holder of the sender
    never acknowledged it, and in a later epoch that left that holder out (it was killed) the
    message was let go because no holder *of the later epoch* lacked the record.  The record
    then lost to the other holder's, and the message stood.  A message waits for the holders
    of the epoch its record was made in (or, while this node executes the sender, of the
    current one)."""
    from missive.replicas.epochs import Epoch

    node, (me, h, z) = _three_nodes(tmp_path)
    try:
        keys, (sender,), _ = _waiting_for_z(node, tmp_path, (me, h, z))
        queued = node.copies.queued("outbound", z, 10)
        assert len(queued) == 1 and node.sender.replicated_prefix(queued) == []  # h has not acknowledged the record
        # h is killed and left out; this node no longer serves (it joins): z alone serves
        node.membership.history.extend([Epoch(1, frozenset({z}), frozenset({me}))])
        assert node.membership.adopt() and not node.executes(sender.address)
        assert node.sender.replicated_prefix(queued) == []  # still: h, of the record's epoch, lacks it
        keys.close()
    finally:
        node.store.close()


def test_a_handled_message_whose_record_was_taken_from_another_copy_does_not_hold_back_the_queue(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by tests/test_cluster_faults.py (3 nodes, K=3, kills; intermittent): a node admitted
    a client's message, then rolled the sender back to another holder's copy, which holds the same
    admission; the record stood but was no longer "made here", so the queued message found no
    epoch to wait for and held back the 93 messages queued behind it for ever (the cluster never
    settled).  Already handled, it may go (every holder drops it as a duplicate)."""
    from missive.mailbox.envelope import Envelope
    from missive.replicas.epochs import Epoch

    node, (me, h, z) = _three_nodes(tmp_path)
    try:
        keys, senders, recipient = _waiting_for_z(node, tmp_path, (me, h, z), count=2)
        queued = node.copies.queued("outbound", z, 10)
        assert len(queued) == 2
        first = Envelope.decode(msgpack.unpackb(queued[0][1])[0], check=False)
        # every holder serves in epoch 1; another node executes both senders now
        node.membership.history.extend([Epoch(1, frozenset({me, h, z}), frozenset())])
        node.membership.adopt()
        monkeypatch.setattr(node, "executes", lambda address: False)
        monkeypatch.setattr(node.copies, "oldest_unreplicated", lambda holder, txn=None: None)  # h has every diff
        made_here = {senders[1].address: 1}  # the first sender's record now comes from another's copy
        monkeypatch.setattr(node.copies, "epoch_of_record_before", lambda address, seq, txn=None: made_here.get(address))
        assert node.sender.replicated_prefix(queued) == []  # not handled anywhere yet: it still waits
        handled = object()
        real_receipt = node.store.receipt
        monkeypatch.setattr(node.store, "receipt",
                            lambda message_id, txn=None: handled if message_id == first.id else real_receipt(message_id))
        assert node.sender.replicated_prefix(queued) == queued  # handled: neither it nor what follows waits
        keys.close()
    finally:
        node.store.close()


def test_a_submit_whose_admission_a_rollback_gave_up_is_refused_not_acknowledged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by tools/faults.py (3 nodes, K=2, 40 double faults, seed 21; and 4 nodes, K=2, mixed,
    seed 23): a client was told "accepted" for a message no node held any more, and a second
    message with the same nonce was then accepted and handled.  While the submit waited for its
    acknowledgement the epoch moved on twice: the node lost the sender to the other holder, took
    that holder's copy (giving up the record that admitted the message, and its queued diff with
    it), then executed the sender again; every holder now "had every diff queued before" the
    submit, so it was acknowledged.  The admitted message must still stand to be acknowledged."""
    from missive.keys import Keystore
    from missive.mailbox.envelope import Envelope, Kind
    from missive.mailbox.store import Accepted
    from missive.replicas.sender import NotServing

    node, (me, h, z) = _three_nodes(tmp_path)
    try:
        keys = Keystore(tmp_path / "keys", create=True)
        sender = next(k for k in (keys.new(f"s{i}") for i in range(400)) if node.holders(k.address) == [me, h])
        node.store.create_account(sender.address, sender.public_key, 10**18)
        version = node.copies.head(sender.address)[0]
        before = node.copies.snapshot(sender.address, version)  # the other holder's copy: no admission yet
        recipient = next(a for a in (bytes([i]) * 20 for i in range(256)) if z in node.holders(a) and me not in node.holders(a))
        envelope = Envelope(Kind.CALL, sender.address, recipient, value=7, nonce=0, chain_id=node.store.chain_id)
        (accepted,) = node.store.accept([sender.sign(envelope)], node.check)
        assert isinstance(accepted, Accepted) and node.copies.stands(accepted.message_id)
        seq = node.store.next_seq()
        assert before is not None
        node.copies.roll_back(h, sender.address, version, before)  # the admission is given up
        assert not node.copies.stands(accepted.message_id)
        monkeypatch.setattr(node.copies, "replicated_before", lambda holder, seq: True)  # nothing left to send
        with pytest.raises(NotServing, match="gave up this submit"):
            trio.run(node.sender.until_replicated, seq, {sender.address}, [accepted.message_id])
        trio.run(node.sender.until_replicated, seq, {sender.address}, [])  # (a submit that admitted nothing)
        keys.close()
    finally:
        node.store.close()


def test_a_record_made_in_an_epoch_its_maker_did_not_execute_the_actor_is_answered_with_reconcile(
        tmp_path: Path) -> None:
    """Found by tools/faults.py (4 nodes, K=3, 30 mixed faults, seed 38: the cluster never settled):
    a node admitted a message just after the epoch changed, so its record of the sender was made in
    an epoch where another holder executes it.  Every holder refused the diff, and the node sent it
    again for ever (outbound and replicate never emptied).  The refusal now tells it to take the
    executor's copy: that record can never be acknowledged."""
    from missive.mailbox.diffs import StateDiff
    from missive.vm.keccak import keccak256

    node, peer = _node(tmp_path)
    peer_identity = NodeIdentity.load_or_generate(tmp_path / "peer" / IDENTITY_FILE)
    address = next(a for a in (bytes([i]) * 20 for i in range(256)) if node.holders(a)[0] == node.me)
    raw = StateDiff(address, 1, Account(balance=5), epoch=0, version=1).encode()
    try:
        done, problem, action, epoch = trio.run(node.receiver.apply, peer, {
            "diffs": [[raw, peer_identity.sign(keccak256(raw))]], "epoch": 0})
        assert done == 0 and "did not execute" in problem
        assert action == ["reconcile", address]
        assert node.store.account(address) is None
    finally:
        node.store.close()


def test_a_copy_longer_than_the_executors_gives_up_the_records_past_its_end(tmp_path: Path) -> None:
    """The other half: told to reconcile, the node asks the executor for its copy from its own last
    record; the executor's copy ends earlier (it never had the stray record), so the node asks
    again from the executor's last record and gives up what lies past it: the admission goes, the
    sender's balance and nonce are back, and nothing is left to send."""
    from missive.keys import Keystore
    from missive.mailbox.admission import checker
    from missive.mailbox.diffs import StateDiff
    from missive.mailbox.envelope import Envelope, Kind
    from missive.mailbox.store import Accepted

    node, peer = _node(tmp_path)
    keys = Keystore(tmp_path / "keys", create=True)
    try:
        sender = next(k for k in (keys.new(f"s{i}") for i in range(400)) if node.holders(k.address)[0] == peer)
        assert not node.executes(sender.address)  # the peer does, in epoch 0
        node.store.create_account(sender.address, sender.public_key, 10**18)
        before = node.store.account(sender.address)
        head = node.copies.head(sender.address)[0]
        executors_copy = node.copies.snapshot(sender.address, head)  # what the executor holds: the same genesis
        envelope = Envelope(Kind.CALL, sender.address, bytes(20), value=7, nonce=0, chain_id=node.store.chain_id)
        # admitted as it was before the fix: routed here, the epoch changed before the write
        (accepted,) = node.store.accept([sender.sign(envelope)], checker(node.store, signatures=False))
        assert isinstance(accepted, Accepted), accepted
        assert node.copies.head(sender.address)[0] == head + 1
        with pytest.raises(Exception, match="does not execute"):  # the admission check now refuses it
            node.store.accept([sender.sign(Envelope(Kind.CALL, sender.address, bytes(20), value=7, nonce=1,
                                                    chain_id=node.store.chain_id))], _raising(node.check))
        asked: list[int] = []

        async def answer(method: str, params: Any = None, *, timeout: float | None = None) -> Any:
            assert method == "snapshot" and params["address"] == sender.address
            asked.append(params["version"])
            return executors_copy if params["version"] == head else {"head": head}

        node.links[peer].call = answer  # type: ignore[method-assign]

        async def act() -> None:
            async with trio.open_nursery() as nursery:
                node.receiver.nursery = nursery
                await node.receiver.act_on(peer, ["reconcile", sender.address])

        trio.run(act)
        assert asked == [head + 1, head]
        assert node.store.account(sender.address) == before  # the admission is given up
        left = [StateDiff.decode(raw) for _, raw in node.copies.queued("replicate", peer, 10)]
        assert [d.version for d in left if d.address == sender.address] == [head]  # the genesis record stands
        assert node.copies.queued("outbound", peer, 10) == []  # the message given up goes nowhere
        assert node.copies.given_up([accepted.message_id]) == [accepted.message_id]
    finally:
        keys.close()
        node.store.close()


def _raising(check: Any) -> Any:
    """An admission check that raises what it refuses (the store records a refusal as a result)."""
    def wrapped(txn: Any, envelope: Any, *args: Any) -> Any:
        try:
            return check(txn, envelope, *args)
        except Exception as exc:
            raise RuntimeError(str(exc)) from exc
    return wrapped


def test_a_record_of_an_earlier_epoch_lets_its_message_leave_only_if_this_node_executed_the_sender_since(
        tmp_path: Path) -> None:
    """Found by tools/faults.py (4 nodes, K=3, 30 mixed faults, seed 43: 7,947 wei created): a node
    made records of the relay in one epoch; the other holder never acknowledged them and, executing
    the relay in the next epoch, made records of its own; then this node executed the relay again
    (the other holder left) and let the old records' messages leave, judged by the new epoch's
    ack set alone.  The other executor's records won (the higher epoch), the relay handled the same
    calls again and forwarded their value a second time.  A record's messages leave by the current
    ack set only if this node executed the sender in every epoch since the record was made."""
    from missive.replicas.epochs import Epoch

    node, (me, h, z) = _three_nodes(tmp_path)
    try:
        keys, (sender,), _ = _waiting_for_z(node, tmp_path, (me, h, z))  # a record of epoch 0, h lacks it
        queued = node.copies.queued("outbound", z, 10)
        assert len(queued) == 1 and node.sender.replicated_prefix(queued) == []
        # epoch 1: this node is cut off, h executes the sender; epoch 2: h is gone, this node executes it again
        node.membership.history.extend([Epoch(1, frozenset({h, z}), frozenset()), Epoch(2, frozenset({me, z}))])
        assert node.membership.adopt() and node.executes(sender.address)
        assert node.membership.history.executor(sender.address, 1) == h
        assert node.sender.replicated_prefix(queued) == []  # held: h, of the record's epoch, lacks it
        keys.close()
    finally:
        node.store.close()


def test_a_message_judged_while_a_rollback_commits_is_judged_on_one_state_of_the_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by tests/test_cluster_faults.py [k3-3nodes-kill] in CI (invariant 8, "had already left"):
    n2 admitted a client's message in epoch 2, while n1 joined; n1 was made to serve in epoch 3 without
    that record (rightly: a record of epoch 2 needs n1 to be acknowledged), so the message waited in n2's
    outbound queues.  n2 then took n1's copy, giving the record up, in a worker thread, while its
    sender task was judging the waiting message: it read the queue before the rollback committed and
    the records and diffs after it (the record's diff, which n1 lacked, was gone with the record), so
    the message left for n3, which later gave up the same record and logged that its message had
    already left.  The queue and what decides whether its messages may leave are now read in one
    transaction."""
    from missive.keys import Keystore
    from missive.mailbox.envelope import Envelope, Kind
    from missive.net.rpc import Pending
    from missive.replicas.epochs import Epoch

    ids = [NodeIdentity.load_or_generate(tmp_path / name / IDENTITY_FILE) for name in ("me", "h", "z")]
    me, h, z = (i.node_id for i in ids)
    members = tuple(Peer(name, "127.0.0.1", 1 + n, i.node_id) for n, (name, i) in enumerate(zip(("me", "h", "z"), ids,
                                                                                                 strict=True)))
    node = ClusterNode(NodeConfig("me", tmp_path / "me", "127.0.0.1", 0, members, replicas=3))
    keys = Keystore(tmp_path / "keys", create=True)
    try:
        # a sender that h executes when it serves, this node when h only joins (n1 and n2 of the failure)
        sender = next(k for k in (keys.new(f"s{i}") for i in range(400)) if node.holders(k.address) == [h, me, z])
        node.store.create_account(sender.address, sender.public_key, 10**18)
        version = node.copies.head(sender.address)[0]
        before = node.copies.snapshot(sender.address, version)  # h's copy: it never gets the admission
        assert before is not None
        for peer in (h, z):  # both hold the genesis
            with node.store.env.begin(write=True) as txn:
                node.copies.dequeue("replicate", [key for key, _ in node.copies.queued("replicate", peer, 10)], txn)
        # epoch 1: h was killed and came back: it joins, this node executes the sender and admits a call
        node.membership.history.extend([Epoch(1, frozenset({me, z}), frozenset({h}))])
        assert node.membership.adopt() and node.executes(sender.address)
        envelope = Envelope(Kind.CALL, sender.address, bytes([7]) * 20, value=7, nonce=0, chain_id=node.store.chain_id)
        (accepted,) = node.store.accept([sender.sign(envelope)], node.check)
        assert not isinstance(accepted, Exception), accepted
        with node.store.env.begin(write=True) as txn:  # z has the record; h (joining) never gets it
            node.copies.dequeue("replicate", [key for key, _ in node.copies.queued("replicate", z, 10)], txn)
        queued = node.copies.queued("outbound", z, 10)
        assert len(queued) == 1 and node.sender.replicated_prefix(queued) == []  # h lacks the record
        # epoch 2: h reported complete and serves: it executes the sender, and this node takes its copy
        node.membership.history.extend([Epoch(2, frozenset({me, h, z}))])
        assert node.membership.adopt() and not node.executes(sender.address)
        assert node.sender.replicated_prefix(queued) == []  # still held: h, of the record's epoch, lacks it

        real_queued = node.copies.queued
        rolled: list[Any] = []

        def queued_then_rolled_back(table: str, node_id: bytes, *args: Any, **kwargs: Any) -> Any:
            """The rollback's transaction commits (in the worker thread) just after the queue was read."""
            found = real_queued(table, node_id, *args, **kwargs)
            if table == "outbound" and node_id == z and not rolled:
                rolled.append(node.copies.roll_back(h, sender.address, version, before))
            return found

        monkeypatch.setattr(node.copies, "queued", queued_then_rolled_back)
        delivered: list[bytes] = []

        async def start(method: str, params: Any = None) -> Pending:
            assert method == "deliver"
            delivered.extend(params["records"])
            return Pending(method, params)  # never answered

        node.links[z].start = start  # type: ignore[method-assign]

        async def deliver_for_a_while() -> None:
            with trio.move_on_after(1.0):
                await node.sender.deliver_to(z)

        trio.run(deliver_for_a_while, clock=trio.testing.MockClock(autojump_threshold=0))
        assert rolled and rolled[0].discarded  # the record was given up meanwhile
        assert node.copies.given_up([accepted.message_id]) == [accepted.message_id]
        assert delivered == []  # its message never left for z
        assert real_queued("outbound", z, 10) == []
        keys.close()
    finally:
        node.store.close()


def test_messages_a_rollback_unhandles_wait_ahead_of_later_messages_of_their_pair(tmp_path: Path) -> None:
    """Per-pair order across a rollback (found by a helper in the session that built bid order on a
    cluster, left then): a copy that handled m1 and then takes a copy that did not gives m1 up, and
    m1 waits again; it used to be queued behind m2 and m3 of the same sender, which arrived after it
    and waited, so they would have run before it.  It now waits ahead of them."""
    from missive.actors.runtime import Runtime
    from missive.keys import Keystore
    from missive.mailbox.envelope import Envelope, Kind
    from missive.node.signing import pack_signed

    node, peer = _node(tmp_path)
    keys = Keystore(tmp_path / "keys", create=True)
    try:
        sender = keys.new("sender")
        held = next(k for k in (keys.new(f"r{i}") for i in range(400)) if node.executes(k.address))
        recipient = held.address
        node.store.create_account(recipient, held.public_key, 0)
        version = node.copies.head(recipient)[0]
        before = node.copies.snapshot(recipient, version)  # the other copy: it never handles m1
        assert before is not None

        def delivered(nonce: int) -> bytes:
            signed = sender.sign(Envelope(Kind.CALL, sender.address, recipient, nonce=nonce,
                                          chain_id=node.store.chain_id))
            (message_id,) = node.copies.receive([pack_signed(signed)])
            assert isinstance(message_id, bytes), message_id
            return message_id

        m1 = delivered(0)
        runtime = Runtime(node.store)
        trio.run(runtime.run)  # handles m1: its record follows `version` here
        assert node.store.receipt(m1) is not None
        m2, m3 = delivered(1), delivered(2)
        rolled = node.copies.roll_back(peer, recipient, version, before)
        assert rolled.requeued == (m1,)
        assert node.store.receipt(m1) is None
        assert [message_id for _, message_id in node.store.pending(recipient)] == [m1, m2, m3]
    finally:
        keys.close()
        node.store.close()
