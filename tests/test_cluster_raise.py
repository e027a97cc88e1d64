"""Raising a bid on a real cluster (issue 23 item 2; docs/market.md "Raising a bid on a cluster"):
three node processes, two holders per actor, so every run is re-executed by the other holder.

A raise is a message from the sender to the recipient's holders carrying the top-up.  Under a
backlog, a raised message overtakes lower bids queued before it and runs with the new bid; the
other holder re-executes that run and agrees (no wrong diff, no accusation, no slashing); a raise
that arrives after its message ran refunds its whole escrow; bad raises are refused in one line with
nothing changed; the coin is conserved and every node's ledger replays."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_abi import encode
from test_cluster import BURN_GAS, BURNER_INIT, Cluster, deploy_away_from, deploy_token_away_from, sel
from test_execution_trust_cluster import until

from missive.actors.replay import replay
from missive.cluster import launcher
from missive.cluster.client import ClusterClient
from missive.cluster.placement import executor, replicas
from missive.cluster.remote import RemoteNode
from missive.keys import Key, Keystore
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
from missive.mailbox.records import Receipt
from missive.mailbox.signed import SignedRecord
from missive.mailbox.store import Store
from missive.market.raises import raise_payload
from missive.node.signing import pack_signed, sign_external

LOW, RAISED, GAS = 1, 9, 100_000
BACKLOG = 1000


def transfer(to: bytes, amount: int) -> bytes:
    return sel("transfer(address,uint256)") + encode(["address", "uint256"], [to, amount])


def receipt_of(client: ClusterClient, envelope: Envelope) -> Receipt:
    receipt, _ = client.receipt(envelope)
    return receipt


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three nodes, two holders per actor: every run is re-executed by the other holder (a new
    cluster trusts nobody yet)."""
    c = Cluster(tmp_path / "cluster", 3, replicas=2)
    try:
        yield c
    finally:
        c.stop()


@contextlib.contextmanager
def remote_of(cluster: Cluster) -> Iterator[RemoteNode]:
    """A client of the cluster with its keystore (which the test's own handle on it lets go of meanwhile:
    LMDB opens an environment once per process)."""
    cluster.keys.close()
    try:
        with RemoteNode.connect(cluster=cluster.root) as remote:
            yield remote
    finally:
        cluster.keys = Keystore(cluster.root, create=True)


def held_in_all(cluster: Cluster) -> int:
    """The coin a cluster with several holders per actor holds: each account once, from its executor's
    copy, and each message not handled yet (its value and escrow) once, wherever it is stored."""
    stores = {s["id"]: Store(Path(s["dir"]), readonly=True) for s in launcher.read_cluster(cluster.root)["nodes"]}
    try:
        total = 0
        for node_id, store in stores.items():
            total += sum(a.balance for address, a in store.accounts() if executor(address, cluster.members) == node_id)
        waiting: dict[bytes, Envelope] = {}
        for store in stores.values():
            for message_id, raw in store.scan("messages", b""):
                envelope = SignedRecord.decode(raw, check=False).envelope
                if stores[executor(envelope.recipient, cluster.members)].receipt(message_id) is None:
                    waiting[message_id] = envelope
        return total + sum(e.value + e.gas * e.bid for e in waiting.values())
    finally:
        for store in stores.values():
            store.close()


def settled(cluster: Cluster, client: ClusterClient, created: int) -> None:
    """Every credit delivered and the coin all there (what ``cluster up`` made, and ``created`` since);
    every node's ledger replays; nobody accused."""
    genesis = launcher.minted(len(cluster.states)) + created
    try:
        until("the coin all accounted for", lambda: held_in_all(cluster) == genesis, timeout=20)
    except AssertionError:
        raise AssertionError(f"the cluster holds {held_in_all(cluster) - genesis} more than it made") from None
    for state in launcher.read_cluster(cluster.root)["nodes"]:
        with Store(Path(state["dir"]), readonly=True) as store:
            report = replay(store)
            assert report.ok, report.divergence and report.divergence.describe()
    with remote_of(cluster) as remote:
        registry = remote.registry()
        assert not registry["slashes"]  # the re-executing holders agreed with every raised run
    statuses = launcher.status(cluster.root)
    assert all(s["up"] for s in statuses)


