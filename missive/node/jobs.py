"""Posting jobs and working on them from a node (issue 25; rules in :mod:`missive.market.jobs`).

:func:`submit` turns a program file into a job: Vyper, Solidity or hex into stateless runtime
code, or a circom circuit into the bundle a worker proves with (compiled by circom2, set up
with snarkjs over a small powers-of-tau file made once and kept in the prover's directory).
:func:`work` is one pass of a worker: it takes the open jobs worth its while, runs them off the
ledger (the VM for code, the prover for circuits) and answers: commit then reveal for redundant
jobs, a direct answer for trust and zk jobs.  ``missive worker run`` repeats it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgpack

from missive.errors import BadInput, MissiveError
from missive.mailbox.envelope import EnvelopeError
from missive.mailbox.jobboard import job as read_job
from missive.mailbox.jobboard import jobs as read_jobs
from missive.market.jobrun import decode_result, encode_result, run_program
from missive.market.jobs import DEFAULT_WINDOW, Job, commitment, post_args
from missive.vm.keccak import keccak256

if TYPE_CHECKING:
    from missive.node.embedded import Node

log = logging.getLogger(__name__)

DEFAULT_JOB_GAS = 1_000_000


def evm_input(texts: list[str]) -> bytes:
    """``--input`` for code: ``0x`` calldata, or a signature and its arguments (``f(uint256) 7``)."""
    from missive.node.abi import encode_args, parse_signature, parse_text_args
    from missive.node.errors import ArgumentError

    if not texts:
        return b""
    if texts[0].startswith("0x") and len(texts) == 1:
        try:
            return bytes.fromhex(texts[0][2:])
        except ValueError:
            raise BadInput(f"--input {texts[0][:20]!r}: not hex calldata") from None
    try:
        name, types, _ = parse_signature(texts[0])
        values = parse_text_args(types, [], texts[1:], name)
        return keccak256(f"{name}({','.join(types)})".encode())[:4] + encode_args(types, values, name)
    except ArgumentError as exc:
        raise BadInput(f"--input: {exc}") from None


def circuit_input(texts: list[str]) -> bytes:
    """``--input`` for a circuit: ``name=value`` pairs, in the circuit's order of public inputs."""
    inputs: dict[str, int] = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not sep or not name.isidentifier() or not value.strip().isdigit():
            raise BadInput(f"--input {text!r}: a circuit's input is name=value (a non-negative integer)")
        inputs[name] = int(value)
    return json.dumps(inputs).encode()


def circuit_bundle(source: Path, workdir: Path) -> bytes:
    """Compile a circom circuit and set up its Groth16 keys: the job's program."""
    from missive.market.zk.bundle import make_bundle
    from missive.toolchain import zk

    r1cs, wasm, power = zk.compile_circuit_sized(source, workdir)
    ptau = zk.zk_dir() / "ptau" / f"pot{power}.ptau"
    if not ptau.exists():  # a universal setup for development, made once per size (a real one needs a ceremony)
        made = zk.powers_of_tau(power, workdir / "ptau")
        ptau.parent.mkdir(parents=True, exist_ok=True)
        os.replace(made, ptau)
    zkey, vk = zk.setup(r1cs, ptau, workdir)
    return make_bundle(vk, wasm.read_bytes(), zkey.read_bytes())


def program_of(path: Path, workdir: Path) -> tuple[str, bytes]:
    """(kind, program) for a file: a circuit's bundle, or stateless runtime code."""
    if path.suffix == ".circom":
        return "zk", circuit_bundle(path, workdir)
    if path.suffix == ".zok":
        from missive.market.zk.bundle import zokrates_bundle

        return "zk", zokrates_bundle(path)
    from missive.toolchain.compiler import compile_source

    return "evm", compile_source(path).runtime_bytecode


