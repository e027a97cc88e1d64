"""CLZ (EIP-7939, Osaka): count the leading zero bits of a word, for 5 gas.

Compilers targeting Osaka emit it for `clz` in inline assembly and in their own
helpers (log2, sqrt, bit scans); a contract compiled that way must run here as it
does on Ethereum.  The vectors are EIP-7939's own test cases (its "Test Cases"
section, copied by hand below), then every bit length, then hypothesis.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from missive.toolchain.asm import assemble
from missive.toolchain.evmcode import disassemble
from missive.vm import Status, execute
from missive.vm import opcodes as op

#: EIP-7939 "Test Cases": PUSH32 x, CLZ -> expected word.
EIP_7939_CASES = [
    (0x0, 0x100),
    (0x8000000000000000000000000000000000000000000000000000000000000000, 0),
    (0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF, 0),
    (0x4000000000000000000000000000000000000000000000000000000000000000, 1),
    (0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF, 1),
    (0x1, 0xFF),
]


def clz_code(x: int) -> bytes:
    """PUSH32 x CLZ, then return the word."""
    return b"\x7f" + x.to_bytes(32, "big") + bytes([op.CLZ]) + assemble("PUSH0 MSTORE PUSH 32 PUSH0 RETURN")


def run_clz(x: int) -> int:
    result = execute(clz_code(x), gas=100_000)
    assert result.status is Status.SUCCESS, result.error
    return int.from_bytes(result.output, "big")


@pytest.mark.parametrize(("x", "expected"), EIP_7939_CASES, ids=[f"{x:#x}" for x, _ in EIP_7939_CASES])
def test_eip_7939_test_cases(x: int, expected: int) -> None:
    assert run_clz(x) == expected


@pytest.mark.parametrize("bits", range(257))
def test_every_bit_length(bits: int) -> None:
    """A word with its highest set bit at each position (and all lower bits set or clear)."""
    top = (1 << bits) >> 1  # 0, 1, 2, 4, ...
    assert run_clz(top) == 256 - bits
    assert run_clz((1 << bits) - 1) == 256 - bits


@given(st.integers(0, 2**256 - 1))
def test_clz_is_256_minus_the_bit_length(x: int) -> None:
    assert run_clz(x) == 256 - x.bit_length()


def test_clz_costs_5_gas() -> None:
    # PUSH0 (2) CLZ (5) STOP: 7 gas, as in EIP-7939 (the price of MUL).
    code = bytes([op.PUSH0, op.CLZ, op.STOP])
    assert execute(code, gas=7).gas_used == 7
    short = execute(code, gas=6)
    assert short.status is Status.OUT_OF_GAS and short.gas_used == 6


def test_clz_on_an_empty_stack_halts() -> None:
    result = execute(bytes([op.CLZ]), gas=1000)
    assert result.status is Status.STACK_UNDERFLOW and result.gas_used == 1000


def test_clz_inside_a_loop_and_after_a_jump() -> None:
    """Through the trace translator too: CLZ of 2**i for i = 0..9, summed, in a counted loop."""
    code = assemble(
        """
        PUSH0 PUSH0
        JUMPDEST
        PUSH 1 DUP2 SHL CLZ DUP3 ADD SWAP2 POP
        PUSH 1 ADD DUP1 PUSH 10 GT PUSH 2 JUMPI
        POP PUSH0 MSTORE PUSH 32 PUSH0 RETURN
        """
    )
    result = execute(code, gas=100_000)
    assert result.status is Status.SUCCESS, result.error
    assert int.from_bytes(result.output, "big") == sum(255 - i for i in range(10))


def test_the_disassembler_names_it() -> None:
    assert [i.name for i in disassemble(bytes([op.PUSH0, op.CLZ]))] == ["PUSH0", "CLZ"]
    assert op.name(0x1E) == "CLZ"
