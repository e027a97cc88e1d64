"""Groth16 over BN254, off the ledger, with Missive's own curve code (:mod:`missive.vm.bn254`).

Reads the proof and verification-key JSON of the two established provers, snarkjs (circom) and
ZoKrates (``g16``): both are the same three points (A in G1, B in G2, C in G1) and the same key
(alpha in G1, beta/gamma/delta in G2, one G1 point per public input plus one), with G2
coordinates written ``[c0, c1]`` (real part first).  They differ in field names, in number
notation (decimal strings or 0x-hex) and in the order of public values: circom puts the outputs
first (``[out, a, b]``), ZoKrates the inputs first (``[a, b, out]``); the caller passes the public
values in the order of its key.

Every point is checked before any pairing: coordinates below the field modulus, on the curve,
and for G2 in the order-R subgroup (the twist has other points; a pairing on them is
meaningless and is how forged proofs pass a careless verifier).  Public values must be below R.
A rejection is :class:`ProofRejected` with one line saying what was wrong.

The check is ``e(-A, B) · e(alpha, beta) · e(vk_x, gamma) · e(C, delta) == 1`` with
``vk_x = IC[0] + Σ x_i · IC[i+1]``: one four-pair product and one final exponentiation.
"""

from __future__ import annotations

import json
from typing import Any, Final

import attrs

from missive.errors import BadInput
from missive.vm import bn254

#: The most public values a job's key may have (the on-ledger verifier's bound, MAX_INPUTS).
MAX_PUBLIC: Final = 16


class ProofRejected(BadInput):
    """A proof or key that is malformed or does not verify; the message says which and why."""


@attrs.frozen
class VerifyingKey:
    alpha: tuple[int, int]
    beta: tuple[int, int, int, int]
    gamma: tuple[int, int, int, int]
    delta: tuple[int, int, int, int]
    ic: tuple[tuple[int, int], ...]

    @property
    def public_count(self) -> int:
        return len(self.ic) - 1

    def to_json(self) -> dict[str, Any]:
        """The key as snarkjs writes it (canonical: decimal strings), so that it hashes the same
        whichever format it was read from."""
        return {"protocol": "groth16", "curve": "bn128", "nPublic": self.public_count,
                "vk_alpha_1": _g1_json(self.alpha), "vk_beta_2": _g2_json(self.beta),
                "vk_gamma_2": _g2_json(self.gamma), "vk_delta_2": _g2_json(self.delta),
                "IC": [_g1_json(p) for p in self.ic]}


@attrs.frozen
class Proof:
    a: tuple[int, int]
    b: tuple[int, int, int, int]
    c: tuple[int, int]

    def to_json(self) -> dict[str, Any]:
        return {"protocol": "groth16", "curve": "bn128", "pi_a": _g1_json(self.a), "pi_b": _g2_json(self.b),
                "pi_c": _g1_json(self.c)}


def _g1_json(p: tuple[int, int]) -> list[str]:
    return [str(p[0]), str(p[1]), "1"]


def _g2_json(q: tuple[int, int, int, int]) -> list[list[str]]:
    return [[str(q[0]), str(q[1])], [str(q[2]), str(q[3])], ["1", "0"]]


# -- reading -----------------------------------------------------------------------------------


