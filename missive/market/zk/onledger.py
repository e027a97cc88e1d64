"""The on-ledger Groth16 check: the verifier contract (``groth16_verifier.vy``) run on Missive's VM.

The contract is Vyper, compiled once and shipped as runtime bytecode (``groth16_verifier.hex``)
so that the ledger and its replay never depend on the compiler installed: the check a job board
records is ``keccak256`` of this code, and replay runs the same bytes.  ``tests/test_zk_verify.py``
recompiles the source and insists on the same bytes.

The contract works for any key: the job's verification key, the proof and the public values are
its calldata (:func:`missive.market.zk.groth16.verifier_calldata`).  It uses the BN254
precompiles (ECMUL, ECADD, ECPAIRING), which check every point on the curve and G2 points in the
subgroup, so a malformed proof makes a precompile fail and the contract answer False.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Final

import attrs

from missive.market.zk.groth16 import Proof, VerifyingKey, verifier_calldata
from missive.vm.execution import execute
from missive.vm.keccak import keccak256
from missive.vm.types import Status

SOURCE: Final = Path(__file__).with_name("groth16_verifier.vy")
RUNTIME: Final = Path(__file__).with_name("groth16_verifier.hex")
#: gas a verification is given: 4 pairings (45,000 + 4 × 34,000), one ECMUL + ECADD per public
#: value and the contract's own work fit well inside
VERIFY_GAS: Final = 1_000_000


@cache
def verifier_code() -> bytes:
    return bytes.fromhex(RUNTIME.read_text().strip().removeprefix("0x"))


def verifier_hash() -> bytes:
    """What identifies the check on the ledger: keccak256 of the verifier's runtime code."""
    return keccak256(verifier_code())


@attrs.frozen
class Verdict:
    valid: bool
    gas_used: int
    #: why not, when not valid (the VM's status, or that the contract said False)
    reason: str = ""


def run_verifier(calldata: bytes, code: bytes | None = None, gas: int = VERIFY_GAS) -> Verdict:
    """Run a verifier contract (ours by default, or one snarkjs exported) on ``calldata``, read-only."""
    result = execute(code if code is not None else verifier_code(), data=calldata, gas=gas, is_static=True)
    if result.status is not Status.SUCCESS:
        return Verdict(False, result.gas_used, f"the verifier contract stopped: {result.status.name.lower()}"
                       + (f" ({result.error})" if result.error else ""))
    if len(result.output) != 32 or int.from_bytes(result.output, "big") not in (0, 1):
        return Verdict(False, result.gas_used, "the verifier contract's answer is not a boolean")
    if result.output[-1] != 1:
        return Verdict(False, result.gas_used, "the verifier contract rejects the proof")
    return Verdict(True, result.gas_used)


def verify_on_ledger(key: VerifyingKey, proof: Proof, public: list[int]) -> Verdict:
    """The job board's check: our verifier contract on this key, proof and public values."""
    return run_verifier(verifier_calldata(key, proof, public))


__all__ = ["RUNTIME", "SOURCE", "VERIFY_GAS", "Verdict", "run_verifier", "verifier_code", "verifier_hash",
           "verify_on_ledger"]