def submit(node: Node, path: Path, inputs: list[str], *, bid: int, verify: str, gas: int = DEFAULT_JOB_GAS,
           pledge: int | None = None, sender: object = None, window: int = DEFAULT_WINDOW, odds: int = 0) -> bytes:
    """Post a job; its id.  The pledge defaults to the bid; ``window``: seconds a taker has to answer;
    ``odds`` N >= 1: paid by a lottery ticket winning with probability 1/N (0: on the ledger)."""
    with tempfile.TemporaryDirectory(prefix="missive-job-") as tmp:
        kind, program = program_of(path, Path(tmp))
    data = circuit_input(inputs) if kind == "zk" else evm_input(inputs)
    args = post_args(os.urandom(16), kind, program, data, gas, bid, bid if pledge is None else pledge, verify, window,
                     odds)
    return node.job_op("post", args, sender=sender)


# -- the worker's side -------------------------------------------------------------------------


def answer(job: Job, program: bytes, data: bytes, workdir: Path, lie: bool = False) -> bytes:
    """The worker's result, computed off the ledger; ``lie`` changes it (for demos and tests)."""
    if job.kind == "zk":
        from missive.market.zk.bundle import prove_job

        result = prove_job(program, data, workdir)
        if lie:  # claim another output with the honest proof
            outputs_text, proof_text = msgpack.unpackb(result)
            outputs = [str(int(o) + 1) for o in json.loads(outputs_text)]
            result = bytes(msgpack.packb([json.dumps(outputs), proof_text], use_bin_type=True))
        return result
    result = run_program(program, data, job.gas)
    if lie:
        status, output = decode_result(result)
        result = encode_result(status, output[:-1] + bytes([(output[-1:] or b"\0")[0] ^ 1]))
    return result


def _salt(node: Node, worker: object, job_id: bytes) -> bytes:
    """The worker's salt for a job, the same on every pass (Ed25519 signatures are deterministic)."""
    key = node.wallet(worker).key if worker is not None else node.default.key
    return keccak256(bytes(key.signing_key.sign(b"missive job salt" + job_id).signature))[:16]


#: jobs a worker process has already said it cannot do (said once, not on every pass)
_told: set[bytes] = set()
#: ticket-paid jobs a worker left, and said so (once per job and worker)
_left: set[tuple[bytes, bytes, str]] = set()


def zk_missing(program: bytes) -> str | None:
    """Why this node cannot prove a circuit job's program (its prover is not installed), or None."""
    from missive.market.zk.bundle import read_bundle
    from missive.toolchain import zk

    return zk.zokrates_missing() if read_bundle(program)[0] == "zokrates" else zk.missing_reason()


def _program(node: Node, job_id: bytes) -> bytes:
    found = read_job(node.store, job_id)
    return found[1] if found is not None else b""


#: by default, the most ticket-paid jobs of one poster a worker holds unpaid (accepted, no ticket yet) or in
#: hand before it takes no more of that poster's jobs: the credit it gives a poster
MAX_UNPAID = 16


def ticket_job_refusal(node: Node, me: object, job: Job, *, tickets: bool, max_odds: int, unpaid: int,
                       max_unpaid: int = MAX_UNPAID) -> str | None:
    """Why a worker leaves a ticket-paid job (None: it may take it): it refuses tickets, the odds are
    too long, the poster's reserve would not cover the ticket beside its unredeemed winnings, or
    the poster owes it too many tickets already (``unpaid``: its ticket-paid jobs of this poster
    unpaid or in hand, :func:`missive.node.jobtickets.unpaid`)."""
    from missive.mailbox.broker import payer as broker_payer
    from missive.market.jobpay import face_value, take_refusal

    if not tickets:
        return "paid by tickets, and this worker takes none (--no-tickets)"
    if job.odds > max_odds:
        return f"its ticket wins with probability 1/{job.odds}, less than this worker's 1/{max_odds}"
    address = node._key(me).address
    payer = broker_payer(node.store, job.poster)
    if (why := take_refusal(payer, address)) is not None:
        return why
    assert payer is not None
    face = face_value(job.bid, job.odds)
    if face + node.tickets.recipient(me).unredeemed(job.poster) > payer.allowance(address):
        return (f"its ticket's face value {face} with the winnings unredeemed is above this worker's allowance of "
                f"the poster's reserve ({payer.allowance(address)})")
    if unpaid >= max_unpaid:
        return f"this worker has {unpaid} of the poster's ticket-paid jobs unpaid or in hand (`missive job pay`)"
    return None


