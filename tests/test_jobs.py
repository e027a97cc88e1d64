"""The job board (issue 25, docs/jobs.md): stateless jobs posted with a bid, taken by registered
workers who pledge part of their stake, verified by redundancy, by trust or by a Groth16 proof
checked on the ledger; paid on the ledger; every decision replayed bit for bit.

Workers here are driven through the Python API (one ``work`` pass = what ``missive worker run
--once`` does); the CLI test at the end runs the commands themselves."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import attrs
import msgpack
import pytest

from missive.actors.replay import replay
from missive.cli.main import main as cli
from missive.errors import BadInput
from missive.mailbox.envelope import EnvelopeError
from missive.mailbox.jobboard import escrowed, job, jobs
from missive.mailbox.records import RecordError
from missive.market.jobrun import decode_result, run_program
from missive.market.jobs import JOB, Job, commitment, post_args
from missive.market.jobs import digest as job_digest
from missive.market.zk.bundle import make_bundle
from missive.node import Node
from missive.node.jobs import evm_input, submit, work
from missive.toolchain import zk
from missive.vm.keccak import keccak256

REPO = Path(__file__).parent.parent
CLASSIFY = REPO / "examples" / "jobs" / "classify.vy"
IMAGES = json.loads((REPO / "examples" / "jobs" / "images.json").read_text())
ZK = Path(__file__).parent / "zk"
#: PUSH1 0 CALLDATALOAD PUSH1 2 MUL PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN: twice its input
DOUBLE = bytes.fromhex("6000356002026000526020" + "6000f3")
#: PUSH1 1 PUSH1 0 SSTORE STOP: writes storage
STATEFUL = bytes.fromhex("600160005500")
#: JUMPDEST PUSH1 0 JUMP: never finishes
LOOP = bytes.fromhex("5b600056")


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("MISSIVE_UNENCRYPTED_KEYS", "1")
    made = Node.init(tmp_path / "node", default_balance=10**24)
    for name in ("w1", "w2", "w3"):
        made.new_account(name, balance=10**6)
        made.worker_op("register", sender=name, stake=100_000)
    made.new_account("idle", balance=10**6)  # an account that is no worker
    made.new_account("idle2", balance=10**6)
    made.worker_op("register", sender="idle2", stake=100_000)  # a fourth worker, for the zk test
    yield made
    made.close()


def held(node: Node) -> int:
    """Every coin: balances, stakes (and unbonding ones) and what the job board holds in escrow."""
    store = node.store
    return (sum(a.balance for _, a in store.accounts()) + sum(w.stake + w.unbonding for _, w in store.workers())
            + escrowed(store))


def balance(node: Node, name: str) -> int:
    account = node.account(node.wallet(name).address)
    return account.balance if account is not None else 0


def stake(node: Node, name: str) -> int:
    entry = node.store.worker(node.wallet(name).address)
    return entry.stake if entry is not None else 0


def post(node: Node, program: bytes, data: bytes, verify: str, *, bid: int = 1_000, pledge: int = 500,
         gas: int = 100_000, kind: str = "evm", sender: object = None, window: int = 600) -> bytes:
    return node.job_op("post", post_args(os.urandom(16), kind, program, data, gas, bid, pledge, verify, window),
                       sender=sender)


def the_job(node: Node, job_id: bytes) -> Job:
    found = job(node.store, job_id)
    assert found is not None
    return found[0]


def classify_job(node: Node, image: str, verify: str) -> bytes:
    return submit(node, CLASSIFY, ["classify(uint256[16])", json.dumps(IMAGES[image])], bid=1_000, verify=verify,
                  pledge=400)


def assert_replays(node: Node) -> None:
    report = replay(node.store)
    assert report.divergence is None, report.divergence


# -- redundant ---------------------------------------------------------------------------------


def test_three_workers_classify_an_image_and_the_one_that_lies_loses_its_pledge(node: Node) -> None:
    supply = held(node)
    poster_before = balance(node, "default")
    job_id = classify_job(node, "diagonal", "redundant:3")
    assert balance(node, "default") == poster_before - 3_000 and held(node) == supply  # bid × 3 escrowed
    for name in ("w1", "w2", "w3"):
        work(node, name, lie=name == "w2")
        assert held(node) == supply
    assert the_job(node, job_id).status == "running"
    for name in ("w1", "w2", "w3"):  # now every taker has committed: reveal
        work(node, name, lie=name == "w2")
    done = the_job(node, job_id)
    assert done.status == "done" and done.escrow == 0 and held(node) == supply
    status, output = decode_result(done.outcome or b"")
    assert status == "success" and int.from_bytes(output[:32], "big") == 2  # class 2: a diagonal
    verdicts = {node.wallet(t.worker).name: t.verdict for t in done.takers}
    assert verdicts["w1"].startswith("accepted") and verdicts["w3"].startswith("accepted")
    assert verdicts["w2"] == "rejected: its result differs from the program's"
    assert stake(node, "w1") == stake(node, "w3") == 100_000 and stake(node, "w2") == 99_600  # pledge 400 lost
    assert balance(node, "w1") == balance(node, "w3") == 900_000 + 1_000 and balance(node, "w2") == 900_000
    # the poster paid two bids, got the third back and w2's pledge
    assert balance(node, "default") == poster_before - 2_000 + 400
    assert_replays(node)


def test_a_lying_majority_is_overruled_by_re_running_the_stateless_program(node: Node) -> None:
    job_id = post(node, DOUBLE, (21).to_bytes(32, "big"), "redundant:3")
    for _ in range(2):
        for name in ("w1", "w2", "w3"):
            work(node, name, lie=name != "w3")  # w1 and w2 tell the same lie
    done = the_job(node, job_id)
    assert decode_result(done.outcome or b"")[1] == (42).to_bytes(32, "big")
    assert [t.verdict.split(":")[0] for t in done.takers] == ["rejected", "rejected", "accepted"]
    assert "only 1 of 3 match the program re-run on the ledger" in done.takers[2].verdict
    assert_replays(node)


def test_unanimous_workers_are_paid_without_a_re_run(node: Node) -> None:
    job_id = post(node, DOUBLE, (5).to_bytes(32, "big"), "redundant:2")
    for _ in range(2):
        for name in ("w1", "w2"):
            work(node, name)
    done = the_job(node, job_id)
    assert all(t.verdict == "accepted: all 2 agree" for t in done.takers)
    assert the_job(node, job_id).history[-1].endswith("result accepted: success 0x" + (10).to_bytes(32, "big").hex())


def test_a_worker_cannot_claim_another_workers_result_nor_reveal_early(node: Node) -> None:
    job_id = post(node, DOUBLE, (3).to_bytes(32, "big"), "redundant:2")
    w1, w2 = node.wallet("w1").address, node.wallet("w2").address
    right = run_program(DOUBLE, (3).to_bytes(32, "big"), 100_000)
    for name in ("w1", "w2"):
        node.job_op("take", [job_id], sender=name)
    node.job_op("commit", [job_id, commitment(job_id, w1, right, b"s1")], sender="w1")
    with pytest.raises(EnvelopeError, match=r"not every taker has committed yet \(1 of 2\)"):
        node.job_op("reveal", [job_id, right, b"s1"], sender="w1")
    # w2 copies w1's commitment: it binds w1, so w2 can never reveal against it
    node.job_op("commit", [job_id, commitment(job_id, w1, right, b"s1")], sender="w2")
    with pytest.raises(EnvelopeError, match="does not match the worker's commitment"):
        node.job_op("reveal", [job_id, right, b"s1"], sender="w2")
    # nor can anyone answer for a job it did not take, or sign for a worker
    with pytest.raises(EnvelopeError, match="has not taken job"):
        node.job_op("reveal", [job_id, right, b"s1"], sender="w3")
    key = node.wallet("w3").key
    forged = bytes(key.signing_key.sign(b"x" * 32).signature)
    with pytest.raises(EnvelopeError, match="is not signed by its account"):
        node.store.job_op("reveal", w2, [job_id, right, b"s1"], key.public_key, forged)
    node.job_op("reveal", [job_id, right, b"s1"], sender="w1")
    assert w2 in [t.worker for t in the_job(node, job_id).takers if t.result is None]
    assert_replays(node)


# -- trust -------------------------------------------------------------------------------------


def test_trust_re_runs_a_new_worker_and_trusts_one_with_a_record(node: Node) -> None:
    supply = held(node)
    for value in range(6):
        job_id = post(node, DOUBLE, value.to_bytes(32, "big"), "trust:0.5")
        work(node, "w1")
        verdict = the_job(node, job_id).takers[0].verdict
        if value == 0:  # nothing known of w1 yet
            assert verdict == "accepted: trust 0 < 0.5: re-run, same result"
            continue
        # the sample: 1 job in 8, drawn from the job id and the result (replay draws the same)
        result = run_program(DOUBLE, value.to_bytes(32, "big"), 100_000)
        if keccak256(job_id + result)[0] % 8 == 0:
            assert verdict == "accepted: in the random sample: re-run, same result"
        else:
            trust = value * 1000 // (value + 1)  # value earlier good results, none bad
            assert verdict == f"accepted: trust {trust / 1000:g} ≥ 0.5"
    # a lying worker with no record is re-run, caught, and unpaid; the poster gets the right answer
    job_id = post(node, DOUBLE, (7).to_bytes(32, "big"), "trust")
    work(node, "w2", lie=True)
    done = the_job(node, job_id)
    assert done.takers[0].verdict == "rejected: trust 0 < 0.9: re-run, the result differs"
    assert decode_result(done.outcome or b"")[1] == (14).to_bytes(32, "big")
    assert stake(node, "w2") == 100_000 - 500 and held(node) == supply
    assert_replays(node)


# -- zk ----------------------------------------------------------------------------------------


def fixture_bundle() -> bytes:
    """The snarkjs fixture's key with placeholder prover files: enough for the board's check."""
    return make_bundle(json.loads((ZK / "snarkjs_add_vk.json").read_text()), b"wasm", b"zkey")


def fixture_result(outputs: list[int]) -> bytes:
    proof = json.loads((ZK / "snarkjs_add_proof.json").read_text())
    return bytes(msgpack.packb([json.dumps([str(o) for o in outputs]), json.dumps(proof)], use_bin_type=True))


def test_a_zk_proof_is_checked_on_the_ledger_and_a_wrong_one_costs_the_pledge(node: Node) -> None:
    supply = held(node)
    job_id = post(node, fixture_bundle(), b'{"a": 3, "b": 4}', "zk", kind="zk")
    node.job_op("take", [job_id], sender="w1")
    node.job_op("reveal", [job_id, fixture_result([8]), b""], sender="w1")  # claims 3 + 4 = 8
    entry = the_job(node, job_id)
    assert entry.status == "open" and entry.takers[0].verdict == (
        "rejected: the verifier contract rejects the proof (gas 206017): the proof does not verify: the pairing "
        "check failed (other public values, another key, or a forged proof)")
    with pytest.raises(EnvelopeError, match="has taken this job already"):
        node.job_op("take", [job_id], sender="w1")
    node.job_op("take", [job_id], sender="w2")
    garbled = fixture_result([7])[:-40] + b"0" * 40
    node.job_op("reveal", [job_id, garbled, b""], sender="w2")
    assert the_job(node, job_id).takers[1].verdict.startswith("rejected: malformed proof")
    node.job_op("take", [job_id], sender="idle2")
    proof = json.loads((ZK / "snarkjs_add_proof.json").read_text())
    proof["pi_a"][1] = str(int(proof["pi_a"][1]) + 1)  # off the curve
    off_curve = bytes(msgpack.packb([json.dumps(["7"]), json.dumps(proof)], use_bin_type=True))
    node.job_op("reveal", [job_id, off_curve, b""], sender="idle2")
    assert re.fullmatch(r"rejected: the verifier contract rejects the proof \(gas \d+\): proof.A is not a G1 point: "
                        r"point not on curve", the_job(node, job_id).takers[2].verdict)
    node.job_op("take", [job_id], sender="w3")
    node.job_op("reveal", [job_id, fixture_result([7]), b""], sender="w3")
    done = the_job(node, job_id)
    assert done.status == "done" and done.takers[3].verdict == "accepted: the proof verifies on the ledger"
    assert stake(node, "w1") == stake(node, "w2") == stake(node, "idle2") == 99_500 and stake(node, "w3") == 100_000
    assert held(node) == supply
    assert_replays(node)


def test_without_the_prover_a_worker_leaves_zk_jobs_and_says_why(node: Node, monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("MISSIVE_ZK_DIR", str(tmp_path / "no-prover"))
    job_id = post(node, fixture_bundle(), b'{"a": 3, "b": 4}', "zk", kind="zk")
    lines = work(node, "w1")
    assert lines == [f"job {job_id.hex()[:16]}: a zk job, not taken: snarkjs and circom2 not installed (looked in "
                     f"{tmp_path / 'no-prover'}): run `missive toolchain install` (npm install of snarkjs@0.7.6 "
                     "circom2@0.2.23), or set MISSIVE_ZK_DIR"]
    assert the_job(node, job_id).takers == () and stake(node, "w1") == 100_000
    assert work(node, "w1") == []  # said once
    # an EVM job still works meanwhile, and a circuit cannot be submitted (exit 2 from the CLI)
    post(node, DOUBLE, b"", "trust")
    assert any("answered" in line for line in work(node, "w1"))
    with pytest.raises(zk.ZkToolMissing, match="run `missive toolchain install`"):
        submit(node, REPO / "examples" / "jobs" / "add.circom", ["a=1", "b=2"], bid=1, verify="zk")


@pytest.mark.skipif(zk.missing_reason() is not None, reason=f"{zk.missing_reason()} (.ci/run installs it)")
def test_the_seeds_a_plus_b_as_a_zk_job_end_to_end(node: Node) -> None:
    """circom circuit -> setup -> posted; a worker proves it with snarkjs; checked on the ledger."""
    job_id = submit(node, REPO / "examples" / "jobs" / "add.circom", ["a=20", "b=22"], bid=900, verify="zk")
    assert work(node, "w1") == [f"job {job_id.hex()[:16]}: taken (bid 900, pledge 900)",
                                f"job {job_id.hex()[:16]}: answered (accepted: the proof verifies on the ledger)"]
    assert the_job(node, job_id).history[-1] == "proof accepted: outputs ['42']"
    assert_replays(node)


@pytest.mark.skipif(zk.zokrates_missing() is not None, reason=f"{zk.zokrates_missing()} (.ci/run installs it)")
def test_the_seeds_own_zokrates_a_plus_b_as_a_zk_job(node: Node, tmp_path: Path) -> None:
    """``def main(field a, field b) -> field { return a + b; }``: set up and proved with zokrates-js,
    whose public values are the inputs first; checked on the ledger by the same verifier contract."""
    source = REPO / "examples" / "jobs" / "add.zok"
    with pytest.raises(EnvelopeError, match="the circuit's inputs are a, b, in that order; the job gives b, a"):
        submit(node, source, ["b=4", "a=3"], bid=100, verify="zk")
    job_id = submit(node, source, ["a=3", "b=4"], bid=100, verify="zk")
    work(node, "w1", lie=True)  # claims 8 with a proof of 7
    work(node, "w2")
    done = the_job(node, job_id)
    assert [t.verdict.split(" (")[0] for t in done.takers] == [
        "rejected: the verifier contract rejects the proof", "accepted: the proof verifies on the ledger"]
    assert done.history[-1] == "proof accepted: outputs ['7']"
    from missive.market.zk.bundle import check_off_ledger

    found = job(node.store, job_id)
    assert found is not None and found[0].outcome is not None
    check_off_ledger(found[1], found[2], found[0].outcome)
    bad = tmp_path / "bad.zok"
    bad.write_text("def main(field a) -> field { return a + ; }\n")
    with pytest.raises(zk.ZkToolFailed, match=r"zokrates-js setup failed: main.zok: --> 1:41 .*expected unaried_term"):
        submit(node, bad, ["a=1"], bid=100, verify="zk")
    assert_replays(node)


# -- takers who never answer -------------------------------------------------------------------


class _Clock:
    """A wall clock the test moves: the answer window is in seconds of it, and a loaded machine
    must not make "not yet expired" flaky (it failed in CI once: more than a second went by
    between the take and the first expire)."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


