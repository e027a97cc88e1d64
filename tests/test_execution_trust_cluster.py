"""Execution trust on real nodes: an executor that sends wrong state diffs is caught by its replicas,
proven wrong to every node, distrusted, and loses its actors, which carry on from honest copies.

Three node processes on 127.0.0.1, every actor held by all three.  One node
is restarted with the ``wrong-diffs`` fault (its diffs misstate a storage
write, signed) and a token is deployed where it executes.  Waits are polls
with deadlines; the fixture stops every process whatever happens.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from test_cluster import Cluster, deploy_token_away_from, query_balance
from test_cluster_cli import ok
from test_ledger_actors import transfer
from test_trust_cluster import _restart, missive, restartable

from missive.cluster import launcher
from missive.cluster.client import call
from missive.cluster.trust import WRONG_DIFFS, TrustSettings
from missive.mailbox.envelope import Kind
from missive.replicas.execution import WrongDiff


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with restartable(tmp_path_factory.mktemp("execution") / "cluster") as c:
        yield c


def until(what: str, done: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = done()
        if found:
            return found
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.2)


def test_a_node_sending_wrong_diffs_is_caught_distrusted_and_loses_its_actors(cluster: Cluster) -> None:
    alice_home = cluster.home(cluster.alice.address)["name"]
    liar = next(s for s in cluster.states if s["name"] != alice_home)
    honest = [s for s in cluster.states if s is not liar]
    bob = cluster.account_elsewhere("bob", {liar["name"]})
    _restart(cluster, liar["name"], TrustSettings(fault=WRONG_DIFFS))
    assert call("127.0.0.1", liar["port"], "trust_view")["fault"] == WRONG_DIFFS

    # a token the liar executes: its deploy diff (the constructor's writes) is the first lie
    token = deploy_token_away_from(cluster, {h["name"] for h in honest})

    def everyone_knows() -> bool:
        for s in cluster.states:
            view = call("127.0.0.1", s["port"], "trust_view")["execution"]
            if [bytes(n) for n in view["distrusted"]] != [liar["id"]]:
                return False
        return True

    until("every node distrusts the liar", everyone_knows)
    for s in cluster.states:
        view = call("127.0.0.1", s["port"], "trust_view")["execution"]
        (raw,) = view["wrong_diffs"]
        evidence = WrongDiff.decode(bytes(raw))
        assert evidence.executor == liar["id"] and evidence.accuser in {h["id"] for h in honest}
        assert evidence.address == token
        assert evidence.check()  # checked here, by the test, from the evidence alone
        if s is not liar:
            trust = {bytes(c["id"]): c["trust"] for c in view["checked"]}
            assert trust[liar["id"]] == 0.0
    statuses = launcher.status(cluster.root)
    assert all(s["distrusted"] == [liar["name"]] for s in statuses)

    # the token moved to an honest holder, which runs it from its own copy (the deploy again)
    def new_home() -> dict[str, Any] | None:
        copies = {s["name"]: cluster.client(i).call("local_state", token) for i, s in enumerate(cluster.states)}
        runs = [name for name, c in copies.items() if c is not None and c["executor"]]
        return copies if runs and liar["name"] not in runs else None

    copies = until("an honest node executes the token", new_home)
    assert not copies[liar["name"]] or not copies[liar["name"]]["executor"]

    client = cluster.client(cluster.states.index(honest[0]))
    sent = [client.submit(cluster.alice, Kind.CALL, token, transfer(bob.address, i + 1)) for i in range(10)]
    for envelope in sent:
        receipt, _ = client.receipt(envelope)
        assert receipt.success, receipt.error
    assert query_balance(client, bob, token, bob.address) == sum(range(1, 11))
    assert query_balance(client, bob, token, cluster.alice.address) == 10**6 - sum(range(1, 11))

    # the honest copies agree exactly (nothing of the lie reached them)
    def honest_copies_agree() -> bool:
        held = [cluster.client(cluster.states.index(h)).call("local_state", token) for h in honest]
        return all(c is not None for c in held) and \
            len({(bytes(c["account"]), str(c["storage"]), str(c["mailbox"])) for c in held}) == 1

    until("the honest copies of the token agree", honest_copies_agree)

    shown = ok(missive("trust", "--cluster", str(cluster.root), "--node", honest[0]["name"]))
    assert "wrong state diff" in shown and liar["name"] in shown and "✓ proves it" in shown


def test_evidence_that_proves_nothing_is_refused_by_a_node(cluster: Cluster) -> None:
    from test_trust_cluster import as_member

    from missive.cluster.client import ClusterError
    from missive.net import RemoteError

    node = cluster.states[0]
    other = cluster.states[1]
    with pytest.raises(RemoteError, match="evidence"):
        as_member(cluster, other["name"], 0, "evidence", b"\x93\x01\x02")
    with pytest.raises(ClusterError, match="not one"):  # not a member
        cluster.client(0).call("evidence", b"")
    assert call("127.0.0.1", node["port"], "status")["name"] == node["name"]  # still up



def test_the_liar_loses_its_pledge_in_the_registry_and_the_node_that_caught_it_is_paid(cluster: Cluster) -> None:
    """Issue 23, slashing on a cluster: the node that found the evidence accuses the liar in the
    registry actor by itself; the liar's worker forfeits its whole pledge, a tenth of it to that
    node's worker, the rest burned; a second accusation with the same evidence changes nothing."""
    from missive.keys import Key
    from missive.market import registry_actor
    from missive.market.workers import ACCUSER_SHARE, OWN_STAKE
    from missive.node.signing import pack_signed, sign_external

    def worker_of(state: dict[str, Any]) -> Key:
        """A node's worker: the account of its node key."""
        return launcher.worker_key(cluster.root, state["name"])

    def registry() -> dict[str, Any]:
        client = cluster.client(0)
        slots: dict[int, int] = {}
        page: dict[str, Any] = {"slots": [], "next": None}
        params: dict[str, Any] = {"address": registry_actor.REGISTRY}
        while True:
            page = client.call("storage", params)
            slots.update((int.from_bytes(k, "big"), int.from_bytes(v, "big")) for k, v in page["slots"])
            if page["next"] is None:
                break
            params = {"address": registry_actor.REGISTRY, "after": page["next"]}
        return registry_actor.view(slots, client.account(registry_actor.REGISTRY).balance)

    views = {s["name"]: call("127.0.0.1", s["port"], "trust_view")["execution"] for s in cluster.states}
    liar_id = next(bytes(v["distrusted"][0]) for v in views.values() if v["distrusted"])
    liar = next(s for s in cluster.states if s["id"] == liar_id)
    finders = [s for s in cluster.states if views[s["name"]].get("accused")]

    def slashed() -> dict[str, Any] | None:
        shown = registry()
        return shown if shown["slashes"] else None

    shown = until("the registry slashes the liar", slashed)
    (slash,) = shown["slashes"]
    liar_worker = worker_of(liar).address
    assert slash["executor"] == liar_worker
    reward = OWN_STAKE * ACCUSER_SHARE // 100
    assert (slash["reward"], slash["burned"]) == (reward, OWN_STAKE - reward)
    workers = dict(shown["workers"])
    assert workers[liar_worker].stake == 0 and workers[liar_worker].slashed == OWN_STAKE
    honest_workers = {worker_of(s).address: s for s in cluster.states if s is not liar}
    assert slash["accuser"] in honest_workers  # a node that caught the liar, paid
    assert cluster.client(0).account(slash["accuser"]).balance == reward
    assert all(workers[w].stake == OWN_STAKE for w in honest_workers)
    # the registry's balance is exactly what it holds: the honest stakes and the burned coin
    assert shown["holdings"] == {"stakes": OWN_STAKE * len(honest_workers), "unbonding": 0,
                                 "burned": OWN_STAKE - reward}
    assert shown["balance"] == sum(shown["holdings"].values())
    assert worker_of(liar).public_key == liar["id"]

    # the same evidence again, from the other honest node: it changes nothing, and says why
    other = next(s for s in cluster.states if s is not liar and worker_of(s).address != slash["accuser"])
    key = worker_of(other)
    (raw,) = views[other["name"]]["wrong_diffs"]
    client = cluster.client(cluster.states.index(other))
    chain_id = int(client.call("status")["chain_id"])
    signed = sign_external(key, Kind.CALL, registry_actor.REGISTRY, registry_actor.payload("accuse", bytes(raw)),
                           nonce=client.account(key.address).nonce, value=0, gas=300_000, chain_id=chain_id)
    answer = client.call("submit_wait", {"record": pack_signed(signed), "until": "receipt", "timeout": 20})
    from missive.mailbox.records import Receipt

    receipt = Receipt.decode(answer["handled"]["receipt"])
    assert not receipt.success
    assert "no pledge left" in receipt.error or "duplicate evidence" in receipt.error
    assert registry()["holdings"] == shown["holdings"]
    assert finders  # at least one node says, in its trust view, what the registry did with its accusation

    # the same from the command line: the evidence file as the trust store keeps it (hex text), exit 2, one line
    evidence_file = cluster.root / "evidence.hex"
    evidence_file.write_text(bytes(raw).hex())
    shown_cli = missive("worker", "accuse", str(evidence_file), "--cluster", str(cluster.root))
    assert shown_cli.returncode == 2, shown_cli.stdout + shown_cli.stderr
    assert "no pledge left" in shown_cli.stderr or "duplicate evidence" in shown_cli.stderr
    assert "Traceback" not in shown_cli.stderr and len(shown_cli.stderr.strip().splitlines()) == 1
    status = missive("worker", "status", "--cluster", str(cluster.root))
    assert status.returncode == 0 and f"slashed {OWN_STAKE}" in status.stdout and "burned" in status.stdout
    # every node's ledger replays, the registry's runs (the accusation's re-check among them) included
    replayed = missive("replay", "--cluster", str(cluster.root))
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    registry_runs = missive("replay", "--cluster", str(cluster.root), "--actor", "0x" + registry_actor.REGISTRY.hex())
    assert registry_runs.returncode == 0, registry_runs.stdout + registry_runs.stderr
    # three registrations, the slashing accusation and the refused one above, at least, re-run from the ledgers
    assert int(registry_runs.stdout.split("replay ok on all 3 nodes: ")[1].split(" receipts")[0]) >= 5
