"""Benchmark: verifiable jobs (issue 25).

1. Groth16 verification of the seed's ``a + b`` proof, in one run, four ways: Missive's BN254 off
   the ledger (``missive.market.zk.groth16`` over ``missive/vm/bn254.py``, mypyc-compiled with the VM), the verifier contract on Missive's VM (gas and ms; and
   the whole board step that runs it: a zk job's answer checked and paid in one store
   transaction), py_ecc (MIT, pure Python; a Groth16 check written here over its optimized
   BN128 pairing, one final exponentiation for the product) and snarkjs (in one Node.js process,
   first call and best warm call).  Ratios are to py_ecc, the issue's named peer; target:
   on-ledger verification under 40 ms and at least 10× faster than py_ecc.  The proof is made
   fresh with circom2 + snarkjs when they are installed, else the bundled fixture is used
   (tests/zk); snarkjs's figure needs them.
2. Jobs per second through the whole board with ``redundant:3`` (post, three takes, three
   commits, three reveals: ten signed ledger records per job), honest workers, and with one
   worker lying (the board then re-runs the program); and the cost of one job against running
   its program once on the VM.  The program is examples/jobs/classify.vy on a bundled image.
3. The per-job payment cost by lottery ticket against on the ledger (issue 25 item 4): a stream
   of ``trust:0`` jobs (post, take, answer) by one worker, paid on the ledger (the bid escrowed at
   posting, credited inside the accepting answer) or by tickets at 1/N (the poster's node signs
   one ticket per accepted result, the worker checks it and redeems the winners): milliseconds
   and ledger records per job each way, and the payment steps alone.  ``--payment-only`` runs
   just this part (no prover needed).

Wall-clock times (best of --repeats); prints a table and writes JSON (default
tools/bench/results/jobs.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from missive.market.zk import groth16  # noqa: E402
from missive.market.zk.onledger import verify_on_ledger  # noqa: E402
from missive.toolchain import zk  # noqa: E402
from missive.vm import build_info  # noqa: E402

REPO = _common.REPO
FIXTURES = REPO / "tests" / "zk"


def best_ms(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1000


# -- the proof -------------------------------------------------------------------------------


def the_proof(workdir: Path) -> tuple[dict[str, Any], dict[str, Any], list[str], str]:
    """(key JSON, proof JSON, public values, where they came from)."""
    if zk.missing_reason() is None:
        r1cs, wasm = zk.compile_circuit(REPO / "examples" / "jobs" / "add.circom", workdir)
        ptau = zk.powers_of_tau(8, workdir)
        zkey, vk = zk.setup(r1cs, ptau, workdir)
        proof, public = zk.prove(wasm, zkey, {"a": 3, "b": 4}, workdir)
        return vk, proof, public, "proved now with circom2 + snarkjs"
    return (json.loads((FIXTURES / "snarkjs_add_vk.json").read_text()),
            json.loads((FIXTURES / "snarkjs_add_proof.json").read_text()),
            json.loads((FIXTURES / "snarkjs_add_public.json").read_text()), "the bundled fixture (tests/zk)")


# -- py_ecc, the named peer -----------------------------------------------------------------


def py_ecc_verifier(vk: dict[str, Any], proof: dict[str, Any], public: list[str]) -> Callable[[], bool]:
    """A Groth16 check over py_ecc's optimized BN128 (its points are projective; FQ2 is [c0, c1])."""
    from py_ecc import optimized_bn128 as b

    def g1(p: list[str]) -> Any:
        return (b.FQ(int(p[0])), b.FQ(int(p[1])), b.FQ(1))

    def g2(p: list[list[str]]) -> Any:
        return (b.FQ2([int(p[0][0]), int(p[0][1])]), b.FQ2([int(p[1][0]), int(p[1][1])]), b.FQ2([1, 0]))

    def check() -> bool:
        a, bb, c = g1(proof["pi_a"]), g2(proof["pi_b"]), g1(proof["pi_c"])
        points = [a, c] + [g1(p) for p in vk["IC"]]
        if not all(b.is_on_curve(p, b.b) for p in points) or not b.is_on_curve(bb, b.b2):
            return False
        if b.multiply(bb, b.curve_order)[2] != b.FQ2.zero():  # the subgroup check, as ours does
            return False
        x = g1(vk["IC"][0])
        for value, point in zip(public, vk["IC"][1:], strict=True):
            x = b.add(x, b.multiply(g1(point), int(value)))
        f = (b.pairing(bb, b.neg(a), final_exponentiate=False)
             * b.pairing(g2(vk["vk_beta_2"]), g1(vk["vk_alpha_1"]), final_exponentiate=False)
             * b.pairing(g2(vk["vk_gamma_2"]), x, final_exponentiate=False)
             * b.pairing(g2(vk["vk_delta_2"]), c, final_exponentiate=False))
        return bool(b.final_exponentiate(f) == b.FQ12.one())

    return check


