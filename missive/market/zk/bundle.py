"""A circuit job's program and result, and their checks (docs/jobs.md, "zk jobs").

The program of a ``zk`` job is a bundle the poster makes once per circuit, msgpack of:

- circom (``scheme`` "circom", or absent): the Groth16 verification key (snarkjs JSON), the
  witness generator (``wasm``) and the proving key (``zkey``);
- ZoKrates (``scheme`` "zokrates"): the verification key, the compiled ``program``, its ``abi``
  (JSON text) and the proving key (``pk``).

Its input is a JSON object of the circuit's public inputs in declaration order
(``{"a": 3, "b": 4}``).  A worker's result is msgpack ``[outputs JSON, proof JSON]``; the public
values the proof must prove are the outputs then the inputs for circom (``[c, a, b]``), the inputs
then the outputs for ZoKrates (``[a, b, c]``).

The board checks a result on the ledger with the verifier contract (:func:`check_on_ledger`);
anyone can check it off the ledger with Missive's BN254 (:func:`check_off_ledger`).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, cast

import msgpack

from missive.errors import BadInput
from missive.mailbox.envelope import EnvelopeError
from missive.market.zk.groth16 import ProofRejected, VerifyingKey, load_key, load_proof, verify
from missive.market.zk.onledger import verify_on_ledger

SCHEMES = ("circom", "zokrates")


def make_bundle(vk: dict[str, Any], wasm: bytes, zkey: bytes) -> bytes:
    """A circom circuit's bundle."""
    return _pack({"scheme": "circom", "vk": _canonical(vk), "wasm": wasm, "zkey": zkey})


def make_zokrates_bundle(vk: dict[str, Any], program: bytes, abi: Any, pk: bytes) -> bytes:
    """A ZoKrates circuit's bundle."""
    return _pack({"scheme": "zokrates", "vk": _canonical(vk), "program": program, "abi": json.dumps(abi),
                  "pk": pk})


def _canonical(vk: dict[str, Any]) -> str:
    return json.dumps(load_key(vk).to_json(), sort_keys=True)  # checked before it is posted


def _pack(bundle: dict[str, Any]) -> bytes:
    return cast(bytes, msgpack.packb(bundle, use_bin_type=True))


def read_bundle(program: bytes) -> tuple[str, VerifyingKey, dict[str, Any]]:
    """(scheme, key, the whole bundle)."""
    try:
        bundle = msgpack.unpackb(program)
        scheme = bundle.get("scheme", "circom")
        key = load_key(bundle["vk"])
        needed = ("wasm", "zkey") if scheme == "circom" else ("program", "abi", "pk")
        if scheme not in SCHEMES or not all(isinstance(bundle.get(name), (bytes, str)) for name in needed):
            raise KeyError(scheme)
    except ProofRejected as exc:
        raise EnvelopeError(f"the circuit's verification key is refused: {exc}") from None
    except (ValueError, TypeError, KeyError, AttributeError, msgpack.ExtraData):
        raise EnvelopeError("the circuit job's program is not a bundle of key and prover files "
                            "(`missive job submit X.circom` or `X.zok` makes one)") from None
    return scheme, key, bundle


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
    scheme, key, bundle = read_bundle(program)
    inputs = read_inputs(data)
    if len(inputs) >= key.public_count:
        raise EnvelopeError(f"the circuit has {key.public_count} public values: {len(inputs)} inputs leave "
                            "no output to compute")
    if scheme == "zokrates":
        names = [entry.get("name") for entry in json.loads(bundle["abi"]).get("inputs", [])]
        if names != list(inputs):
            raise EnvelopeError(f"the circuit's inputs are {', '.join(map(str, names))}, in that order; the job "
                                f"gives {', '.join(inputs) or 'none'}")


def encode_result(outputs: list[int], proof: dict[str, Any]) -> bytes:
    return _pack_result([str(o) for o in outputs], proof)


def _pack_result(outputs: list[str], proof: dict[str, Any]) -> bytes:
    return cast(bytes, msgpack.packb([json.dumps(outputs), json.dumps(proof, sort_keys=True)], use_bin_type=True))


def _public(program: bytes, data: bytes, result: bytes) -> tuple[VerifyingKey, Any, list[int]]:
    scheme, key, _ = read_bundle(program)
    inputs = list(read_inputs(data).values())
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
    return key, proof, (inputs + outputs if scheme == "zokrates" else outputs + inputs)


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
    """A worker's answer: run the prover (circom's witness generator and snarkjs, or zokrates-js)."""
    from missive.toolchain import zk

    scheme, key, bundle = read_bundle(program)
    inputs = read_inputs(data)
    count = key.public_count - len(inputs)
    if scheme == "zokrates":
        answer = zk.zokrates({"op": "prove", "program": base64.b64encode(bundle["program"]).decode(),
                              "abi": json.loads(bundle["abi"]), "pk": base64.b64encode(bundle["pk"]).decode(),
                              "args": [str(v) for v in inputs.values()]})
        proof = answer["proof"]
        public = [int(v, 16) if str(v).startswith("0x") else int(v) for v in proof.get("inputs", [])]
        outputs = public[len(inputs):]
    else:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "circuit.wasm").write_bytes(bundle["wasm"])
        (workdir / "circuit.zkey").write_bytes(bundle["zkey"])
        proof, values = zk.prove(workdir / "circuit.wasm", workdir / "circuit.zkey", dict(inputs), workdir)
        public = [int(v) for v in values]
        outputs = public[:count]
    if len(public) != key.public_count:
        raise BadInput(f"the prover gave {len(public)} public values, the key has {key.public_count}")
    return encode_result(outputs, proof)


def zokrates_bundle(source: Path) -> bytes:
    """Compile and set up a ZoKrates source with zokrates-js: the job's program."""
    from missive.toolchain import zk

    answer = zk.zokrates({"op": "setup", "source": source.read_text()})
    return make_zokrates_bundle(answer["vk"], base64.b64decode(answer["program"]), answer["abi"],
                                base64.b64decode(answer["pk"]))


__all__ = ["check_circuit_job", "check_off_ledger", "check_on_ledger", "encode_result", "make_bundle",
           "make_zokrates_bundle", "outputs_of", "prove_job", "read_bundle", "read_inputs", "zokrates_bundle"]
