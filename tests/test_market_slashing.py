"""A node executes only as a registered worker, and slashing on evidence (issue 23 items 3-5;
docs/market.md "Workers", "Slashing").

``missive init`` makes the node its own worker (its ledger key's account, holding the stake from
genesis: no balance moves); unbonded or slashed, the node executes nothing and says why.  Wrong-diff
evidence submitted to the registry is re-checked: valid, it forfeits the executor's whole pledge
(a share to the first accuser, the rest burned) and deregisters it; duplicate evidence, evidence
that proves nothing and forged accusations are refused in one line and change nothing.  Replay
re-checks every slash and rebuilds what was burned.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from test_ledger_actors import Ledger
from test_market_workers import held, op

from missive.actors.replay import replay
from missive.cli.main import main as cli
from missive.keys import Key
from missive.mailbox import digest
from missive.mailbox.diffs import StateDiff
from missive.mailbox.envelope import EnvelopeError
from missive.mailbox.records import Account
from missive.market.workers import ACCUSER_SHARE, OWN_STAKE, Worker
from missive.market.workers import digest as worker_digest
from missive.net import NodeIdentity
from missive.node import Node
from missive.node.errors import NotHandled
from missive.replicas.execution import PreState, WrongDiff
from missive.replicas.slashing import check_evidence
from missive.vm.keccak import keccak256

#: who found the wrong diff (the node that re-executed it); its signature makes the evidence its own
FINDER = NodeIdentity.generate()
ACTOR = bytes(range(20))


def wrong_diff_evidence(executor: Key, chain_id: int, n: int = 0, *, proves: bool = True) -> bytes:
    """Evidence that ``executor`` (its account key signs the diff, as a node's key would) signed
    state diff number ``n`` of an actor whose after-state does not follow from the state it started
    from (``proves``), or an honest one (the evidence then proves nothing).  Deterministic in its
    arguments, so the same ``n`` gives the same bytes (duplicate evidence)."""
    empty = digest.state_digest(b"", digest.storage_sum([]))
    account = Account(balance=n + 1) if proves else Account()
    after = b"\x01" * 32 if proves else digest.state_digest(account.encode(), digest.storage_sum([]))
    raw = StateDiff(ACTOR, n, account, before=empty, after=after).encode()
    signature = bytes(executor.signing_key.sign(keccak256(raw)).signature)
    return WrongDiff.make(FINDER, executor.public_key, raw, signature,
                          PreState(b"", (), b"", (), (), chain_id)).encode()


def accuse(ledger: Ledger, accuser: Key, evidence: bytes, *, signer: Key | None = None) -> object:
    store = ledger.store
    by = signer or accuser
    signature = bytes(by.signing_key.sign(worker_digest(store.chain_id, "accuse", accuser.address,
                                                        [evidence])).signature)
    return store.accuse(accuser.address, evidence, by.public_key, signature)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    made = Ledger(tmp_path / "node")
    made.store.evidence_check = check_evidence
    return made


def state(ledger: Ledger) -> object:
    store = ledger.store
    return list(store.ledger()), store.accounts(), store.workers(), store.burned(), store.slashes()


def test_valid_evidence_forfeits_the_pledge_to_the_accuser_and_the_fire_and_replay_agrees(ledger: Ledger) -> None:
    alice, bob = ledger.alice, ledger.bob
    supply = held(ledger)
    op(ledger, bob, "register", 10**17)
    op(ledger, bob, "unbond")  # an unbonding stake is still pledged: evidence may arrive in the delay
    before = ledger.store.account(alice.address)
    assert before is not None
    slash = accuse(ledger, alice, wrong_diff_evidence(bob, ledger.store.chain_id))
    reward = 10**17 * ACCUSER_SHARE // 100
    assert (slash.executor, slash.reward, slash.burned) == (bob.address, reward, 10**17 - reward)  # type: ignore[attr-defined]
    assert "contradicts itself" in slash.finding  # type: ignore[attr-defined]
    assert ledger.store.worker(bob.address) == Worker(0, bob.address, 0, 0, 0, 10**17)  # deregistered
    after = ledger.store.account(alice.address)
    assert after is not None and after.balance == before.balance + reward
    assert ledger.store.burned() == 10**17 - reward
    assert held(ledger) + ledger.store.burned() == supply  # conservation: burned is a holding of its own
    report = replay(ledger.store)
    assert report.ok, report.divergence and report.divergence.describe()
    # registering again takes a fresh stake
    op(ledger, bob, "register", 5_000)
    assert ledger.store.worker(bob.address).stake == 5_000  # type: ignore[union-attr]


@pytest.mark.parametrize("case", ["duplicate", "proves nothing", "malformed", "forged", "other ledger",
                                  "not a worker", "nothing left"])
def test_evidence_that_changes_nothing_is_refused_in_one_line(ledger: Ledger, case: str) -> None:
    alice, bob = ledger.alice, ledger.bob
    chain_id = ledger.store.chain_id
    op(ledger, bob, "register", 10**17)
    first = wrong_diff_evidence(bob, chain_id, 1)
    if case in ("duplicate", "nothing left"):
        accuse(ledger, alice, first)
    before = state(ledger)
    expected = {"duplicate": "duplicate evidence", "proves nothing": "proves nothing",
                "malformed": "proves nothing", "forged": "not signed by its account",
                "other ledger": "chain id", "not a worker": "not a worker", "nothing left": "no pledge left"}[case]
    with pytest.raises(EnvelopeError) as refused:
        if case == "duplicate":
            accuse(ledger, alice, first)
        elif case == "proves nothing":
            accuse(ledger, alice, wrong_diff_evidence(bob, chain_id, proves=False))
        elif case == "malformed":
            accuse(ledger, alice, b"\x92\x01" + first[:40])
        elif case == "forged":
            accuse(ledger, alice, first, signer=bob)
        elif case == "other ledger":
            accuse(ledger, alice, wrong_diff_evidence(bob, chain_id + 1))
        elif case == "not a worker":
            accuse(ledger, bob, wrong_diff_evidence(alice, chain_id))
        else:
            accuse(ledger, alice, wrong_diff_evidence(bob, chain_id, 2))
    text = str(refused.value)
    assert "\n" not in text and expected in text, text
    assert state(ledger) == before


def test_replay_re_checks_a_slash_and_needs_the_evidence_checker(ledger: Ledger) -> None:
    op(ledger, ledger.bob, "register", 10**17)
    accuse(ledger, ledger.alice, wrong_diff_evidence(ledger.bob, ledger.store.chain_id))
    ledger.store.evidence_check = None  # a replay that cannot re-check the evidence does not trust it
    report = replay(ledger.store)
    assert not report.ok and "cannot re-check" in report.divergence.describe()  # type: ignore[union-attr]


def test_init_makes_the_node_its_own_worker_and_unbonded_it_executes_nothing(tmp_path: Path) -> None:
    node = Node.init(tmp_path / "n", default_balance=10**24, encrypt_keys=False)
    try:
        store = node.store
        own = keccak256(store.seal_public_key() or b"")[12:]
        assert store.worker(own) == Worker(OWN_STAKE, node.default.address, 0)
        assert node.account(node.default.address).balance == 10**24  # type: ignore[union-attr]  # nothing moved
        assert store.coinbase() == node.default.address and store.idle_reason() is None
        bob = node.new_account("bob", balance=0)
        assert node.send(bob.address, value=5).receipt().success  # bids of 0 work as before
        node.worker_op("unbond")  # the ledger key signs for the node's own worker
        assert "executes nothing" in (store.idle_reason() or "")
        message = node.send(bob.address, value=7)
        with pytest.raises(NotHandled, match="executes nothing: its worker 0x.* is unbonding"):
            message.receipt()
        assert store.receipt(message.id) is None
        node.worker_op("register", stake=5_000)  # the default account becomes the node's worker
        assert message.receipt().success
    finally:
        node.close()


def test_missive_worker_accuse_and_missive_market(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISSIVE_UNENCRYPTED_KEYS", "1")
    node_dir = str(tmp_path / "n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        assert cli(["init", "--dir", node_dir]) == 0
        node = Node.open(node_dir)
        executor = node.keystore.new("exec")
        node.store.create_account(executor.address, executor.public_key, 10**18)
        node.worker_op("register", sender="exec", stake=10**17)
        evidence = tmp_path / "evidence.bin"
        evidence.write_bytes(wrong_diff_evidence(executor, node.store.chain_id))
        (tmp_path / "nothing.hex").write_text(wrong_diff_evidence(executor, node.store.chain_id, 5,
                                                                  proves=False).hex())
        node.close()
        assert cli(["worker", "accuse", str(evidence), "--dir", node_dir]) == 0
        assert cli(["worker", "accuse", str(evidence), "--dir", node_dir]) == 2  # duplicate
        assert cli(["worker", "accuse", str(tmp_path / "nothing.hex"), "--dir", node_dir]) == 2
        assert cli(["worker", "accuse", str(tmp_path / "missing"), "--dir", node_dir]) == 2
        assert cli(["market", "--dir", node_dir]) == 0
    text = out.getvalue()
    assert f"slashed 0x{executor.address.hex()}: {10**17} forfeited" in text
    assert "duplicate evidence" in text and "proves nothing" in text and "cannot read the evidence file" in text
    assert "Traceback" not in text and "slashings" in text
    # exec registered last, so the node executed as exec: slashed, it executes nothing now
    assert "this node executes nothing: its worker" in text and "was slashed" in text
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli(["market", "--json", "--dir", node_dir]) == 0
    view = json.loads(out.getvalue())
    (slash,) = view["slashes"]
    assert slash["executor"] == "0x" + executor.address.hex() and slash["reward"] + slash["burned"] == 10**17
    assert view["burned"] == slash["burned"] and not view["executes"]
    assert {w["address"]: w["slashed"] for w in view["workers"]}["0x" + executor.address.hex()] == 10**17
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli(["replay", "--dir", node_dir]) == 0  # the slash is re-checked
        assert cli(["ledger", "--dir", node_dir]) == 0
    assert "accuses a worker of a wrong state diff" in out.getvalue()
