"""The BLS12-381 precompiles of EIP-2537 (Prague) at 0x0b..0x11.

Evidence, none of it from the implementation under test (arkworks):

* points and expected results computed here with py_ecc, the library the Ethereum
  execution specification itself uses: doubling the generator, negation, MSMs
  against repeated addition, bilinearity of the pairing, the maps against
  RFC 9380's SSWU map plus cofactor clearing;
* EIP-2537's gas schedule, including the MSM discount tables, at its edges;
* py-evm's Prague precompiles (py_ecc again) as a differential oracle on random
  valid and broken inputs and random gas;
* the public vector files (the EIP's and go-ethereum's) run by
  ``tests/test_conformance.py`` from ``../shared/conformance`` when they are there.

Any invalid input must fail consuming all the gas given, and never raise.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from eth.vm.forks.prague.computation import PragueComputation
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from py_ecc.bls.hash_to_curve import clear_cofactor_G1, clear_cofactor_G2, map_to_curve_G1, map_to_curve_G2
from py_ecc.fields import optimized_bls12_381_FQ as FQ
from py_ecc.fields import optimized_bls12_381_FQ2 as FQ2
from py_ecc.optimized_bls12_381 import G1, G2, Z1, Z2, add, curve_order, is_inf, multiply, neg, normalize

from missive.toolchain.asm import assemble
from missive.vm import Status, bls12_381, execute
from missive.vm.precompiles import PrecompileResult, run_precompile
from tests.evm_oracle import precompile_oracle

P = bls12_381.P
R = curve_order
G1ADD, G1MSM, G2ADD, G2MSM = 0x0B, 0x0C, 0x0D, 0x0E
PAIRING, MAP_G1, MAP_G2 = 0x0F, 0x10, 0x11
GAS = 10**7


# ---------------------------------------------------------------------------
# Encoding with py_ecc
# ---------------------------------------------------------------------------


def fp(value: int) -> bytes:
    return value.to_bytes(64, "big")


def enc1(point: Any) -> bytes:
    if is_inf(point):
        return bytes(128)
    x, y = normalize(point)
    return fp(int(x)) + fp(int(y))


def enc2(point: Any) -> bytes:
    if is_inf(point):
        return bytes(256)
    x, y = normalize(point)
    return b"".join(fp(int(c)) for c in (*x.coeffs, *y.coeffs))


def word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def outside_g1(u: int) -> Any:
    """A point on the G1 curve outside the prime-order subgroup (SSWU's output before cofactor clearing)."""
    point = map_to_curve_G1(FQ(u))
    assert not is_inf(multiply(point, R))
    return point


def outside_g2(u: int) -> Any:
    point = map_to_curve_G2(FQ2([u, u + 1]))
    assert not is_inf(multiply(point, R))
    return point


def call(address: int, data: bytes, gas: int = GAS) -> PrecompileResult:
    result = run_precompile(address, data, gas)
    if result.success:
        assert result.error == "" and 0 <= result.gas_used <= gas
    else:  # every failure consumes all the gas and says why
        assert result.gas_used == gas and result.output == b"" and result.error
    return result


def ok(address: int, data: bytes) -> bytes:
    result = call(address, data)
    assert result.success, result.error
    return result.output


# ---------------------------------------------------------------------------
# Hand-checked results
# ---------------------------------------------------------------------------


def test_g1add_doubles_the_generator_and_knows_infinity() -> None:
    assert ok(G1ADD, enc1(G1) + enc1(G1)) == enc1(multiply(G1, 2))
    assert ok(G1ADD, enc1(G1) + bytes(128)) == enc1(G1)
    assert ok(G1ADD, enc1(G1) + enc1(neg(G1))) == bytes(128)
    assert call(G1ADD, enc1(G1) * 2).gas_used == 375


def test_g2add_doubles_the_generator_and_knows_infinity() -> None:
    assert ok(G2ADD, enc2(G2) + enc2(G2)) == enc2(multiply(G2, 2))
    assert ok(G2ADD, bytes(256) + enc2(G2)) == enc2(G2)
    assert ok(G2ADD, enc2(G2) + enc2(neg(G2))) == bytes(256)
    assert call(G2ADD, enc2(G2) * 2).gas_used == 600


def test_additions_take_points_outside_the_subgroup_but_msm_and_pairing_refuse_them() -> None:
    """EIP-2537: G1ADD/G2ADD check only that points are on the curve; MSM and pairing check the subgroup."""
    p1 = outside_g1(7)
    assert ok(G1ADD, enc1(p1) + enc1(G1)) == enc1(add(p1, G1))
    q1 = outside_g2(7)
    assert ok(G2ADD, enc2(q1) + enc2(G2)) == enc2(add(q1, G2))
    refused = call(G1MSM, enc1(p1) + word(1))
    assert not refused.success and "subgroup" in refused.error
    assert not call(G2MSM, enc2(q1) + word(1)).success
    assert not call(PAIRING, enc1(p1) + enc2(G2)).success
    assert not call(PAIRING, enc1(G1) + enc2(q1)).success


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 2**256 - 1), min_size=1, max_size=4))
def test_g1msm_is_the_sum_of_scalar_multiples(scalars: list[int]) -> None:
    points = [multiply(G1, i + 2) for i in range(len(scalars))]
    expected = Z1
    for point, scalar in zip(points, scalars, strict=True):
        expected = add(expected, multiply(point, scalar % R))
    data = b"".join(enc1(p) + word(s) for p, s in zip(points, scalars, strict=True))
    assert ok(G1MSM, data) == enc1(expected)


