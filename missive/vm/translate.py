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

Threaded code
-------------
The interpreter does not decode ``ops`` as it runs: each block's instructions
are also made into a chain of :class:`Ins` objects (``Block.first``), one per
instruction, holding the opcode, the first seven fields and the values of the
constants among the first three operands, each linked to the next.  Reading a
field is then a load from a native object instead of a bounds-checked list
read and an unboxing, and a constant operand needs no second list read.  The
rarer instructions (``Frame.execute_other``) and a taken side exit's
moves still read ``ops`` from the instruction's ``at``.  Traces are threaded
when translated, basic blocks when first run (``Program.block``): most never
run, and the objects (152 bytes each) take about 1.3 times the memory of
``ops`` (SnailTracer's traces: 5.8 MB against 4.4 MB).

Traces
------
What runs is not one basic block at a time but a *trace* starting at one: the
translator keeps going, with the same symbolic stack, into the block a static
JUMP goes to and past a JUMPI, until a block repeats too often, a jump is
computed at run time, the code halts, or the trace is long enough.  A JUMPI
inside a trace becomes a side exit (``R_X*``) that, when taken, carries its own
moves; the way the trace continues needs none.  It continues with the jump of
a backward JUMPI (a loop's back edge) and of a JUMPI whose fall-through only
reverts (solc jumps over its panic code), else with the fall-through.  So
moves and block entries happen at trace ends, taken side exits and computed
jumps only (a function's return address pushed inside the trace makes its
return a static jump too).

Gas is charged per *segment*: the basic blocks from the entry or a side exit
to the next side exit or the end, on entry and by each side exit that falls
through.  A segment runs all through or ends in an exceptional halt, which
discards all effects and consumes all gas whichever instruction causes it, so
this is the EVM's outcome, as for one basic block (below); GAS readers'
``rest`` counts to the segment's end.  The trace's stack bounds and first
segment's gas are checked on entry; if they fail, which the first basic block
alone might not, the interpreter runs that basic block instead
(``Program.blocks``), whose checks are exact.  Traces are translated when first
entered (``Program.trace``).

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

from missive.vm import arith
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

# Side exits of traces (see "Traces" above): a JUMPI whose other way the trace continues with.
#: [R_X*, block, a, b, delta, moves, gas, segment, (dst, src) * moves]: if the
#: condition on a (and b) holds, make the stack real with the moves, move the
#: stack pointer by delta and continue at block (-1: not a JUMPDEST); else
#: charge the static gas of the segment that follows and fall through.
R_XNZ: Final = 0x10B  # a != 0
R_XZ: Final = 0x10C  # a == 0
R_XLT: Final = 0x10D  # a < b
R_XGT: Final = 0x10E  # a > b
R_XEQ: Final = 0x10F  # a == b
R_XGE: Final = 0x110  # a >= b
R_XLE: Final = 0x111  # a <= b
R_XNE: Final = 0x112  # a != b
R_XSLT: Final = 0x113  # a < b, signed
R_XSGE: Final = 0x114  # a >= b, signed
R_XSGT: Final = 0x115  # a > b, signed
R_XSLE: Final = 0x116  # a <= b, signed

_FUSED_BRANCH: Final = {op.LT: R_JLT, op.GT: R_JGT, op.EQ: R_JEQ, op.ISZERO: R_JZ}
_FUSED_EXIT: Final = {
    op.LT: R_XLT, op.GT: R_XGT, op.EQ: R_XEQ, op.ISZERO: R_XZ, op.SLT: R_XSLT, op.SGT: R_XSGT,
}  # fmt: skip
#: The side exit taken when the comparison is false.
_FUSED_EXIT_NOT: Final = {
    op.LT: R_XGE, op.GT: R_XLE, op.EQ: R_XNE, op.ISZERO: R_XNZ, op.SLT: R_XSGE, op.SGT: R_XSLE,
}  # fmt: skip
#: A trace stops after this many basic blocks or EVM instructions, and before
#: a basic block it already holds this many times (a loop unrolled, a
#: function inlined at each call).
MAX_TRACE_BLOCKS: Final = 24
MAX_TRACE_INSTRUCTIONS: Final = 400
MAX_TRACE_REPEATS: Final = 3
#: Bytes of code all of a program's traces may translate: this many times its
#: size, plus a base (about 16 full traces of the smallest programs).
TRACE_BUDGET_FACTOR: Final = 16
TRACE_BUDGET_BASE: Final = 16 * 1024

#: Instructions that read the exact gas left and so carry ``rest``.
GAS_READERS: Final = frozenset(
    {op.GAS, op.SSTORE, op.CALL, op.CALLCODE, op.DELEGATECALL, op.STATICCALL, op.CREATE, op.CREATE2}
)


@final
class Ins:
    """One register instruction as the interpreter runs it (see "Threaded code").

    ``f1``..``f7`` are the instruction's first fields as in ``Block.ops``
    (unused ones 0); ``k1``..``k3`` the values of the constants that operand
    fields ``f1``..``f3`` name (else 0), and ``c2`` that of ``f2`` as an
    object, which moves and MSTORE copy as is.
    """

    def __init__(self, o: i64, at: i64) -> None:
        self.o = o
        #: where the instruction starts in the block's ``ops``: the rarer
        #: instructions read their fields there, side exits their moves
        self.at = at
        self.f1: i64 = 0
        self.f2: i64 = 0
        self.f3: i64 = 0
        self.f4: i64 = 0
        self.f5: i64 = 0
        self.f6: i64 = 0
        self.f7: i64 = 0
        self.k1: int = 0
        self.k2: int = 0
        self.k3: int = 0
        self.c2: object = None
        #: the instruction after this one (itself after the block's last)
        self.nxt: Ins = self


#: The code of a block not yet threaded (never run).
_NO_CODE: Final = Ins(R_END, 0)


@final
class Block:
    """One translated basic block or trace (see the module docstring for the format)."""

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
        #: for each gas segment (the entry's first, then each side exit's), its
        #: basic blocks as (start pc, stack height relative to entry, static gas)
        self.paths: list[list[int]] = []
        #: register slots the block uses above the entry stack pointer: its
        #: highest stack height and its temporaries above that
        self.reach: i64 = max_height
        #: ``ops`` as threaded code, the first instruction (made by ``_thread``;
        #: for a basic block, when first run: ``Program.block``)
        self.first = _NO_CODE


@final
class Program:
    """Translated code: basic blocks, traces (made on first use), the JUMPDEST table."""

    def __init__(
        self,
        code: bytes,
        code_hash: bytes,
        blocks: list[Block],
        jump_table: list[i64],
        starts: list[int],
        jumpdests: list[bool],
    ) -> None:
        self.code = code
        self.code_hash = code_hash
        #: the basic blocks: run when a trace's entry checks fail
        self.blocks = blocks
        #: traces[i] is the trace starting at basic block i, once translated
        self.traces: list[Block | None] = [None] * len(blocks)
        #: jump_table[pc] is the block starting at JUMPDEST ``pc``, or -1
        self.jump_table = jump_table
        self.starts = starts
        self.jumpdests = jumpdests
        #: bytes of code that traces may still translate: a bound on the work
        #: code can cause by entering many blocks once each (a trace translates
        #: up to MAX_TRACE_INSTRUCTIONS instructions, its entry may pay for one)
        self.trace_budget = TRACE_BUDGET_FACTOR * len(code) + TRACE_BUDGET_BASE

    def block(self, index: int) -> Block:
        """Basic block ``index``, threaded on first use (most never run: traces stand in)."""
        block = self.blocks[index]
        if block.first is _NO_CODE:
            block.first = _thread(block.ops, block.consts)
        return block

    def trace(self, index: int) -> Block:
        """The trace starting at basic block ``index``, translated on first use.

        Once the program's translation budget is spent, the basic block
        stands in for the trace (same meaning, only slower).
        """
        if self.trace_budget <= 0:
            block = self.block(index)
        else:
            block = _translate(self.code, self.starts, index, self.jumpdests, True)
            n = len(self.code)
            for path in block.paths:
                for i in range(0, len(path), 3):
                    start = path[i]
                    self.trace_budget -= _block_end(self.starts, _index_of(self.starts, start), n) - start
        self.traces[index] = block
        return block


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
        if nxt < n and (
            b in op.TERMINATORS or b == op.JUMPI or not op.is_defined(b) or count >= MAX_BLOCK_INSTRUCTIONS
        ):
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
        self.top = 0  # highest stack height reached (relative to entry)

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
        if self.height > self.top:
            self.top = self.height

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

    def moves(self) -> list[int]:
        """The parallel move that makes the real stack match the symbolic one, as (dst, src) pairs in order."""
        out: list[int] = []
        pending = {pos + BIAS: src for pos, src in self.sym.items() if src != pos + BIAS and pos < self.height}
        while pending:
            sources = [s for s in pending.values() if s >= 0]
            ready = [d for d in pending if d not in sources]
            if ready:
                for d in ready:
                    out += [d, pending.pop(d)]
                continue
            # Only cycles remain: park one destination's value in a temporary.
            d = next(iter(pending))
            t = self.temp()
            out += [t, d]
            for k, s in pending.items():
                if s == d:
                    pending[k] = t
        return out

    def materialize(self) -> None:
        """Emit the parallel move that makes the real stack match the symbolic one."""
        pairs = self.moves()
        for i in range(0, len(pairs), 2):
            self.ops += [R_MOV, pairs[i], pairs[i + 1]]


_FOLDABLE: Final = frozenset(
    {
        op.ADD, op.MUL, op.SUB, op.DIV, op.SDIV, op.MOD, op.SMOD, op.SIGNEXTEND, op.LT, op.GT, op.SLT,
        op.SGT, op.EQ, op.ISZERO, op.AND, op.OR, op.XOR, op.NOT, op.BYTE, op.SHL, op.SHR, op.SAR,
    }
)  # fmt: skip


def _fold(b: int, v: list[int]) -> int:
    """The value of pure instruction ``b`` on constant operands ``v`` (EVM pop order)."""
    mask = (1 << 256) - 1
    if b == op.ADD:
        return (v[0] + v[1]) & mask
    if b == op.MUL:
        return (v[0] * v[1]) & mask
    if b == op.SUB:
        return (v[0] - v[1]) & mask
    if b == op.DIV:
        return v[0] // v[1] if v[1] else 0
    if b == op.SDIV:
        return arith.sdiv(v[0], v[1])
    if b == op.MOD:
        return v[0] % v[1] if v[1] else 0
    if b == op.SMOD:
        return arith.smod(v[0], v[1])
    if b == op.SIGNEXTEND:
        return arith.signextend(v[0], v[1])
    if b == op.LT:
        return 1 if v[0] < v[1] else 0
    if b == op.GT:
        return 1 if v[0] > v[1] else 0
    if b == op.SLT:
        return arith.slt(v[0], v[1])
    if b == op.SGT:
        return arith.sgt(v[0], v[1])
    if b == op.EQ:
        return 1 if v[0] == v[1] else 0
    if b == op.ISZERO:
        return 1 if v[0] == 0 else 0
    if b == op.AND:
        return v[0] & v[1]
    if b == op.OR:
        return v[0] | v[1]
    if b == op.XOR:
        return v[0] ^ v[1]
    if b == op.NOT:
        return mask ^ v[0]
    if b == op.BYTE:
        return arith.byte(v[0], v[1])
    if b == op.SHL:
        return arith.shl(v[0], v[1])
    if b == op.SHR:
        return arith.shr(v[0], v[1])
    return arith.sar(v[0], v[1])


def _block_end(starts: list[int], index: int, n: int) -> int:
    return starts[index + 1] if index + 1 < len(starts) else n


def _translate(code: bytes, starts: list[int], first: int, jumpdests: list[bool], follow: bool) -> Block:
    """The basic block ``first``, or with ``follow`` the trace from it.

    Temporaries go above the trace's highest stack height, which is known only
    at its end: the first pass finds it, the second emits the code (both take
    the same path, which does not depend on slot numbers).
    """
    _, top = _translate_pass(code, starts, first, jumpdests, follow, STACK_LIMIT * 4)
    block, _ = _translate_pass(code, starts, first, jumpdests, follow, top)
    if follow:
        block.first = _thread(block.ops, block.consts)
    return block


def _translate_pass(
    code: bytes, starts: list[int], first: int, jumpdests: list[bool], follow: bool, max_height: int
) -> tuple[Block, int]:
    n = len(code)
    bb = _BlockBuilder(max_height)
    index = first
    start = starts[index]
    end = _block_end(starts, index, n)
    next_block = index + 1 if index + 1 < len(starts) else -1
    # Gas is charged per *segment*: the basic blocks from the trace's entry or
    # a side exit to the next side exit or the trace's end, which run either
    # all or (up to an exceptional halt) none.
    first_gas = 0
    gas = 0  # static gas of the segment so far
    block_gas = 0  # static gas of the current basic block
    gas_at = -1  # where this segment's R_GAS amount goes (-1: the first, charged on entry)
    rests: list[int] = []  # GAS readers in the segment: ops index of ``rest``, segment gas up to them
    path: list[int] = [start, 0]  # the segment's basic blocks: start pc, height at entry, gas
    paths: list[list[int]] = []
    exited = False  # the last basic block ended in a side exit
    exit_at = -1  # where that side exit starts in ``ops``
    visited = {index: 1}  # basic block -> times in the trace
    blocks_in = 1
    instructions = 0
    closed = False  # the trace already ends in a halting instruction
    pc = start
    while True:
        b = code[pc] if pc < end else -1
        follow_to = -1  # basic block the trace continues into, if any
        jumped = False  # the basic block ended in JUMP or JUMPI (else it falls through)
        if pc >= end:
            # Fell off the end of the basic block into the next one.
            follow_to = next_block
        elif not op.is_defined(b):
            bb.ops += [R_INVALID, b]
            closed = True
        else:
            gas += op.STATIC_GAS[b]
            block_gas += op.STATIC_GAS[b]
            instructions += 1
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
                    next_block = -1
                else:
                    dest = bb.consts[~target]
                    if dest < n and jumpdests[dest]:
                        follow_to = next_block = _index_of(starts, dest)
                    else:
                        bb.ops += [R_BAD_JUMP, target]
                        closed = True
                jumped = True
                pc = end
            elif b == op.JUMPI:
                target = bb.pop()
                cond = bb.pop()
                if target >= 0:
                    bb.ops += [R_JUMPI, target, cond]
                else:
                    dest = bb.consts[~target]
                    blk = _index_of(starts, dest) if dest < n and jumpdests[dest] else -1
                    last = bb.last_op_at
                    fusable = (
                        last >= 0
                        and bb.ops[last] in _FUSED_EXIT
                        and bb.ops[last + 1] == cond
                        and cond not in bb.sym.values()
                    )
                    fall = next_block
                    fall_ok = (
                        follow
                        and fall >= 0
                        and visited.get(fall, 0) < MAX_TRACE_REPEATS
                        and blocks_in < MAX_TRACE_BLOCKS
                        and instructions < MAX_TRACE_INSTRUCTIONS
                    )
                    jump_ok = (
                        follow and blk >= 0 and visited.get(blk, 0) < MAX_TRACE_REPEATS and blocks_in < MAX_TRACE_BLOCKS
                    )
                    jump_ok = jump_ok and instructions < MAX_TRACE_INSTRUCTIONS
                    # Continue with the fall-through, unless it cannot be, or
                    # the jump goes back (a loop's back edge, usually taken), or
                    # the fall-through only reverts (a failed check: solc jumps
                    # over its panic code).
                    on_jump = jump_ok and (not fall_ok or dest <= pc_here or _halts_soon(code, starts, fall, jumpdests))
                    if on_jump or fall_ok:
                        # A side exit: the trace goes on one way (the jump's
                        # when ``on_jump``) and leaves the other way.
                        if fusable:
                            kind = (_FUSED_EXIT_NOT if on_jump else _FUSED_EXIT)[bb.ops[last]]
                            operands = bb.ops[last + 2 :]
                            del bb.ops[last:]
                        else:
                            kind = R_XZ if on_jump else R_XNZ
                            operands = [cond]
                        pairs = bb.moves()
                        exit_at = len(bb.ops)
                        second = operands[1] if len(operands) > 1 else 0
                        leave = fall if on_jump else blk
                        bb.ops += [kind, leave, operands[0], second, bb.height, len(pairs) // 2, 0, 0, *pairs]
                        follow_to = next_block = blk if on_jump else fall
                        exited = True
                    elif fusable and bb.ops[last] in _FUSED_BRANCH:
                        # The comparison's result feeds this JUMPI only: fuse them.
                        fused = _FUSED_BRANCH[bb.ops[last]]
                        operands = bb.ops[last + 2 :]
                        del bb.ops[last:]
                        bb.ops += [fused, blk, *operands]
                    else:
                        bb.ops += [R_JUMPI_S, blk, cond]
                jumped = True
                pc = end
            elif b in _FOLDABLE and all(bb.read(bb.height - 1 - i) < 0 for i in range(op.POPS[b])):
                # Every operand is a constant: compute it now (solc writes 1 << 255 as SHL).
                values = [bb.consts[~bb.pop()] for _ in range(op.POPS[b])]
                bb.push(bb.const(_fold(b, values)))
            else:
                operands = [bb.pop() for _ in range(op.POPS[b])]
                fields: list[int] = [b]
                dst = 0
                if op.PUSHES[b]:
                    dst = bb.result_slot()
                    fields.append(dst)
                fields += operands
                if b in GAS_READERS:
                    rests += [len(bb.ops) + len(fields), gas]
                    fields.append(0)
                bb.last_op_at = len(bb.ops)
                bb.ops += fields
                if op.PUSHES[b]:
                    bb.push(dst)
                if b in op.TERMINATORS:
                    closed = True
        if closed:
            break
        if pc < end:
            continue
        # The basic block ends here: continue the trace into ``follow_to``, or stop.
        if not jumped:
            follow_to = next_block
        if (
            not follow
            or follow_to < 0
            or visited.get(follow_to, 0) >= MAX_TRACE_REPEATS
            or blocks_in >= MAX_TRACE_BLOCKS
            or instructions >= MAX_TRACE_INSTRUCTIONS
        ):
            break
        visited[follow_to] = visited.get(follow_to, 0) + 1
        blocks_in += 1
        path.append(block_gas)
        block_gas = 0
        if exited:
            first_gas = _close_segment(bb.ops, gas_at, gas, rests, first_gas)
            paths.append(path)
            gas = 0
            # The side exit charges the next segment when it falls through.
            gas_at = exit_at + 6
            bb.ops[exit_at + 7] = len(paths)
            rests = []
            path = []
            exited = False
        index = follow_to
        start = starts[index]
        end = _block_end(starts, index, n)
        next_block = index + 1 if index + 1 < len(starts) else -1
        pc = start
        path += [start, bb.height]
        bb.last_op_at = -1
    path.append(block_gas)
    paths.append(path)
    first_gas = _close_segment(bb.ops, gas_at, gas, rests, first_gas)
    if not closed:
        # R_END with no next block (code ran out) is the implicit STOP.
        bb.materialize()
        bb.ops.append(R_END)
    top = max(bb.top, bb.height)
    block = Block(starts[first], bb.ops, bb.consts, first_gas, bb.min_pos, top, bb.height, next_block)
    block.paths = paths
    block.reach = top + bb.temps_used
    return block, top


def _width(o: int, ops: list[i64], at: int) -> int:
    """How many words of ``ops`` the instruction at ``at`` (opcode ``o``) takes."""
    if o >= R_XNZ:
        return 8 + 2 * ops[at + 5]
    if o >= R_MOV:
        return _R_WIDTH[o - R_MOV]
    return 1 + (1 if op.PUSHES[o] else 0) + op.POPS[o] + (1 if o in GAS_READERS else 0)


def _operand_fields(o: int) -> tuple[int, int]:
    """The fields of opcode ``o`` among f1..f3 that are operands: (first, last), empty when first > last."""
    if o >= R_XNZ:
        return (2, 2) if o == R_XNZ or o == R_XZ else (2, 3)
    if o >= R_MOV:
        return _R_OPERANDS[o - R_MOV]
    first = 2 if op.PUSHES[o] else 1
    return first, min(3, first + op.POPS[o] - 1)


#: Widths and operand fields (first, last) of R_MOV .. R_JZ.
_R_WIDTH: Final = (3, 1, 2, 3, 3, 2, 2, 4, 4, 4, 3)
_R_OPERANDS: Final = ((2, 2), (1, 0), (1, 1), (1, 2), (2, 2), (1, 1), (1, 0), (2, 3), (2, 3), (2, 3), (2, 2))


def _thread(ops: list[i64], consts: list[int]) -> Ins:
    """``ops`` as a chain of :class:`Ins`, each linked to the next; returns the first."""
    first = _NO_CODE
    last = _NO_CODE
    at = 0
    while at < len(ops):
        o = ops[at]
        width = _width(o, ops, at)
        ins = Ins(o, at)
        fields = [ops[at + j] if j < width else 0 for j in range(1, 8)]
        ins.f1, ins.f2, ins.f3, ins.f4, ins.f5, ins.f6, ins.f7 = fields
        lo, hi = _operand_fields(o)
        for j in range(lo, hi + 1):
            f = fields[j - 1]
            if f < 0:
                if j == 1:
                    ins.k1 = consts[~f]
                elif j == 2:
                    ins.k2 = consts[~f]
                    ins.c2 = consts[~f]
                else:
                    ins.k3 = consts[~f]
        if first is _NO_CODE:
            first = ins
        else:
            last.nxt = ins
        last = ins
        at += width
    return first


def _close_segment(ops: list[i64], gas_at: int, gas: int, rests: list[int], first_gas: int) -> int:
    """Fill in a finished segment's gas and its GAS readers' ``rest``; return the trace's entry gas."""
    for i in range(0, len(rests), 2):
        ops[rests[i]] = gas - rests[i + 1]
    if gas_at < 0:
        return gas
    ops[gas_at] = gas
    return first_gas


def _halts_soon(code: bytes, starts: list[int], index: int, jumpdests: list[bool]) -> bool:
    """Whether basic block ``index`` surely ends in REVERT or INVALID within a few blocks

    (following static jumps and fall-throughs, never a JUMPI): a failed check's code.
    """
    n = len(code)
    for _ in range(4):
        pc = starts[index]
        end = _block_end(starts, index, n)
        last_push = -1
        while pc < end:
            b = code[pc]
            if b == op.REVERT or b == op.INVALID or not op.is_defined(b):
                return True
            if b == op.JUMPI or b in op.TERMINATORS and b != op.JUMP:
                return False
            if b == op.JUMP:
                if last_push < 0 or last_push >= n or not jumpdests[last_push]:
                    return False
                index = _index_of(starts, last_push)
                break
            if op.PUSH1 <= b <= op.PUSH32:
                size = b - op.PUSH1 + 1
                last_push = int.from_bytes(code[pc + 1 : pc + 1 + size].ljust(size, b"\x00"), "big")
                pc += 1 + size
                continue
            last_push = -1
            pc += 1
        else:
            index += 1
            if index >= len(starts):
                return False
    return False


def _index_of(starts: list[int], pc: int) -> int:
    """The basic block starting at ``pc`` (a JUMPDEST, so a block start)."""
    lo = 0
    hi = len(starts) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if starts[mid] < pc:
            lo = mid + 1
        else:
            hi = mid
    return lo


def translate(code: bytes) -> Program:
    """Translate ``code`` (any bytes: hostile code is translated, then halts when run)."""
    jumpdests = valid_jumpdests(code)
    starts = _block_starts(code, jumpdests)
    blocks = [_translate(code, starts, i, jumpdests, False) for i in range(len(starts))]
    jump_table: list[i64] = [-1] * len(code)
    for i, pc in enumerate(starts):
        if pc < len(code) and jumpdests[pc]:
            jump_table[pc] = i
    return Program(code, keccak256(code), blocks, jump_table, starts, jumpdests)


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
