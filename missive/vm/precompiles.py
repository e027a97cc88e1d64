"""Ethereum's precompiled contracts: 0x01..0x0a (Cancun), 0x0b..0x11 (Prague), 0x100 (Osaka).

The interpreter calls :func:`run_precompile` when a call targets an address
for which :func:`is_precompile` is true.  Each precompile is a pure function
of its input and the gas it is given, so the result carries everything the
interpreter needs: whether it succeeded, how much gas it used, its output and,
on failure, a message saying what was wrong.

* 0x01..0x0a: ecrecover, sha256, ripemd160, identity, modexp (EIP-2565
  pricing), the BN254 operations, blake2f, point evaluation (refused);
* 0x0b..0x11: the BLS12-381 operations of EIP-2537 (Prague), in
  :mod:`missive.vm.bls12_381`;
* 0x100: P256VERIFY, EIP-7951 (Osaka), in :mod:`missive.vm.p256`.

The behaviour follows the Ethereum execution specification
(``ethereum/execution-specs``, ``src/ethereum/osaka/vm/precompiled_contracts``)
rather than any one client, including its order of checks.  Two rules from
there matter everywhere:

* Any failure - too little gas or an input the EIP rejects - consumes all the
  gas given and produces no output, like an exceptional halt.  The exceptions
  are ecrecover and P256VERIFY, which by their EIPs answer a bad signature (or,
  for P256VERIFY, any malformed input) with success and empty output.
* Short inputs are read as if padded with zero bytes to the length the
  precompile expects, and extra trailing bytes are ignored (except where an
  EIP demands an exact length: blake2f, pairing, point evaluation, every
  BLS12-381 operation, P256VERIFY).

Gas is always computed from the input before any expensive work is done, so
a hostile input (a modexp declaring 2^256-byte operands, say) fails as out
of gas without allocating anything in proportion to what it declares.
"""

from __future__ import annotations

import hashlib
from typing import Final, final

from coincurve import PublicKey

from missive.vm import blake2
from missive.vm.keccak import keccak256

FIRST_PRECOMPILE: Final = 0x01
#: The last of the contiguous range 0x01..0x11 (BLS12-381's MAP_FP2_TO_G2).
LAST_PRECOMPILE: Final = 0x11
#: P256VERIFY (EIP-7951), outside the contiguous range.
P256VERIFY: Final = 0x100
#: Every precompile address, in order.
PRECOMPILES: Final = (*range(FIRST_PRECOMPILE, LAST_PRECOMPILE + 1), P256VERIFY)

ECRECOVER_GAS: Final = 3000
SHA256_GAS: Final = 60
SHA256_WORD_GAS: Final = 12
RIPEMD160_GAS: Final = 600
RIPEMD160_WORD_GAS: Final = 120
IDENTITY_GAS: Final = 15
IDENTITY_WORD_GAS: Final = 3
MODEXP_MIN_GAS: Final = 200
MODEXP_QUADRATIC_DIVISOR: Final = 3
ECADD_GAS: Final = 150
ECMUL_GAS: Final = 6000
ECPAIRING_BASE_GAS: Final = 45000
ECPAIRING_PAIR_GAS: Final = 34000
BLAKE2F_ROUND_GAS: Final = 1
POINT_EVALUATION_GAS: Final = 50000

ECPAIRING_PAIR_SIZE: Final = 192
BLAKE2F_INPUT_SIZE: Final = 213
POINT_EVALUATION_INPUT_SIZE: Final = 192

#: The order of secp256k1's group; ecrecover requires ``0 < r, s < SECP256K1N``.
SECP256K1N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

OUT_OF_GAS: Final = "out of gas"
POINT_EVALUATION_UNSUPPORTED: Final = "point evaluation (0x0a) is not supported by Missive"


@final
class PrecompileResult:
    """The outcome of running one precompile.

    ``gas_used`` equals the gas given when ``success`` is false: like every
    exceptional halt, a failed precompile call consumes all its gas.
    """

    success: bool
    gas_used: int
    output: bytes
    error: str

    def __init__(self, success: bool, gas_used: int, output: bytes, error: str) -> None:
        self.success = success
        self.gas_used = gas_used
        self.output = output
        self.error = error

    def __repr__(self) -> str:
        return (
            f"PrecompileResult(success={self.success!r}, gas_used={self.gas_used!r}, "
            f"output={self.output!r}, error={self.error!r})"
        )


def is_precompile(address: int) -> bool:
    """Whether ``address`` (as an integer) is one of the precompiles 0x01..0x11 or 0x100."""
    return FIRST_PRECOMPILE <= address <= LAST_PRECOMPILE or address == P256VERIFY


