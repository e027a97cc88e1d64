"""Groth16 checks (issue 25): off the ledger in Python with Missive's BN254, and on the ledger by the
verifier contract running on Missive's VM through its precompiles.  Both must accept the same
valid proofs and reject the same tampered and malformed ones, each with a clear reason.

The fixtures (tests/zk/README.md) are real snarkjs and ZoKrates proofs of the seed's ``a + b``; the
end-to-end test at the bottom makes its own with circom2 and snarkjs when they are installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_precompiles import random_twist_point

from missive.market.zk import groth16
from missive.market.zk.groth16 import ProofRejected
from missive.market.zk.onledger import SOURCE, run_verifier, verifier_code, verify_on_ledger
from missive.toolchain import solidity, zk
from missive.vm.bn254 import P, R

DATA = Path(__file__).parent / "zk"
REPO = Path(__file__).parent.parent


def fixture(name: str) -> Any:
    return json.loads((DATA / name).read_text())


SNARK_KEY = groth16.load_key(fixture("snarkjs_add_vk.json"))
SNARK_PROOF, _ = groth16.load_proof(fixture("snarkjs_add_proof.json"))
SNARK_PUBLIC = groth16.load_public(fixture("snarkjs_add_public.json"))
ZOK_KEY = groth16.load_key(fixture("zokrates_add_vk.json"))
ZOK_PROOF, ZOK_PUBLIC = groth16.load_proof(fixture("zokrates_add_proof.json"))


def both(key: groth16.VerifyingKey, proof: groth16.Proof, public: list[int]) -> tuple[str | None, bool]:
    """(Python's rejection or None, the on-ledger verdict)."""
    try:
        groth16.verify(key, proof, public)
        python = None
    except ProofRejected as exc:
        python = str(exc)
    return python, verify_on_ledger(key, proof, public).valid


def test_snarkjs_and_zokrates_proofs_of_a_plus_b_verify_off_and_on_the_ledger() -> None:
    assert SNARK_PUBLIC == [7, 3, 4]  # circom: outputs first
    assert ZOK_PUBLIC == [3, 4, 7]  # ZoKrates: inputs first
    assert both(SNARK_KEY, SNARK_PROOF, SNARK_PUBLIC) == (None, True)
    assert both(ZOK_KEY, ZOK_PROOF, ZOK_PUBLIC) == (None, True)
    verdict = verify_on_ledger(SNARK_KEY, SNARK_PROOF, SNARK_PUBLIC)
    assert 180_000 < verdict.gas_used < 400_000  # four pairings (181,000 gas) and the contract's own work


def test_a_changed_public_input_or_output_is_rejected() -> None:
    for public in ([8, 3, 4], [7, 4, 3], [7, 3, 5], [0, 0, 0]):
        python, on_ledger = both(SNARK_KEY, SNARK_PROOF, public)
        assert python is not None and "does not verify" in python and not on_ledger
    python, on_ledger = both(ZOK_KEY, ZOK_PROOF, [3, 4, 8])
    assert python is not None and not on_ledger


def test_a_proof_under_another_key_is_rejected() -> None:
    """The ZoKrates proof is valid, but for ZoKrates's key, not snarkjs's, whatever the order of values."""
    for public in (ZOK_PUBLIC, SNARK_PUBLIC):
        python, on_ledger = both(SNARK_KEY, ZOK_PROOF, public)
        assert python is not None and "does not verify" in python and not on_ledger
    python, on_ledger = both(ZOK_KEY, SNARK_PROOF, ZOK_PUBLIC)
    assert python is not None and not on_ledger


def test_points_off_the_curve_or_outside_the_subgroup_are_rejected_before_pairing() -> None:
    a, b, c = SNARK_PROOF.a, SNARK_PROOF.b, SNARK_PROOF.c
    off_curve = groth16.Proof((a[0], (a[1] + 1) % P), b, c)
    python, on_ledger = both(SNARK_KEY, off_curve, SNARK_PUBLIC)
    assert python == "proof.A is not a G1 point: point not on curve" and not on_ledger
    python, _ = both(SNARK_KEY, groth16.Proof(a, b, (c[0], c[1] + P)), SNARK_PUBLIC)
    assert python == "proof.C is not a G1 point: coordinate not less than the field modulus"
    (x_re, x_im), (y_re, y_im) = random_twist_point(12345)
    outside = groth16.Proof(a, (x_re, x_im, y_re, y_im), c)
    python, on_ledger = both(SNARK_KEY, outside, SNARK_PUBLIC)
    assert python == "proof.B is not a G2 point: G2 point not in the subgroup of order R" and not on_ledger
    python, on_ledger = both(SNARK_KEY, groth16.Proof(a, (b[1], b[0], b[3], b[2]), c), SNARK_PUBLIC)
    assert python is not None and python.startswith("proof.B is not a G2 point") and not on_ledger


def test_public_values_outside_the_field_and_wrong_counts_are_rejected() -> None:
    python, on_ledger = both(SNARK_KEY, SNARK_PROOF, [7 + R, 3, 4])  # the same value modulo R
    assert python == "public value 0 is not below the group order R" and not on_ledger
    python, on_ledger = both(SNARK_KEY, SNARK_PROOF, [7, 3])
    assert python == "2 public values given, the key has 3" and not on_ledger


@pytest.mark.parametrize("document, reason", [
    ({"pi_a": ["1"], "pi_b": [["1", "2"], ["3", "4"]], "pi_c": ["1", "2"]}, "proof.A has the wrong length: 1"),
    ({"pi_a": ["1", "2"], "pi_b": [["1", "2"]], "pi_c": ["1", "2"]}, "proof.B has the wrong length: 1"),
    ({"pi_a": ["1", "x"], "pi_b": [["1", "2"], ["3", "4"]], "pi_c": ["1", "2"]}, "proof.A.y is not a number"),
    ({"pi_a": ["1", "2", "5"], "pi_b": [["1", "2"], ["3", "4"]], "pi_c": ["1", "2"]}, "not in affine form"),
    ({"pi_a": ["1", str(2**256)], "pi_b": [["1", "2"], ["3", "4"]], "pi_c": ["1", "2"]}, "not a 256-bit number"),
    ({"proof": {"a": ["0x1", "0x2"], "b": [["0x1"], ["0x3", "0x4"]], "c": ["0x1", "0x2"]}},
     "proof.B.x has the wrong length"),
    ({"a": 1}, "not a Groth16 proof"),
    ("{not json", "the proof is not JSON"),
    ({"pi_a": ["1", "2"], "pi_b": [["1", "2"], ["3", "4"]], "pi_c": ["1", "2"], "protocol": "plonk"}, "'plonk'"),
])
def test_malformed_proofs_get_one_line_naming_what_is_wrong(document: Any, reason: str) -> None:
    with pytest.raises(ProofRejected, match=reason.replace("(", r"\(")) as caught:
        groth16.load_proof(document)
    assert "\n" not in str(caught.value)


def test_malformed_keys_are_rejected_naming_the_point() -> None:
    doc = fixture("snarkjs_add_vk.json")
    doc["vk_gamma_2"][0][0] = str(int(doc["vk_gamma_2"][0][0]) + 1)
    with pytest.raises(ProofRejected, match="key.gamma is not a G2 point"):
        groth16.load_key(doc)
    doc = fixture("snarkjs_add_vk.json")
    doc["IC"] = doc["IC"] * 10
    with pytest.raises(ProofRejected, match="key.IC has the wrong length: 40 where 1 to 17"):
        groth16.load_key(doc)
    with pytest.raises(ProofRejected, match="curve 'bls12381'"):
        groth16.load_key({**fixture("snarkjs_add_vk.json"), "curve": "bls12381"})


def test_truncated_or_garbled_calldata_makes_the_verifier_contract_say_no() -> None:
    good = groth16.verifier_calldata(SNARK_KEY, SNARK_PROOF, SNARK_PUBLIC)
    assert run_verifier(good).valid
    for bad in (good[:-32], good[:100], good[:4], b"", good[:4] + bytes(len(good) - 4)):
        verdict = run_verifier(bad)
        assert not verdict.valid and verdict.reason


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(["a0", "a1", "b0", "b1", "b2", "b3", "c0", "c1"]), delta=st.integers(1, 2**64))
def test_any_changed_coordinate_is_rejected_by_both_checks_alike(field: str, delta: int) -> None:
    a, b, c = list(SNARK_PROOF.a), list(SNARK_PROOF.b), list(SNARK_PROOF.c)
    parts = {"a": a, "b": b, "c": c}
    parts[field[0]][int(field[1])] = (parts[field[0]][int(field[1])] + delta) % P
    tampered = groth16.Proof((a[0], a[1]), (b[0], b[1], b[2], b[3]), (c[0], c[1]))
    python, on_ledger = both(SNARK_KEY, tampered, SNARK_PUBLIC)
    assert python is not None and not on_ledger