def _number(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ProofRejected(f"{what} is not a number")
    if isinstance(value, int):
        number = value
    else:
        text = value.strip()
        try:
            number = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
        except ValueError:
            raise ProofRejected(f"{what} is not a number: {value[:40]!r}") from None
    if number < 0 or number >> 256:
        raise ProofRejected(f"{what} is not a 256-bit number")
    return number


def _list(value: Any, lengths: tuple[int, ...], what: str) -> list[Any]:
    if not isinstance(value, list) or len(value) not in lengths:
        wanted = (" or ".join(str(n) for n in lengths) if len(lengths) < 3
                  else f"{lengths[0]} to {lengths[-1]}")
        got = len(value) if isinstance(value, list) else type(value).__name__
        raise ProofRejected(f"{what} has the wrong length: {got} where {wanted} was expected")
    return value


def _read_g1(value: Any, what: str) -> tuple[int, int]:
    items = _list(value, (2, 3), what)
    x, y = _number(items[0], f"{what}.x"), _number(items[1], f"{what}.y")
    if len(items) == 3 and _number(items[2], f"{what}.z") != 1:
        raise ProofRejected(f"{what} is not in affine form (z is not 1)")
    return x, y


def _read_g2(value: Any, what: str) -> tuple[int, int, int, int]:
    items = _list(value, (2, 3), what)
    x = _list(items[0], (2,), f"{what}.x")
    y = _list(items[1], (2,), f"{what}.y")
    if len(items) == 3:
        z = _list(items[2], (2,), f"{what}.z")
        if (_number(z[0], f"{what}.z"), _number(z[1], f"{what}.z")) != (1, 0):
            raise ProofRejected(f"{what} is not in affine form (z is not 1)")
    return (_number(x[0], f"{what}.x"), _number(x[1], f"{what}.x"), _number(y[0], f"{what}.y"),
            _number(y[1], f"{what}.y"))


def _as_dict(document: Any, what: str) -> dict[str, Any]:
    if isinstance(document, (str, bytes)):
        try:
            document = json.loads(document)
        except ValueError as exc:
            raise ProofRejected(f"the {what} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ProofRejected(f"the {what} is not a JSON object")
    return document


def load_key(document: Any) -> VerifyingKey:
    """A verification key from snarkjs (``vk_alpha_1``...) or ZoKrates (``alpha``...) JSON."""
    doc = _as_dict(document, "verification key")
    if "vk_alpha_1" in doc:
        names = ("vk_alpha_1", "vk_beta_2", "vk_gamma_2", "vk_delta_2", "IC")
    elif "alpha" in doc:
        names = ("alpha", "beta", "gamma", "delta", "gamma_abc")
    else:
        raise ProofRejected("not a Groth16 verification key (no vk_alpha_1 as snarkjs writes, no alpha as ZoKrates)")
    for field in ("protocol", "scheme"):
        if field in doc and doc[field] not in ("groth16", "g16"):
            raise ProofRejected(f"the key is for {doc[field]!r}, not Groth16")
    if doc.get("curve", "bn128") not in ("bn128", "bn254", "alt_bn128"):
        raise ProofRejected(f"the key is on curve {doc.get('curve')!r}, not BN254")
    missing = [name for name in names if name not in doc]
    if missing:
        raise ProofRejected(f"the verification key has no {', '.join(missing)}")
    ic = _list(doc[names[4]], tuple(range(1, MAX_PUBLIC + 2)), f"key.{names[4]}")
    key = VerifyingKey(_read_g1(doc[names[0]], "key.alpha"), _read_g2(doc[names[1]], "key.beta"),
                       _read_g2(doc[names[2]], "key.gamma"), _read_g2(doc[names[3]], "key.delta"),
                       tuple(_read_g1(p, f"key.ic[{i}]") for i, p in enumerate(ic)))
    check_key(key)
    return key


def load_proof(document: Any) -> tuple[Proof, list[int] | None]:
    """A proof from snarkjs (``pi_a``...) or ZoKrates (``proof: {a, b, c}, inputs``) JSON, with the
    public values when the document carries them (ZoKrates's does; snarkjs writes them apart)."""
    doc = _as_dict(document, "proof")
    inputs: list[int] | None = None
    if "pi_a" in doc:
        parts = doc["pi_a"], doc.get("pi_b"), doc.get("pi_c")
    elif isinstance(doc.get("proof"), dict):
        inner = doc["proof"]
        parts = inner.get("a"), inner.get("b"), inner.get("c")
        if "inputs" in doc:
            inputs = load_public(doc["inputs"])
    else:
        raise ProofRejected("not a Groth16 proof (no pi_a as snarkjs writes, no proof.a as ZoKrates)")
    for field in ("protocol", "scheme"):
        if field in doc and doc[field] not in ("groth16", "g16"):
            raise ProofRejected(f"the proof is {doc[field]!r}, not Groth16")
    return Proof(_read_g1(parts[0], "proof.A"), _read_g2(parts[1], "proof.B"), _read_g1(parts[2], "proof.C")), inputs


def load_public(document: Any) -> list[int]:
    """Public values: a JSON list of numbers (snarkjs's public.json), or the list itself."""
    if isinstance(document, (str, bytes)):
        try:
            document = json.loads(document)
        except ValueError as exc:
            raise ProofRejected(f"the public values are not JSON: {exc}") from None
    values = _list(document, tuple(range(0, MAX_PUBLIC + 1)), "the public values")
    return [_number(v, f"public value {i}") for i, v in enumerate(values)]


# -- checking ----------------------------------------------------------------------------------


def _g1_point(p: tuple[int, int], what: str) -> tuple[int, int]:
    try:
        bn254.g1_validate(p[0], p[1])
    except ValueError as exc:
        raise ProofRejected(f"{what} is not a G1 point: {exc}") from None
    return p


def _g2_point(q: tuple[int, int, int, int], what: str) -> bn254.G2Affine | None:
    try:
        return bn254.g2_validate(q[0], q[1], q[2], q[3])
    except ValueError as exc:
        raise ProofRejected(f"{what} is not a G2 point: {exc}") from None


def check_key(key: VerifyingKey) -> None:
    """Every point of the key is on its curve and in its group (else ProofRejected)."""
    _g1_point(key.alpha, "key.alpha")
    for index, p in enumerate(key.ic):
        _g1_point(p, f"key.ic[{index}]")
    for name in ("beta", "gamma", "delta"):
        if _g2_point(getattr(key, name), f"key.{name}") is None:
            raise ProofRejected(f"key.{name} is the point at infinity")


def verify(key: VerifyingKey, proof: Proof, public: list[int]) -> None:
    """Return if ``proof`` proves ``public`` under ``key``; else ProofRejected saying why."""
    if len(public) != key.public_count:
        raise ProofRejected(f"{len(public)} public values given, the key has {key.public_count}")
    for index, value in enumerate(public):
        if value >= bn254.R:
            raise ProofRejected(f"public value {index} is not below the group order R")
    a = _g1_point(proof.a, "proof.A")
    c = _g1_point(proof.c, "proof.C")
    b = _g2_point(proof.b, "proof.B")
    x = key.ic[0]
    for value, point in zip(public, key.ic[1:], strict=True):
        term = bn254.g1_mul(point[0], point[1], value)
        x = bn254.g1_add(x[0], x[1], term[0], term[1])
    g2 = {name: _g2_point(getattr(key, name), f"key.{name}") for name in ("beta", "gamma", "delta")}
    pairs: list[tuple[tuple[int, int], bn254.G2Affine]] = []
    neg_a = (a[0], (bn254.P - a[1]) % bn254.P)
    for p, q in ((neg_a, b), (key.alpha, g2["beta"]), (x, g2["gamma"]), (c, g2["delta"])):
        if p != (0, 0) and q is not None:  # a pair with infinity contributes 1
            pairs.append((p, q))
    if not bn254.pairing_product_is_one(pairs):
        raise ProofRejected("the proof does not verify: the pairing check failed "
                            "(other public values, another key, or a forged proof)")


# -- the on-ledger verifier's call -------------------------------------------------------------


def _word(n: int) -> bytes:
    return n.to_bytes(32, "big")


def _g2_words(q: tuple[int, int, int, int]) -> bytes:
    """G2 in the precompile's order: x_im, x_re, y_im, y_re."""
    return _word(q[1]) + _word(q[0]) + _word(q[3]) + _word(q[2])


def verifier_calldata(key: VerifyingKey, proof: Proof, public: list[int]) -> bytes:
    """ABI call of ``verify(...)`` on the on-ledger verifier (groth16_verifier.vy)."""
    from missive.vm.keccak import keccak256

    signature = ("verify(uint256[2],uint256[4],uint256[4],uint256[4],uint256[2][],uint256[2],uint256[4],"
                 "uint256[2],uint256[])")
    head = (_word(key.alpha[0]) + _word(key.alpha[1]) + _g2_words(key.beta) + _g2_words(key.gamma)
            + _g2_words(key.delta))
    fixed_tail = _word(proof.a[0]) + _word(proof.a[1]) + _g2_words(proof.b) + _word(proof.c[0]) + _word(proof.c[1])
    words_before = (len(head) + 32 + len(fixed_tail) + 32) // 32  # static words and the two offsets
    ic_part = _word(len(key.ic)) + b"".join(_word(p[0]) + _word(p[1]) for p in key.ic)
    inputs_part = _word(len(public)) + b"".join(_word(v) for v in public)
    ic_offset = words_before * 32
    inputs_offset = ic_offset + len(ic_part)
    body = head + _word(ic_offset) + fixed_tail + _word(inputs_offset) + ic_part + inputs_part
    return keccak256(signature.encode())[:4] + body


def solidity_calldata(proof: Proof, public: list[int]) -> bytes:
    """ABI call of ``verifyProof(uint[2],uint[2][2],uint[2],uint[N])`` on a verifier that
    ``snarkjs zkey export solidityverifier`` wrote (its key is in its code)."""
    from missive.vm.keccak import keccak256

    signature = f"verifyProof(uint256[2],uint256[2][2],uint256[2],uint256[{len(public)}])"
    body = (_word(proof.a[0]) + _word(proof.a[1]) + _g2_words(proof.b) + _word(proof.c[0]) + _word(proof.c[1])
            + b"".join(_word(v) for v in public))
    return keccak256(signature.encode())[:4] + body


__all__ = ["MAX_PUBLIC", "Proof", "ProofRejected", "VerifyingKey", "check_key", "load_key", "load_proof",
           "load_public", "solidity_calldata", "verifier_calldata", "verify"]