def run_precompile(address: int, data: bytes, gas: int) -> PrecompileResult:
    """Run precompile ``address`` on ``data`` with ``gas`` available.

    Never raises for any ``data`` or ``gas``; raises ValueError only when
    ``address`` is not a precompile, which is the caller's bug.
    """
    if address == 0x01:
        return _ecrecover(data, gas)
    if address == 0x02:
        return _sha256(data, gas)
    if address == 0x03:
        return _ripemd160(data, gas)
    if address == 0x04:
        return _identity(data, gas)
    if address == 0x05:
        return _modexp(data, gas)
    if address == 0x06:
        return _ecadd(data, gas)
    if address == 0x07:
        return _ecmul(data, gas)
    if address == 0x08:
        return _ecpairing(data, gas)
    if address == 0x09:
        return _blake2f(data, gas)
    if address == 0x0A:
        return _point_evaluation(data, gas)
    if 0x0B <= address <= 0x11:
        return _bls12_381(address, data, gas)
    if address == P256VERIFY:
        return _p256verify(data, gas)
    raise ValueError(f"address {address:#x} is not a precompile")


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _ok(gas_used: int, output: bytes) -> PrecompileResult:
    return PrecompileResult(True, gas_used, output, "")


def _fail(gas: int, error: str) -> PrecompileResult:
    return PrecompileResult(False, gas, b"", error)


def _words(length: int) -> int:
    """The number of 32-byte words ``length`` bytes occupy, as the word-priced precompiles charge."""
    return (length + 31) // 32


def _read_int(data: bytes, offset: int, length: int) -> int:
    """The big-endian integer in ``data[offset:offset + length]``, zero-padded on the right.

    Offsets and lengths may be far beyond ``data`` (modexp takes them from
    its input); only the bytes actually present are sliced, so nothing is
    allocated in proportion to ``length`` except the integer itself.
    """
    size = len(data)
    if offset >= size or length <= 0:
        return 0
    end = min(size, offset + length)
    present = end - offset
    return int.from_bytes(data[offset:end], "big") << (8 * (length - present))


def _word(data: bytes, offset: int) -> int:
    """The 32-byte big-endian word at ``offset``, zero-padded on the right."""
    return _read_int(data, offset, 32)


# ---------------------------------------------------------------------------
# 0x01..0x04: ecrecover and the hash functions
# ---------------------------------------------------------------------------


def _ecrecover(data: bytes, gas: int) -> PrecompileResult:
    """Recover the signer's address; an invalid signature is a success with empty output.

    Recovery uses libsecp256k1 through ``coincurve``, the same library the
    Ethereum execution specification uses.  Unlike signature verification,
    recovery does not insist on a low ``s``, which matches Ethereum (the
    low-``s`` rule applies to transactions, not to this precompile).
    """
    if gas < ECRECOVER_GAS:
        return _fail(gas, OUT_OF_GAS)
    padded = data[:128].ljust(128, b"\x00")
    message_hash = padded[:32]
    v = int.from_bytes(padded[32:64], "big")
    r = int.from_bytes(padded[64:96], "big")
    s = int.from_bytes(padded[96:128], "big")
    if v != 27 and v != 28:
        return _ok(ECRECOVER_GAS, b"")
    if not (0 < r < SECP256K1N and 0 < s < SECP256K1N):
        return _ok(ECRECOVER_GAS, b"")
    signature = padded[64:128] + bytes([v - 27])
    try:
        public_key = PublicKey.from_signature_and_message(signature, message_hash, hasher=None)
    except ValueError:
        # No curve point has x = r, or the recovered key is the point at infinity.
        return _ok(ECRECOVER_GAS, b"")
    uncompressed = public_key.format(compressed=False)
    address = keccak256(uncompressed[1:])[12:]
    return _ok(ECRECOVER_GAS, bytes(12) + address)


def _sha256(data: bytes, gas: int) -> PrecompileResult:
    cost = SHA256_GAS + SHA256_WORD_GAS * _words(len(data))
    if gas < cost:
        return _fail(gas, OUT_OF_GAS)
    return _ok(cost, hashlib.sha256(data).digest())


def _ripemd160(data: bytes, gas: int) -> PrecompileResult:
    """RIPEMD-160, left-padded to 32 bytes.

    pycryptodome's implementation is used because ``hashlib``'s depends on
    the OpenSSL build (OpenSSL 3 moved RIPEMD-160 to the legacy provider).
    """
    cost = RIPEMD160_GAS + RIPEMD160_WORD_GAS * _words(len(data))
    if gas < cost:
        return _fail(gas, OUT_OF_GAS)
    from Crypto.Hash import RIPEMD160  # (imported on first use: 13 ms that every `missive` command paid)

    return _ok(cost, bytes(12) + RIPEMD160.new(data).digest())