def test_a_raised_message_overtakes_a_backlog_and_its_run_pays_the_new_bid_everywhere(cluster: Cluster) -> None:
    names = {s["name"] for s in cluster.states}
    alice_node = cluster.home(cluster.alice.address)["name"]
    burner = deploy_away_from(cluster, BURNER_INIT, {alice_node})
    low = cluster.account_elsewhere("low", names - {alice_node})  # admitted by alice's node: one stream to the token
    client = cluster.client()
    chain_id = int(client.call("status")["chain_id"])
    lows = [sign_external(low, Kind.CALL, burner, b"\x01", nonce=n, value=0, gas=BURN_GAS, bid=LOW,
                          chain_id=chain_id) for n in range(BACKLOG)]
    nonce = client.account(cluster.alice.address).nonce
    target = sign_external(cluster.alice, Kind.CALL, burner, b"\x02", nonce=nonce, value=0, gas=BURN_GAS,
                           bid=LOW, chain_id=chain_id)
    token = burner
    message = target[0]
    # the raise, signed by alice as her next message: it reaches the token's holders right after it
    raising = sign_external(cluster.alice, Kind.RAISE, token, raise_payload(message.id, RAISED), nonce=nonce + 1,
                            value=0, gas=BURN_GAS, bid=RAISED - LOW, chain_id=chain_id)
    answers = client.call("submit", [pack_signed(m) for m in (*lows, target, raising)], timeout=60.0)
    assert all("error" not in a for a in answers), [a for a in answers if "error" in a][:1]
    receipt = receipt_of(client, message)
    assert receipt.success
    # the run paid with the raised bid: its fee and refund add up to gas × 9
    assert receipt.gas_used > 500_000
    assert receipt.fee == receipt.gas_used * RAISED and receipt.refund == (BURN_GAS - receipt.gas_used) * RAISED
    until("the backlog handled", lambda: len(client.call("mailbox", token)) >= BACKLOG + 2)
    mailbox = [Envelope.decode(canonical) for canonical, _ in client.call("mailbox", token)]
    ids = [e.id for e in mailbox]
    at = ids.index(message.id)
    assert ids[at - 1] == raising[0].id  # the raise was handled right before the message it raised
    raise_receipt = receipt_of(client, raising[0])
    assert raise_receipt.success and raise_receipt.refund == 0 and raise_receipt.fee == 0  # its escrow went to the run
    low_ids = [m[0].id for m in lows]
    assert [i for i in ids if i in set(low_ids)] == low_ids  # the backlog's pair kept its order, each once
    overtaken = sum(1 for i in ids[at + 1:] if i in set(low_ids))
    assert overtaken >= BACKLOG // 10, f"the raised message overtook {overtaken} of {BACKLOG} lower bids queued before it"
    settled(cluster, client, 10**18)


def test_missive_bid_on_a_cluster_is_settled_one_way_or_the_other_and_says_which(cluster: Cluster) -> None:
    """``RemoteNode.raise_bid`` races the run of the message it raises: applied, the run pays the new
    bid; too late, the raise's whole escrow comes back.  Either way the accounts add up."""
    names = {s["name"] for s in cluster.states}
    alice_node = cluster.home(cluster.alice.address)["name"]
    token = deploy_token_away_from(cluster, {alice_node})
    low = cluster.account_elsewhere("low", names - {alice_node})
    client = cluster.client()
    chain_id = int(client.call("status")["chain_id"])
    lows = [sign_external(low, Kind.CALL, token, transfer(low.address, 0), nonce=n, value=0, gas=GAS, bid=LOW,
                          chain_id=chain_id) for n in range(BACKLOG)]
    nonce = client.account(cluster.alice.address).nonce
    target = sign_external(cluster.alice, Kind.CALL, token, transfer(low.address, 5), nonce=nonce, value=0, gas=GAS,
                           bid=LOW, chain_id=chain_id)
    answers = client.call("submit", [pack_signed(m) for m in (*lows, target)], timeout=60.0)
    assert all("error" not in a for a in answers)
    message = target[0]
    with remote_of(cluster) as remote:
        try:
            escrowed = remote.raise_bid(message.id, RAISED, wait=True)
        except EnvelopeError as err:  # handled before the raise was checked, or before it arrived
            assert "already handled" in str(err) or "came too late" in str(err), err
            applied = False
        else:
            assert escrowed == GAS * (RAISED - LOW)
            applied = True
    receipt = receipt_of(client, message)
    bid = RAISED if applied else LOW
    assert receipt.fee == receipt.gas_used * bid and receipt.refund == (GAS - receipt.gas_used) * bid
    settled(cluster, client, 10**18)


