"""P256VERIFY (EIP-7951, Osaka) at 0x100: secp256r1 ECDSA verification for 6900 gas.

Passkeys (WebAuthn), secure enclaves and HSMs sign with P-256; contracts verify
those signatures through this precompile.  The oracle here is EIP-7951's own
verification algorithm transcribed into plain Python (below), independent of the
OpenSSL code the precompile uses; signatures are made with ``cryptography``.
The public vector files (go-ethereum's, the EIP's Wycheproof set) are run by
``tests/test_conformance.py`` from ``../shared/conformance`` when they are there.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from missive.toolchain.asm import assemble
from missive.vm import Status, execute
from missive.vm.precompiles import run_precompile

ADDRESS = 0x100
GAS = 6900
# EIP-7951 "Curve Parameters".
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
A = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFC
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
ONE = (1).to_bytes(32, "big")


# --- EIP-7951's algorithm, affine arithmetic, for the oracle -----------------


def _add(p1: tuple[int, int] | None, p2: tuple[int, int] | None) -> tuple[int, int] | None:
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    (x1, y1), (x2, y2) = p1, p2
    if x1 == x2 and (y1 + y2) % P == 0:
        return None
    if p1 == p2:
        slope = (3 * x1 * x1 + A) * pow(2 * y1, -1, P) % P
    else:
        slope = (y2 - y1) * pow(x2 - x1, -1, P) % P
    x3 = (slope * slope - x1 - x2) % P
    return x3, (slope * (x1 - x3) - y1) % P


def _mul(k: int, point: tuple[int, int]) -> tuple[int, int] | None:
    result: tuple[int, int] | None = None
    addend: tuple[int, int] | None = point
    while k:
        if k & 1:
            result = _add(result, addend)
        addend = _add(addend, addend)
        k >>= 1
    return result


def eip_7951(data: bytes) -> bytes:
    """EIP-7951's "Signature Verification Algorithm", step by step."""
    if len(data) != 160:
        return b""
    h, r, s, qx, qy = (int.from_bytes(data[i : i + 32], "big") for i in range(0, 160, 32))
    if not (0 < r < N and 0 < s < N):
        return b""
    if not (0 <= qx < P and 0 <= qy < P):
        return b""
    if (qy * qy - (qx**3 + A * qx + B)) % P:
        return b""
    if (qx, qy) == (0, 0):
        return b""
    s1 = pow(s, -1, N)
    point = _add(_mul(h * s1 % N, (GX, GY)), _mul(r * s1 % N, (qx, qy)))
    if point is None:
        return b""
    return ONE if point[0] % N == r else b""


def signed(key_seed: int, message: bytes) -> bytes:
    """The precompile's input for ``message`` signed by the key derived from ``key_seed``."""
    key = ec.derive_private_key(key_seed, ec.SECP256R1())
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    numbers = key.public_key().public_numbers()
    digest = hashlib.sha256(message).digest()
    return digest + b"".join(v.to_bytes(32, "big") for v in (r, s, numbers.x, numbers.y))


def call(data: bytes, gas: int = 100_000) -> bytes:
    result = run_precompile(ADDRESS, data, gas)
    assert result.success and result.gas_used == GAS and result.error == ""
    return result.output


# --- tests -------------------------------------------------------------------


def test_the_oracle_knows_a_signature_from_a_forgery() -> None:
    good = signed(1234567, b"hello")
    assert eip_7951(good) == ONE
    assert eip_7951(good[:31] + bytes([good[31] ^ 1]) + good[32:]) == b""


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, N - 1), st.binary(max_size=64), st.integers(0, 159), st.integers(0, 255))
def test_signatures_and_altered_ones_agree_with_the_eip(seed: int, message: bytes, position: int, flip: int) -> None:
    good = signed(seed, message)
    assert call(good) == ONE
    altered = bytearray(good)
    altered[position] ^= flip
    assert call(bytes(altered)) == eip_7951(bytes(altered))


def _replace(data: bytes, index: int, value: int) -> bytes:
    """``data`` with its ``index``-th 32-byte field (h, r, s, qx, qy) set to ``value``."""
    return data[: 32 * index] + value.to_bytes(32, "big") + data[32 * (index + 1) :]


@pytest.mark.parametrize(
    ("field", "value"),
    [(1, 0), (1, N), (1, 2**256 - 1), (2, 0), (2, N), (3, P), (4, P), (3, 0), (4, 0)],
    ids=["r=0", "r=n", "r=max", "s=0", "s=n", "qx=p", "qy=p", "qx=0", "qy=0"],
)
def test_out_of_range_fields_are_an_empty_answer_not_a_failure(field: int, value: int) -> None:
    """EIP-7951 input validation: the call succeeds, costs 6900 gas and returns nothing."""
    assert call(_replace(signed(99, b"m"), field, value)) == b""


def test_the_point_at_infinity_and_wrong_lengths_are_empty_answers() -> None:
    good = signed(42, b"x")
    assert call(good[:96] + bytes(64)) == b""
    for data in (b"", good[:-1], good + b"\x00", good + good):
        assert call(data) == b""


def test_high_s_is_accepted() -> None:
    """Unlike transactions, ECDSA verification has no low-s rule: (r, n - s) verifies too."""
    good = signed(7, b"malleable")
    s = int.from_bytes(good[64:96], "big")
    assert call(_replace(good, 2, N - s)) == ONE


def test_too_little_gas_fails_with_all_gas_used() -> None:
    result = run_precompile(ADDRESS, signed(5, b"g"), 6899)
    assert not result.success and result.gas_used == 6899 and result.output == b""


def test_a_contract_verifies_a_passkey_signature() -> None:
    code = assemble(
        """
        CALLDATASIZE PUSH0 PUSH 128 CALLDATACOPY
        PUSH 32 PUSH0 CALLDATASIZE PUSH 128 PUSH 256 GAS STATICCALL
        PUSH 32 MSTORE RETURNDATASIZE PUSH 64 MSTORE
        PUSH 96 PUSH0 RETURN
        """
    )
    result = execute(code, data=signed(2024, b"webauthn"), gas=100_000)
    assert result.status is Status.SUCCESS and result.outbox == ()
    assert result.output == ONE + ONE + (32).to_bytes(32, "big")  # [answer, success, return data size]
    forged = execute(code, data=_replace(signed(2024, b"webauthn"), 0, 1), gas=100_000)
    assert forged.output == bytes(32) + ONE + bytes(32)