@settings(max_examples=25, deadline=None)
@given(values=st.lists(st.integers(0, R - 1), min_size=3, max_size=3))
def test_keys_and_proofs_read_back_from_their_json_unchanged(values: list[int]) -> None:
    assert groth16.load_key(json.dumps(SNARK_KEY.to_json())) == SNARK_KEY
    assert groth16.load_key(ZOK_KEY.to_json()) == ZOK_KEY
    proof = groth16.Proof(SNARK_PROOF.a, SNARK_PROOF.b, (values[0], values[1]))
    assert groth16.load_proof(json.dumps(proof.to_json()))[0] == proof
    assert groth16.load_public(json.dumps([str(v) for v in values])) == values


def test_the_shipped_verifier_is_its_vyper_source_compiled() -> None:
    from missive.toolchain.compiler import compile_source

    assert compile_source(SOURCE).runtime_bytecode == verifier_code()


# -- end to end with the real prover -----------------------------------------------------------

needs_prover = pytest.mark.skipif(zk.missing_reason() is not None, reason=f"{zk.missing_reason()} (.ci/run installs it)")


@pytest.fixture(scope="module")
def add_circuit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The seed's example, circuit → setup (powers of tau 2^8 made here) → keys."""
    out = tmp_path_factory.mktemp("add")
    r1cs, wasm = zk.compile_circuit(REPO / "examples" / "jobs" / "add.circom", out)
    ptau = zk.powers_of_tau(8, out)
    zkey, vk = zk.setup(r1cs, ptau, out)
    return {"out": out, "wasm": wasm, "zkey": zkey, "vk": vk}


