"""256-bit word arithmetic with two's-complement semantics.

Words are Python ints in [0, 2**256).  Only the operations whose meaning is not
a one-liner live here; ADD, LT and friends are written inline in the
interpreter's hot loop.  Each function follows the Yellow Paper's definition
(and execution-specs' reading of it), including the division-by-zero and
overflow cases that are easy to get wrong.
"""

from __future__ import annotations

from typing import Final

MASK: Final = (1 << 256) - 1
SIGN_BIT: Final = 1 << 255
TWO_256: Final = 1 << 256

#: ``int.from_bytes`` looked up once: compiled code looks a classmethod up on
#: ``int`` and binds it on every call, which costs more than converting the word.
int_from_bytes: Final = int.from_bytes


def to_signed(x: int) -> int:
    return x - TWO_256 if x & SIGN_BIT else x


def from_signed(x: int) -> int:
    return x & MASK


def sdiv(a: int, b: int) -> int:
    """Signed division, rounding toward zero; x / 0 = 0; -2**255 / -1 = -2**255.

    Written on magnitudes (``TWO_256 - x`` is ``|x|`` of a negative word) so
    that each case costs one division and at most two subtractions.
    """
    if b == 0:
        return 0
    if a & SIGN_BIT:
        if b & SIGN_BIT:
            # Both negative: a positive quotient, 2**255 at most (-2**255 / -1,
            # which wraps to -2**255 as the EVM wants).
            return (TWO_256 - a) // (TWO_256 - b)
        q = (TWO_256 - a) // b
        return TWO_256 - q if q else 0
    if b & SIGN_BIT:
        q = a // (TWO_256 - b)
        return TWO_256 - q if q else 0
    return a // b


def smod(a: int, b: int) -> int:
    """Signed modulo; the result takes the sign of the dividend; x % 0 = 0."""
    if b == 0:
        return 0
    sa = to_signed(a)
    r = abs(sa) % abs(to_signed(b))
    return (-r if sa < 0 else r) & MASK


def addmod(a: int, b: int, n: int) -> int:
    return 0 if n == 0 else (a + b) % n


def mulmod(a: int, b: int, n: int) -> int:
    return 0 if n == 0 else (a * b) % n


def exp(base: int, exponent: int) -> int:
    return pow(base, exponent, TWO_256)


def exp_byte_length(exponent: int) -> int:
    """Bytes in the exponent, for EXP's dynamic gas (50 per byte)."""
    return (exponent.bit_length() + 7) // 8


def signextend(size: int, x: int) -> int:
    """Extend the sign of the (size+1)-byte value in the low bytes of ``x``."""
    if size >= 31:
        return x
    bits = 8 * (size + 1)
    low = x & ((1 << bits) - 1)
    if low >> (bits - 1):
        return (low | (MASK ^ ((1 << bits) - 1))) & MASK
    return low


def slt(a: int, b: int) -> int:
    return 1 if to_signed(a) < to_signed(b) else 0


def sgt(a: int, b: int) -> int:
    return 1 if to_signed(a) > to_signed(b) else 0


def byte(index: int, x: int) -> int:
    """The index-th byte of ``x`` counting from the most significant; 0 past 31."""
    if index >= 32:
        return 0
    return (x >> (8 * (31 - index))) & 0xFF


def shl(shift: int, x: int) -> int:
    return 0 if shift >= 256 else (x << shift) & MASK


def shr(shift: int, x: int) -> int:
    return 0 if shift >= 256 else x >> shift


def sar(shift: int, x: int) -> int:
    """Arithmetic shift right: fills with the sign bit; saturates past 255."""
    if x & SIGN_BIT:
        if shift >= 256:
            return MASK
        return ((x - TWO_256) >> shift) & MASK
    return 0 if shift >= 256 else x >> shift
