# pragma version ~=0.4.1
"""
@title Groth16 verifier for BN254 (any key, given in the call)
@notice Missive's on-ledger check of a zk job's proof (docs/jobs.md): the job board runs this
        code on Missive's VM with the job's verification key, the proof and the public inputs,
        through the EIP-196/197 precompiles 0x06-0x08 (ECADD, ECMUL, ECPAIRING).  G2 points are
        in the precompile's order (x_im, x_re, y_im, y_re).  Returns True only for a valid proof;
        malformed points make a precompile fail, which is False, never a revert.
"""

# the order of G1 and G2: public inputs must be field elements
R: constant(uint256) = 21888242871839275222246405745257275088548364400416034343698204186575808495617
# the base field: negating A
P: constant(uint256) = 21888242871839275222246405745257275088696311157297823662689037894645226208583
MAX_INPUTS: constant(uint256) = 16


@internal
@view
def _g1(to: address, data: Bytes[128]) -> (bool, uint256[2]):
    ok: bool = False
    out: Bytes[64] = b""
    ok, out = raw_call(to, data, max_outsize=64, is_static_call=True, revert_on_failure=False)
    if not ok or len(out) != 64:
        return False, [0, 0]
    return True, [convert(slice(out, 0, 32), uint256), convert(slice(out, 32, 32), uint256)]


@external
@view
def verify(alpha: uint256[2], beta: uint256[4], gamma: uint256[4], delta: uint256[4],
           ic: DynArray[uint256[2], MAX_INPUTS + 1], a: uint256[2], b: uint256[4], c: uint256[2],
           inputs: DynArray[uint256, MAX_INPUTS]) -> bool:
    if len(ic) != len(inputs) + 1:
        return False
    x: uint256[2] = ic[0]
    ok: bool = True
    i: uint256 = 0
    for value: uint256 in inputs:
        i += 1
        if value >= R:
            return False
        term: uint256[2] = [0, 0]
        ok, term = self._g1(0x0000000000000000000000000000000000000007, abi_encode(ic[i], value))
        if not ok:
            return False
        ok, x = self._g1(0x0000000000000000000000000000000000000006, abi_encode(x, term))
        if not ok:
            return False
    if a[0] >= P or a[1] >= P:
        return False
    neg_a_y: uint256 = 0
    if a[1] != 0:
        neg_a_y = P - a[1]
    pairs: uint256[24] = [
        a[0], neg_a_y, b[0], b[1], b[2], b[3],
        alpha[0], alpha[1], beta[0], beta[1], beta[2], beta[3],
        x[0], x[1], gamma[0], gamma[1], gamma[2], gamma[3],
        c[0], c[1], delta[0], delta[1], delta[2], delta[3],
    ]
    out: Bytes[32] = b""
    ok, out = raw_call(0x0000000000000000000000000000000000000008, abi_encode(pairs), max_outsize=32,
                       is_static_call=True, revert_on_failure=False)
    return ok and len(out) == 32 and convert(out, uint256) == 1
