"""The trust layer on real cluster nodes: attestation and gossip over PeerLinks, ``trust_view``, ``missive trust``.

A 3-node cluster (node processes on 127.0.0.1, every actor replicated on every
node, so each node holds receipts of the others' actors to spot-check) runs
for the module; the fixture stops it whatever happens.  Waits are polls with a
deadline (a node steps once a second), never assertions about time.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import msgpack
import nacl.signing
import pytest
from test_cluster import Cluster
from test_cluster_cli import ENV, failed, ok
from test_cluster_replicas import _as_member, settled

from missive.cluster import launcher
from missive.cluster.client import call
from missive.cluster.config import ConfigError, NodeConfig, Peer, load
from missive.cluster.trust import (
    MAX_TRUST_FRAME,
    WRONG_ATTESTATIONS,
    Saved,
    TrustSettings,
    TrustStore,
    evidence_from_view,
)
from missive.consensus import gossip
from missive.consensus.actors import ATTEST_DOMAIN
from missive.consensus.kernel import Attester
from missive.consensus.overlay import Overlay
from missive.mailbox.envelope import Kind
from missive.net import RemoteError

Views = dict[str, dict[str, Any]]


def missive(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "missive", *args], capture_output=True, text=True, env=ENV, timeout=60)


@contextlib.contextmanager
def restartable(root: Path) -> Iterator[Cluster]:
    """A 3-node cluster holding every actor on every node, whose nodes ``_restart`` may restart;
    every process (restarted ones too) is stopped on the way out, whatever happens."""
    c = Cluster(root, 3, replicas=3)
    restarted: list[subprocess.Popen[bytes]] = []
    c.restarted = restarted  # type: ignore[attr-defined]
    try:
        yield c
    finally:
        try:
            c.stop()
        finally:
            for process in restarted:
                if process.poll() is None:
                    process.terminate()
                    process.wait(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with restartable(tmp_path_factory.mktemp("trust") / "cluster") as c:
        alice_node = c.home(c.alice.address)["name"]
        bob = c.account_elsewhere("bob", {alice_node})
        client = c.client(0)
        sent = []
        for i in range(4):  # receipts on two nodes, replicated on all three: something to spot-check
            sent.append(client.submit(bob, Kind.CALL, c.alice.address, value=10 + i))
            sent.append(client.submit(c.alice, Kind.CALL, bob.address, value=10 + i))
        for envelope in sent:
            assert client.receipt(envelope)[0].success
        settled(c)  # the receipts reached every replica
        yield c


def views(cluster: Cluster) -> Views:
    return {s["name"]: call("127.0.0.1", s["port"], "trust_view") for s in cluster.states}


def wait_views(cluster: Cluster, done: Callable[[Views], bool], timeout: float = 60.0) -> Views:
    """Poll every node's view until ``done`` holds (a node steps once a second); the views."""
    deadline = time.monotonic() + timeout
    while True:
        seen = views(cluster)
        if done(seen):
            return seen
        assert time.monotonic() < deadline, f"trust views never got there: {seen}"
        time.sleep(0.25)


def as_member(cluster: Cluster, name: str, target: int, method: str, params: Any) -> Any:
    """``method`` on node ``target``, authenticated as member ``name``; a remote error is raised as itself."""
    try:
        return _as_member(cluster, name, target, method, params)
    except BaseExceptionGroup as group:
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        raise error from None


def direct(view: dict[str, Any]) -> dict[bytes, dict[str, Any]]:
    return {bytes(d["id"]): d for d in view["direct"]}


def attested_and_gossiped(cluster: Cluster, seen: Views) -> bool:
    overlay = Overlay(cluster.members)
    for s in cluster.states:
        view = seen[s["name"]]
        if set(map(bytes, view["kernel"]["attesters"])) != set(cluster.members):
            return False
        if any(direct(view).get(subject, {}).get("trust", 0) == 0 for subject in overlay.attests(s["id"])):
            return False
    return True