def test_a_silent_taker_loses_its_pledge_and_the_job_opens_again(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    import missive.node.embedded
    import missive.node.jobs

    clock = _Clock()
    monkeypatch.setattr(missive.node.embedded, "time", clock)
    monkeypatch.setattr(missive.node.jobs, "time", clock)
    supply = held(node)
    job_id = post(node, DOUBLE, (4).to_bytes(32, "big"), "trust", window=1)
    node.job_op("take", [job_id], sender="w1")  # and says nothing
    with pytest.raises(EnvelopeError, match="no taker is past its 1 s to answer"):
        node.job_op("expire", [job_id])
    clock.now += 2
    with pytest.raises(EnvelopeError, match="only the job's poster can expire"):
        node.job_op("expire", [job_id], sender="w2")
    node.job_op("expire", [job_id])
    entry = the_job(node, job_id)
    assert entry.status == "open" and entry.takers[0].verdict == "rejected: no answer within 1 s"
    assert stake(node, "w1") == 99_500 and held(node) == supply
    with pytest.raises(EnvelopeError, match="has taken this job already"):
        node.job_op("take", [job_id], sender="w1")
    work(node, "w2")
    assert the_job(node, job_id).status == "done"
    assert_replays(node)


def test_expiring_a_redundant_job(node: Node) -> None:
    """Gathering commitments: the silent one is replaced.  Revealing: decided by re-running."""
    gathering = post(node, DOUBLE, (6).to_bytes(32, "big"), "redundant:2", window=1)
    work(node, "w1")  # takes and commits
    node.job_op("take", [gathering], sender="w2")  # takes, never commits
    revealing = post(node, DOUBLE, (8).to_bytes(32, "big"), "redundant:2", window=1)
    for name in ("w1", "w2"):
        node.job_op("take", [revealing], sender=name)
    work(node, "w1")  # commits to the second job (and reveals nothing: w2 has not committed)
    w2 = node.wallet("w2").address
    right = run_program(DOUBLE, (8).to_bytes(32, "big"), 100_000)
    node.job_op("commit", [revealing, commitment(revealing, w2, right, b"s")], sender="w2")
    work(node, "w1")  # all committed: w1 reveals; w2 never does
    time.sleep(1.1)
    node.job_op("expire", [gathering])
    entry = the_job(node, gathering)
    assert entry.status == "open" and [t.verdict for t in entry.takers] == ["", "rejected: no answer within 1 s"]
    work(node, "w3")  # takes the free slot and commits
    for name in ("w1", "w3"):
        work(node, name)
    assert the_job(node, gathering).status == "done"
    node.job_op("expire", [revealing])
    entry = the_job(node, revealing)
    assert entry.status == "done" and decode_result(entry.outcome or b"")[1] == (16).to_bytes(32, "big")
    assert [t.verdict for t in entry.takers] == ["accepted: matches the program re-run on the ledger",
                                                 "rejected: no answer within 1 s"]
    assert_replays(node)


def test_a_take_with_a_time_far_from_the_nodes_clock_is_refused(node: Node) -> None:
    job_id = post(node, DOUBLE, b"", "trust")
    key = node.wallet("w1").key
    args = [job_id, int(time.time()) - 100]
    signature = bytes(key.signing_key.sign(job_digest(node.store.chain_id, "take", key.address, args)).signature)
    with pytest.raises(EnvelopeError, match=r"the take's time is -10\d s from this node's clock \(at most 15 s\)"):
        node.store.job_op("take", key.address, args, key.public_key, signature)


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case, reason", [
    ("stateful", "not stateless: SSTORE at offset 4 writes storage"),
    ("messages", "not stateless: CALL at offset 0 sends a message"),
    ("too big", "the program is too big"),
    ("input too big", "the input is too big"),
    ("gas", "a job's gas is between 21000 and 50000000"),
    ("escrow", "the bid escrow 2000000 (1000000 × 2 workers) is above the balance"),
    ("verify", "redundant:N needs N between 2 and 9"),
    ("zk code", "a circuit is verified by its proof"),
    ("bad bundle", "not a bundle of key and prover files"),
])
def test_a_job_that_is_not_stateless_or_too_big_is_refused_with_the_reason(node: Node, case: str, reason: str
                                                                             ) -> None:
    before = list(node.store.ledger()), node.store.accounts()
    program, data, verify, kwargs = DOUBLE, b"", "redundant:2", {}
    if case == "stateful":
        program = STATEFUL
    elif case == "messages":
        program = bytes([0xF1])
    elif case == "too big":
        program = DOUBLE + bytes(300_000)
    elif case == "input too big":
        data = bytes(20_000)
    elif case == "gas":
        kwargs = {"gas": 10**9}
    elif case == "escrow":
        kwargs = {"bid": 10**6, "sender": "idle"}
    elif case == "verify":
        verify = "redundant:12"
    elif case == "zk code":
        verify = "zk"
    else:
        program, kwargs = b"\x01\x02", {"kind": "zk"}
        verify = "zk"
    with pytest.raises(EnvelopeError, match=reason.replace("(", r"\(").replace(")", r"\)")) as refused:
        post(node, program, data, verify, **kwargs)
    assert "\n" not in str(refused.value)
    assert (list(node.store.ledger()), node.store.accounts()) == before and not jobs(node.store)


