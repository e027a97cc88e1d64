"""Differential tests: Missive's VM against py-evm on random EVM programs.

Every instruction SPEC §3 leaves alone must behave exactly as in Cancun, gas
included, because receipts (and so replay and re-execution) depend on it.
Hand-picked vectors only cover what their author thought of; here hypothesis
writes programs and py-evm (see :mod:`tests.evm_oracle`) is the judge.

Programs are *valid-ish*: the generator tracks the stack height so most
instructions find their operands, and memory offsets are mostly small so most
runs do real work instead of dying on the first MSTORE.  A small share of
draws deliberately breaks those rules (raw instructions on whatever the stack
holds, huge offsets, bad jumps, undefined opcodes, deep stacks, tight gas),
because the error paths must agree too.

Compared: the outcome (success / revert / exceptional halt, halts not told
apart because the two VMs name them differently), return data, final storage,
logs, and gas used and raw refund where Ethereum defines them (on an
exceptional halt both must consume the whole gas limit).

No program here uses CALL, STATICCALL, CREATE, SELFDESTRUCT or BALANCE of
another account: those are exactly what SPEC §3 changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from missive.vm.types import BlockContext
from tests.evm_oracle import OracleResult, run_pyevm

try:
    from missive.vm import execute
except ImportError:  # the VM is not there yet: skip rather than fail collection
    execute = None  # type: ignore[assignment]

pytestmark = pytest.mark.skipif(execute is None, reason="missive.vm.execute not available")

REPO = Path(__file__).resolve().parent.parent
U256 = (1 << 256) - 1

#: Distinct, non-precompile addresses, so warm/cold rules are actually exercised
#: (with everything at address zero, caller == address would hide mistakes).
ADDRESS = bytes.fromhex("00000000000000000000000000000000c0ffee00")
CALLER = bytes.fromhex("000000000000000000000000000000000ca11e40")
ORIGIN = bytes.fromhex("00000000000000000000000000000000000041a1")
COINBASE = bytes.fromhex("00000000000000000000000000000000000c0b1e")

BLOCK = BlockContext(
    coinbase=COINBASE,
    timestamp=1_700_000_000,
    number=19_000_000,
    prevrandao=0x1234_5678_9ABC_DEF0 << 128,
    gas_limit=30_000_000,
    base_fee=7,
    chain_id=1,
    blob_base_fee=1,
    blob_hashes=(bytes([1]) + bytes(range(31)),),
    gas_price=9,
    origin=ORIGIN,
)

#: Gas for straight-line programs and counted loops: plenty (a loop body may
#: LOG or hash kilobytes forty times).  A runaway loop (deliberately generated
#: now and then) gets little, so that it burns out quickly in py-evm.
AMPLE_GAS = 2_000_000
LOOP_GAS = 2_000_000
RUNAWAY_GAS = 30_000


# --------------------------------------------------------------------------
# Cases and the two runners
# --------------------------------------------------------------------------


@attrs.frozen
class Case:
    """One differential example: a program and the message that runs it."""

    code: bytes
    data: bytes = b""
    gas: int = AMPLE_GAS
    storage: dict[int, int] = attrs.field(factory=dict)
    value: int = 0
    is_static: bool = False
    #: The callee's balance, incoming value included (as :func:`execute` wants).
    balance: int = 0

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by :func:`execute` and :func:`run_pyevm`."""
        return {
            "address": ADDRESS,
            "caller": CALLER,
            "value": self.value,
            "balance": max(self.balance, self.value),
            "data": self.data,
            "gas": self.gas,
            "storage": dict(self.storage),
            "block": BLOCK,
            "is_static": self.is_static,
        }

    def describe(self) -> str:
        """A reproducible description for failure messages."""
        return (
            f"code=0x{self.code.hex()} data=0x{self.data.hex()} gas={self.gas} "
            f"storage={self.storage} value={self.value} balance={self.balance} "
            f"static={self.is_static}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code.hex(),
            "data": self.data.hex(),
            "gas": self.gas,
            "storage": {str(k): v for k, v in self.storage.items()},
            "value": self.value,
            "balance": max(self.balance, self.value),
            "is_static": self.is_static,
        }


@attrs.frozen
class Outcome:
    """The comparable part of a run, the same shape for both VMs."""

    outcome: str  # "success" | "revert" | "halt"
    output: bytes
    gas_used: int
    refund: int
    storage: dict[int, int]
    logs: tuple[tuple[bytes, tuple[int, ...], bytes], ...]
    detail: str = attrs.field(default="", eq=False)