def test_every_node_attests_its_neighbours_and_gossip_reaches_every_kernel(cluster: Cluster) -> None:
    alice_home = cluster.home(cluster.alice.address)["id"]

    def spot_checked_on_receipts(seen: Views) -> bool:  # the replicas of alice's account check her node on them
        return all(direct(seen[s["name"]])[alice_home]["receipt_checks"] > 0
                   for s in cluster.states if s["id"] != alice_home)

    seen = wait_views(cluster, lambda v: attested_and_gossiped(cluster, v) and spot_checked_on_receipts(v))
    overlay = Overlay(cluster.members)
    for s in cluster.states:
        view = seen[s["name"]]
        assert [bytes(d["id"]) for d in view["direct"]] == list(overlay.attests(s["id"]))
        assert all(int(d["bits"], 2) == d["trust"] > 0 for d in view["direct"])
        assert view["kernel"]["statements"] == 3 and view["kernel"]["entries"] == 6  # each attests the two others
        assert view["evidence"] == [] and view["fault"] is None
        scores = {bytes(x["id"]): x for x in view["scores"]}
        assert scores[s["id"]]["transitive"] == 1.0 and all(x["transitive"] > 0 for x in scores.values())


def test_trust_frames_from_outside_or_malformed_are_refused_and_the_node_stays_up(cluster: Cluster) -> None:
    n1, n2 = cluster.states[0]["name"], cluster.states[1]["name"]
    target = 1
    nonce = b"\x07" * 16
    reply = as_member(cluster, n1, target, "trust", b"a" + msgpack.packb(["C", nonce, 5, b""]))
    tag, answer, signature = msgpack.unpackb(reply[1:])  # a well-formed challenge gets a signed answer
    body = msgpack.packb([ATTEST_DOMAIN, cluster.states[0]["id"], nonce, 5, b"", answer])
    nacl.signing.VerifyKey(cluster.states[target]["id"]).verify(body, signature)
    assert reply[:1] == b"a" and tag == "A" and answer == b""
    for junk, expected in ((b"g\xc1", "malformed gossip"), (b"gjunk", "malformed gossip"),
                           (b"a" + msgpack.packb(["C", 1, 2]), "malformed challenge"), (b"", "unknown trust channel"),
                           (b"z" + b"x" * 10, "unknown trust channel"), ("text", "a trust frame is bytes"),
                           (b"g" + bytes(MAX_TRUST_FRAME), "exceeds")):
        with pytest.raises(RemoteError, match=expected):
            as_member(cluster, n1, target, "trust", junk)
    with pytest.raises(RemoteError, match="cluster members"):  # a client is not a member
        call("127.0.0.1", cluster.states[target]["port"], "trust", b"a" + msgpack.packb(["C", nonce, 5, b""]))
    stranger = Attester(b"\x09" * 32).statement(1, 1, {cluster.states[target]["id"]: 1})  # signed, not a member
    assert as_member(cluster, n1, target, "trust", b"g" + gossip.encode(gossip.Push((stranger,)))) is None
    status = launcher.status(cluster.root)[target]
    assert status["up"] and all(status["peers"].values()) and status["name"] == n2
    kernel = call("127.0.0.1", cluster.states[target]["port"], "trust_view")["kernel"]
    assert kernel["statements"] == 3 and kernel["rejected"] >= 1 and stranger.attester not in kernel["attesters"]


def test_missive_trust_prints_the_table_and_draws_an_svg(cluster: Cluster, tmp_path: Path) -> None:
    wait_views(cluster, lambda v: attested_and_gossiped(cluster, v))
    names = [s["name"] for s in cluster.states]
    out = ok(missive("trust", "--cluster", str(cluster.root), "--node", "n2"))
    assert "trust as seen by n2" in out and "direct trust" in out and "kernel: 3 statement(s) from 3 of 3 members" in out
    assert "conspiracy-breaching" in out and "evidence: none" in out and all(n in out for n in names)
    by_address = ok(missive("trust", "--node", f"127.0.0.1:{cluster.states[2]['port']}"))
    assert f"trust as seen by {names[2]}" in by_address
    picture = tmp_path / "trust.svg"
    drawn = ok(missive("trust", "--cluster", str(cluster.root), "--graph", str(picture)))
    assert f"trust graph written to {picture}" in drawn
    root = ET.parse(picture).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert all(n in texts for n in names)
    edges = [p for p in root.iter("{http://www.w3.org/2000/svg}path") if p.get("class") == "edge"]
    assert len(edges) == 6


