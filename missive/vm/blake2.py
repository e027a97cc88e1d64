"""The BLAKE2b compression function F, as exposed by precompile 0x09 (EIP-152).

EIP-152 exposes the bare compression function rather than the hash so that
contracts can run any number of rounds (Zcash's Equihash uses BLAKE2b with
the standard 12) and drive the chaining themselves.  ``hashlib.blake2b`` does
not expose F, so it is implemented here directly from RFC 7693, section 3.2.

Each 64-bit word is held as two 32-bit halves.  That looks like extra work,
but under mypyc an ``int`` below 2^62 is a machine word while a larger one
is a heap-allocated Python object: with whole 64-bit words nearly every
operation allocated, and the compiled code was slower than the interpreter.
With halves every intermediate value stays below 2^41, so the compiled G
function computes on machine words (values are boxed only when stored back
into the state list).  Compiled, this is about twice as fast per round as
whole words; interpreted it is about three times slower, which is the
right trade for a module that ships compiled.
"""

from __future__ import annotations

from typing import Final

MASK32: Final = 0xFFFFFFFF

#: The initialisation vector (the same constants as SHA-512's initial hash).
IV: Final = (
    0x6A09E667F3BCC908,
    0xBB67AE8584CAA73B,
    0x3C6EF372FE94F82B,
    0xA54FF53A5F1D36F1,
    0x510E527FADE682D1,
    0x9B05688C2B3E6C1F,
    0x1F83D9ABFB41BD6B,
    0x5BE0CD19137E2179,
)

#: The message schedule: round ``r`` uses permutation ``SIGMA[r % 10]`` of the 16 message words.
SIGMA: Final = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
    (14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3),
    (11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4),
    (7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8),
    (9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13),
    (2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9),
    (12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11),
    (13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10),
    (6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5),
    (10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0),
)

#: The column steps then the diagonal steps of one round: the four state
#: indices each application of G mixes.
MIX_INDICES: Final = (
    (0, 4, 8, 12),
    (1, 5, 9, 13),
    (2, 6, 10, 14),
    (3, 7, 11, 15),
    (0, 5, 10, 15),
    (1, 6, 11, 12),
    (2, 7, 8, 13),
    (3, 4, 9, 14),
)


def _add(lo: int, hi: int, x_lo: int, x_hi: int) -> tuple[int, int]:
    """``(hi:lo) + (x_hi:x_lo)`` modulo 2^64, carrying from the low half into the high."""
    total = lo + x_lo
    return (total & MASK32, (hi + x_hi + (total >> 32)) & MASK32)


def _rotr(lo: int, hi: int, n: int) -> tuple[int, int]:
    """Rotate the 64-bit word ``(hi:lo)`` right by ``0 < n < 32`` bits."""
    return (((lo >> n) | (hi << (32 - n))) & MASK32, ((hi >> n) | (lo << (32 - n))) & MASK32)


def _mix(v: list[int], a: int, b: int, c: int, d: int, x: int, y: int, m: list[int]) -> None:
    """The G function: mixes message words ``m[x]``, ``m[y]`` into state words a, b, c, d.

    ``v`` and ``m`` hold words as (low, high) halves at ``2 i`` and ``2 i + 1``.
    """
    a_lo, a_hi = v[2 * a], v[2 * a + 1]
    b_lo, b_hi = v[2 * b], v[2 * b + 1]
    c_lo, c_hi = v[2 * c], v[2 * c + 1]
    d_lo, d_hi = v[2 * d], v[2 * d + 1]

    a_lo, a_hi = _add(a_lo, a_hi, b_lo, b_hi)
    a_lo, a_hi = _add(a_lo, a_hi, m[2 * x], m[2 * x + 1])
    d_lo, d_hi = d_hi ^ a_hi, d_lo ^ a_lo  # rotate right by 32: swap the halves
    c_lo, c_hi = _add(c_lo, c_hi, d_lo, d_hi)
    b_lo, b_hi = _rotr(b_lo ^ c_lo, b_hi ^ c_hi, 24)
    a_lo, a_hi = _add(a_lo, a_hi, b_lo, b_hi)
    a_lo, a_hi = _add(a_lo, a_hi, m[2 * y], m[2 * y + 1])
    d_lo, d_hi = _rotr(d_lo ^ a_lo, d_hi ^ a_hi, 16)
    c_lo, c_hi = _add(c_lo, c_hi, d_lo, d_hi)
    # Rotating right by 63 is rotating left by 1: swap the halves, then rotate right by 31.
    b_lo, b_hi = _rotr(b_hi ^ c_hi, b_lo ^ c_lo, 31)

    v[2 * a], v[2 * a + 1] = a_lo, a_hi
    v[2 * b], v[2 * b + 1] = b_lo, b_hi
    v[2 * c], v[2 * c + 1] = c_lo, c_hi
    v[2 * d], v[2 * d + 1] = d_lo, d_hi


def _split(words: list[int]) -> list[int]:
    """64-bit words to the (low, high) 32-bit halves layout."""
    halves: list[int] = []
    for w in words:
        halves.append(w & MASK32)
        halves.append(w >> 32)
    return halves


def compress(rounds: int, h: list[int], m: list[int], t0: int, t1: int, final: bool) -> list[int]:
    """BLAKE2b F: the new state words from state ``h`` (8 words) and block ``m`` (16 words).

    ``t0, t1`` are the low and high words of the byte offset counter and
    ``final`` marks the last block; ``rounds`` may be anything (12 is standard).
    """
    v = _split(list(h) + list(IV))
    halves_m = _split(m)
    v[24] ^= t0 & MASK32
    v[25] ^= t0 >> 32
    v[26] ^= t1 & MASK32
    v[27] ^= t1 >> 32
    if final:
        v[28] ^= MASK32
        v[29] ^= MASK32
    for r in range(rounds):
        s = SIGMA[r % 10]
        for k in range(8):
            a, b, c, d = MIX_INDICES[k]
            _mix(v, a, b, c, d, s[2 * k], s[2 * k + 1], halves_m)
    out: list[int] = []
    for i in range(8):
        lo = v[2 * i] ^ v[2 * i + 16]
        hi = v[2 * i + 1] ^ v[2 * i + 17]
        out.append(h[i] ^ (lo | (hi << 32)))
    return out


def blake2f(data: bytes) -> bytes:
    """Run F on a 213-byte EIP-152 input that the caller has already validated.

    Layout: rounds (4 bytes, big-endian), h (8 x 8 bytes), m (16 x 8 bytes),
    t (2 x 8 bytes), f (1 byte); the words are little-endian as in BLAKE2b.
    """
    rounds = int.from_bytes(data[0:4], "big")
    h = [int.from_bytes(data[4 + 8 * i : 12 + 8 * i], "little") for i in range(8)]
    m = [int.from_bytes(data[68 + 8 * i : 76 + 8 * i], "little") for i in range(16)]
    t0 = int.from_bytes(data[196:204], "little")
    t1 = int.from_bytes(data[204:212], "little")
    out = compress(rounds, h, m, t0, t1, data[212] == 1)
    return b"".join([word.to_bytes(8, "little") for word in out])
