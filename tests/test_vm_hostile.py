"""Hostile code: every trick ends in the right halt, with all gas used and no effects."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from missive.toolchain.asm import assemble
from missive.vm import Status, execute
from missive.vm.translate import translate

GAS = 200_000


def assert_clean_halt(code: bytes, status: Status, **kwargs: object) -> None:
    r = execute(code, gas=GAS, storage={0: 1}, balance=10, **kwargs)  # type: ignore[arg-type]
    assert r.status is status, r.error
    assert r.gas_used == GAS
    assert (r.storage_writes, r.logs, r.outbox, r.output, r.balance) == ({}, (), (), b"", 10)
    assert r.error  # says what went wrong


def test_infinite_loop_runs_out_of_gas() -> None:
    assert_clean_halt(assemble("PUSH 5 PUSH 0 SSTORE top: PUSH @top JUMP"), Status.OUT_OF_GAS)


def test_loop_with_dynamic_jump_runs_out_of_gas() -> None:
    assert_clean_halt(assemble("PUSH 9 PUSH 0 SSTORE top: PUSH @top DUP1 POP JUMP"), Status.OUT_OF_GAS)


@pytest.mark.parametrize(
    "source",
    [
        "PUSH 1 PUSH32 0x8000000000000000000000000000000000000000000000000000000000000000 MSTORE",
        "PUSH 1 PUSH5 0x0100000000 MSTORE",
        "PUSH32 0xffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff PUSH 0 PUSH 0 CALLDATACOPY",
        "PUSH 0xffffffffff PUSH 0 KECCAK256",
        "PUSH 0xffffffffff PUSH 0 PUSH 0 MCOPY",
        "PUSH 0xffffffffff PUSH 0 RETURN",
        "PUSH 0xffffffffff PUSH 0 LOG0",
    ],
)
def test_memory_bombs_run_out_of_gas(source: str) -> None:
    assert_clean_halt(assemble("PUSH 2 PUSH 0 SSTORE " + source), Status.OUT_OF_GAS)


def test_memory_bomb_with_enormous_gas_is_still_refused() -> None:
    r = execute(assemble("PUSH 1 PUSH6 0x010000000000 MSTORE"), gas=2**200)
    assert r.status is Status.OUT_OF_GAS and "memory" in r.error


def test_deep_stack_overflows_at_1025() -> None:
    assert_clean_halt(assemble("PUSH 3 PUSH 0 SSTORE " + "PUSH0 " * 1025), Status.STACK_OVERFLOW)
    ok = execute(assemble("PUSH0 " * 1024), gas=GAS)
    assert ok.status is Status.SUCCESS


def test_halts_name_the_failing_instruction() -> None:
    r = execute(bytes.fromhex("60003560005560206000a1"), gas=GAS)  # LOG1 at pc 10 has 2 of 3 items
    assert r.status is Status.STACK_UNDERFLOW and "pc 10 (LOG1" in r.error
    r = execute(assemble("PUSH 1 PUSH 2 ADD PUSH 3 MUL"), gas=12)  # MUL at pc 7 is 3+3+3+3+5
    assert r.status is Status.OUT_OF_GAS and "pc 7 (MUL)" in r.error
    r = execute(assemble("PUSH0 " * 1025), gas=GAS)
    assert r.status is Status.STACK_OVERFLOW and "pc 1024 (PUSH0)" in r.error


def test_deep_stack_through_a_loop_overflows() -> None:
    assert_clean_halt(assemble("top: PUSH0 PUSH @top JUMP"), Status.STACK_OVERFLOW)


@pytest.mark.parametrize("source", ["ADD", "PUSH 1 SWAP1", "DUP1", "POP", "PUSH 1 JUMPI"])
def test_stack_underflow(source: str) -> None:
    assert_clean_halt(assemble(source), Status.STACK_UNDERFLOW)


@pytest.mark.parametrize("byte", [0xFE, 0x0C, 0x21, 0xEF, 0xF6, 0xFB])
def test_invalid_opcodes(byte: int) -> None:
    code = assemble("PUSH 4 PUSH 0 SSTORE") + bytes([byte])
    assert_clean_halt(code, Status.INVALID_OPCODE)


def test_jump_into_push_data_is_a_bad_jump() -> None:
    # offset 3 is a 0x5b byte inside PUSH2's data, not a JUMPDEST
    code = bytes.fromhex("6003" "56" "615b5b" "00")
    assert translate(code).jump_table[3] == -1
    assert_clean_halt(code, Status.BAD_JUMP)
    assert_clean_halt(bytes.fromhex("6001600457" "615b5b00"), Status.BAD_JUMP)  # JUMPI, taken
    assert_clean_halt(assemble("PUSH 1000 JUMP"), Status.BAD_JUMP)  # beyond the code
    assert_clean_halt(assemble("PUSH32 0xffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff JUMP"), Status.BAD_JUMP)


def test_computed_jump_to_a_real_jumpdest_works() -> None:
    code = assemble("PUSH 2 PUSH @dest PUSH 0 ADD JUMP PUSH 9 dest: PUSH 0 SSTORE STOP")
    r = execute(code)
    assert r.status is Status.SUCCESS and r.storage_writes == {0: 2}


def test_returndatacopy_past_the_end_halts() -> None:
    assert_clean_halt(assemble("PUSH 1 PUSH 0 PUSH 0 RETURNDATACOPY"), Status.RETURNDATA_OUT_OF_BOUNDS)


def test_huge_copy_offsets_read_zeros_not_crash() -> None:
    code = assemble("PUSH 32 PUSH32 0xffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff PUSH 0 CALLDATACOPY "
                    "PUSH32 0xffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff CALLDATALOAD "
                    "PUSH 0 MLOAD ADD PUSH 0 SSTORE STOP")
    r = execute(code, data=b"\x01" * 40, storage={0: 5})
    assert r.status is Status.SUCCESS and r.storage_writes == {0: 0}


def test_block_that_would_run_out_midway_leaves_nothing() -> None:
    code = assemble("PUSH 1 PUSH 0 SSTORE PUSH 1 PUSH 2 ADD PUSH 3 MUL POP STOP")
    full = execute(code, gas=50_000)
    assert full.status is Status.SUCCESS
    short = execute(code, gas=full.gas_used - 1)
    assert short.status is Status.OUT_OF_GAS and short.storage_writes == {}


def test_gas_opcode_sees_the_exact_gas_left() -> None:
    # GAS in the middle of a block must not see the gas the rest of the block was charged in advance.
    r = execute(assemble("GAS PUSH 0 SSTORE"), gas=100_000)
    assert r.storage_writes == {0: 100_000 - 2}
    r = execute(assemble("PUSH 1 PUSH 2 ADD POP GAS PUSH 1 PUSH 2 ADD POP PUSH 0 SSTORE"), gas=100_000)
    assert r.storage_writes == {0: 100_000 - 3 - 3 - 3 - 2 - 2}


def test_sstore_refuses_to_run_on_the_call_stipend() -> None:
    code = assemble("PUSH 1 PUSH 0 SSTORE")
    assert execute(code, gas=2306).status is Status.OUT_OF_GAS  # 2300 left at SSTORE
    assert execute(code, gas=30_000).status is Status.SUCCESS


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(code=st.binary(max_size=200), data=st.binary(max_size=64), gas=st.integers(0, 300_000))
def test_arbitrary_bytes_never_escape_as_exceptions(code: bytes, data: bytes, gas: int) -> None:
    r = execute(code, data=data, gas=gas, storage={0: 1, 1: 2}, balance=5)
    assert 0 <= r.gas_used <= gas
    if r.status.is_exceptional_halt:
        assert r.gas_used == gas
        assert (r.storage_writes, r.logs, r.outbox, r.balance) == ({}, (), (), 5)
    elif r.status is Status.REVERT:
        assert (r.storage_writes, r.logs, r.outbox) == ({}, (), ())


@settings(max_examples=200, deadline=None)
@given(code=st.lists(st.sampled_from([0x5B, 0x56, 0x57, 0x60, 0x61, 0x80, 0x90, 0x50, 0x01, 0x5F, 0x58, 0x00]), max_size=60))
def test_jumpy_code_never_escapes(code: list[int]) -> None:
    r = execute(bytes(code), gas=20_000)
    assert r.status is not None and 0 <= r.gas_used <= 20_000
