"""What the Prague/Osaka precompiles cost in time against what they charge in gas.

Gas prices assume a native client (EIP-2537 was priced against blst/gnark, at
roughly 30-60 Mgas/s); a precompile that ran much slower than that per gas would
let a message buy CPU time cheaply.  This runs each one (through
``missive.vm.precompiles.run_precompile``, the path a contract's call takes) on a
valid input, prints the best of several CPU timings, its gas and Mgas/s, and the
same for BN254's pairing (0x08, hand-written Python compiled by mypyc) and, for
comparison, a 2-pair BLS12-381 pairing done the execution specification's way
(py_ecc, pure Python).

    PYTHONPATH=. python tools/bench/precompiles.py [--repeats N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from py_ecc.optimized_bls12_381 import G1, G2, multiply, neg, normalize

from missive.vm import build_info
from missive.vm.precompiles import run_precompile


def fp(value: int) -> bytes:
    return value.to_bytes(64, "big")


def enc1(point: object) -> bytes:
    x, y = normalize(point)  # type: ignore[arg-type]
    return fp(int(x)) + fp(int(y))


def enc2(point: object) -> bytes:
    x, y = normalize(point)  # type: ignore[arg-type]
    return b"".join(fp(int(c)) for c in (*x.coeffs, *y.coeffs))


def best_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best * 1000


def cases() -> list[tuple[str, int, bytes]]:
    g1s = [enc1(multiply(G1, k + 2)) for k in range(128)]
    g2s = [enc2(multiply(G2, k + 2)) for k in range(128)]
    scalar = (2**255 - 19).to_bytes(32, "big")
    pair = enc1(G1) + enc2(G2) + enc1(neg(G1)) + enc2(G2)
    from py_ecc.optimized_bn128 import G1 as B1
    from py_ecc.optimized_bn128 import G2 as B2
    from py_ecc.optimized_bn128 import neg as bneg
    from py_ecc.optimized_bn128 import normalize as bnorm

    def bn_pair(p: object, q: object) -> bytes:
        x, y = bnorm(p)  # type: ignore[arg-type]
        qx, qy = bnorm(q)  # type: ignore[arg-type]
        words = (int(x), int(y), qx.coeffs[1], qx.coeffs[0], qy.coeffs[1], qy.coeffs[0])
        return b"".join(int(w).to_bytes(32, "big") for w in words)

    return [
        ("G1ADD", 0x0B, g1s[0] + g1s[1]),
        ("G1MSM k=1", 0x0C, g1s[0] + scalar),
        ("G1MSM k=16", 0x0C, b"".join(g + scalar for g in g1s[:16])),
        ("G1MSM k=128", 0x0C, b"".join(g + scalar for g in g1s)),
        ("G2ADD", 0x0D, g2s[0] + g2s[1]),
        ("G2MSM k=1", 0x0E, g2s[0] + scalar),
        ("G2MSM k=16", 0x0E, b"".join(g + scalar for g in g2s[:16])),
        ("G2MSM k=128", 0x0E, b"".join(g + scalar for g in g2s)),
        ("PAIRING k=1", 0x0F, pair[:384]),
        ("PAIRING k=2", 0x0F, pair),
        ("PAIRING k=8", 0x0F, pair * 4),
        ("MAP_FP_TO_G1", 0x10, fp(123456789)),
        ("MAP_FP2_TO_G2", 0x11, fp(123456789) + fp(987654321)),
        ("P256VERIFY", 0x100, bytes.fromhex(
            "4cee90eb86eaa050036147a12d49004b6b9c72bd725d39d4785011fe190f0b4da73bd4903f0ce3b639bbbf6e8e80d16931ff4bcf5993"
            "d58468e8fb19086e8cac36dbcd03009df8c59286b162af3bd7fcc0450c9aa81be5d10d312af6c66b1d604aebd3099c618202fcfe16ae7"
            "770b0c49ab5eadf74b754204a3bb6060e44eff37618b065f9832de4ca6ca971a7a1adc826d0f7c00181a5fb2ddf79ae00b4e10e")),
        ("BN254 PAIRING k=2 (0x08)", 0x08, bn_pair(B1, B2) + bn_pair(bneg(B1), B2)),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"compiled VM: {build_info()['compiled']}")
    print(f"{'precompile':<26} {'gas':>9} {'ms':>9} {'Mgas/s':>8}")
    for name, address, data in cases():
        result = run_precompile(address, data, 10**9)
        assert result.success, (name, result.error)
        ms = best_ms(lambda a=address, d=data: run_precompile(a, d, 10**9), args.repeats)
        print(f"{name:<26} {result.gas_used:>9,} {ms:>9.3f} {result.gas_used / ms / 1000:>8.1f}")

    from py_ecc.optimized_bls12_381 import FQ12, final_exponentiate
    from py_ecc.optimized_bls12_381.optimized_pairing import miller_loop

    def py_ecc_pairing() -> bool:
        product = miller_loop(G2, G1, final_exponentiate=False) * miller_loop(G2, neg(G1), final_exponentiate=False)
        return bool(final_exponentiate(product) == FQ12.one())

    ms = best_ms(py_ecc_pairing, max(1, args.repeats // 2))
    print(f"{'PAIRING k=2, py_ecc':<26} {102_900:>9,} {ms:>9.3f} {102_900 / ms / 1000:>8.1f}  "
          "(no subgroup checks: for comparison only)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