def test_g2msm_is_the_sum_of_scalar_multiples_and_scalars_wrap_at_the_order() -> None:
    data = enc2(G2) + word(R + 5) + enc2(multiply(G2, 3)) + word(2**256 - 1)
    expected = add(multiply(G2, 5), multiply(G2, 3 * ((2**256 - 1) % R)))
    assert ok(G2MSM, data) == enc2(expected)
    assert ok(G2MSM, bytes(256) + word(9)) == bytes(256)  # infinity is in the subgroup
    assert ok(G1MSM, enc1(G1) + word(R)) == bytes(128)


def test_pairing_check_is_bilinear() -> None:
    a, b = 123456789, 987654321
    # e(aP, bQ) * e(-abP, Q) == 1
    data = enc1(multiply(G1, a)) + enc2(multiply(G2, b)) + enc1(neg(multiply(G1, a * b))) + enc2(G2)
    result = call(PAIRING, data)
    assert result.success and result.output == word(1) and result.gas_used == 37700 + 2 * 32600
    assert ok(PAIRING, enc1(G1) + enc2(G2)) == word(0)
    # A pair with infinity on either side contributes 1.
    assert ok(PAIRING, bytes(128) + enc2(G2)) == word(1)
    assert ok(PAIRING, enc1(G1) + bytes(256) + data) == word(1)


@pytest.mark.parametrize("u", [0, 1, 2, P - 1, 0x1234567890ABCDEF << 200])
def test_map_fp_to_g1_is_sswu_then_cofactor_clearing(u: int) -> None:
    assert ok(MAP_G1, fp(u)) == enc1(clear_cofactor_G1(map_to_curve_G1(FQ(u))))


@pytest.mark.parametrize(("c0", "c1"), [(0, 0), (1, 2), (P - 1, 3)])
def test_map_fp2_to_g2_is_sswu_then_cofactor_clearing(c0: int, c1: int) -> None:
    assert ok(MAP_G2, fp(c0) + fp(c1)) == enc2(clear_cofactor_G2(map_to_curve_G2(FQ2([c0, c1]))))


