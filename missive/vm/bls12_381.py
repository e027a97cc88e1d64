"""The BLS12-381 precompiles of EIP-2537 (Prague), at 0x0b..0x11.

=======  ==============  =================================================
address  name            input -> output
=======  ==============  =================================================
0x0b     G1ADD           two G1 points (2 x 128 bytes) -> G1 point
0x0c     G1MSM           k x (G1 point, 32-byte scalar) -> G1 point
0x0d     G2ADD           two G2 points (2 x 256 bytes) -> G2 point
0x0e     G2MSM           k x (G2 point, 32-byte scalar) -> G2 point
0x0f     PAIRING_CHECK   k x (G1 point, G2 point) -> 32-byte 0 or 1
0x10     MAP_FP_TO_G1    one Fp element (64 bytes) -> G1 point
0x11     MAP_FP2_TO_G2   one Fp2 element (128 bytes) -> G2 point
=======  ==============  =================================================

Encoding (EIP-2537): an Fp element is 64 big-endian bytes whose top 16 are zero
and whose value is below the field modulus; Fp2 is ``c0 || c1``; a point is
``x || y``, and the point at infinity is all zeros.  Every point must be on its
curve; the MSMs and the pairing also require it to be in the prime-order
subgroup (the additions do not).  Any violation, and any input length other
than the EIP's, makes the call fail, consuming all the gas it was given
(:mod:`missive.vm.precompiles` does that with the ``ValueError`` raised here).

The curve arithmetic is arkworks (``py_arkworks_bls12381``, the Ethereum
Foundation's Python bindings, MIT/Apache-2.0): native code, so a call costs
roughly what its gas says it should (pure-Python pairings, as in py_ecc, take
hundreds of times longer for the same gas).  The tests check it against
py-evm's Prague precompiles (py_ecc, the library the Ethereum execution
specification uses), the EIP's own vectors and go-ethereum's.  Every input is
validated here before arkworks sees it, so it never meets a malformed encoding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from py_arkworks_bls12381 import G1Point, G2Point

G1ADD: Final = 0x0B
G1MSM: Final = 0x0C
G2ADD: Final = 0x0D
G2MSM: Final = 0x0E
PAIRING_CHECK: Final = 0x0F
MAP_FP_TO_G1: Final = 0x10
MAP_FP2_TO_G2: Final = 0x11
FIRST: Final = G1ADD
LAST: Final = MAP_FP2_TO_G2

NAMES: Final = {
    G1ADD: "bls12_g1add", G1MSM: "bls12_g1msm", G2ADD: "bls12_g2add", G2MSM: "bls12_g2msm",
    PAIRING_CHECK: "bls12_pairing_check", MAP_FP_TO_G1: "bls12_map_fp_to_g1", MAP_FP2_TO_G2: "bls12_map_fp2_to_g2",
}  # fmt: skip

#: The base field's modulus.
P: Final = 0x1A0111EA397FE69A4B1BA7B6434BACD764774B84F38512BF6730D2A0F6B0F6241EABFFFEB153FFFFB9FEFFFFFFFFAAAB

FP_SIZE: Final = 64
G1_SIZE: Final = 128
G2_SIZE: Final = 256
SCALAR_SIZE: Final = 32
G1MSM_PAIR_SIZE: Final = G1_SIZE + SCALAR_SIZE  # 160
G2MSM_PAIR_SIZE: Final = G2_SIZE + SCALAR_SIZE  # 288
PAIRING_PAIR_SIZE: Final = G1_SIZE + G2_SIZE  # 384

# Gas (EIP-2537 as activated in Prague).
G1ADD_GAS: Final = 375
G2ADD_GAS: Final = 600
G1MUL_GAS: Final = 12000
G2MUL_GAS: Final = 22500
PAIRING_BASE_GAS: Final = 37700
PAIRING_PAIR_GAS: Final = 32600
MAP_FP_TO_G1_GAS: Final = 5500
MAP_FP2_TO_G2_GAS: Final = 23800
MSM_MULTIPLIER: Final = 1000

#: EIP-2537's MSM discounts (per mille) for k = 1..128 pairs; above 128 the last entry.
G1_DISCOUNTS: Final = (
    1000, 949, 848, 797, 764, 750, 738, 728, 719, 712, 705, 698, 692, 687, 682, 677, 673, 669, 665, 661, 658, 654,
    651, 648, 645, 642, 640, 637, 635, 632, 630, 627, 625, 623, 621, 619, 617, 615, 613, 611, 609, 608, 606, 604,
    603, 601, 599, 598, 596, 595, 593, 592, 591, 589, 588, 586, 585, 584, 582, 581, 580, 579, 577, 576, 575, 574,
    573, 572, 570, 569, 568, 567, 566, 565, 564, 563, 562, 561, 560, 559, 558, 557, 556, 555, 554, 553, 552, 551,
    550, 549, 548, 547, 547, 546, 545, 544, 543, 542, 541, 540, 540, 539, 538, 537, 536, 536, 535, 534, 533, 532,
    532, 531, 530, 529, 528, 528, 527, 526, 525, 525, 524, 523, 522, 522, 521, 520, 520, 519,
)  # fmt: skip
G2_DISCOUNTS: Final = (
    1000, 1000, 923, 884, 855, 832, 812, 796, 782, 770, 759, 749, 740, 732, 724, 717, 711, 704, 699, 693, 688, 683,
    679, 674, 670, 666, 663, 659, 655, 652, 649, 646, 643, 640, 637, 634, 632, 629, 627, 624, 622, 620, 618, 615,
    613, 611, 609, 607, 606, 604, 602, 600, 598, 597, 595, 593, 592, 590, 589, 587, 586, 584, 583, 582, 580, 579,
    578, 576, 575, 574, 573, 571, 570, 569, 568, 567, 566, 565, 563, 562, 561, 560, 559, 558, 557, 556, 555, 554,
    553, 552, 552, 551, 550, 549, 548, 547, 546, 545, 545, 544, 543, 542, 541, 541, 540, 539, 538, 537, 537, 536,
    535, 535, 534, 533, 532, 532, 531, 530, 530, 529, 528, 528, 527, 526, 526, 525, 524, 524,
)  # fmt: skip


def msm_gas(pairs: int, per_pair: int, discounts: tuple[int, ...]) -> int:
    """EIP-2537's MSM price: ``k * per_pair * discount(k) // 1000``."""
    discount = discounts[pairs - 1] if pairs <= len(discounts) else discounts[-1]
    return pairs * per_pair * discount // MSM_MULTIPLIER