# -- snarkjs ----------------------------------------------------------------------------------

SNARKJS_TIMER = """
import * as snarkjs from %s;
import fs from "fs";
const read = (p) => JSON.parse(fs.readFileSync(p));
const [vk, pub, proof, n] = [read(process.argv[2]), read(process.argv[3]), read(process.argv[4]), +process.argv[5]];
const times = [];
let ok = true;
for (let i = 0; i < n; i++) {
  const t = performance.now();
  ok = (await snarkjs.groth16.verify(vk, pub, proof)) && ok;
  times.push(performance.now() - t);
}
console.log(JSON.stringify({ok, times}));
process.exit(0);
"""


def snarkjs_times(vk: dict[str, Any], proof: dict[str, Any], public: list[str], repeats: int, workdir: Path
                  ) -> dict[str, Any] | None:
    if zk.missing_reason() is not None:
        return None
    paths = {}
    for name, content in (("vk", vk), ("public", public), ("proof", proof)):
        paths[name] = workdir / f"{name}.json"
        paths[name].write_text(json.dumps(content))
    script = workdir / "timer.mjs"
    script.write_text(SNARKJS_TIMER % json.dumps(str(zk.zk_dir() / "node_modules" / "snarkjs" / "main.js")))
    done = subprocess.run(["node", str(script), str(paths["vk"]), str(paths["public"]), str(paths["proof"]),
                           str(repeats + 1)], capture_output=True, text=True, check=True, timeout=300)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    return {"valid": measured["ok"], "first_ms": measured["times"][0], "best_warm_ms": min(measured["times"][1:])}


# -- the board -------------------------------------------------------------------------------


def board_figures(workdir: Path, jobs: int, proof: tuple[dict[str, Any], dict[str, Any], list[str]],
                  repeats: int) -> dict[str, Any]:
    os.environ.setdefault("MISSIVE_UNENCRYPTED_KEYS", "1")
    import msgpack

    from missive.market.jobrun import encode_result, run_program
    from missive.market.jobs import commitment, post_args
    from missive.market.zk.bundle import make_bundle
    from missive.node import Node
    from missive.node.jobs import evm_input
    from missive.toolchain.compiler import compile_source

    code = compile_source(REPO / "examples" / "jobs" / "classify.vy").runtime_bytecode
    image = json.loads((REPO / "examples" / "jobs" / "images.json").read_text())["diagonal"]
    data = evm_input(["classify(uint256[16])", json.dumps(image)])
    gas = 1_000_000
    one_run_ms = best_ms(lambda: run_program(code, data, gas), repeats * 5)
    from missive.vm.execution import execute

    run_gas = execute(code, data=data, gas=gas).gas_used
    node = Node.init(workdir / "node", default_balance=10**30)
    try:
        workers = []
        for index in range(3):
            wallet = node.new_account(f"w{index}", balance=10**20)
            node.worker_op("register", sender=wallet, stake=10**18)
            workers.append(wallet)

        def one_job(salt: int, liar: bool) -> None:
            job_id = node.job_op("post", post_args(salt.to_bytes(16, "big"), "evm", code, data, gas, 10, 10,
                                                   "redundant:3"))
            for wallet in workers:
                node.job_op("take", [job_id], sender=wallet)
            results = {}
            for index, wallet in enumerate(workers):  # each worker runs the program itself
                results[index] = run_program(code, data, gas)
                if liar and index == 1:
                    results[index] = encode_result("success", b"a wrong answer")
                node.job_op("commit", [job_id, commitment(job_id, wallet.address, results[index], b"s")],
                            sender=wallet)
            for index, wallet in enumerate(workers):
                node.job_op("reveal", [job_id, results[index], b"s"], sender=wallet)

        figures: dict[str, Any] = {"program": "examples/jobs/classify.vy", "run_gas": run_gas,
                                   "one_run_ms": one_run_ms, "records_per_job": 10}
        salt = 1
        one_job(salt, False)  # warm-up: first writes, first signatures
        for name, liar in (("honest", False), ("one_liar", True)):
            start = time.perf_counter()
            for _ in range(jobs):
                salt += 1
                one_job(salt, liar)
            elapsed = time.perf_counter() - start
            figures[name] = {"jobs": jobs, "jobs_per_s": jobs / elapsed, "ms_per_job": elapsed / jobs * 1000,
                             "cost_vs_one_run": (elapsed / jobs * 1000) / one_run_ms}
        # a zk job's answer, checked by the verifier contract and paid, in one store transaction
        vk, proof_json, public = proof
        bundle = make_bundle(vk, b"wasm", b"zkey")
        inputs = json.dumps({"a": int(public[1]), "b": int(public[2])}).encode()
        result = bytes(msgpack.packb([json.dumps([public[0]]), json.dumps(proof_json)], use_bin_type=True))
        best = float("inf")
        for _ in range(repeats):
            salt += 1
            job_id = node.job_op("post", post_args(salt.to_bytes(16, "big"), "zk", bundle, inputs, gas, 10, 10, "zk"))
            node.job_op("take", [job_id], sender=workers[0])
            start = time.perf_counter()
            node.job_op("reveal", [job_id, result, b""], sender=workers[0])
            best = min(best, time.perf_counter() - start)
        figures["zk_answer_on_board_ms"] = best * 1000
        return figures
    finally:
        node.close()


