"""Translation of EVM stack code into Missive's register code.

Why translate
-------------
Most EVM instructions in compiled contracts only shuffle the stack (PUSH, DUP,
SWAP, POP, JUMPDEST): in a Vyper ERC20 transfer they are more than half of all
instructions executed.  Interpreting them one by one costs a dispatch and a
list write each.  We translate each *basic block* once into register code in
which those shuffles have disappeared into the choice of operands, and in which
the block's static gas and its stack bounds are checked once on entry.

Register format
---------------
A program is a list of :class:`Block`; each block has

* ``ops``: a flat ``list[int]`` of instructions, each ``[opcode, fields...]``.
  The opcode is the EVM opcode when the meaning is the same (ADD is 0x01...),
  or one of the ``R_*`` codes below (≥ 0x100) for register-only instructions.
  Fields come in this order: the destination (if the EVM instruction pushes a
  result), one operand per EVM stack input in EVM pop order (top first), then
  ``rest`` for instructions that must know the exact gas left (GAS, SSTORE, the
  CALL family, CREATE*): the static gas of the block's instructions after this
  one, which the block charged up front but which is not yet spent.
* ``consts``: the block's constants (PUSH data, PC, CODESIZE).

An operand ``o >= 0`` names the stack slot ``sp_at_block_entry + o - BIAS``;
``o < 0`` names the constant ``consts[~o]``.  A destination is always a slot.
Slots above the block's maximal EVM stack height are temporaries, used when a
value that DUP or SWAP left referenced would otherwise be overwritten.

Control leaves a block through ``R_END`` (the stack pointer moves by
``delta``; execution continues at ``next`` unless a jump chose another block),
through a jump op, or through a halting op (STOP, RETURN, REVERT, INVALID,
SELFDESTRUCT).  Before ``R_END`` the translator emits ``R_MOV`` instructions
that put the symbolic stack into real slots (a parallel move, with cycles
broken through a temporary), so every block can start at any stack height,
which makes the translation valid for every program, including jumps computed
at run time and blocks entered at different heights.

Equivalence with the EVM
------------------------
Charging a block's static gas (and checking its stack bounds) on entry gives
the same outcome as checking per instruction: a block only leaves at its end,
and any exceptional halt part-way discards all effects and consumes all gas
either way.  Only instructions that *read* the gas (GAS, the SSTORE stipend
check, the 63/64 rule) see the difference, and they add ``rest`` back.
"""

from __future__ import annotations

from typing import Final, final

from mypy_extensions import i64

from missive.vm import opcodes as op
from missive.vm.keccak import keccak256

BIAS: Final = 1024
STACK_LIMIT: Final = 1024
#: Blocks are cut after this many EVM instructions so that temporaries stay few.
MAX_BLOCK_INSTRUCTIONS: Final = 256

R_MOV: Final = 0x100  # [R_MOV, dst, src]
R_END: Final = 0x101  # [R_END]
R_JUMP: Final = 0x102  # [R_JUMP, target]           target computed at run time
R_JUMPI: Final = 0x103  # [R_JUMPI, target, cond]    target computed at run time
R_JUMPI_S: Final = 0x104  # [R_JUMPI_S, block, cond]  static target (-1: invalid)
R_BAD_JUMP: Final = 0x105  # [R_BAD_JUMP, target]      static JUMP to a non-JUMPDEST
R_INVALID: Final = 0x106  # [R_INVALID, opcode byte]
# A comparison whose only use is the JUMPI after it fuses with it (static target):
R_JLT: Final = 0x107  # [R_JLT, block, a, b]  jump if a < b
R_JGT: Final = 0x108  # [R_JGT, block, a, b]  jump if a > b
R_JEQ: Final = 0x109  # [R_JEQ, block, a, b]  jump if a == b
R_JZ: Final = 0x10A  # [R_JZ, block, a]      jump if a == 0 (ISZERO then JUMPI)

_FUSED_BRANCH: Final = {op.LT: R_JLT, op.GT: R_JGT, op.EQ: R_JEQ, op.ISZERO: R_JZ}

#: Instructions that read the exact gas left and so carry ``rest``.
GAS_READERS: Final = frozenset(
    {op.GAS, op.SSTORE, op.CALL, op.CALLCODE, op.DELEGATECALL, op.STATICCALL, op.CREATE, op.CREATE2}
)


@final
class Block:
    """One translated basic block (see the module docstring for the format)."""

    def __init__(
        self,
        start_pc: int,
        ops: list[i64],
        consts: list[int],
        gas: int,
        min_pos: i64,
        max_height: i64,
        delta: i64,
        next_block: i64,
    ) -> None:
        self.start_pc = start_pc
        self.ops = ops
        self.consts = consts
        #: static gas of every instruction in the block, charged on entry
        self.gas = gas
        #: lowest stack position (relative to entry) the block reads: needs sp >= -min_pos
        self.min_pos = min_pos
        #: highest EVM stack height (relative to entry) the block reaches
        self.max_height = max_height
        #: net change of the stack pointer when the block ends through R_END
        self.delta = delta
        #: block that follows when the block ends through R_END (-1: none)
        self.next_block = next_block