def required_gas(address: int, length: int) -> int:
    """The gas a call to ``address`` with ``length`` bytes of input costs; -1 when the length is invalid.

    The price depends on the length alone, so it is known before any work is done.
    """
    if address == G1ADD:
        return G1ADD_GAS if length == 2 * G1_SIZE else -1
    if address == G2ADD:
        return G2ADD_GAS if length == 2 * G2_SIZE else -1
    if address == G1MSM:
        if length == 0 or length % G1MSM_PAIR_SIZE:
            return -1
        return msm_gas(length // G1MSM_PAIR_SIZE, G1MUL_GAS, G1_DISCOUNTS)
    if address == G2MSM:
        if length == 0 or length % G2MSM_PAIR_SIZE:
            return -1
        return msm_gas(length // G2MSM_PAIR_SIZE, G2MUL_GAS, G2_DISCOUNTS)
    if address == PAIRING_CHECK:
        if length == 0 or length % PAIRING_PAIR_SIZE:
            return -1
        return PAIRING_BASE_GAS + PAIRING_PAIR_GAS * (length // PAIRING_PAIR_SIZE)
    if address == MAP_FP_TO_G1:
        return MAP_FP_TO_G1_GAS if length == FP_SIZE else -1
    if address == MAP_FP2_TO_G2:
        return MAP_FP2_TO_G2_GAS if length == 2 * FP_SIZE else -1
    raise ValueError(f"address {address:#x} is not a BLS12-381 precompile")


def expected_length(address: int) -> str:
    """How the input of ``address`` must be sized, in words, for error messages."""
    return {
        G1ADD: "256 bytes", G2ADD: "512 bytes", G1MSM: "a non-zero multiple of 160 bytes",
        G2MSM: "a non-zero multiple of 288 bytes", PAIRING_CHECK: "a non-zero multiple of 384 bytes",
        MAP_FP_TO_G1: "64 bytes", MAP_FP2_TO_G2: "128 bytes",
    }.get(address, "?")  # fmt: skip


# ---------------------------------------------------------------------------
# Decoding: everything arkworks is given has been checked here first
# ---------------------------------------------------------------------------


def _fp(data: bytes, offset: int, what: str) -> bytes:
    """The 48-byte big-endian value of the Fp element at ``offset``; ValueError if it is not canonical."""
    word = data[offset : offset + FP_SIZE]
    if word[:16] != bytes(16):
        raise ValueError(f"{what}: the top 16 bytes of a field element must be zero")
    if int.from_bytes(word, "big") >= P:
        raise ValueError(f"{what}: field element not below the modulus")
    return word[16:]


def _g1_xy(data: bytes, offset: int, what: str) -> bytes:
    return _fp(data, offset, what) + _fp(data, offset + FP_SIZE, what)


def _g2_xy(data: bytes, offset: int, what: str) -> bytes:
    return b"".join([_fp(data, offset + i * FP_SIZE, what) for i in range(4)])


def _pad(xy: bytes) -> bytes:
    """arkworks' 48-byte coordinates back into EIP-2537's 64-byte field elements."""
    return b"".join([bytes(16) + xy[i : i + 48] for i in range(0, len(xy), 48)])


def _g1(data: bytes, offset: int, subgroup: bool, what: str) -> G1Point:
    from py_arkworks_bls12381 import G1Point

    xy = _g1_xy(data, offset, what)
    try:
        point = G1Point.from_xy_bytes_unchecked_be(xy)  # (0, 0) is the point at infinity
    except ValueError as exc:
        raise ValueError(f"{what}: not on the G1 curve") from exc
    if subgroup and not point.is_in_subgroup():
        raise ValueError(f"{what}: not in the G1 subgroup")
    return point


def _g2(data: bytes, offset: int, subgroup: bool, what: str) -> G2Point:
    from py_arkworks_bls12381 import G2Point

    xy = _g2_xy(data, offset, what)
    try:
        point = G2Point.from_xy_bytes_unchecked_be(xy)
    except ValueError as exc:
        raise ValueError(f"{what}: not on the G2 curve") from exc
    if subgroup and not point.is_in_subgroup():
        raise ValueError(f"{what}: not in the G2 subgroup")
    return point


# ---------------------------------------------------------------------------
# The operations
# ---------------------------------------------------------------------------


def run(address: int, data: bytes) -> bytes:
    """The output of precompile ``address`` on ``data``; ValueError saying why the input is invalid.

    The caller has checked the length with :func:`required_gas` and charged the gas.
    """
    from py_arkworks_bls12381 import GT, G1Point, G2Point, Scalar

    if address == G1ADD:
        a = _g1(data, 0, False, "first point")
        b = _g1(data, G1_SIZE, False, "second point")
        return _pad((a + b).to_xy_bytes_be())
    if address == G2ADD:
        c = _g2(data, 0, False, "first point")
        d = _g2(data, G2_SIZE, False, "second point")
        return _pad((c + d).to_xy_bytes_be())
    if address == G1MSM:
        g1s: list[G1Point] = []
        scalars: list[Scalar] = []
        for index, start in enumerate(range(0, len(data), G1MSM_PAIR_SIZE)):
            g1s.append(_g1(data, start, True, f"point {index}"))
            # Points are in the subgroup of prime order r, so [m]P = [m mod r]P.
            scalars.append(Scalar.from_be_bytes_mod_order(data[start + G1_SIZE : start + G1MSM_PAIR_SIZE]))
        return _pad(G1Point.multiexp_unchecked(g1s, scalars).to_xy_bytes_be())
    if address == G2MSM:
        g2s: list[G2Point] = []
        scalars = []
        for index, start in enumerate(range(0, len(data), G2MSM_PAIR_SIZE)):
            g2s.append(_g2(data, start, True, f"point {index}"))
            scalars.append(Scalar.from_be_bytes_mod_order(data[start + G2_SIZE : start + G2MSM_PAIR_SIZE]))
        return _pad(G2Point.multiexp_unchecked(g2s, scalars).to_xy_bytes_be())
    if address == PAIRING_CHECK:
        lefts: list[G1Point] = []
        rights: list[G2Point] = []
        for index, start in enumerate(range(0, len(data), PAIRING_PAIR_SIZE)):
            lefts.append(_g1(data, start, True, f"G1 point of pair {index}"))
            rights.append(_g2(data, start + G1_SIZE, True, f"G2 point of pair {index}"))
        return (1 if GT.pairing_check(lefts, rights) else 0).to_bytes(32, "big")
    if address == MAP_FP_TO_G1:
        return _pad(G1Point.map_from_fp_be(_fp(data, 0, "field element")).to_xy_bytes_be())
    if address == MAP_FP2_TO_G2:
        fp2 = _fp(data, 0, "field element") + _fp(data, FP_SIZE, "field element")
        return _pad(G2Point.map_from_fp2_be(fp2).to_xy_bytes_be())
    raise ValueError(f"address {address:#x} is not a BLS12-381 precompile")