def test_data_after_the_code_is_not_read_as_instructions(node: Node) -> None:
    """An SSTORE byte after STOP, where no jump lands, is data (as a compiler's constants are)."""
    post(node, DOUBLE + bytes([0x55, 0xF1]), b"", "redundant:2")
    assert len(jobs(node.store)) == 1


def test_who_may_take_a_job(node: Node) -> None:
    job_id = post(node, DOUBLE, b"", "redundant:2", pledge=200_000)
    with pytest.raises(EnvelopeError, match="is not a registered worker"):
        node.job_op("take", [job_id], sender="idle")
    with pytest.raises(EnvelopeError, match="the job's pledge 200000 is above the stake"):
        node.job_op("take", [job_id], sender="w1")
    job_id = post(node, DOUBLE, b"", "redundant:2", sender="w3")
    with pytest.raises(EnvelopeError, match="a poster cannot work on its own job"):
        node.job_op("take", [job_id], sender="w3")
    node.job_op("take", [job_id], sender="w1")
    node.job_op("take", [job_id], sender="w2")
    with pytest.raises(EnvelopeError, match="has all its 2 workers"):
        node.job_op("take", [job_id], sender="default")
    with pytest.raises(EnvelopeError, match="the job is taken: it can no longer be cancelled"):
        node.job_op("cancel", [job_id], sender="w3")
    job_id = post(node, DOUBLE, b"", "redundant:2")
    assert work(node, "w3", min_bid=10**6) == []  # not worth its while: nothing taken
    assert work(node, "w3") == [f"job {job_id.hex()[:16]}: taken (bid 1000, pledge 500)",
                                f"job {job_id.hex()[:16]}: committed to a result"]