@final
class Program:
    """Translated code: blocks, the JUMPDEST table, and how many temporaries it needs."""

    def __init__(self, code: bytes, code_hash: bytes, blocks: list[Block], jump_table: list[i64], temps: int) -> None:
        self.code = code
        self.code_hash = code_hash
        self.blocks = blocks
        #: jump_table[pc] is the block starting at JUMPDEST ``pc``, or -1
        self.jump_table = jump_table
        #: most temporaries any block uses: the register file keeps this many
        #: slots above the highest stack height it has room for
        self.temps = temps


def valid_jumpdests(code: bytes) -> list[bool]:
    """JUMPDEST analysis: which offsets hold a JUMPDEST that is not PUSH data."""
    n = len(code)
    valid = [False] * n
    pc = 0
    while pc < n:
        b = code[pc]
        if b == op.JUMPDEST:
            valid[pc] = True
        elif op.PUSH1 <= b <= op.PUSH32:
            pc += b - op.PUSH1 + 1
        pc += 1
    return valid


def _block_starts(code: bytes, jumpdests: list[bool]) -> list[int]:
    """Offsets where blocks start: 0, every JUMPDEST, after every terminator/JUMPI."""
    starts = [0]
    n = len(code)
    pc = 0
    count = 0
    while pc < n:
        b = code[pc]
        if jumpdests[pc] and pc != starts[-1]:
            starts.append(pc)
            count = 0
        nxt = pc + 1
        if op.PUSH1 <= b <= op.PUSH32:
            nxt += b - op.PUSH1 + 1
        count += 1
        if nxt < n and (b in op.TERMINATORS or b == op.JUMPI or not op.is_defined(b) or count >= MAX_BLOCK_INSTRUCTIONS):
            starts.append(nxt)
            count = 0
        pc = nxt
    return starts


class _BlockBuilder:
    """Symbolic stack and emitted code for one block while it is translated."""

    def __init__(self, max_height: int) -> None:
        self.ops: list[i64] = []
        self.consts: list[int] = []
        self.const_index: dict[int, int] = {}
        self.sym: dict[int, int] = {}  # stack position -> operand
        self.height = 0
        self.min_pos = 0
        self.max_height = max_height
        self.next_temp = max_height
        self.temps_used = 0
        self.last_op_at = -1  # where the last emitted computing instruction starts

    def const(self, value: int) -> int:
        index = self.const_index.get(value)
        if index is None:
            index = len(self.consts)
            self.consts.append(value)
            self.const_index[value] = index
        return ~index

    def read(self, pos: int) -> int:
        if pos < self.min_pos:
            self.min_pos = pos
        return self.sym.get(pos, pos + BIAS)

    def pop(self) -> int:
        self.height -= 1
        pos = self.height
        if pos < self.min_pos:
            self.min_pos = pos
        return self.sym.pop(pos, pos + BIAS)

    def push(self, operand: int) -> None:
        self.sym[self.height] = operand
        self.height += 1

    def temp(self) -> int:
        slot = self.next_temp
        self.next_temp += 1
        self.temps_used += 1
        return slot + BIAS

    def result_slot(self) -> int:
        """Slot for a result about to be pushed: its own position unless still referenced."""
        slot = self.height + BIAS
        if slot in self.sym.values():
            return self.temp()
        return slot

    def materialize(self) -> None:
        """Emit the parallel move that makes the real stack match the symbolic one."""
        pending = {pos + BIAS: src for pos, src in self.sym.items() if src != pos + BIAS}
        while pending:
            sources = [s for s in pending.values() if s >= 0]
            ready = [d for d in pending if d not in sources]
            if ready:
                for d in ready:
                    self.ops += [R_MOV, d, pending.pop(d)]
                continue
            # Only cycles remain: park one destination's value in a temporary.
            d = next(iter(pending))
            t = self.temp()
            self.ops += [R_MOV, t, d]
            for k, s in pending.items():
                if s == d:
                    pending[k] = t


def _max_height(code: bytes, start: int, end: int) -> int:
    """Highest stack height (relative to entry) reached in code[start:end]."""
    h = 0
    top = 0
    pc = start
    while pc < end:
        b = code[pc]
        if op.is_defined(b):
            h += op.PUSHES[b] - op.POPS[b]
            top = max(top, h)
        pc += 1 + (b - op.PUSH1 + 1 if op.PUSH1 <= b <= op.PUSH32 else 0)
    return top


def _rest_gas(code: bytes, pc: int, end: int) -> int:
    """Static gas of the instructions after the one at ``pc`` up to ``end``."""
    total = 0
    b = code[pc]
    pc += 1 + (b - op.PUSH1 + 1 if op.PUSH1 <= b <= op.PUSH32 else 0)
    while pc < end:
        b = code[pc]
        total += op.STATIC_GAS[b]
        pc += 1 + (b - op.PUSH1 + 1 if op.PUSH1 <= b <= op.PUSH32 else 0)
    return total