def test_a_raise_that_arrives_after_its_message_ran_refunds_its_whole_escrow(cluster: Cluster) -> None:
    alice_node = cluster.home(cluster.alice.address)["name"]
    token = deploy_token_away_from(cluster, {alice_node})
    holders = {cluster.by_id[i]["name"] for i in replicas(token, cluster.members, 2)}
    # a sender whose node keeps no copy of the token: its admission cannot see that the message ran
    sender = cluster.account_elsewhere("late", holders)
    client = cluster.client()
    chain_id = int(client.call("status")["chain_id"])
    sent = client.submit(sender, Kind.CALL, token, transfer(sender.address, 0), gas=GAS, bid=LOW)
    assert receipt_of(client, sent).success
    with remote_of(cluster) as remote:
        with pytest.raises(EnvelopeError, match="is already handled"):  # the client sees it first
            remote.raise_bid(sent.id, RAISED)
    until("the run's refund back with the sender",
          lambda: client.account(sender.address).balance == 10**18 - receipt_of(client, sent).fee)
    before = client.account(sender.address).balance
    nonce = client.account(sender.address).nonce
    late = sign_external(sender, Kind.RAISE, token, raise_payload(sent.id, RAISED), nonce=nonce, value=0, gas=GAS,
                         bid=RAISED - LOW, chain_id=chain_id)
    (answer,) = client.call("submit", [pack_signed(late)])  # sent anyway, by hand
    assert "error" not in answer, answer
    raise_receipt = receipt_of(client, late[0])
    assert raise_receipt.success and raise_receipt.fee == 0 and raise_receipt.refund == GAS * (RAISED - LOW)
    until("the raise's escrow back with the sender", lambda: client.account(sender.address).balance == before)
    assert receipt_of(client, sent).fee == receipt_of(client, sent).gas_used * LOW  # the run kept its own bid
    settled(cluster, client, 10**18)


def test_bad_raises_are_refused_in_one_line_and_change_nothing(cluster: Cluster) -> None:
    alice_node = cluster.home(cluster.alice.address)["name"]
    token = deploy_token_away_from(cluster, {alice_node})
    holders = {cluster.by_id[i]["name"] for i in replicas(token, cluster.members, 2)}
    client = cluster.client()
    bob = cluster.account_elsewhere("bob", set())
    poor = cluster.account_elsewhere("poor", holders)  # its node cannot see the token's receipts
    handled = client.submit(cluster.alice, Kind.CALL, token, transfer(bob.address, 1), gas=GAS, bid=LOW)
    assert receipt_of(client, handled).success
    spent = client.submit(poor, Kind.CALL, token, transfer(poor.address, 0), gas=GAS, bid=LOW)
    assert receipt_of(client, spent).success
    chain_id = int(client.call("status")["chain_id"])
    nonce = client.account(poor.address).nonce
    drain = client.submit(poor, Kind.CALL, bob.address, value=client.account(poor.address).balance - 10, gas=1)
    receipt_of(client, drain)
    until("poor's balance drained", lambda: client.account(poor.address).balance <= 10)

    def balances() -> tuple[int, ...]:
        return tuple(client.account(k.address).balance for k in (cluster.alice, bob, poor))

    before = balances()
    with remote_of(cluster) as remote:
        cases: list[tuple[str, bytes, int, object]] = [
            ("unknown message 0x", b"\x07" * 32, RAISED, None),
            ("only the sender of", handled.id, RAISED, bob),
            ("a raise must offer more than the current bid", handled.id, LOW, None),
            ("a bid is a fee per gas", handled.id, -1, None),
            ("is already handled", handled.id, RAISED, None),
        ]
        for words, message_id, bid, sender in cases:
            with pytest.raises(EnvelopeError, match=words):
                remote.raise_bid(message_id, bid, sender=sender)
    # raise messages signed by hand, each wrong: refused by the sender's node at admission
    nonce = client.account(poor.address).nonce
    def raising(key: Key, target: Envelope, payload: bytes, *, gas: int = GAS, bid: int = RAISED - LOW) -> bytes:
        signed = sign_external(key, Kind.RAISE, token, payload, nonce=client.account(key.address).nonce, value=0,
                               gas=gas, bid=bid, chain_id=chain_id)
        return pack_signed(signed)

    answers = client.call("submit", [
        raising(poor, spent, raise_payload(spent.id, RAISED)),  # poor cannot afford the top-up
        raising(poor, spent, raise_payload(spent.id, RAISED), gas=GAS + 1),  # not the message's gas
        raising(poor, spent, raise_payload(spent.id, RAISED), bid=1),  # escrows less than the raise
        raising(poor, spent, b"\x93\x01\x02\x03"),  # not [message id, new bid]
        raising(bob, spent, raise_payload(spent.id, RAISED)),  # not the message's sender
    ])
    errors = [a.get("error", "") for a in answers]
    assert errors[0].startswith("balance too low") and "raising the bid of" in errors[0], errors[0]
    assert "with its gas" in errors[1] and "its bid must be 8, not 1" in errors[2], errors[1:3]
    assert errors[3].startswith("malformed raise") and "only the sender of" in errors[4], errors[3:]
    assert balances() == before and client.account(poor.address).nonce == nonce
    # the CLI: one line, exit 2
    done = subprocess.run([sys.executable, "-m", "missive", "bid", handled.id.hex(), "9", "--cluster",
                           str(cluster.root)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "is already handled" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    settled(cluster, client, 2 * 10**18)