def test_a_program_that_never_finishes_within_its_gas_ends_the_job_saying_so(node: Node) -> None:
    job_id = post(node, LOOP, b"", "redundant:2", gas=50_000)
    for _ in range(2):
        work(node, "w1")
        work(node, "w2")
    done = the_job(node, job_id)
    assert decode_result(done.outcome or b"") == ("out of gas", b"")
    assert "the program did not finish within its gas (50000)" in done.history[-1]


def test_cancel_gives_the_escrow_back_and_replay_catches_a_changed_board(node: Node) -> None:
    before = balance(node, "default")
    job_id = post(node, DOUBLE, b"", "redundant:3")
    node.job_op("cancel", [job_id])
    assert balance(node, "default") == before and the_job(node, job_id).status == "cancelled"
    assert_replays(node)
    with node.store.writing() as txn:  # someone edits the board behind the ledger's back
        forged = Job.decode(bytes(txn.get(JOB + job_id, db=node.store.db["meta"])))
        txn.put(JOB + job_id, attrs.evolve(forged, status="done").encode(), db=node.store.db["meta"])
    report = replay(node.store)
    assert report.divergence is not None
    assert "the store's job board differs from the one its ledger records make" in report.divergence.describe()
    with node.store.writing() as txn:  # a damaged entry: one line, not a traceback
        txn.put(JOB + job_id, b"\x93\x01\x02\x03", db=node.store.db["meta"])
    with pytest.raises(RecordError, match=r"a job board entry does not decode \(not enough values to unpack"):
        jobs(node.store)