#: PUSH1 0 CALLDATALOAD PUSH1 2 MUL PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN: twice its input
DOUBLE = bytes.fromhex("6000356002026000526020" + "6000f3")


def ledger_records(node: Any) -> int:
    store = node.store
    with store.read() as txn:
        return int(txn.stat(store.db["ledger"])["entries"])


def payment_figures(workdir: Path, jobs: int, odds: int) -> dict[str, Any]:
    """A stream of small jobs paid on the ledger, then by tickets at 1/odds; per-job figures."""
    os.environ.setdefault("MISSIVE_UNENCRYPTED_KEYS", "1")
    from missive.mailbox import broker
    from missive.market.jobs import post_args
    from missive.node import Node
    from missive.node.jobs import work
    from missive.node.jobtickets import collect, earnings, pay

    bid = 100
    figures: dict[str, Any] = {"jobs": jobs, "odds": odds, "bid": bid}
    for way in ("ledger", "tickets"):  # each on a fresh node, so both meet a board of the same size
        node = Node.init(workdir / f"pay-{way}", default_balance=10**30)
        try:
            worker = node.new_account("w", balance=10**20)
            node.worker_op("register", sender=worker, stake=10**18)
            node.tickets.fund(deposit=bid * odds * jobs, reserve=bid * odds * jobs, recipients=[worker.address])

            before, job_s, pay_s = ledger_records(node), 0.0, 0.0
            for salt in range(1, jobs + 1):
                start = time.perf_counter()
                node.job_op("post", post_args(salt.to_bytes(16, "big"), "evm", DOUBLE, salt.to_bytes(32, "big"),
                                              50_000, bid, 10, "trust:0", 600, odds if way == "tickets" else 0))
                work(node, worker)  # take and answer: accepted (on the ledger: paid in the same transaction)
                middle = time.perf_counter()
                if way == "tickets":
                    pay(node)  # the poster's node signs the ticket
                    collect(node, worker)  # the worker checks it and redeems it if it wins
                end = time.perf_counter()
                job_s += middle - start
                pay_s += end - middle
            figures[way] = {"ms_per_job": (job_s + pay_s) / jobs * 1000, "payment_ms_per_job": pay_s / jobs * 1000,
                            "ledger_records_per_job": (ledger_records(node) - before) / jobs}
            if way == "tickets":
                mine = earnings(node, worker)
                payer = broker.payer(node.store, node.default.address)
                figures[way].update(expected=mine.expected, won=mine.won, redeemed=mine.redeemed,
                                    redemptions=payer.redeemed if payer is not None else 0)
        finally:
            node.close()
    return figures