@needs_prover
def test_seed_example_end_to_end_circuit_setup_prove_verify(add_circuit: dict[str, Any]) -> None:
    out, key = add_circuit["out"], groth16.load_key(add_circuit["vk"])
    proof_json, public_text = zk.prove(add_circuit["wasm"], add_circuit["zkey"], {"a": 20, "b": 22}, out)
    proof, _ = groth16.load_proof(proof_json)
    public = groth16.load_public(public_text)
    assert public == [42, 20, 22]
    assert both(key, proof, public) == (None, True)
    assert zk.snarkjs_verify(add_circuit["vk"], public_text, proof_json, out)
    # a proof for other inputs does not prove these, on or off the ledger, nor for snarkjs
    other_json, _ = zk.prove(add_circuit["wasm"], add_circuit["zkey"], {"a": 1, "b": 2}, out)
    other, _ = groth16.load_proof(other_json)
    python, on_ledger = both(key, other, public)
    assert python is not None and not on_ledger
    assert not zk.snarkjs_verify(add_circuit["vk"], public_text, other_json, out)
    # a proof made under the fixture's key (another setup of the same circuit) does not pass this key
    python, on_ledger = both(key, SNARK_PROOF, SNARK_PUBLIC)
    assert python is not None and not on_ledger


@needs_prover
@pytest.mark.skipif(solidity.missing_reason() is not None, reason=f"{solidity.missing_reason()}")
def test_snarkjs_solidity_verifier_on_missives_vm_agrees(add_circuit: dict[str, Any]) -> None:
    from missive.toolchain.compiler import compile_source

    contract = compile_source(zk.solidity_verifier(add_circuit["zkey"], add_circuit["out"])).runtime_bytecode
    key = groth16.load_key(add_circuit["vk"])
    proof_json, public_text = zk.prove(add_circuit["wasm"], add_circuit["zkey"], {"a": 5, "b": 6}, add_circuit["out"])
    proof, _ = groth16.load_proof(proof_json)
    public = groth16.load_public(public_text)
    assert run_verifier(groth16.solidity_calldata(proof, public), contract).valid
    for wrong in ([12, 5, 5], [11, 6, 5]):
        assert not run_verifier(groth16.solidity_calldata(proof, wrong), contract).valid
        assert both(key, proof, wrong)[1] is False


@needs_prover
def test_a_circuit_that_does_not_compile_is_one_line_naming_the_error_and_where(tmp_path: Path) -> None:
    bad = tmp_path / "bad.circom"
    bad.write_text("pragma circom 2.0.0;\ntemplate X() { signal input a; signal output c; c <== a * ; }\n"
                   "component main = X();\n")
    with pytest.raises(zk.ZkToolFailed) as failed:
        zk.compile_circuit(bad, tmp_path / "out")
    assert "circom2" in str(failed.value) and "error[P1012]: illegal expression at" in str(failed.value)
    assert str(failed.value).endswith("bad.circom:2:49") and "\n" not in str(failed.value)


def test_without_the_prover_proving_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MISSIVE_ZK_DIR", str(tmp_path / "none"))
    with pytest.raises(zk.ZkToolMissing, match="run `missive toolchain install`"):
        zk.compile_circuit(REPO / "examples" / "jobs" / "add.circom", tmp_path)
    assert both(SNARK_KEY, SNARK_PROOF, SNARK_PUBLIC) == (None, True)  # checking needs nothing from npm