# -- the commands --------------------------------------------------------------------------------


def test_missive_job_and_worker_run_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISSIVE_UNENCRYPTED_KEYS", "1")
    d = str(tmp_path / "n")
    out = io.StringIO()

    def run(*args: str) -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            return cli([*args, "--dir", d])

    assert run("init") == 0
    for name in ("w1", "w2", "w3"):
        assert run("account", "new", name, "--fund", "1000000") == 0
        assert run("worker", "register", "--stake", "100000", "--from", name) == 0
    image = json.dumps(IMAGES["horizontal bar"])
    assert run("job", "submit", str(CLASSIFY), "--input", "classify(uint256[16])", "--input", image, "--bid", "500",
               "--verify", "redundant:3") == 0
    job_id = out.getvalue().split("posted job 0x")[1][:64]
    for _ in range(2):
        for name in ("w1", "w2", "w3"):
            assert run("worker", "run", "--once", "--from", name, *(["--lie"] if name == "w2" else [])) == 0
    out.truncate(0)
    assert run("job", "status", job_id[:12]) == 0
    text = out.getvalue()
    assert "status done, escrow 0" in text and "w2 rejected (its result differs from the program's): pledge 500" in text
    assert "result: success 0x" + (1).to_bytes(32, "big").hex() in text  # class 1: a horizontal bar
    assert run("job", "check", job_id[:12]) == 0 and "gives the accepted result" in out.getvalue()
    assert run("job", "list") == 0
    out.truncate(0)
    assert run("ledger") == 0  # job records are shown as such (they name no message)
    assert "job post by 0x" in out.getvalue() and "an evm job, program 1630 bytes, bid 500 × 3" in out.getvalue()
    assert "job reveal by 0x" in out.getvalue() and "Traceback" not in out.getvalue()
    # refusals: one line, the documented exit status
    out.truncate(0)
    assert run("job", "status", "deadbeefdead") == 3
    assert run("job", "submit", str(tmp_path / "none.vy"), "--bid", "1", "--verify", "trust") == 3
    assert run("job", "submit", str(CLASSIFY), "--bid", "1", "--verify", "sometimes") == 2
    assert run("worker", "run", "--once") == 2  # the default account is no worker
    errors = [line for line in out.getvalue().splitlines() if "error" in line]
    assert len(errors) == 4 and "not a registered worker" in errors[-1]
    assert "Traceback" not in out.getvalue()
    assert run("replay") == 0


def test_missive_demo_jobs_shows_both_scenes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISSIVE_UNENCRYPTED_KEYS", "1")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        assert cli(["demo", "--jobs", "--dir", str(tmp_path / "d")]) == 0
    text = out.getvalue()
    assert text.count("bo rejected (its result differs from the program's)") == 3  # the liar, caught each time
    for image, label in (("vertical bar", 0), ("horizontal bar", 1), ("diagonal", 2)):
        assert f"{image} → class {label}" in text
    if zk.missing_reason() is None:
        assert "ada accepted (the proof verifies on the ledger)" in text and "proof accepted: outputs ['7']" in text
    else:
        assert "skipped: " in text and "missive toolchain install" in text
    assert "value conserved (balances + stakes + the board's escrow): True; replay of the ledger: ok" in text


def test_evm_inputs_from_the_command_line() -> None:
    assert evm_input(["0x0102"]) == b"\x01\x02"
    assert evm_input([]) == b""
    data = evm_input(["f(uint256)", "7"])
    assert len(data) == 36 and data[-1] == 7
    with pytest.raises(BadInput, match="expected 1 argument"):
        evm_input(["f(uint256)"])