def ours(case: Case) -> Outcome:
    """Run ``case`` in Missive's VM and normalise the result."""
    assert execute is not None
    result = execute(case.code, **case.kwargs())
    status = result.status
    if status.is_success:
        outcome = "success"
    elif status.is_exceptional_halt:
        outcome = "halt"
    else:
        outcome = "revert"
    storage = dict(case.storage)
    if outcome == "success":
        storage.update(result.storage_writes)
    return Outcome(
        outcome=outcome,
        output=bytes(result.output),
        gas_used=result.gas_used,
        refund=result.gas_refund if outcome == "success" else 0,
        storage={k: v for k, v in storage.items() if v},
        logs=tuple((bytes(x.address), tuple(x.topics), bytes(x.data)) for x in result.logs)
        if outcome == "success"
        else (),
        detail=f"{status.name} {result.error}".strip(),
    )


def theirs(case: Case) -> Outcome:
    """Run ``case`` in py-evm and normalise the result."""
    r: OracleResult = run_pyevm(case.code, **case.kwargs())
    return Outcome(
        outcome=r.outcome,
        output=r.output,
        gas_used=r.gas_used,
        refund=r.refund,
        storage=r.storage,
        logs=r.logs,
        detail=r.error,
    )


def check(case: Case) -> Outcome:
    """Run both VMs and assert they agree; returns py-evm's view for callers."""
    want = theirs(case)
    got = ours(case)
    where = f"\n{case.describe()}\n  py-evm : {want}\n  missive: {got}"
    assert got.outcome == want.outcome, "outcome differs" + where
    assert got.output == want.output, "output differs" + where
    assert got.gas_used == want.gas_used, "gas used differs" + where
    if want.outcome == "halt":
        assert got.gas_used == case.gas, "halt did not consume all gas" + where
    assert got.refund == want.refund, "refund differs" + where
    assert got.storage == want.storage, "storage differs" + where
    assert got.logs == want.logs, "logs differ" + where
    return want


# --------------------------------------------------------------------------
# A tiny assembler: bytes plus forward/backward labels
# --------------------------------------------------------------------------


@attrs.frozen
class Label:
    """Marks a position; emits nothing."""

    name: str


@attrs.frozen
class PushLabel:
    """PUSH2 of a label's offset plus ``addend`` (addend != 0 makes bad targets)."""

    name: str
    addend: int = 0


Item = bytes | Label | PushLabel


def assemble(items: Sequence[Item]) -> bytes:
    """Two passes: place labels (PUSH2 is always 3 bytes), then emit."""
    offsets: dict[str, int] = {}
    pc = 0
    for item in items:
        if isinstance(item, Label):
            offsets[item.name] = pc
        elif isinstance(item, PushLabel):
            pc += 3
        else:
            pc += len(item)
    out = bytearray()
    for item in items:
        if isinstance(item, PushLabel):
            out += b"\x61" + ((offsets[item.name] + item.addend) & 0xFFFF).to_bytes(2, "big")
        elif isinstance(item, bytes):
            out += item
    return bytes(out)


def push(value: int, width: int | None = None) -> bytes:
    """PUSHn of ``value``: PUSH0 for a minimal zero, else the smallest (or given) width."""
    value &= U256
    if width is None:
        if value == 0:
            return b"\x5f"
        width = (value.bit_length() + 7) // 8
    return bytes([0x5F + width]) + value.to_bytes(width, "big")


# --------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------

INTERESTING = [
    0, 1, 2, 3, 7, 8, 31, 32, 33, 255, 256, 257,
    (1 << 255), (1 << 255) - 1, U256, U256 - 1, U256 - 2, U256 - 31,
    1 << 128, (1 << 64) - 1, 1 << 160, (1 << 160) - 1,
]  # fmt: skip

values = st.one_of(
    st.sampled_from(INTERESTING),
    st.integers(0, 300),
    st.integers(0, U256),
    st.integers(-64, -1).map(lambda v: v & U256),
)

#: Memory offsets and sizes: mostly small so runs get somewhere, sometimes a few
#: kilobytes (real expansion cost), rarely absurd (must halt, not allocate).
mem_args = st.one_of(
    st.integers(0, 96),
    st.integers(0, 96),
    st.integers(0, 96),
    st.integers(0, 4096),
    st.sampled_from([31, 32, 33, 63, 64, 65]),
)
wild_mem_args = st.one_of(mem_args, st.sampled_from([1 << 16, 1 << 24, 1 << 32, (1 << 64) - 1, U256]))

storage_keys = st.one_of(st.integers(0, 4), st.sampled_from([U256, 1 << 255]))