# ---------------------------------------------------------------------------
# Gas
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "length", "cost"),
    [
        (G1ADD, 256, 375), (G2ADD, 512, 600), (MAP_G1, 64, 5500), (MAP_G2, 128, 23800),
        (PAIRING, 384, 70300), (PAIRING, 768, 102900), (PAIRING, 384 * 10, 37700 + 326000),
        (G1MSM, 160, 12000), (G1MSM, 320, 2 * 12000 * 949 // 1000), (G1MSM, 160 * 128, 128 * 12000 * 519 // 1000),
        (G1MSM, 160 * 300, 300 * 12000 * 519 // 1000),
        (G2MSM, 288, 22500), (G2MSM, 576, 45000), (G2MSM, 864, 3 * 22500 * 923 // 1000),
        (G2MSM, 288 * 128, 128 * 22500 * 524 // 1000), (G2MSM, 288 * 129, 129 * 22500 * 524 // 1000),
    ],
)  # fmt: skip
def test_gas_follows_eip_2537(address: int, length: int, cost: int) -> None:
    assert bls12_381.required_gas(address, length) == cost


def test_one_gas_short_fails_with_all_gas_used() -> None:
    data = enc1(G1) * 2
    assert call(G1ADD, data, 375).success
    short = call(G1ADD, data, 374)
    assert not short.success and short.error == "out of gas"
    pairing = enc1(G1) + enc2(G2)
    assert not call(PAIRING, pairing, 70299).success
    assert call(PAIRING, pairing, 70300).output == word(0)


# ---------------------------------------------------------------------------
# Invalid inputs: all gas, never an exception
# ---------------------------------------------------------------------------

VALID = {
    G1ADD: enc1(G1) * 2, G2ADD: enc2(G2) * 2, G1MSM: enc1(G1) + word(3), G2MSM: enc2(G2) + word(3),
    PAIRING: enc1(G1) + enc2(G2), MAP_G1: fp(5), MAP_G2: fp(5) + fp(6),
}  # fmt: skip


@pytest.mark.parametrize("address", sorted(VALID))
def test_wrong_lengths_fail(address: int) -> None:
    data = VALID[address]
    assert call(address, data).success
    for bad in (b"", data[:-1], data + b"\x00", data + data[:1]):
        result = call(address, bad)
        assert not result.success, len(bad)
        assert "input must be" in result.error


@pytest.mark.parametrize("address", sorted(VALID))
def test_non_canonical_field_elements_fail(address: int) -> None:
    data = VALID[address]
    # A set bit in the 16 bytes above the 48-byte value, or the modulus itself.
    assert not call(address, b"\x01" + data[1:]).success
    assert not call(address, fp(P) + data[64:]).success
    assert not call(address, fp(P + 1) + data[64:]).success


@pytest.mark.parametrize("address", [G1ADD, G2ADD, G1MSM, G2MSM, PAIRING])
def test_points_off_the_curve_fail(address: int) -> None:
    data = bytearray(VALID[address])
    data[127] ^= 1  # the last byte of the first point's first y coordinate (G1) or of x.c1 (G2)
    result = call(address, bytes(data))
    assert not result.success and "curve" in result.error


# ---------------------------------------------------------------------------
# py-evm's Prague precompiles as an oracle
# ---------------------------------------------------------------------------

pyevm = precompile_oracle(PragueComputation)


@st.composite
def bls_calls(draw: st.DrawFn) -> tuple[int, bytes, int]:
    address = draw(st.sampled_from(sorted(VALID)))
    scalar = st.integers(1, 2**64)
    g1 = st.one_of(st.just(Z1), scalar.map(lambda k: multiply(G1, k)), st.integers(1, 50).map(outside_g1))
    g2 = st.one_of(st.just(Z2), st.integers(1, 5).map(lambda k: multiply(G2, k)))
    if address == G1ADD:
        data = enc1(draw(g1)) + enc1(draw(g1))
    elif address == G2ADD:
        data = enc2(draw(g2)) + enc2(draw(g2))
    elif address == G1MSM:
        data = b"".join(enc1(draw(g1)) + word(draw(st.integers(0, 2**256 - 1))) for _ in range(draw(st.integers(1, 2))))
    elif address == G2MSM:
        data = enc2(draw(g2)) + word(draw(st.integers(0, 2**256 - 1)))
    elif address == PAIRING:
        data = enc1(draw(g1)) + enc2(draw(g2))
    elif address == MAP_G1:
        data = fp(draw(st.integers(0, P + 10)))
    else:
        data = fp(draw(st.integers(0, P + 10))) + fp(draw(st.integers(0, P - 1)))
    if draw(st.integers(0, 4)) == 0:  # break it: flip a byte, or cut it
        mutable = bytearray(data)
        position = draw(st.integers(0, len(data) - 1))
        mutable[position] ^= draw(st.integers(1, 255))
        data = bytes(mutable) if draw(st.booleans()) else data[:position]
    cost = bls12_381.required_gas(address, len(data))
    gas = draw(st.one_of(st.just(GAS), st.integers(max(0, cost - 2), max(0, cost + 2))))
    return address, data, gas


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(bls_calls())
def test_agrees_with_py_evm(case: tuple[int, bytes, int]) -> None:
    address, data, gas = case
    result = call(address, data, gas)
    assert (result.success, result.gas_used, result.output) == pyevm(address, data, gas)


# ---------------------------------------------------------------------------
# From contract code, and how long it takes
# ---------------------------------------------------------------------------

#: Copy the calldata to memory, STATICCALL the precompile at ADDR with all of it and
#: 128-byte output, then return [success, the first output word].
CALLER_CODE = """
    CALLDATASIZE PUSH0 PUSH0 CALLDATACOPY
    PUSH 128 PUSH0 CALLDATASIZE PUSH0 PUSH {address} GAS STATICCALL
    PUSH0 MSTORE PUSH0 MLOAD PUSH 32 MSTORE
    RETURNDATASIZE PUSH 64 MSTORE
    PUSH 96 PUSH0 RETURN
"""


def test_a_contract_calls_the_pairing_synchronously() -> None:
    """Precompiles answer at once (no message is sent), with the EIP-2929 warm access price."""
    a, b = 5, 7
    data = enc1(multiply(G1, a)) + enc2(multiply(G2, b)) + enc1(neg(multiply(G1, a * b))) + enc2(G2)
    code = assemble(CALLER_CODE.format(address=PAIRING))
    result = execute(code, data=data, gas=1_000_000)
    assert result.status is Status.SUCCESS, result.error
    assert result.outbox == ()
    success, first, size = (int.from_bytes(result.output[i : i + 32], "big") for i in (0, 32, 64))
    assert (success, first, size) == (1, 1, 32)
    broken = execute(code, data=data[:-1], gas=1_000_000)
    assert int.from_bytes(broken.output[:32], "big") == 0  # the call failed; the caller goes on
    # The precompile is warm from the start: the call costs 100 plus the pairing's 102,900.
    assert broken.gas_used > 102_900 * 63 // 64 and result.gas_used < broken.gas_used
    assert 102_900 + 100 < result.gas_used < 102_900 + 100 + 300


def test_pairing_time_is_in_proportion_to_its_gas() -> None:
    """A 2-pair pairing (102,900 gas) takes milliseconds, not the seconds pure Python would."""
    data = enc1(G1) + enc2(G2) + enc1(neg(G1)) + enc2(G2)
    call(PAIRING, data)  # first use imports the library
    started = time.perf_counter()
    for _ in range(5):
        assert ok(PAIRING, data) == word(1)
    assert (time.perf_counter() - started) / 5 < 0.25