def test_missive_trust_bad_input_is_one_line_and_non_zero(cluster: Cluster, tmp_path: Path) -> None:
    failed(missive("trust", "--cluster", str(cluster.root), "--node", "n9"), "no such node in the cluster")
    failed(missive("trust", "--node", "127.0.0.1:1"), "cannot reach node 127.0.0.1:1")
    failed(missive("trust", "--cluster", str(tmp_path / "none")), "no cluster at")
    failed(missive("trust", "--cluster", str(cluster.root), "--graph", str(tmp_path / "t.png")), "SVG is")
    failed(missive("trust", "--cluster", str(cluster.root), "--graph", str(tmp_path / "t.gif")), "unknown picture format")
    failed(missive("trust", "--cluster", str(cluster.root), "--graph", str(tmp_path / "no" / "t.svg")), "no directory")
    (tmp_path / "d.svg").mkdir()
    failed(missive("trust", "--cluster", str(cluster.root), "--graph", str(tmp_path / "d.svg")), "is a directory")
    assert not list(tmp_path.glob("t.*"))


def _restart(cluster: Cluster, name: str, settings: TrustSettings | None = None) -> Saved:
    """Stop node ``name`` cleanly, optionally change its [trust] table, start it again and wait for it.

    Returns the trust state found on its disk while it was stopped."""
    (record,) = [n for n in launcher.read_cluster(cluster.root)["nodes"] if n["name"] == name]
    state = next(s for s in cluster.states if s["name"] == name)
    call("127.0.0.1", state["port"], "shutdown", identity=cluster.operator)
    deadline = time.monotonic() + 30
    while any(s["name"] == name and s["up"] for s in launcher.status(cluster.root)):
        assert time.monotonic() < deadline, f"{name} did not stop"
        time.sleep(0.1)
    on_disk = TrustStore(Path(record["dir"]) / "trust")
    try:
        saved = on_disk.load()
    finally:
        on_disk.close()
    config_path = Path(record["dir"]) / "node.toml"
    if settings is not None:
        config_path.write_text(attrs.evolve(load(config_path), trust=settings).dump())
    log = open(Path(record["dir"]) / "node.log", "ab")  # noqa: SIM115 - the child keeps it
    cluster.restarted.append(subprocess.Popen(  # type: ignore[attr-defined]
        [sys.executable, "-m", "missive.cluster.node", str(config_path)], stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True))
    log.close()
    while not all(s["up"] and all(s["peers"].values()) for s in launcher.status(cluster.root)):
        assert time.monotonic() < deadline, f"{name} did not come back"
        time.sleep(0.1)
    return saved


