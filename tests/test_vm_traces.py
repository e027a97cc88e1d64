"""Traces (translate.py) on compiled code: the same outcome, output and gas as py-evm.

The benchmark's compiled contracts (tools/bench/contracts) run with small
inputs, and again with gas limits just short of what they need, so that out of
gas strikes inside traces, at side exits and in later segments.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from missive.vm.keccak import keccak256
from missive.vm.translate import program_for, translate
from tests.test_vm_differential import Case, check

CONTRACTS = Path(__file__).resolve().parents[1] / "tools" / "bench" / "contracts"
SOL = bytes.fromhex((CONTRACTS / "compute_sol.hex").read_text().strip())


def call(signature: str, *args: int) -> bytes:
    return keccak256(signature.encode())[:4] + b"".join(a.to_bytes(32, "big") for a in args)


SOL_CALLS = [
    call("mandelbrot(uint256,uint256,uint256)", 4, 3, 8),
    call("sieve(uint256)", 120),
    call("fib(uint256)", 7),
]


def vyper_runtime() -> bytes:
    vyper = pytest.importorskip("vyper")
    from vyper.compiler.settings import Settings

    out = vyper.compile_code(
        (CONTRACTS / "Compute.vy").read_text(),
        output_formats=["bytecode_runtime"],
        settings=Settings(evm_version="cancun"),
    )
    return bytes.fromhex(out["bytecode_runtime"][2:])


def case(code: bytes, data: bytes, gas: int) -> Case:
    return Case(code=code, data=data, gas=gas, storage={}, value=0, is_static=False, balance=0)


@pytest.mark.parametrize("data", SOL_CALLS, ids=["mandelbrot", "sieve", "fib"])
def test_solidity_agrees_and_runs_out_of_gas_alike(data: bytes) -> None:
    used = check(case(SOL, data, 10_000_000)).gas_used
    for gas in (used - 1, used - 3, used - 11, used - 100, used * 3 // 4, used // 2, used // 5):
        check(case(SOL, data, gas))


def test_vyper_agrees_and_runs_out_of_gas_alike() -> None:
    code = vyper_runtime()
    for data in (
        call("transfers(uint256)", 6),
        call("keccak_chain(bytes32,uint256)", 7, 9),
        call("bubble_sort(uint256,uint256)", 9, 42),
    ):
        used = check(case(code, data, 10_000_000)).gas_used
        for gas in (used - 1, used - 7, used * 2 // 3, used // 3):
            check(case(code, data, gas))


def test_compiled_code_gets_traces() -> None:
    """solc's code is run as traces longer than its basic blocks (else this file tests little)."""
    program = translate(SOL)
    longer = sum(1 for i in range(len(program.blocks)) if program.trace(i).paths != program.blocks[i].paths)
    assert longer > len(program.blocks) // 4


def test_basic_blocks_stand_in_once_the_trace_budget_is_spent() -> None:
    """Code cannot make the translator do unbounded work: past the budget, basic blocks run."""
    program = program_for(SOL)
    saved_traces, saved_budget = list(program.traces), program.trace_budget
    program.traces[:] = [None] * len(program.traces)
    program.trace_budget = 0
    try:
        check(case(SOL, SOL_CALLS[0], 10_000_000))
        entered = [i for i, t in enumerate(program.traces) if t is not None]
        assert entered and all(program.traces[i] is program.blocks[i] for i in entered)
    finally:
        program.traces[:] = saved_traces
        program.trace_budget = saved_budget
