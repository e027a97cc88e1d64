"""A circuit job's program and result, and their checks (docs/jobs.md, "zk jobs").

The program of a ``zk`` job is a bundle the poster makes once per circuit: the Groth16
verification key (snarkjs JSON), the witness generator (circom's wasm) and the proving key
(``.zkey``), as msgpack ``{"vk": text, "wasm": bytes, "zkey": bytes}``.  Its input is a JSON object
of the circuit's public inputs in declaration order (``{"a": 3, "b": 4}``).  A worker's result is
msgpack ``[outputs JSON, proof JSON]``; the public values the proof must prove are circom's order,
outputs first, then the inputs: ``[c, a, b]``.

The board checks a result on the ledger with the verifier contract (:func:`check_on_ledger`);
anyone can check it off the ledger with Missive's BN254 in Python (:func:`check_off_ledger`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import msgpack

from missive.errors import BadInput
from missive.mailbox.envelope import EnvelopeError
from missive.market.zk.groth16 import ProofRejected, VerifyingKey, load_key, load_proof, verify
from missive.market.zk.onledger import verify_on_ledger


def make_bundle(vk: dict[str, Any], wasm: bytes, zkey: bytes) -> bytes:
    key = load_key(vk)  # checked before it is posted
    return cast(bytes, msgpack.packb({"vk": json.dumps(key.to_json(), sort_keys=True), "wasm": wasm, "zkey": zkey},
                                     use_bin_type=True))


def read_bundle(program: bytes) -> tuple[VerifyingKey, bytes, bytes]:
    try:
        bundle = msgpack.unpackb(program)
        key = load_key(bundle["vk"])
        wasm, zkey = bytes(bundle["wasm"]), bytes(bundle["zkey"])
    except ProofRejected as exc:
        raise EnvelopeError(f"the circuit's verification key is refused: {exc}") from None
    except (ValueError, TypeError, KeyError, msgpack.ExtraData):
        raise EnvelopeError("the circuit job's program is not a bundle of key, wasm and zkey "
                            "(`missive job submit X.circom` makes one)") from None
    return key, wasm, zkey


def read_inputs(data: bytes) -> dict[str, int]:
    try:
        inputs = json.loads(data)
    except ValueError:
        raise EnvelopeError("a circuit job's input is a JSON object of its public inputs") from None
    if not isinstance(inputs, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in inputs.values()):
        raise EnvelopeError("a circuit job's input is a JSON object of non-negative integers, e.g. {\"a\": 3}")
    return inputs


def check_circuit_job(program: bytes, data: bytes) -> None:
    key, _, _ = read_bundle(program)
    inputs = read_inputs(data)
    if len(inputs) >= key.public_count:
        raise EnvelopeError(f"the circuit has {key.public_count} public values: {len(inputs)} inputs leave "
                            "no output to compute")


def encode_result(outputs: list[int], proof: dict[str, Any]) -> bytes:
    return cast(bytes, msgpack.packb([json.dumps([str(o) for o in outputs]), json.dumps(proof, sort_keys=True)],
                                     use_bin_type=True))


def _public(program: bytes, data: bytes, result: bytes) -> tuple[VerifyingKey, Any, list[int]]:
    key, _, _ = read_bundle(program)
    inputs = read_inputs(data)
    try:
        outputs_text, proof_text = msgpack.unpackb(result)
        outputs = [int(o) for o in json.loads(outputs_text)]
        proof, _ = load_proof(proof_text)
    except ProofRejected:
        raise
    except (ValueError, TypeError, msgpack.ExtraData):
        raise ProofRejected("the result is not [outputs, proof]") from None
    if len(outputs) + len(inputs) != key.public_count:
        raise ProofRejected(f"{len(outputs)} outputs and {len(inputs)} inputs, the key has {key.public_count} "
                            "public values")
    return key, proof, outputs + list(inputs.values())


def check_on_ledger(program: bytes, data: bytes, result: bytes) -> str | None:
    """Why the result is refused by the verifier contract on Missive's VM, or None when it verifies."""
    try:
        key, proof, public = _public(program, data, result)
    except ProofRejected as exc:
        return f"malformed proof: {exc}"
    verdict = verify_on_ledger(key, proof, public)
    if verdict.valid:
        return None
    # the contract can only say no; the same check in Python says why (deterministic: replay agrees)
    try:
        verify(key, proof, public)
        why = "the Python check accepts it"  # the two disagree: a bug, shown rather than hidden
    except ProofRejected as exc:
        why = str(exc)
    return f"{verdict.reason} (gas {verdict.gas_used}): {why}"


def check_off_ledger(program: bytes, data: bytes, result: bytes) -> None:
    """The same check in Python with Missive's BN254 (ProofRejected saying why)."""
    key, proof, public = _public(program, data, result)
    verify(key, proof, public)


def outputs_of(result: bytes) -> list[int]:
    return [int(o) for o in json.loads(msgpack.unpackb(result)[0])]


def prove_job(program: bytes, data: bytes, workdir: Path) -> bytes:
    """A worker's answer: run the prover (circom's witness generator and snarkjs) on the job."""
    from missive.toolchain import zk

    key, wasm, zkey = read_bundle(program)
    inputs = read_inputs(data)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "circuit.wasm").write_bytes(wasm)
    (workdir / "circuit.zkey").write_bytes(zkey)
    proof, public = zk.prove(workdir / "circuit.wasm", workdir / "circuit.zkey", dict(inputs), workdir)
    count = key.public_count - len(inputs)
    if len(public) != key.public_count:
        raise BadInput(f"the prover gave {len(public)} public values, the key has {key.public_count}")
    return encode_result([int(v) for v in public[:count]], proof)


__all__ = ["check_circuit_job", "check_off_ledger", "check_on_ledger", "encode_result", "make_bundle",
           "outputs_of", "prove_job", "read_bundle", "read_inputs"]