def test_wrong_answers_become_verifiable_evidence_and_trust_stays_below_the_honest(cluster: Cluster) -> None:
    liar = cluster.home(cluster.alice.address)  # the others hold its receipts (alice's) as replicas
    honest = [s for s in cluster.states if s["id"] != liar["id"]]

    def known(seen: Views) -> bool:
        """The liar-to-be holds every member's statement and has checked both peers (so there is
        something on its disk to continue from)."""
        view = seen[liar["name"]]
        return view["kernel"]["statements"] == 3 and len(view["direct"]) == 2 and all(
            d["trust"] > 0 for d in view["direct"])

    before = wait_views(cluster, known)[liar["name"]]
    saved = _restart(cluster, liar["name"], TrustSettings(fault=WRONG_ATTESTATIONS))
    # what it had when stopped was on its disk: its step, its histories of both peers, every member's statement
    assert saved.step >= before["step"] and set(saved.histories) == {bytes(d["id"]) for d in before["direct"]}
    assert len(saved.statements) == 3 and all(h.successes for h in saved.histories.values())

    def caught(seen: Views) -> bool:
        if not seen[liar["name"]]["step"] > saved.step:  # the liar has not attested since its restart yet
            return False
        for h in honest:
            other = next(s for s in honest if s is not h)
            entries = direct(seen[h["name"]])
            if not any(evidence_from_view(e).subject == liar["id"] for e in seen[h["name"]]["evidence"]):
                return False
            if not entries[liar["id"]]["trust"] < entries[other["id"]]["trust"]:
                return False
        return True

    seen = wait_views(cluster, caught)
    after = seen[liar["name"]]
    assert after["fault"] == WRONG_ATTESTATIONS
    assert after["step"] > saved.step  # it continued from there
    for h in honest:
        evidence = [evidence_from_view(e) for e in seen[h["name"]]["evidence"]]
        assert evidence and all(e.subject == liar["id"] and e.attester == h["id"] for e in evidence)
        assert all(e.verify() for e in evidence)  # the liar signed each wrong answer
        assert any(len(e.receipt) == 32 for e in evidence)  # spot checks on alice's receipts
        for e in evidence:
            if e.receipt:
                found = cluster.client().call("receipt", {"id": e.receipt, "recipient": cluster.alice.address})
                assert found is not None and e.answer != found["receipt"]  # the answer really is wrong
        assert not any(e.verify() for e in [attrs.evolve(evidence[0], answer=evidence[0].answer + b"!")])
        entries = direct(seen[h["name"]])
        other = next(s for s in honest if s is not h)
        assert entries[liar["id"]]["trust"] < entries[other["id"]]["trust"]
        assert int(entries[liar["id"]]["failures"], 2) > 0
    shown = ok(missive("trust", "--cluster", str(cluster.root), "--node", honest[0]["name"]))
    assert "✓ verifies" in shown and "does not verify" not in shown and liar["name"] in shown

    # the evidence is durable: an honest node restarted still holds what it had gathered
    kept = {(e.subject, e.step) for e in map(evidence_from_view, seen[honest[0]["name"]]["evidence"])}
    _restart(cluster, honest[0]["name"])
    again = call("127.0.0.1", honest[0]["port"], "trust_view")
    assert kept <= {(e.subject, e.step) for e in map(evidence_from_view, again["evidence"])}


def test_trust_settings_parse_dump_and_refuse_bad_values(tmp_path: Path) -> None:
    assert TrustSettings.from_table(None, "x") == TrustSettings() and TrustSettings().dump() == []
    made = TrustSettings.from_table({"interval": 0.5, "fault": WRONG_ATTESTATIONS}, "x")
    assert made == TrustSettings(0.5, WRONG_ATTESTATIONS)
    path = tmp_path / "node.toml"
    config = NodeConfig("n1", tmp_path, "127.0.0.1", 0, (Peer("n2", "127.0.0.1", 7402, bytes(range(32))),), 2, trust=made)
    path.write_text(config.dump())
    assert load(path) == config and "[trust]" in path.read_text()
    path.write_text(attrs.evolve(config, trust=TrustSettings()).dump())
    assert load(path).trust == TrustSettings() and "[trust]" not in path.read_text()
    for bad, expected in (({"fault": "lie"}, "fault must be one of"), ({"interval": 0}, "interval must be"),
                          ({"interval": True}, "interval must be"), ({"speed": 1}, "unknown [trust] key")):
        path.write_text('name = "n1"\ndir = "/tmp/n1"\n[trust]\n' + "".join(f"{k} = {v!r}\n".replace("True", "true")
                                                                          .replace("'", '"') for k, v in bad.items()))
        with pytest.raises(ConfigError, match=expected.replace("[", r"\[")):
            load(path)
