"""P256VERIFY (EIP-7951, Osaka) at 0x100: ECDSA signature verification over secp256r1 (NIST P-256).

Input: exactly 160 bytes, ``hash || r || s || qx || qy`` (32 bytes each, big-endian).
Output: the word 1 when the signature is valid, else **empty**: like ecrecover, an
invalid signature or malformed input is an answer, not a failure; the call succeeds
and costs :data:`P256VERIFY_GAS` either way (only too little gas fails it).

Checked here, in EIP-7951's order, before any curve arithmetic: the length,
``0 < r < n`` and ``0 < s < n``, ``qx, qy < p``, the point on the curve (which
also rules out the (0, 0) encoding of infinity, since b != 0).  The verification
itself (``u1 = h/s, u2 = r/s, R = u1 G + u2 Q``, valid when R is not infinity and
``R.x mod n == r``) is OpenSSL's, through ``cryptography`` (Apache-2.0/BSD),
as in the Ethereum execution specification; the hash is used as given
(prehashed), never hashed again.
"""

from __future__ import annotations

from typing import Final

ADDRESS: Final = 0x100
P256VERIFY_GAS: Final = 6900
INPUT_SIZE: Final = 160

#: The curve's field modulus, coefficients and group order (SEC 2, secp256r1).
P: Final = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
A: Final = P - 3
B: Final = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
N: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

VALID: Final = (1).to_bytes(32, "big")


def verify(data: bytes) -> bool:
    """Whether ``data`` is a well-formed P256VERIFY input carrying a valid signature."""
    if len(data) != INPUT_SIZE:
        return False
    r = int.from_bytes(data[32:64], "big")
    s = int.from_bytes(data[64:96], "big")
    qx = int.from_bytes(data[96:128], "big")
    qy = int.from_bytes(data[128:160], "big")
    if not (0 < r < N and 0 < s < N):
        return False
    if not (qx < P and qy < P):
        return False
    if (qy * qy - (qx * qx * qx + A * qx + B)) % P != 0:
        return False
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + data[96:160])
    try:
        key.verify(encode_dss_signature(r, s), data[:32], ec.ECDSA(Prehashed(hashes.SHA256())))
    except InvalidSignature:
        return False
    return True
