"""Highest bid first on a real cluster (issue 23, item 2): three node processes, two holders per
actor.  A node with a backlog of low-bid messages to several actors handles a high-bid message
queued after them before most of them, while each (sender, recipient) pair keeps its order and
every message is handled once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cluster import BURN_GAS, BURNER_INIT, Cluster, deploy_away_from

from missive.cluster.client import ClusterClient
from missive.mailbox.envelope import Envelope, Kind
from missive.node.signing import pack_signed, sign_external

LOW, HIGH = 1, 50
PER_ACTOR = 150  # low-bid messages to each of the three actors


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster", 3, replicas=2)
    try:
        yield c
    finally:
        c.stop()


def handled(client: ClusterClient, address: bytes, count: int, timeout: float = 90.0) -> list[bytes]:
    """Ids of the messages ``address`` handled, in order, once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        handled_here = [Envelope.decode(canonical) for canonical, _ in client.call("mailbox", address)]
        ids = [envelope.id for envelope in handled_here if envelope.kind is not Kind.DEPLOY]  # not its own deploy
        if len(ids) >= count:
            return ids
        assert time.monotonic() < deadline, f"{len(ids)} of {count} handled"
        time.sleep(0.2)


def test_a_later_high_bid_overtakes_a_backlog_of_low_bids_keeping_each_pairs_order(cluster: Cluster) -> None:
    names = {s["name"] for s in cluster.states}
    low = cluster.account_elsewhere("low", set())
    senders_node = cluster.home(low.address)["name"]
    high = cluster.account_elsewhere("high", names - {senders_node})  # admitted by the same node, after
    busy = sorted(names - {senders_node})[0]  # the actors' executor: the messages cross to it
    # contracts whose runs take a millisecond or more: the backlog takes longer to handle than to
    # arrive (plain transfers were handled as fast as they came, and the high bid overtook none)
    actors = [deploy_away_from(cluster, BURNER_INIT, names - {busy}) for _ in range(3)]
    client = cluster.client()
    chain_id = int(client.call("status")["chain_id"])

    def signed(key: object, nonce: int, to: bytes, bid: int) -> tuple[Envelope, bytes]:
        message = sign_external(key, Kind.CALL, to, b"\x01", nonce=nonce, value=1, gas=BURN_GAS, bid=bid,  # type: ignore[arg-type]
                                chain_id=chain_id)
        return message[0], pack_signed(message)

    lows = [signed(low, n, actors[n % 3], LOW) for n in range(3 * PER_ACTOR)]
    last = signed(high, 0, actors[0], HIGH)
    # one request: the backlog, then the high bid (each admitted by its sender's node, in order)
    answers = client.call("submit", [record for _, record in lows] + [last[1]], timeout=60.0)
    assert all("error" not in a for a in answers), [a for a in answers if "error" in a][:1]

    mailboxes = [handled(client, actor, PER_ACTOR + (i == 0)) for i, actor in enumerate(actors)]
    for i, mailbox in enumerate(mailboxes):
        sent = [envelope.id for n, (envelope, _) in enumerate(lows) if n % 3 == i]
        assert sorted(m for m in mailbox if m != last[0].id) == sorted(sent)  # each once
        assert [m for m in mailbox if m != last[0].id] == sent  # the pair (low, actor i) in its order
    # lows to actor 0 queued before the high bid and handled after it: serving in turn (before the
    # index was kept on a cluster) this was 0; here 64 of 150 in each of 3 runs, all that still waited
    # when it arrived (the first delivery of 256 messages carried 86 of them, handled meanwhile).  With
    # plain transfers as the backlog it was 0 once in CI (27f5cec): the backlog had drained first
    overtaken = len(mailboxes[0]) - 1 - mailboxes[0].index(last[0].id)
    assert overtaken >= PER_ACTOR // 4, f"the high bid overtook {overtaken} of {PER_ACTOR} low bids queued before it"