def print_payment(console: Console, pay: dict[str, Any]) -> None:
    table = Table(title=f"paying {pay['jobs']} small jobs (bid {pay['bid']}; trust:0, one worker)")
    for column in ("paid", "ms a job (whole job)", "of which payment steps", "ledger records a job"):
        table.add_column(column)
    for way, label in (("ledger", "on the ledger (escrow at posting, credit at acceptance)"),
                       ("tickets", f"by tickets at 1/{pay['odds']} (sign, check, redeem winners)")):
        part = pay[way]
        table.add_row(label, f"{part['ms_per_job']:.2f}", f"{part['payment_ms_per_job']:.2f}",
                      f"{part['ledger_records_per_job']:.3f}")
    console.print(table)
    tickets, ledger = pay["tickets"], pay["ledger"]
    console.print(f"tickets ÷ ledger, whole job: {tickets['ms_per_job'] / ledger['ms_per_job']:.2f}×; "
                  f"tickets: expected {tickets['expected']}, {tickets['won']} won, {tickets['redeemed']} redeemed "
                  f"({tickets['redemptions']} redemptions)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=30, help="redundant:3 jobs through the board, each way")
    parser.add_argument("--quick", action="store_true", help="2 repeats, 5 jobs (a smoke run)")
    parser.add_argument("--out", type=Path, default=_common.RESULTS / "jobs.json")
    parser.add_argument("--payment-only", action="store_true",
                        help="only the payment comparison, ledger vs tickets (writes jobs-payment.json)")
    parser.add_argument("--pay-jobs", type=int, default=200, metavar="J", help="jobs paid each way (default 200)")
    parser.add_argument("--odds", type=int, default=10, metavar="N", help="tickets win 1 in N (default 10)")
    args = parser.parse_args(argv)
    repeats, jobs = (2, 5) if args.quick else (args.repeats, args.jobs)
    pay_jobs = 20 if args.quick else args.pay_jobs
    console = Console()
    if args.payment_only:
        with tempfile.TemporaryDirectory(prefix="missive-bench-pay-") as tmp:
            pay = payment_figures(Path(tmp), pay_jobs, args.odds)
        pay["vm_compiled"], pay["machine"] = build_info()["compiled"], _common.machine_info()
        print_payment(console, pay)
        out = args.out.with_name("jobs-payment.json") if args.out.name == "jobs.json" else args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(pay, indent=2, default=str))
        console.print(f"wrote {out}")
        return 0
    with tempfile.TemporaryDirectory(prefix="missive-bench-jobs-") as tmp:
        work = Path(tmp)
        vk, proof, public, source = the_proof(work)
        key = groth16.load_key(vk)
        parsed, _ = groth16.load_proof(proof)
        values = groth16.load_public(public)
        groth16.verify(key, parsed, values)  # valid, or this raises
        verdict = verify_on_ledger(key, parsed, values)
        assert verdict.valid, verdict
        py_ecc = py_ecc_verifier(vk, proof, public)
        assert py_ecc()
        figures: dict[str, Any] = {
            "proof": source,
            "missive_python_ms": best_ms(lambda: groth16.verify(key, parsed, values), repeats),
            "on_ledger_contract_ms": best_ms(lambda: verify_on_ledger(key, parsed, values), repeats),
            "on_ledger_contract_gas": verdict.gas_used,
            "py_ecc_ms": best_ms(py_ecc, max(1, repeats // 2)),
            "snarkjs": snarkjs_times(vk, proof, public, repeats, work),
            "board": board_figures(work, jobs, (vk, proof, public), repeats),
            "payment": payment_figures(work, pay_jobs, args.odds),
        }
    figures["vm_compiled"] = build_info()["compiled"]
    figures["machine"] = _common.machine_info()
    peer = figures["py_ecc_ms"]
    table = Table(title=f"Groth16 verification of a + b ({source}; VM compiled: {figures['vm_compiled']})")
    for column in ("verifier", "ms", "× faster than py_ecc"):
        table.add_column(column)
    rows = [("Missive's BN254 off the ledger (missive/vm/bn254.py)", figures["missive_python_ms"]),
            (f"verifier contract on Missive's VM ({figures['on_ledger_contract_gas']:,} gas)",
             figures["on_ledger_contract_ms"]),
            ("a zk job's answer on the board (contract + payment, one transaction)",
             figures["board"]["zk_answer_on_board_ms"]),
            ("py_ecc 8 (optimized_bn128)", peer)]
    if figures["snarkjs"] is not None:
        rows.append(("snarkjs, best warm call (in Node.js)", figures["snarkjs"]["best_warm_ms"]))
        rows.append(("snarkjs, first call (builds its curve)", figures["snarkjs"]["first_ms"]))
    for name, ms in rows:
        table.add_row(name, f"{ms:.1f}", f"{peer / ms:.1f}")
    console.print(table)
    board = figures["board"]
    console.print(f"on-ledger verification {figures['on_ledger_contract_ms']:.1f} ms (target < 40 ms), "
                  f"{peer / figures['on_ledger_contract_ms']:.1f}× faster than py_ecc (target ≥ 10×)")
    for name in ("honest", "one_liar"):
        part = board[name]
        console.print(f"redundant:3 through the board, {name.replace('_', ' ')}: {part['jobs_per_s']:.1f} jobs/s, "
                      f"{part['ms_per_job']:.1f} ms a job = {part['cost_vs_one_run']:.0f}× running the program once "
                      f"({board['one_run_ms']:.2f} ms, {board['run_gas']:,} gas)")
    print_payment(console, figures["payment"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2, default=str))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