# Argument kinds: "v" any value (may come from the stack), "m" memory
# offset/size, "k" storage key, "c" calldata/code/returndata offset.
ARITH = {
    "ADD": (0x01, "vv"), "MUL": (0x02, "vv"), "SUB": (0x03, "vv"), "DIV": (0x04, "vv"),
    "SDIV": (0x05, "vv"), "MOD": (0x06, "vv"), "SMOD": (0x07, "vv"),
    "ADDMOD": (0x08, "vvv"), "MULMOD": (0x09, "vvv"), "EXP": (0x0A, "vv"),
    "SIGNEXTEND": (0x0B, "vv"), "LT": (0x10, "vv"), "GT": (0x11, "vv"),
    "SLT": (0x12, "vv"), "SGT": (0x13, "vv"), "EQ": (0x14, "vv"), "ISZERO": (0x15, "v"),
    "AND": (0x16, "vv"), "OR": (0x17, "vv"), "XOR": (0x18, "vv"), "NOT": (0x19, "v"),
    "BYTE": (0x1A, "vv"), "SHL": (0x1B, "vv"), "SHR": (0x1C, "vv"), "SAR": (0x1D, "vv"),
}  # fmt: skip
ENV = {
    "ADDRESS": 0x30, "ORIGIN": 0x32, "CALLER": 0x33, "CALLVALUE": 0x34,
    "CALLDATASIZE": 0x36, "CODESIZE": 0x38, "GASPRICE": 0x3A, "RETURNDATASIZE": 0x3D,
    "COINBASE": 0x41, "TIMESTAMP": 0x42, "NUMBER": 0x43, "PREVRANDAO": 0x44,
    "GASLIMIT": 0x45, "CHAINID": 0x46, "SELFBALANCE": 0x47, "BASEFEE": 0x48, "BLOBBASEFEE": 0x4A,
    "PC": 0x58, "MSIZE": 0x59, "GAS": 0x5A,
}  # fmt: skip
# (opcode, argument kinds top first, outputs)
WITH_ARGS = {
    "KECCAK256": (0x20, "mm", 1),
    "CALLDATALOAD": (0x35, "c", 1),
    "CALLDATACOPY": (0x37, "mcm", 0),
    "CODECOPY": (0x39, "mcm", 0),
    "BLOBHASH": (0x49, "c", 1),
    "MLOAD": (0x51, "m", 1),
    "MSTORE": (0x52, "mv", 0),
    "MSTORE8": (0x53, "mv", 0),
    "SLOAD": (0x54, "k", 1),
    "SSTORE": (0x55, "kv", 0),
    "TLOAD": (0x5C, "k", 1),
    "TSTORE": (0x5D, "kv", 0),
    "MCOPY": (0x5E, "mmm", 0),
    "LOG0": (0xA0, "mm", 0),
    "LOG1": (0xA1, "mmv", 0),
    "LOG2": (0xA2, "mmvv", 0),
    "LOG4": (0xA4, "mmvvvv", 0),
}

#: Bytes that are not instructions in Cancun (0xFE is the designated INVALID).  0x1E is
#: Osaka's CLZ, which Missive runs and py-evm (Cancun) does not: tests/test_clz.py covers it.
UNDEFINED = [0x0C, 0x0F, 0x1F, 0x21, 0x2F, 0x4B, 0x4F, 0xA5, 0xB0, 0xEF, 0xF6, 0xFB, 0xFC, 0xFE]

_TAME = ["arith"] * 10 + ["env"] * 3 + ["args"] * 9 + ["dup"] * 3 + ["swap"] * 3 + [
    "pop", "push", "push", "jump", "returndatacopy",
]  # fmt: skip
tame_kinds = st.sampled_from(_TAME)
chaos_kinds = st.sampled_from(_TAME + ["raw", "raw", "undefined"])


