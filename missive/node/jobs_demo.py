"""``missive demo --jobs``: the two scenes of issue 25 on a fresh node (docs/jobs.md).

1. The seed's ``a + b`` as a zk job: the circuit (examples/jobs/add.circom) compiled and set up,
   posted; a worker proves it with snarkjs and the board checks the proof with the verifier
   contract on Missive's VM; the same proof checked again in Python.  Needs circom2 + snarkjs;
   without them the scene says what to install and the other one still runs.
2. A tiny image classifier (examples/jobs/classify.vy) on three bundled images, each job given to
   three workers with ``redundant:3``; one worker lies on every job and is caught: the board
   re-runs the program, pays the two honest workers and gives the liar's pledge to the poster.

Ends with the money (conserved: balances, stakes and the board's escrow) and a replay of the
ledger, which re-applies every job record and compares the board it rebuilds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import attrs

from missive.actors.replay import replay
from missive.mailbox.jobboard import escrowed
from missive.mailbox.jobboard import job as read_job
from missive.node.embedded import Node
from missive.node.jobs import submit, work

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "jobs"
WORKERS = ("ada", "bo", "cy")
LIAR = "bo"


@attrs.frozen
class JobsDemoResult:
    conserved: bool
    replay_problem: str | None
    caught: int
    zk_done: bool


def _held(node: Node) -> int:
    store = node.store
    return (sum(a.balance for _, a in store.accounts()) + sum(w.stake + w.unbonding for _, w in store.workers())
            + escrowed(store))


def run_jobs_demo(path: Path, say: Callable[[str], None]) -> JobsDemoResult:
    node = Node.init(path, default_balance=10**24)
    try:
        names = {node.default.address: "poster"}
        for name in WORKERS:
            wallet = node.new_account(name, balance=10**6)
            node.worker_op("register", sender=wallet, stake=100_000)
            names[wallet.address] = name
        supply = _held(node)

        def show(job_id: bytes) -> None:
            found = read_job(node.store, job_id)
            assert found is not None
            for line in found[0].history:
                for address, name in names.items():
                    line = line.replace(f"0x{address.hex()}", name)
                say(f"    {line}")

        say("[bold]Scene 1[/]: the seed's a + b, proved with a zk-SNARK and verified on the ledger")
        zk_done = _zk_scene(node, say, show)
        say("[bold]Scene 2[/]: image classification by three workers, one of which lies")
        images = json.loads((EXAMPLES / "images.json").read_text())
        caught = 0
        for image, pixels in images.items():
            job_id = submit(node, EXAMPLES / "classify.vy", ["classify(uint256[16])", json.dumps(pixels)], bid=500,
                            verify="redundant:3", pledge=400)
            for _ in range(2):  # take and commit, then reveal once all three have committed
                for name in WORKERS:
                    work(node, name, lie=name == LIAR)
            found = read_job(node.store, job_id)
            assert found is not None and found[0].outcome is not None
            from missive.market.jobrun import decode_result

            label = int.from_bytes(decode_result(found[0].outcome)[1][:32], "big")
            say(f"  [cyan]{image}[/] → class {label} ({list(images)[label]})")
            show(job_id)
            caught += sum(1 for t in found[0].takers if t.verdict.startswith("rejected"))
        conserved = _held(node) == supply
        report = replay(node.store)
        problem = report.divergence.describe() if report.divergence is not None else None
        say(f"value conserved (balances + stakes + the board's escrow): {conserved}; replay of the ledger: "
            f"{'ok' if problem is None else problem}")
        return JobsDemoResult(conserved, problem, caught, zk_done)
    finally:
        node.close()


def _zk_scene(node: Node, say: Callable[[str], None], show: Callable[[bytes], None]) -> bool:
    from missive.market.zk.bundle import check_off_ledger
    from missive.toolchain import zk

    reason = zk.missing_reason()
    if reason is not None:
        say(f"  skipped: {reason}")
        return False
    say("  compiling examples/jobs/add.circom (c <== a + b: 1 constraint) and setting up its keys...")
    job_id = submit(node, EXAMPLES / "add.circom", ["a=3", "b=4"], bid=700, verify="zk")
    work(node, WORKERS[0])
    show(job_id)
    found = read_job(node.store, job_id)
    assert found is not None and found[0].outcome is not None
    check_off_ledger(found[1], found[2], found[0].outcome)
    say("  the same proof checked off the ledger with Missive's own BN254 (missive/vm/bn254.py): valid")
    return True


__all__ = ["JobsDemoResult", "run_jobs_demo"]