def work(node: Node, worker: object = None, *, min_bid: int = 0, lie: bool = False, workdir: Path | None = None,
         tickets: bool = True, max_odds: int = 1_000_000, max_unpaid: int = MAX_UNPAID) -> list[str]:
    """One pass over the board as ``worker``: collect and redeem the tickets it was paid, then take,
    commit, reveal whatever can be done now; what it did, one line each.  Refusals by the board (a
    job taken meanwhile) are logged, not raised.  ``tickets=False`` leaves ticket-paid jobs to
    others, as does ``max_odds`` those whose tickets win less often than 1/max_odds, and
    ``max_unpaid`` those of a poster with that many of its ticket-paid jobs unpaid or in hand."""
    from missive.node.jobtickets import collect, job_commitment, unpaid

    me = (node.wallet(worker) if worker is not None else node.default).address
    done: list[str] = collect(node, me)
    credit = unpaid(node, me, working=True)  # by poster, kept up to date as this pass takes jobs
    with tempfile.TemporaryDirectory(prefix="missive-work-") as tmp:
        progress = True
        while progress:
            progress = False
            for job_id, job in read_jobs(node.store):
                if job.status not in ("open", "running"):
                    continue
                mine = job.taker(me)
                short = f"job {job_id.hex()[:16]}"
                try:
                    if mine is None:
                        own = node.store.worker(me)
                        if (job.status != "open" or job.bid < min_bid or job.poster == me or own is None
                                or own.stake < job.pledge):
                            continue
                        if job.kind == "zk" and (missing := zk_missing(_program(node, job_id))) is not None:
                            if job_id not in _told:  # once per job, not every pass
                                _told.add(job_id)
                                done.append(f"{short}: a zk job, not taken: {missing}")
                            continue
                        if job.by_tickets and (why := ticket_job_refusal(node, me, job, tickets=tickets,
                                                                         max_odds=max_odds, unpaid=credit[job.poster],
                                                                         max_unpaid=max_unpaid)) is not None:
                            if (job_id, me, why) not in _left:  # each reason once per job and worker
                                _left.add((job_id, me, why))
                                done.append(f"{short}: not taken: {why}")
                            continue
                        take = [job_id, int(time.time())]
                        if job.by_tickets:
                            take.append(job_commitment(node, me, job_id))
                        node.job_op("take", take, sender=worker)
                        if job.by_tickets:
                            credit[job.poster] += 1
                        paid = f", paid by a ticket at 1/{job.odds}" if job.by_tickets else ""
                        done.append(f"{short}: taken (bid {job.bid}{paid}, pledge {job.pledge})")
                        progress = True
                        continue
                    if mine.result is not None:
                        continue
                    found = read_job(node.store, job_id)
                    assert found is not None
                    _, program, data = found
                    if job.mode == "redundant" and not mine.commitment:
                        result = answer(job, program, data, Path(tmp), lie)
                        node.job_op("commit", [job_id, commitment(job_id, me, result, _salt(node, worker, job_id))],
                                    sender=worker)
                        done.append(f"{short}: committed to a result")
                        progress = True
                        continue
                    if job.mode == "redundant" and (len(job.active) < job.n
                                                    or not all(t.commitment for t in job.active)):
                        continue  # the others have not committed yet
                    result = answer(job, program, data, Path(tmp), lie)
                    node.job_op("reveal", [job_id, result, _salt(node, worker, job_id) if job.mode == "redundant"
                                           else b""], sender=worker)
                    after = read_job(node.store, job_id)
                    verdict = next((t.verdict for t in after[0].takers if t.worker == me), "") if after else ""
                    done.append(f"{short}: answered" + (f" ({verdict})" if verdict else ""))
                    progress = True
                except EnvelopeError as refused:
                    log.info("%s: %s", short, refused)
                except MissiveError as failed:  # the prover failed on this job: say so, keep working
                    if job_id not in _told:
                        _told.add(job_id)
                        done.append(f"{short}: cannot answer: {failed}")
    return done


__all__ = ["answer", "circuit_bundle", "circuit_input", "evm_input", "program_of", "submit", "work"]