class _Gen:
    """Generator state while drawing one program: items and the stack height.

    ``depth`` is the generator's belief about the stack height; it is exact
    except after "raw" instructions, whose effect is approximated.  It only
    steers choices, so being slightly off is harmless.
    """

    def __init__(self, draw: st.DrawFn, depth: int = 0, prefix: str = "") -> None:
        self.draw = draw
        #: A quarter of the programs may break the rules (underflows, absurd
        #: offsets, bad jumps, undefined opcodes); the rest should mostly run
        #: to their end, so that the end states and gas get compared.
        self.chaos = draw(st.integers(0, 3)) == 0
        self.items: list[Item] = []
        self.depth = depth
        self.labels = 0
        self.prefix = prefix

    def label(self) -> str:
        self.labels += 1
        return f"{self.prefix}L{self.labels}"

    def emit(self, *items: Item) -> None:
        self.items.extend(items)

    def push_value(self, strategy: st.SearchStrategy[int]) -> None:
        v = self.draw(strategy)
        if self.draw(st.integers(0, 5)) == 0:  # a wider PUSH than needed
            width = self.draw(st.integers(max(1, (v.bit_length() + 7) // 8), 32))
            self.emit(push(v, width))
        else:
            self.emit(push(v))
        self.depth += 1

    def args(self, kinds: str) -> None:
        """Provide arguments for an instruction (``kinds`` is top of stack first).

        Trailing value arguments may be taken from what is already on the stack
        (so results of earlier instructions flow into later ones); the rest are
        pushed fresh, deepest first.
        """
        from_stack = 0
        while (
            from_stack < len(kinds)
            and kinds[len(kinds) - 1 - from_stack] == "v"
            and from_stack < self.depth
            and self.draw(st.integers(0, 2)) > 0
        ):
            from_stack += 1
        for kind in reversed(kinds[: len(kinds) - from_stack]):
            if kind == "v":
                self.push_value(values)
            elif kind == "m":
                self.push_value(wild_mem_args if self.chaos else mem_args)
            elif kind == "k":
                self.push_value(storage_keys)
            else:
                self.push_value(st.one_of(st.integers(0, 80), st.sampled_from([U256, 1 << 32])))
        self.depth -= len(kinds)

    def step(self) -> None:
        """Append one instruction (with its argument set-up)."""
        kind = self.draw(chaos_kinds if self.chaos else tame_kinds)
        if kind == "arith":
            op, kinds = ARITH[self.draw(st.sampled_from(sorted(ARITH)))]
            self.args(kinds)
            self.emit(bytes([op]))
            self.depth += 1
        elif kind == "env":
            self.emit(bytes([ENV[self.draw(st.sampled_from(sorted(ENV)))]]))
            self.depth += 1
        elif kind == "args":
            op, kinds, outs = WITH_ARGS[self.draw(st.sampled_from(sorted(WITH_ARGS)))]
            self.args(kinds)
            self.emit(bytes([op]))
            self.depth += outs
        elif kind == "dup":
            n = self.draw(st.integers(1, 16))
            while self.depth < n and (not self.chaos or self.draw(st.integers(0, 9)) > 0):
                self.push_value(values)
            self.emit(bytes([0x7F + n]))
            self.depth += 1
        elif kind == "swap":
            n = self.draw(st.integers(1, 16))
            while self.depth < n + 1 and (not self.chaos or self.draw(st.integers(0, 9)) > 0):
                self.push_value(values)
            self.emit(bytes([0x8F + n]))
        elif kind == "pop":
            if self.depth == 0 and not self.chaos:
                self.push_value(values)
            self.emit(b"\x50")
            self.depth = max(0, self.depth - 1)
        elif kind == "push":
            self.push_value(values)
        elif kind == "raw":
            # Any instruction on whatever the stack holds: underflows, huge
            # offsets from earlier results, and so on.
            name = self.draw(st.sampled_from(sorted(WITH_ARGS) + sorted(ARITH)))
            op, kinds, outs = WITH_ARGS[name] if name in WITH_ARGS else (*ARITH[name], 1)
            self.emit(bytes([op]))
            self.depth = max(0, self.depth - len(kinds)) + outs
        elif kind == "jump":
            self.jump()
        elif kind == "returndatacopy":
            # Return data is empty at the start of a frame: only (x, 0, 0)
            # succeeds, anything else must halt.
            size = self.draw(st.sampled_from([0, 0, 1])) if self.chaos else 0
            offset = self.draw(st.sampled_from([0, 0, 1])) if self.chaos else 0
            self.emit(push(size), push(offset), push(self.draw(st.integers(0, 64))), b"\x3e")
        else:
            self.emit(bytes([self.draw(st.sampled_from(UNDEFINED))]))

    def jump(self) -> None:
        """A forward jump: plain, conditional, computed, or deliberately bad."""
        target = self.label()
        good = ["plain", "jumpi", "jumpi", "computed"]
        style = self.draw(st.sampled_from(good + ["offby1", "pushdata", "far"] if self.chaos else good))
        skipped = [b"\xfe", b"\x5b\x00"]  # code that must never run
        if style == "plain":
            self.emit(PushLabel(target), b"\x56", *skipped, Label(target), b"\x5b")
        elif style == "jumpi":
            if self.depth > 0 and self.draw(st.booleans()):
                self.depth -= 1  # condition from the stack
            else:
                self.emit(push(self.draw(st.sampled_from([0, 1, 2, U256]))))
            # When not taken, a stack-neutral detour runs first, so the
            # taken and fall-through paths cost different gas.
            detour = self.draw(st.sampled_from([b"", b"\x5a\x50", b"\x58\x50", b"\x60\x07\x50", b"\x5f\x5f\x52"]))
            self.emit(PushLabel(target), b"\x57", detour, Label(target), b"\x5b")
        elif style == "computed":
            k = self.draw(st.integers(0, 40))
            self.emit(PushLabel(target, -k), push(k), b"\x01", b"\x56", *skipped, Label(target), b"\x5b")
        elif style == "offby1":
            self.emit(PushLabel(target, 1), b"\x56", Label(target), b"\x5b\x5b")
        elif style == "pushdata":
            # Lands on a 0x5b that is PUSH2 data, not a JUMPDEST: must halt.
            self.emit(PushLabel(target, 1), b"\x56", Label(target), b"\x61\x5b\x5b")
            self.depth += 1
        else:
            self.emit(push(self.draw(st.sampled_from([0xFFFF, 1 << 32, U256]))), b"\x56")

    def body(self, min_steps: int, max_steps: int) -> None:
        for _ in range(self.draw(st.integers(min_steps, max_steps))):
            self.step()

    def ending(self) -> None:
        """STOP, RETURN or REVERT of a memory range, INVALID, or running off the end."""
        end = self.draw(st.sampled_from(["stop", "return", "return", "revert", "off", "invalid"]))
        if end == "stop":
            self.emit(b"\x00")
        elif end == "invalid":
            self.emit(b"\xfe")
        elif end in ("return", "revert"):
            size = self.draw(st.one_of(st.integers(0, 96), st.sampled_from([32, 64])))
            offset = self.draw(st.integers(0, 64))
            self.emit(push(size), push(offset), b"\xf3" if end == "return" else b"\xfd")


calldata = st.one_of(st.just(b""), st.binary(max_size=100))
initial_storage = st.dictionaries(st.integers(0, 4), st.integers(0, 3) | values, max_size=3)


@st.composite
def straight_programs(draw: st.DrawFn) -> Case:
    """Straight-line programs (forward jumps only) with ample gas."""
    g = _Gen(draw)
    g.body(1, 40)
    g.ending()
    return Case(
        code=assemble(g.items),
        data=draw(calldata),
        storage=draw(initial_storage),
        value=(v := draw(st.sampled_from([0, 0, 1, 10**18]))),
        balance=v + draw(st.sampled_from([0, 5, 10**20])),
    )


@st.composite
def loop_programs(draw: st.DrawFn) -> Case:
    """A counter loop around a random body.

    Layout: PUSH n; L: JUMPDEST [DUP1] body POP* ; PUSH1 1 SWAP1 SUB DUP1 PUSH2 L
    JUMPI POP ending.  The body is made stack-neutral by trailing POPs so the
    counter survives; with n = 0 the counter wraps and the loop runs until it
    is out of gas, which is a case worth having too.
    """
    g = _Gen(draw, prefix="outer")
    g.body(0, 4)
    base = g.depth
    n = draw(st.sampled_from([0, 1, 2, 3]) | st.integers(1, 40) | st.integers(1, 40))
    top = g.label()
    g.emit(push(n), Label(top), b"\x5b")
    g.depth += 1
    inner = _Gen(draw, prefix="body")
    if draw(st.booleans()):
        inner.emit(b"\x80")  # a copy of the counter for the body to use
        inner.depth = 1
    inner.body(1, 10)
    g.emit(*inner.items)
    g.emit(*([b"\x50"] * max(0, inner.depth)))
    g.emit(b"\x60\x01\x90\x03\x80", PushLabel(top), b"\x57\x50")
    g.depth = base
    g.body(0, 3)
    g.ending()
    return Case(
        code=assemble(g.items),
        data=draw(calldata),
        gas=LOOP_GAS if n else RUNAWAY_GAS,
        storage=draw(initial_storage),
    )


@st.composite
def deep_stack_programs(draw: st.DrawFn) -> Case:
    """Stack near the 1024 limit: overflow by PUSH/DUP/env reads, or just under it."""
    n = draw(st.integers(1000, 1024))
    g = _Gen(draw, depth=n)
    g.emit(b"\x5f" * n)
    g.body(1, 8)
    g.ending()
    return Case(code=assemble(g.items))


@st.composite
def tight_gas(draw: st.DrawFn, programs: st.SearchStrategy[Case]) -> Case:
    """The same programs with a gas limit just around what they need.

    The boundary is where block-wise gas charging, the SSTORE 2300-gas
    sentry (EIP-2200) and memory expansion can go wrong, so the limit is the
    gas py-evm used minus/plus a little.
    """
    case = draw(programs)
    ref = run_pyevm(case.code, **case.kwargs())
    used = ref.gas_used if ref.outcome != "halt" else draw(st.integers(0, 3000))
    delta = draw(st.one_of(st.integers(-40, 3), st.integers(-3000, 3000)))
    return attrs.evolve(case, gas=max(0, used + delta))


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------

COMMON = settings(
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Multiplies every example budget, e.g. MISSIVE_DIFF_SCALE=20 for a long soak;
#: the defaults keep the whole file well under a minute and a half.
SCALE = float(os.environ.get("MISSIVE_DIFF_SCALE", "1"))


def examples(n: int) -> settings:
    """COMMON settings with ``n`` examples (scaled by MISSIVE_DIFF_SCALE)."""
    return settings(COMMON, max_examples=max(1, int(n * SCALE)))


@examples(800)
@given(straight_programs())
def test_straight_line_programs(case: Case) -> None:
    check(case)


@examples(400)
@given(loop_programs())
def test_loop_programs(case: Case) -> None:
    check(case)


@examples(400)
@given(st.one_of(tight_gas(straight_programs()), tight_gas(loop_programs())))
def test_tight_gas(case: Case) -> None:
    check(case)


@examples(100)
@given(deep_stack_programs())
def test_deep_stack(case: Case) -> None:
    check(case)


@examples(200)
@given(straight_programs())
def test_static_runs(case: Case) -> None:
    """Read-only runs: SSTORE, TSTORE and LOG must halt, everything else as usual."""
    check(attrs.evolve(case, is_static=True, value=0))


# --------------------------------------------------------------------------
# Hand-written regressions
# --------------------------------------------------------------------------


def _h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


REGRESSIONS: dict[str, Case] = {
    "empty code": Case(code=b""),
    "return 32 bytes of MSTORE": Case(code=_h("602a 5f 52 6020 5f f3")),
    "revert with data keeps gas": Case(code=_h("6001 5f 52 6020 5f fd")),
    "sstore clear refund (original nonzero)": Case(
        code=_h("5f 6001 55 00"), storage={1: 5}
    ),
    "sstore set then reset (dirty slot refund)": Case(
        code=_h("6007 6002 55 5f 6002 55 00"), storage={}
    ),
    "sstore restore original": Case(code=_h("6009 6003 55 6004 6003 55 00"), storage={3: 4}),
    "sstore stipend sentry (gas 2300 left)": Case(code=_h("6001 5f 55 00"), gas=2306),
    "sstore just above sentry": Case(code=_h("6001 5f 55 00"), gas=2307 + 20000 + 2100),
    "sload cold then warm": Case(code=_h("5f 54 5f 54 01 5f 52 6020 5f f3"), storage={0: 3}),
    "tstore/tload roundtrip": Case(code=_h("6005 6001 5d 6001 5c 5f 52 6020 5f f3")),
    "mcopy overlapping": Case(
        code=_h("7f" + "11" * 32 + "5f 52 6020 6001 5f 5e 6040 5f f3")
    ),
    "keccak of empty": Case(code=_h("5f 5f 20 5f 52 6020 5f f3")),
    "exp with big exponent": Case(code=_h("7f" + "ff" * 32 + "6003 0a 5f 52 6020 5f f3")),
    "signextend": Case(code=_h("60ff 5f 0b 5f 52 6020 5f f3")),
    "sar of negative": Case(code=_h("7f" + "80" + "00" * 31 + "60ff 1d 5f 52 6020 5f f3")),
    "byte out of range": Case(code=_h("60ff 6020 1a 5f 52 6020 5f f3")),
    "sdiv min by -1": Case(
        code=_h("7f" + "ff" * 32 + "7f80" + "00" * 31 + "05 5f 52 6020 5f f3")
    ),
    "smod negative": Case(code=_h("6003 7f" + "ff" * 31 + "f9 07 5f 52 6020 5f f3")),
    "addmod/mulmod mod zero": Case(code=_h("5f 6002 6003 08 5f 6002 6003 09 01 5f 52 6020 5f f3")),
    "gas opcode": Case(code=_h("5a 5f 52 6020 5f f3"), gas=12345),
    "pc and codesize": Case(code=_h("58 38 01 5f 52 6020 5f f3")),
    "codecopy past end pads zeros": Case(code=_h("6040 6005 5f 39 6040 5f f3")),
    "calldataload past end": Case(code=_h("6002 35 5f 52 6020 5f f3"), data=_h("aabbcc")),
    "calldatacopy": Case(code=_h("6010 6001 6003 37 6020 5f f3"), data=bytes(range(40))),
    "returndatacopy out of bounds": Case(code=_h("6001 5f 5f 3e 00")),
    "returndatacopy zero size": Case(code=_h("5f 5f 5f 3e 00")),
    "jump into push data": Case(code=_h("6003 56 615b5b 00")),
    "jump to jumpdest": Case(code=_h("6004 56 fe 5b 00")),
    "jumpi not taken to bad target": Case(code=_h("5f 60ff 57 00")),
    "jumpi taken to bad target": Case(code=_h("6001 60ff 57 00")),
    "jump target beyond uint64": Case(code=_h("7f" + "ff" * 32 + "56")),
    "stack underflow": Case(code=_h("01")),
    "stack overflow by push0": Case(code=_h("5f" * 1025)),
    "exactly 1024 items": Case(code=_h("5f" * 1024 + "00")),
    "stack overflow in loop": Case(code=_h("5b 5f 5f 56")),
    "invalid opcode": Case(code=_h("fe")),
    "undefined opcode": Case(code=_h("0c")),
    "truncated push at end": Case(code=_h("61ff")),
    "out of gas in loop": Case(code=_h("5b 5f 56"), gas=5000),
    "out of gas on memory expansion": Case(code=_h("6001 63ffffffff 52 00")),
    "huge mstore offset": Case(code=_h("6001 7f" + "ff" * 32 + "52 00")),
    "msize after mstore8": Case(code=_h("6001 6040 53 59 5f 52 6020 5f f3")),
    "zero-size return at huge offset": Case(code=_h("5f 7f" + "ff" * 32 + "f3")),
    "log2": Case(code=_h("6001 6002 6020 5f a2 00")),
    "static sstore halts": Case(code=_h("6001 5f 55 00"), is_static=True),
    "static tstore halts": Case(code=_h("6001 5f 5d 00"), is_static=True),
    "static log halts": Case(code=_h("5f 5f a0 00"), is_static=True),
    "callvalue and caller": Case(code=_h("34 33 01 32 01 5f 52 6020 5f f3"), value=99),
    "selfbalance includes value": Case(code=_h("47 5f 52 6020 5f f3"), value=99, balance=1000),
    "block context": Case(code=_h("41 42 01 43 01 44 01 45 01 46 01 48 01 4a 01 3a 01 5f 52 6020 5f f3")),
    "blobhash": Case(code=_h("5f 49 6001 49 01 5f 52 6020 5f f3")),
    "counter loop": Case(
        code=_h("6064 5b 6001 90 03 80 6002 57 50 00"), gas=LOOP_GAS
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REGRESSIONS.values()), ids=list(REGRESSIONS))
def test_regression(case: Case) -> None:
    check(case)


# --------------------------------------------------------------------------
# A real compiled contract, call after call
# --------------------------------------------------------------------------

TOKEN_SOURCE = REPO / "tools" / "bench" / "contracts" / "Token.vy"


def _abi_call(signature: str, *args: int | bytes) -> bytes:
    """Calldata for ``signature`` with static arguments (uint or 20-byte address)."""
    from Crypto.Hash import keccak

    selector = keccak.new(digest_bits=256, data=signature.encode()).digest()[:4]
    words = [a.rjust(32, b"\0") if isinstance(a, bytes) else a.to_bytes(32, "big") for a in args]
    return selector + b"".join(words)


def test_vyper_token_calls() -> None:
    """Deploy the benchmark's Vyper ERC20 and call it repeatedly in both VMs.

    Random programs rarely look like compiler output (ABI dispatch, hashed
    mapping slots, checked arithmetic, string returns), so this drives a
    real contract through a sequence of calls, carrying storage from call to
    call the way the actor runtime does, and compares every step.

    py-evm runs the init code as a create message, which also charges the
    200-gas-per-byte code deposit; Missive's ``execute`` runs init code as a
    plain frame (deploying is the runtime's job), so the deposit is added to
    our figure before comparing.  (py-evm charges EIP-3860 initcode words only
    when the creator is the transaction origin; here it is not.)
    """
    vyper = pytest.importorskip("vyper")
    out = vyper.compile_code(TOKEN_SOURCE.read_text(), output_formats=["bytecode", "bytecode_runtime"])
    init = bytes.fromhex(out["bytecode"][2:]) + (10**6).to_bytes(32, "big")
    runtime = bytes.fromhex(out["bytecode_runtime"][2:])
    token = bytes.fromhex("00000000000000000000000000000000000070c3")
    alice, bob, carol = (bytes.fromhex(f"{n:040x}") for n in (0xA11CE, 0xB0B, 0xCA201))

    from tests.evm_oracle import PyEvmWorld

    world = PyEvmWorld(block=BLOCK)
    deployed = execute(init, address=token, caller=alice, block=BLOCK)
    computation = world.apply(code=init, address=token, caller=alice, create=True, gas=10_000_000)
    assert deployed.success and computation.is_success
    assert deployed.output == bytes(computation.output) == runtime
    assert BLOCK.origin != alice
    deposit = 200 * len(runtime)
    assert deployed.gas_used + deposit == 10_000_000 - computation.get_gas_remaining()
    storage = {k: v for k, v in deployed.storage_writes.items() if v}
    assert world.storage_of(token, storage) == storage

    steps = [
        (alice, _abi_call("transfer(address,uint256)", bob, 100)),
        (bob, _abi_call("transfer(address,uint256)", carol, 40)),
        (carol, _abi_call("transfer(address,uint256)", alice, 41)),  # underflow: reverts
        (bob, _abi_call("approve(address,uint256)", carol, 30)),
        (carol, _abi_call("transferFrom(address,address,uint256)", bob, alice, 30)),
        (carol, _abi_call("transferFrom(address,address,uint256)", bob, alice, 1)),  # allowance spent
        (alice, _abi_call("transfer(address,uint256)", alice, 5)),  # to self
        (alice, _abi_call("transfer(address,uint256)", bob, 10**6 - 100 - 5 + 30)),  # alice's whole balance
        (alice, _abi_call("balanceOf(address)", bob)),
        (alice, _abi_call("name()")),
        (alice, _abi_call("totalSupply()")),
        (alice, _abi_call("nonexistent()")),  # no such function: reverts
        (alice, b"\xa9\x05\x9c"),  # truncated selector
        (alice, _abi_call("transfer(address,uint256)", bob)[:-5]),  # short calldata
    ]
    for caller, data in steps:
        got = execute(runtime, address=token, caller=caller, data=data, storage=storage, block=BLOCK)
        c = world.apply(code=runtime, address=token, caller=caller, data=data, gas=10_000_000)
        want_outcome = "success" if c.is_success else "revert" if not c.should_burn_gas else "halt"
        got_outcome = "success" if got.success else "halt" if got.status.is_exceptional_halt else "revert"
        where = f"\ncall 0x{data.hex()} from 0x{caller.hex()}\n  missive: {got}\n  py-evm: {want_outcome} {c.output!r}"
        assert got_outcome == want_outcome, where
        assert got.output == bytes(c.output), where
        assert got.gas_used == 10_000_000 - c.get_gas_remaining(), where
        if got.success:
            assert got.gas_refund == c.get_gas_refund(), where
            want_logs = tuple((bytes(a), tuple(t), bytes(d)) for a, t, d in c.get_log_entries())
            assert tuple((x.address, x.topics, x.data) for x in got.logs) == want_logs, where
            storage.update(got.storage_writes)
            storage = {k: v for k, v in storage.items() if v}
        assert world.storage_of(token, storage) == storage, where


# --------------------------------------------------------------------------
# Compiled (mypyc) build against the pure-Python build
# --------------------------------------------------------------------------

#: Runs inside a subprocess so MISSIVE_PURE_PYTHON (read at import) can differ.
_WORKER = r"""
import json, sys
from missive.vm import execute
from missive.vm.types import BlockContext
import missive.vm as vm
spec = json.load(sys.stdin)
block = BlockContext(**{k: (bytes.fromhex(v) if isinstance(v, str) else
                            tuple(bytes.fromhex(x) for x in v) if isinstance(v, list) else v)
                        for k, v in spec["block"].items()})
out = []
for c in spec["cases"]:
    r = execute(bytes.fromhex(c["code"]), address=bytes.fromhex(spec["address"]),
                caller=bytes.fromhex(spec["caller"]), value=c["value"], balance=c["balance"],
                data=bytes.fromhex(c["data"]), gas=c["gas"],
                storage={int(k): v for k, v in c["storage"].items()},
                block=block, is_static=c["is_static"])
    out.append([r.status.name, r.output.hex(), r.gas_used, r.gas_refund,
                sorted([str(k), str(v)] for k, v in r.storage_writes.items()),
                [[l.address.hex(), [str(t) for t in l.topics], l.data.hex()] for l in r.logs]])
info = vm.build_info() if hasattr(vm, "build_info") else {}
print(json.dumps({"results": out, "compiled": bool(info.get("compiled", False))}))
"""


def _sample_cases(n: int) -> list[Case]:
    """A fixed sample of generated programs (derandomized, so the same every run)."""
    found: list[Case] = []

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.one_of(straight_programs(), loop_programs(), tight_gas(straight_programs())))
    def collect(case: Case) -> None:
        found.append(case)

    collect()
    return found


def _run_build(cases: list[Case], pure: bool) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("MISSIVE_PURE_PYTHON", None)
    if pure:
        env["MISSIVE_PURE_PYTHON"] = "1"
    block = {
        k: (v.hex() if isinstance(v, bytes) else [x.hex() for x in v] if isinstance(v, tuple) else v)
        for k, v in BLOCK.fields().items()
    }
    spec = {
        "address": ADDRESS.hex(),
        "caller": CALLER.hex(),
        "block": block,
        "cases": [c.to_json() for c in cases],
    }
    proc = subprocess.run(
        [sys.executable, "-c", _WORKER],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_pure_python_build_matches_compiled() -> None:
    """The mypyc build and the pure-Python build must give identical results.

    mypyc changes integer and bytes semantics at the edges (fixed-width ints,
    overflow checks, bytearray views), so the compiled VM is checked against
    the interpreter it was compiled from, and both against py-evm.
    """
    cases = list(REGRESSIONS.values()) + _sample_cases(60)
    pure = _run_build(cases, pure=True)
    default = _run_build(cases, pure=False)
    assert not pure["compiled"], "MISSIVE_PURE_PYTHON=1 did not force the pure-Python build"
    if os.environ.get("MISSIVE_EXPECT_COMPILED") == "1":
        assert default["compiled"], "MISSIVE_EXPECT_COMPILED=1 but the default build is not compiled"
    if not default["compiled"]:
        warnings.warn("the VM is not mypyc-compiled here: pure vs compiled compares pure with pure", stacklevel=1)
    for case, a, b in zip(cases, pure["results"], default["results"], strict=True):
        assert a == b, f"pure vs compiled differ on {case.describe()}:\n  pure:     {a}\n  compiled: {b}"
    # The pure build must also agree with py-evm (the compiled one is covered above).
    for case, a in zip(cases, pure["results"], strict=True):
        want = theirs(case)
        status = a[0]
        got = "success" if status == "SUCCESS" else "revert" if status == "REVERT" else "halt"
        assert (got, bytes.fromhex(a[1]), a[2]) == (want.outcome, want.output, want.gas_used), (
            f"pure build vs py-evm on {case.describe()}:\n  pure: {a}\n  py-evm: {want}"
        )