def _translate_block(
    code: bytes, start: int, end: int, block_at: dict[int, int], jumpdests: list[bool], fallthrough: int
) -> tuple[Block, int]:
    bb = _BlockBuilder(_max_height(code, start, end))
    gas = 0
    pc = start
    n = len(code)
    next_block = fallthrough
    closed = False  # the block already ends in a halting instruction
    while pc < end:
        b = code[pc]
        if not op.is_defined(b):
            bb.ops += [R_INVALID, b]
            closed = True
            break
        gas += op.STATIC_GAS[b]
        if op.PUSH1 <= b <= op.PUSH32:
            size = b - op.PUSH1 + 1
            data = code[pc + 1 : pc + 1 + size]
            bb.push(bb.const(int.from_bytes(data.ljust(size, b"\x00"), "big")))
            pc += 1 + size
            continue
        pc_here = pc
        pc += 1
        if b == op.PUSH0:
            bb.push(bb.const(0))
        elif op.DUP1 <= b <= op.DUP16:
            bb.push(bb.read(bb.height - (b - op.DUP1 + 1)))
        elif op.SWAP1 <= b <= op.SWAP16:
            top = bb.height - 1
            other = top - (b - op.SWAP1 + 1)
            a, c = bb.read(top), bb.read(other)
            bb.sym[top], bb.sym[other] = c, a
        elif b == op.POP:
            bb.pop()
        elif b == op.JUMPDEST:
            pass
        elif b == op.PC:
            bb.push(bb.const(pc_here))
        elif b == op.CODESIZE:
            bb.push(bb.const(n))
        elif b == op.JUMP:
            target = bb.pop()
            if target >= 0:
                bb.ops += [R_JUMP, target]
            else:
                dest = bb.consts[~target]
                if dest < n and jumpdests[dest]:
                    next_block = block_at[dest]
                else:
                    bb.ops += [R_BAD_JUMP, target]
                    closed = True
            break
        elif b == op.JUMPI:
            target = bb.pop()
            cond = bb.pop()
            if target >= 0:
                bb.ops += [R_JUMPI, target, cond]
            else:
                dest = bb.consts[~target]
                blk = block_at[dest] if dest < n and jumpdests[dest] else -1
                last = bb.last_op_at
                if (
                    last >= 0
                    and bb.ops[last] in _FUSED_BRANCH
                    and bb.ops[last + 1] == cond
                    and cond not in bb.sym.values()
                ):
                    # The comparison's result feeds this JUMPI only: fuse them.
                    fused = _FUSED_BRANCH[bb.ops[last]]
                    operands = bb.ops[last + 2 :]
                    del bb.ops[last:]
                    bb.ops += [fused, blk, *operands]
                else:
                    bb.ops += [R_JUMPI_S, blk, cond]
            break
        else:
            operands = [bb.pop() for _ in range(op.POPS[b])]
            fields: list[int] = [b]
            dst = 0
            if op.PUSHES[b]:
                dst = bb.result_slot()
                fields.append(dst)
            fields += operands
            if b in GAS_READERS:
                fields.append(_rest_gas(code, pc_here, end))
            bb.last_op_at = len(bb.ops)
            bb.ops += fields
            if op.PUSHES[b]:
                bb.push(dst)
            if b in op.TERMINATORS:
                closed = True
                break
    if not closed:
        # R_END with no next block (code ran out) is the implicit STOP.
        bb.materialize()
        bb.ops.append(R_END)
    block = Block(start, bb.ops, bb.consts, gas, bb.min_pos, bb.max_height, bb.height, next_block)
    return block, bb.temps_used


def translate(code: bytes) -> Program:
    """Translate ``code`` (any bytes: hostile code is translated, then halts when run)."""
    jumpdests = valid_jumpdests(code)
    starts = _block_starts(code, jumpdests)
    block_at = {pc: i for i, pc in enumerate(starts)}
    blocks: list[Block] = []
    max_temps = 0
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(code)
        nxt = i + 1 if i + 1 < len(starts) else -1
        block, temps = _translate_block(code, start, end, block_at, jumpdests, nxt)
        blocks.append(block)
        max_temps = max(max_temps, temps)
    jump_table: list[i64] = [-1] * len(code)
    for pc, i in block_at.items():
        if pc < len(code) and jumpdests[pc]:
            jump_table[pc] = i
    return Program(code, keccak256(code), blocks, jump_table, max_temps)


_CACHE_LIMIT: Final = 4096
_cache: dict[bytes, Program] = {}


def program_for(code: bytes) -> Program:
    """The translation of ``code``, cached (code is immutable and content-addressed)."""
    program = _cache.get(code)
    if program is None:
        if len(_cache) >= _CACHE_LIMIT:
            del _cache[next(iter(_cache))]
        program = translate(code)
        _cache[code] = program
    return program