def _identity(data: bytes, gas: int) -> PrecompileResult:
    cost = IDENTITY_GAS + IDENTITY_WORD_GAS * _words(len(data))
    if gas < cost:
        return _fail(gas, OUT_OF_GAS)
    return _ok(cost, bytes(data))


# ---------------------------------------------------------------------------
# 0x05: modexp (EIP-198 layout, EIP-2565 pricing)
# ---------------------------------------------------------------------------


def modexp_gas(data: bytes) -> int:
    """The EIP-2565 price of a modexp call, computed from the declared lengths alone.

    Only the (at most 32-byte) head of the exponent is read, so this is cheap
    and allocation-free however large the declared lengths are (up to 2^256).
    """
    base_length = _word(data, 0)
    exponent_length = _word(data, 32)
    modulus_length = _word(data, 64)
    exponent_head = _read_int(data, 96 + base_length, min(exponent_length, 32))
    words = (max(base_length, modulus_length) + 7) // 8
    complexity = words * words
    iterations = _modexp_iterations(exponent_length, exponent_head)
    return max(MODEXP_MIN_GAS, complexity * iterations // MODEXP_QUADRATIC_DIVISOR)


def _modexp_iterations(exponent_length: int, exponent_head: int) -> int:
    """EIP-2565's iteration count: roughly the number of squarings the exponent needs.

    Only the head's bit length is known cheaply, so each byte past the
    first 32 is assumed to cost 8 squarings.
    """
    head_bits = exponent_head.bit_length() - 1 if exponent_head > 0 else 0
    if exponent_length <= 32:
        count = head_bits
    else:
        count = 8 * (exponent_length - 32) + head_bits
    return max(count, 1)


def _modexp(data: bytes, gas: int) -> PrecompileResult:
    """``base ** exponent % modulus`` on big-endian operands of declared lengths.

    Gas bounds the work, not the input size: an exponent declared longer than
    the data is zero-padded, so a few bytes of input can ask for millions of
    squarings (8 per padded byte).  EIP-2565 prices that at 8/3 gas per byte
    for small moduli, which assumes native bignum speed; CPython's ``pow`` is
    within a small factor of that.
    """
    cost = modexp_gas(data)
    if gas < cost:
        return _fail(gas, OUT_OF_GAS)
    # The gas check bounds the lengths (unless base and modulus are both
    # empty, handled first), so reading the operands is now safe.
    base_length = _word(data, 0)
    exponent_length = _word(data, 32)
    modulus_length = _word(data, 64)
    if base_length == 0 and modulus_length == 0:
        return _ok(cost, b"")
    modulus_start = 96 + base_length + exponent_length
    modulus = _read_int(data, modulus_start, modulus_length)
    if modulus == 0:
        return _ok(cost, bytes(modulus_length))
    base = _read_int(data, 96, base_length)
    exponent = _read_int(data, 96 + base_length, exponent_length)
    return _ok(cost, pow(base, exponent, modulus).to_bytes(modulus_length, "big"))


# ---------------------------------------------------------------------------
# 0x06..0x08: BN254 (EIP-196, EIP-197, EIP-1108 pricing)
# ---------------------------------------------------------------------------


def _g1_output(point: tuple[int, int]) -> bytes:
    return point[0].to_bytes(32, "big") + point[1].to_bytes(32, "big")


def _ecadd(data: bytes, gas: int) -> PrecompileResult:
    from missive.vm import bn254  # (imported on first use)

    if gas < ECADD_GAS:
        return _fail(gas, OUT_OF_GAS)
    x1, y1, x2, y2 = _word(data, 0), _word(data, 32), _word(data, 64), _word(data, 96)
    try:
        bn254.g1_validate(x1, y1)
        bn254.g1_validate(x2, y2)
    except ValueError as exc:
        return _fail(gas, f"ecadd: {exc}")
    return _ok(ECADD_GAS, _g1_output(bn254.g1_add(x1, y1, x2, y2)))


def _ecmul(data: bytes, gas: int) -> PrecompileResult:
    from missive.vm import bn254  # (imported on first use)

    if gas < ECMUL_GAS:
        return _fail(gas, OUT_OF_GAS)
    x, y, scalar = _word(data, 0), _word(data, 32), _word(data, 64)
    try:
        bn254.g1_validate(x, y)
    except ValueError as exc:
        return _fail(gas, f"ecmul: {exc}")
    return _ok(ECMUL_GAS, _g1_output(bn254.g1_mul(x, y, scalar)))


def _ecpairing(data: bytes, gas: int) -> PrecompileResult:
    """Whether the product of the pairings of the (G1, G2) pairs in ``data`` is 1.

    Every point is validated, including those in pairs that are skipped
    because one side is infinity (they contribute a factor of 1).
    """
    from missive.vm import bn254  # (imported on first use)

    count = len(data) // ECPAIRING_PAIR_SIZE
    cost = ECPAIRING_BASE_GAS + ECPAIRING_PAIR_GAS * count
    if gas < cost:
        return _fail(gas, OUT_OF_GAS)
    if len(data) % ECPAIRING_PAIR_SIZE != 0:
        return _fail(gas, f"ecpairing: input length {len(data)} is not a multiple of 192")
    pairs: list[tuple[tuple[int, int], bn254.G2Affine]] = []
    for index in range(count):
        start = index * ECPAIRING_PAIR_SIZE
        x, y = _word(data, start), _word(data, start + 32)
        # Fp2 elements are encoded imaginary part first.
        qx_im, qx_re = _word(data, start + 64), _word(data, start + 96)
        qy_im, qy_re = _word(data, start + 128), _word(data, start + 160)
        try:
            bn254.g1_validate(x, y)
        except ValueError as exc:
            return _fail(gas, f"ecpairing: {exc} (G1 point of pair {index})")
        try:
            q = bn254.g2_validate(qx_re, qx_im, qy_re, qy_im)
        except ValueError as exc:
            return _fail(gas, f"ecpairing: {exc} (G2 point of pair {index})")
        if q is not None and not (x == 0 and y == 0):
            pairs.append(((x, y), q))
    result = 1 if bn254.pairing_product_is_one(pairs) else 0
    return _ok(cost, result.to_bytes(32, "big"))


# ---------------------------------------------------------------------------
# 0x09: blake2f (EIP-152)
# ---------------------------------------------------------------------------


def _blake2f(data: bytes, gas: int) -> PrecompileResult:
    """BLAKE2b's compression function F with a caller-chosen number of rounds.

    EIP-152 charges 1 gas per round, a price set for native code (tens of
    nanoseconds a round); this implementation takes microseconds a round, so
    blake2f is by far the cheapest way to buy CPU time from Missive.
    """
    if len(data) != BLAKE2F_INPUT_SIZE:
        return _fail(gas, f"blake2f: input must be exactly 213 bytes, got {len(data)}")
    cost = BLAKE2F_ROUND_GAS * int.from_bytes(data[0:4], "big")
    if gas < cost:
        return _fail(gas, OUT_OF_GAS)
    if data[212] > 1:
        return _fail(gas, f"blake2f: final-block flag must be 0 or 1, got {data[212]}")
    return _ok(cost, blake2.blake2f(data))


# ---------------------------------------------------------------------------
# 0x0a: KZG point evaluation (EIP-4844)
# ---------------------------------------------------------------------------


def _point_evaluation(data: bytes, gas: int) -> PrecompileResult:
    """Refuse: Missive has no blobs, so it carries no KZG trusted setup.

    The input length and gas are still checked first, in the specification's
    order, so a malformed call fails for the same reason as on Ethereum.
    """
    if len(data) != POINT_EVALUATION_INPUT_SIZE:
        return _fail(gas, f"point evaluation: input must be exactly 192 bytes, got {len(data)}")
    if gas < POINT_EVALUATION_GAS:
        return _fail(gas, OUT_OF_GAS)
    return _fail(gas, POINT_EVALUATION_UNSUPPORTED)


# ---------------------------------------------------------------------------
# 0x0b..0x11: BLS12-381 (EIP-2537, Prague)
# ---------------------------------------------------------------------------


def _bls12_381(address: int, data: bytes, gas: int) -> PrecompileResult:
    """G1/G2 addition and MSM, the pairing check and the two maps to the curve.

    As in the specification: an input length the EIP does not allow fails first,
    then the gas (which depends on the length alone) is checked, then the input's
    encoding, curve and subgroup membership; every failure consumes all the gas.
    """
    from missive.vm import bls12_381  # (imported on first use)

    name = bls12_381.NAMES[address]
    cost = bls12_381.required_gas(address, len(data))
    if cost < 0:
        return _fail(gas, f"{name}: input must be {bls12_381.expected_length(address)}, got {len(data)}")
    if gas < cost:
        return _fail(gas, OUT_OF_GAS)
    try:
        output = bls12_381.run(address, data)
    except ValueError as exc:
        return _fail(gas, f"{name}: {exc}")
    return _ok(cost, output)


# ---------------------------------------------------------------------------
# 0x100: P256VERIFY (EIP-7951, Osaka)
# ---------------------------------------------------------------------------


def _p256verify(data: bytes, gas: int) -> PrecompileResult:
    """1 for a valid secp256r1 signature, else empty output; 6900 gas either way."""
    from missive.vm import p256  # (imported on first use)

    if gas < p256.P256VERIFY_GAS:
        return _fail(gas, OUT_OF_GAS)
    return _ok(p256.P256VERIFY_GAS, p256.VALID if p256.verify(data) else b"")
