"""The register machine: runs a translated :class:`~missive.vm.translate.Program`.

One :class:`Frame` runs one piece of code: the actor's own code for the
message, or another contract's code through DELEGATECALL/CALLCODE (which share
the actor's :class:`~missive.vm.state.RunState`).  ``Frame.run`` is the hot
loop.  It is written for mypyc: locals rather than attributes, an ``if`` chain
ordered by how often instructions occur in compiled contracts, and the common
arithmetic written inline; every other instruction is a small method named
after its opcode.  The pure-Python build runs the very same source.

Values are Python ints in [0, 2**256).  Each operand field is a stack slot
(``>= 0``, relative to the block's entry stack pointer, see ``translate``) or
a constant (``< 0``).
"""

from __future__ import annotations

import struct
from typing import Final, cast, final

from mypy_extensions import i64

from missive.vm import arith, messages
from missive.vm import opcodes as op
from missive.vm.arith import int_from_bytes
from missive.vm.errors import Halt
from missive.vm.keccak import EMPTY_KECCAK, keccak256
from missive.vm.state import RunState
from missive.vm.translate import (
    BIAS,
    R_BAD_JUMP,
    R_END,
    R_INVALID,
    R_JEQ,
    R_JGT,
    R_JLT,
    R_JUMP,
    R_JUMPI,
    R_JUMPI_S,
    R_JZ,
    R_MOV,
    R_XEQ,
    R_XGE,
    R_XGT,
    R_XLE,
    R_XLT,
    R_XNE,
    R_XNZ,
    R_XSGE,
    R_XSGT,
    R_XSLE,
    R_XSLT,
    R_XZ,
    STACK_LIMIT,
    Block,
    Program,
)
from missive.vm.types import Log, Status

MASK: Final = (1 << 256) - 1
#: Memory is capped far above what any realistic gas limit can pay for (32 MiB
#: costs over two billion gas), so a huge gas limit cannot become a memory bomb.
MAX_MEMORY: Final = 32 * 1024 * 1024
#: Stack slots a frame's register file starts with.  It grows, up to the EVM's
#: 1024, the first time a block needs more: most calls never come close, and
#: allocating (and freeing) all 1024 slots per call cost more than running a
#: whole ERC20 transfer's arithmetic.
INITIAL_STACK_ROOM: Final = 64
#: Memory is allocated in whole kibibytes, made by repeating this one
#: (``bytes(n)`` is a type call with argument parsing, several times slower).
ZERO_KIB: Final = bytes(1024)
#: KECCAK256 of no bytes (which touches no memory).
EMPTY_KECCAK_WORD: Final = int.from_bytes(EMPTY_KECCAK, "big")
#: A 32-byte word at an offset of memory: ``pack_into`` and ``unpack_from``
#: write and read it in place.  Slicing the bytearray instead costs a slice
#: object and a temporary copy, and a write of bytes into a bytearray slice a
#: second copy (CPython converts the bytes to a bytearray first).
_WORD: Final = struct.Struct("32s")
write_word: Final = _WORD.pack_into
read_word: Final = _WORD.unpack_from


#: ``Frame.words`` and ``Frame.dirty`` before memory is allocated (never written: empty).
NO_WORDS: Final[list[int | None]] = []
NO_FLAGS: Final[list[bool]] = []


def memory_cost(words: int) -> int:
    return 3 * words + words * words // 512


@final
class Frame:
    def __init__(
        self,
        state: RunState,
        program: Program,
        caller: int,
        value: int,
        data: bytes,
        gas: int,
        is_static: bool,
        depth: int,
    ) -> None:
        self.state = state
        self.program = program
        self.caller = caller
        self.value = value
        self.data = data
        self.gas = gas
        self.is_static = is_static
        self.depth = depth
        #: Memory as allocated: ``memory_words`` (what gas and MSIZE see) is
        #: the EVM's memory size, and the bytearray may run ahead of it, so
        #: that a call's small expansions do not each resize it.  Past the
        #: EVM size it is all zero bytes: every write is checked against that
        #: size first (``expand``).
        self.memory = bytearray()
        self.memory_words = 0
        #: Memory's 32-byte-aligned words as ints, for MLOAD and MSTORE at
        #: aligned offsets (nearly all in compiled code), which then convert
        #: nothing: ``words[i]`` is the word at ``32 * i``, or None when only
        #: ``memory`` knows it.  An aligned MSTORE writes only here and marks
        #: the word ``dirty``; every byte-level access first writes the dirty
        #: words of its range back (``sync_memory``), and a byte-level write
        #: forgets the words it touched (``forget_words``).  Both lists have
        #: one entry per 32 bytes of ``memory``.
        #: (Shared empty lists until memory is first allocated: most calls
        #: of a small message never touch memory.)
        self.words: list[int | None] = NO_WORDS
        self.dirty: list[bool] = NO_FLAGS
        self.returndata = b""
        self.reverted = False
        #: the stack, and the temporaries of the running block above it (a
        #: block's ``reach``); grown by ``enter`` when a block needs more
        self.regs: list[int] = [0] * INITIAL_STACK_ROOM

    # -- gas and memory --------------------------------------------------

    def charge(self, amount: int) -> None:
        gas = self.gas - amount
        if gas < 0:
            raise Halt(Status.OUT_OF_GAS, f"out of gas: needed {amount}, had {self.gas}")
        self.gas = gas

    def expand(self, offset: int, size: int) -> None:
        """Grow memory to cover [offset, offset+size) and charge for the growth."""
        if size == 0:
            return
        end = offset + size
        if end > MAX_MEMORY:
            raise Halt(Status.OUT_OF_GAS, f"memory access [{offset}, {end}) exceeds the {MAX_MEMORY}-byte memory limit")
        words = (end + 31) >> 5
        if words > self.memory_words:
            self.charge(memory_cost(words) - memory_cost(self.memory_words))
            self.memory_words = words
            if words << 5 > len(self.memory):
                self.allocate_memory(words << 5)

    def allocate_memory(self, size: int) -> None:
        """Grow ``memory`` to at least ``size`` bytes, with room to spare (at least doubling it)."""
        have = len(self.memory) >> 10
        kib = min(max((size + 1023) >> 10, 2 * have), MAX_MEMORY >> 10)
        self.memory += ZERO_KIB * (kib - have)
        # The new memory is all zero, and so are its words.
        if have == 0:
            self.words = [0] * (kib << 5)
            self.dirty = [False] * (kib << 5)
        else:
            self.words.extend([0] * ((kib - have) << 5))
            self.dirty.extend([False] * ((kib - have) << 5))

    def sync_memory(self, offset: int, size: int) -> None:
        """Write the words of [offset, offset+size) that aligned MSTOREs left in ``words`` only into ``memory``.

        The range must be inside memory (callers expand first).
        """
        words = self.words
        dirty = self.dirty
        memory = self.memory
        for w in range(offset >> 5, (offset + size + 31) >> 5):
            if dirty[w]:
                word = words[w]
                assert word is not None  # a dirty word is known
                write_word(memory, w << 5, word.to_bytes(32, "big"))
                dirty[w] = False

    def forget_words(self, offset: int, size: int) -> None:
        """After a byte-level write to [offset, offset+size) (synced before it)."""
        words = self.words
        for w in range(offset >> 5, (offset + size + 31) >> 5):
            words[w] = None

    def read_memory(self, offset: int, size: int) -> bytes:
        if size == 0:
            return b""
        self.expand(offset, size)
        self.sync_memory(offset, size)
        if size == 32:
            # One word, the most common case (a uint256 or bool returned, a
            # log's one data word): read in place, without a slice and a
            # bytes() conversion.
            word: bytes = read_word(self.memory, offset)[0]
            return word
        return bytes(self.memory[offset : offset + size])

    def write_padded(self, dest: int, source: bytes, start: int, size: int) -> None:
        """Copy ``size`` bytes of ``source`` from ``start`` into memory, zero-filling past its end."""
        if size == 0:
            return
        self.expand(dest, size)
        self.charge(3 * ((size + 31) >> 5))
        chunk = source[start : start + size] if start < len(source) else b""
        if len(chunk) < size:
            chunk = chunk + bytes(size - len(chunk))
        self.sync_memory(dest, size)
        self.memory[dest : dest + size] = chunk
        self.forget_words(dest, size)

    def mload_unaligned(self, offset: int) -> int:
        self.sync_memory(offset, 32)
        return int_from_bytes(read_word(self.memory, offset)[0], "big")

    def mstore_unaligned(self, offset: int, value: int) -> None:
        self.sync_memory(offset, 32)
        write_word(self.memory, offset, value.to_bytes(32, "big"))
        self.forget_words(offset, 32)

    def need_writable(self, what: str) -> None:
        """Halt if the run is read-only.

        SSTORE and LOG test ``is_static`` before calling this, so that they pay
        for a call (and LOG for building ``what``) only when they halt.
        """
        if self.is_static:
            raise Halt(Status.STATIC_VIOLATION, f"{what} in a read-only (static) run")

    # -- the loop ----------------------------------------------------------

    def run(self) -> bytes:
        """Run to completion; return the output (REVERT sets ``reverted``).

        Raises :class:`Halt` on an exceptional halt.
        """
        program = self.program
        traces = program.traces
        jump_table = program.jump_table
        code_size = len(jump_table)
        regs = self.regs
        #: the same list, for moves that copy values without looking at them
        regs_o = cast("list[object]", regs)
        state = self.state
        # Slots in the register file: a block entered at ``sp`` needs ``sp + reach``.
        room: i64 = len(regs)
        # Native 64-bit integers for everything that indexes (mypyc compiles
        # them to C integers; in pure Python i64 is just int).
        sp: i64 = 0
        bi: i64 = 0
        base: i64 = 0
        o: i64 = 0
        x: i64 = 0
        y: i64 = 0
        nxt: i64 = 0
        delta: i64 = 0
        k: i64 = 0
        while True:
            tr = traces[bi]
            blk = tr if tr is not None else program.trace(bi)
            gas = self.gas - blk.gas
            if sp + blk.min_pos < 0 or sp + blk.reach > room or gas < 0:
                blk = self.enter(bi, blk, sp)
                room = len(regs)
                gas = self.gas - blk.gas
            self.gas = gas
            ops = blk.ops
            consts = blk.consts
            consts_o = cast("list[object]", consts)
            base = sp - BIAS
            nxt = blk.next_block
            delta = blk.delta
            ins = blk.first
            while True:
                o = ins.o
                if o == R_MOV:
                    x = ins.f2
                    # Copied as objects: unboxing and boxing again would make a new int.
                    regs_o[base + ins.f1] = regs_o[base + x] if x >= 0 else ins.c2
                    ins = ins.nxt
                elif o == op.ADD:
                    x = ins.f2
                    a = regs[base + x] if x >= 0 else ins.k2
                    x = ins.f3
                    b = regs[base + x] if x >= 0 else ins.k3
                    c = a + b
                    if c >> 256:
                        c &= MASK
                    regs[base + ins.f1] = c
                    ins = ins.nxt
                elif o >= R_XNZ and o <= R_XSLE:
                    # A side exit of a trace: a JUMPI whose other way the trace continues with.
                    x = ins.f2
                    a = regs[base + x] if x >= 0 else ins.k2
                    if o == R_XNZ:
                        taken = a != 0
                    elif o == R_XZ:
                        taken = a == 0
                    else:
                        x = ins.f3
                        b = regs[base + x] if x >= 0 else ins.k3
                        if o == R_XLT:
                            taken = a < b
                        elif o == R_XGE:
                            taken = a >= b
                        elif o == R_XGT:
                            taken = a > b
                        elif o == R_XLE:
                            taken = a <= b
                        elif o == R_XEQ:
                            taken = a == b
                        elif o == R_XNE:
                            taken = a != b
                        else:
                            # Signed: compare the sign bits, then as unsigned when they are equal.
                            neg_a = a >> 255 != 0
                            neg_b = b >> 255 != 0
                            if neg_a != neg_b:
                                lt = neg_a
                                gt = neg_b
                            else:
                                lt = a < b
                                gt = a > b
                            if o == R_XSLT:
                                taken = lt
                            elif o == R_XSGE:
                                taken = not lt
                            elif o == R_XSGT:
                                taken = gt
                            else:
                                taken = not gt
                    if taken:
                        nxt = ins.f1
                        if nxt < 0:
                            raise Halt(Status.BAD_JUMP, f"JUMPI to a non-JUMPDEST in the trace at pc {blk.start_pc}")
                        # The exit's moves follow its seven fields in ``ops``.
                        k = ins.at + 8
                        x = k + 2 * ins.f5
                        while k < x:
                            y = ops[k + 1]
                            regs_o[base + ops[k]] = regs_o[base + y] if y >= 0 else consts_o[~y]
                            k += 2
                        delta = ins.f4
                        break
                    gas = self.gas - ins.f6
                    if gas < 0:
                        raise self.segment_fault(blk.paths[ins.f7], sp)
                    self.gas = gas
                    ins = ins.nxt
                elif o == op.MLOAD:
                    x = ins.f2
                    a = regs[base + x] if x >= 0 else ins.k2
                    if a + 32 > (self.memory_words << 5):
                        self.expand(a, 32)
                    if a & 31 == 0:
                        words = self.words
                        known = words[a >> 5]
                        if known is None:
                            b = int_from_bytes(read_word(self.memory, a)[0], "big")
                            words[a >> 5] = b
                            regs[base + ins.f1] = b
                        else:
                            # Copied as an object: no unboxing and boxing again.
                            regs_o[base + ins.f1] = known
                    else:
                        regs[base + ins.f1] = self.mload_unaligned(a)
                    ins = ins.nxt
                elif o == op.MSTORE:
                    x = ins.f1
                    a = regs[base + x] if x >= 0 else ins.k1
                    x = ins.f2
                    if a + 32 > (self.memory_words << 5):
                        self.expand(a, 32)
                    if a & 31 == 0:
                        # Stored as an object: no unboxing and boxing again.
                        cast("list[object]", self.words)[a >> 5] = regs_o[base + x] if x >= 0 else ins.c2
                        self.dirty[a >> 5] = True
                    else:
                        b = regs[base + x] if x >= 0 else ins.k2
                        self.mstore_unaligned(a, b)
                    ins = ins.nxt
                elif o == op.LT or o == op.GT or o == op.EQ or o == op.SUB or o == op.AND or o == op.OR:
                    x = ins.f2
                    a = regs[base + x] if x >= 0 else ins.k2
                    x = ins.f3
                    b = regs[base + x] if x >= 0 else ins.k3
                    if o == op.LT:
                        c = 1 if a < b else 0
                    elif o == op.GT:
                        c = 1 if a > b else 0
                    elif o == op.EQ:
                        c = 1 if a == b else 0
                    elif o == op.SUB:
                        c = a - b
                        if c < 0:
                            c &= MASK
                    elif o == op.AND:
                        c = a & b
                    else:
                        c = a | b
                    regs[base + ins.f1] = c
                    ins = ins.nxt
                elif o == op.SLT or o == op.SGT or o == op.SDIV:
                    # Signed compares and division, inline: on the sign bits first,
                    # then as unsigned when the signs allow it.
                    x = ins.f2
                    a = regs[base + x] if x >= 0 else ins.k2
                    x = ins.f3
                    b = regs[base + x] if x >= 0 else ins.k3
                    neg_a = a >> 255 != 0
                    neg_b = b >> 255 != 0
                    if o == op.SLT:
                        c = (1 if neg_a else 0) if neg_a != neg_b else (1 if a < b else 0)
                    elif o == op.SGT:
                        c = (1 if neg_b else 0) if neg_a != neg_b else (1 if a > b else 0)
                    elif not neg_a and not neg_b:
                        c = a // b if b else 0
                    else:
                        c = arith.sdiv(a, b)
                    regs[base + ins.f1] = c
                    ins = ins.nxt
                elif o == op.SHR or o == op.SHL or o == op.XOR or o == op.MUL or o == op.DIV or o == op.MOD:
                    x = ins.f2
                    a = regs[base + x] if x >= 0 else ins.k2
                    x = ins.f3
                    b = regs[base + x] if x >= 0 else ins.k3
                    if o == op.SHR:
                        c = b >> a if a < 256 else 0
                    elif o == op.SHL:
                        # Mask only when bits were pushed out (a small result stays unboxed).
                        c = b << a if a < 256 else 0
                        if c >> 256:
                            c &= MASK
                    elif o == op.XOR:
                        c = a ^ b
                    elif o == op.MUL:
                        c = a * b
                        if c >> 256:
                            c &= MASK
                    elif o == op.DIV:
                        c = a // b if b else 0
                    else:
                        c = a % b if b else 0
                    regs[base + ins.f1] = c
                    ins = ins.nxt
                elif o == op.ISZERO:
                    x = ins.f2
                    regs[base + ins.f1] = 1 if (regs[base + x] if x >= 0 else ins.k2) == 0 else 0
                    ins = ins.nxt
                elif o == R_END:
                    break
                elif o == R_JUMPI_S:
                    x = ins.f2
                    if (regs[base + x] if x >= 0 else ins.k2) != 0:
                        nxt = ins.f1
                        if nxt < 0:
                            raise Halt(Status.BAD_JUMP, f"JUMPI to a non-JUMPDEST in the block at pc {blk.start_pc}")
                    ins = ins.nxt
                elif o == R_JLT or o == R_JGT or o == R_JEQ:
                    x = ins.f2
                    a = regs[base + x] if x >= 0 else ins.k2
                    x = ins.f3
                    b = regs[base + x] if x >= 0 else ins.k3
                    if a < b if o == R_JLT else (a > b if o == R_JGT else a == b):
                        nxt = ins.f1
                        if nxt < 0:
                            raise Halt(Status.BAD_JUMP, f"JUMPI to a non-JUMPDEST in the block at pc {blk.start_pc}")
                    ins = ins.nxt
                elif o == R_JZ:
                    x = ins.f2
                    if (regs[base + x] if x >= 0 else ins.k2) == 0:
                        nxt = ins.f1
                        if nxt < 0:
                            raise Halt(Status.BAD_JUMP, f"JUMPI to a non-JUMPDEST in the block at pc {blk.start_pc}")
                    ins = ins.nxt
                elif o == R_JUMP or o == R_JUMPI:
                    x = ins.f1
                    target = regs[base + x] if x >= 0 else ins.k1
                    taken = True
                    if o == R_JUMPI:
                        x = ins.f2
                        taken = (regs[base + x] if x >= 0 else ins.k2) != 0
                    if taken:
                        nxt = jump_table[target] if target < code_size else -1
                        if nxt < 0:
                            raise Halt(Status.BAD_JUMP, f"jump to {target}, which is not a JUMPDEST")
                    ins = ins.nxt
                elif o == op.NOT:
                    x = ins.f2
                    regs[base + ins.f1] = MASK ^ (regs[base + x] if x >= 0 else ins.k2)
                    ins = ins.nxt
                elif o == op.CALLDATALOAD:
                    x = ins.f2
                    a = regs[base + x] if x >= 0 else ins.k2
                    regs[base + ins.f1] = self.op_calldataload(a)
                    ins = ins.nxt
                elif o == op.SLOAD:
                    x = ins.f2
                    a = regs[base + x] if x >= 0 else ins.k2
                    cost, b = state.sload(a)
                    self.charge(cost)
                    regs[base + ins.f1] = b
                    ins = ins.nxt
                elif o == op.SSTORE:
                    x = ins.f1
                    a = regs[base + x] if x >= 0 else ins.k1
                    x = ins.f2
                    b = regs[base + x] if x >= 0 else ins.k2
                    self.op_sstore(a, b, ins.f3)
                    ins = ins.nxt
                elif o == op.RETURN or o == op.REVERT:
                    x = ins.f1
                    a = regs[base + x] if x >= 0 else ins.k1
                    x = ins.f2
                    b = regs[base + x] if x >= 0 else ins.k2
                    output = self.read_memory(a, b)
                    self.reverted = o == op.REVERT
                    return output
                elif o == op.STOP:
                    return b""
                elif o == R_INVALID:
                    raise Halt(Status.INVALID_OPCODE, f"invalid opcode {op.name(ins.f1)}")
                elif o == R_BAD_JUMP:
                    raise Halt(Status.BAD_JUMP, f"jump to {ins.k1}, which is not a JUMPDEST")
                elif o == op.SELFDESTRUCT:
                    x = ins.f1
                    messages.selfdestruct(self, regs[base + x] if x >= 0 else ins.k1)
                    return b""
                elif o == op.KECCAK256:
                    x = ins.f2
                    a = regs[base + x] if x >= 0 else ins.k2
                    x = ins.f3
                    b = regs[base + x] if x >= 0 else ins.k3
                    if b == 32 and a & 31 == 0 and a + 32 <= (self.memory_words << 5):
                        # One aligned word in memory (a hash chain, a mapping key):
                        # hashed from ``words`` when it is there.
                        gas = self.gas - 6
                        if gas < 0:
                            raise Halt(Status.OUT_OF_GAS, f"out of gas: needed 6, had {self.gas}")
                        self.gas = gas
                        known = self.words[a >> 5]
                        c = int_from_bytes(read_word(self.memory, a)[0], "big") if known is None else known
                        regs[base + ins.f1] = int_from_bytes(keccak256(c.to_bytes(32, "big")), "big")
                    else:
                        regs[base + ins.f1] = self.op_keccak256(a, b)
                    ins = ins.nxt
                else:
                    self.execute_other(o, ops, ins.at, base, consts)
                    ins = ins.nxt
            sp += delta
            if nxt < 0:
                return b""
            bi = nxt

    def enter(self, index: i64, trace: Block, sp: i64) -> Block:
        """A trace's entry check failed: raise the halt, or grow the register file, or fall back.

        One comparison per entry covers the EVM's stack limit, the register
        file's current size and the first basic block's gas; only when it fails
        do we find out which.  The trace's stack bounds may fail where its
        first basic block's do not (the trace may leave before), and then that
        basic block runs instead.  Returns the block to run.
        """
        blk = self.program.block(index)
        if sp + blk.min_pos < 0 or sp + blk.max_height > STACK_LIMIT or self.gas < blk.gas:
            raise self.block_fault(blk.start_pc, sp)
        if sp + trace.min_pos >= 0 and sp + trace.max_height <= STACK_LIMIT and self.gas >= trace.gas:
            blk = trace
        if sp + blk.reach > len(self.regs):
            size = max(min(2 * len(self.regs), STACK_LIMIT), sp + blk.reach)
            self.regs.extend([0] * (size - len(self.regs)))
        return blk

    def segment_fault(self, path: list[int], sp: i64) -> Halt:
        """The halt of a trace segment whose static gas is more than is left.

        Found in the first of its basic blocks that cannot be paid for (the
        segment's code runs all through or halts, see ``translate``).
        """
        gas = self.gas
        for i in range(0, len(path), 3):
            if gas < path[i + 2]:
                return self.block_fault(path[i], sp + path[i + 1], gas)
            gas -= path[i + 2]
        return Halt(Status.OUT_OF_GAS, "out of gas in a trace segment")  # pragma: no cover

    def block_fault(self, start_pc: int, sp: int, gas: int = -1) -> Halt:
        """The halt a block's entry checks found, located at its instruction.

        The checks run once per block; only when one fails do we walk the
        block's EVM code to find the first instruction that underflows, runs
        out of gas or overflows, in the order the EVM checks them.
        """
        code = self.program.code
        height = sp
        if gas < 0:
            gas = self.gas
        pc = start_pc
        while pc < len(code):
            b = code[pc]
            name = op.name(b)
            if not op.is_defined(b):
                break
            if height < op.POPS[b]:
                return Halt(
                    Status.STACK_UNDERFLOW,
                    f"stack underflow at pc {pc} ({name} needs {op.POPS[b]}, stack has {height})",
                )
            gas -= op.STATIC_GAS[b]
            if gas < 0:
                return Halt(Status.OUT_OF_GAS, f"out of gas at pc {pc} ({name})")
            height += op.PUSHES[b] - op.POPS[b]
            if height > STACK_LIMIT:
                return Halt(Status.STACK_OVERFLOW, f"stack overflow at pc {pc} ({name}): more than {STACK_LIMIT} items")
            pc += 1 + (b - op.PUSH1 + 1 if op.PUSH1 <= b <= op.PUSH32 else 0)
        return Halt(Status.OUT_OF_GAS, f"out of gas in the block at pc {start_pc}")  # pragma: no cover

    # -- everything else, one method per instruction family --------------------

    def execute_other(self, o: i64, ops: list[i64], pc: i64, base: i64, consts: list[int]) -> i64:
        """Run one less frequent instruction at ``ops[pc]``; return the next ``pc``.

        First the few that nearly every contract call runs (an ABI entry point
        reads CALLER, CALLVALUE and CALLDATASIZE; an event logs; KECCAK256 is
        in ``run``), each with its own width and no lookups; then the rest,
        which share one width computation from the opcode table.  They are
        here rather than in ``run``'s chain because branches added there, even
        ones never taken, slowed the hottest loops by a few percent.
        """
        regs = self.regs
        if o == op.CALLER:
            regs[base + ops[pc + 1]] = self.caller
            return pc + 2
        if o == op.CALLVALUE:
            regs[base + ops[pc + 1]] = self.value
            return pc + 2
        if o == op.CALLDATASIZE:
            regs[base + ops[pc + 1]] = len(self.data)
            return pc + 2
        if o >= op.LOG0 and o <= op.LOG4:
            offset = _operand(regs, consts, base, ops[pc + 1])
            size = _operand(regs, consts, base, ops[pc + 2])
            self.op_log(offset, size, _operands(regs, consts, base, ops, pc + 3, o - op.LOG0))
            return pc + 3 + (o - op.LOG0)

        width = 1 + (1 if op.PUSHES[o] else 0) + op.POPS[o]
        if o in _BINARY:
            regs[base + ops[pc + 1]] = _binary(
                o, _operand(regs, consts, base, ops[pc + 2]), _operand(regs, consts, base, ops[pc + 3])
            )
        elif o == op.ADDMOD:
            regs[base + ops[pc + 1]] = arith.addmod(
                _operand(regs, consts, base, ops[pc + 2]),
                _operand(regs, consts, base, ops[pc + 3]),
                _operand(regs, consts, base, ops[pc + 4]),
            )
        elif o == op.MULMOD:
            regs[base + ops[pc + 1]] = arith.mulmod(
                _operand(regs, consts, base, ops[pc + 2]),
                _operand(regs, consts, base, ops[pc + 3]),
                _operand(regs, consts, base, ops[pc + 4]),
            )
        elif o == op.EXP:
            exponent = _operand(regs, consts, base, ops[pc + 3])
            self.charge(50 * arith.exp_byte_length(exponent))
            regs[base + ops[pc + 1]] = arith.exp(_operand(regs, consts, base, ops[pc + 2]), exponent)
        elif op.PUSHES[o] and op.POPS[o] == 0 and o != op.GAS:
            regs[base + ops[pc + 1]] = self.environment(o)
        elif o == op.GAS:
            regs[base + ops[pc + 1]] = self.gas + ops[pc + 2]
            width += 1
        elif o in _ACCOUNT_READS:
            regs[base + ops[pc + 1]] = self.account_read(o, _operand(regs, consts, base, ops[pc + 2]))
        elif o == op.BLOCKHASH:
            regs[base + ops[pc + 1]] = self.op_blockhash(_operand(regs, consts, base, ops[pc + 2]))
        elif o == op.CLZ:
            regs[base + ops[pc + 1]] = 256 - _operand(regs, consts, base, ops[pc + 2]).bit_length()
        elif o == op.BLOBHASH:
            index = _operand(regs, consts, base, ops[pc + 2])
            hashes = self.state.block.blob_hashes
            regs[base + ops[pc + 1]] = int.from_bytes(hashes[index], "big") if index < len(hashes) else 0
        elif o == op.CALLDATACOPY:
            self.write_padded(
                _operand(regs, consts, base, ops[pc + 1]),
                self.data,
                _operand(regs, consts, base, ops[pc + 2]),
                _operand(regs, consts, base, ops[pc + 3]),
            )
        elif o == op.CODECOPY:
            self.write_padded(
                _operand(regs, consts, base, ops[pc + 1]),
                self.program.code,
                _operand(regs, consts, base, ops[pc + 2]),
                _operand(regs, consts, base, ops[pc + 3]),
            )
        elif o == op.EXTCODECOPY:
            address = _operand(regs, consts, base, ops[pc + 1]) & messages.ADDRESS_MASK
            self.charge(self.state.warm_address(address))
            self.write_padded(
                _operand(regs, consts, base, ops[pc + 2]),
                messages.code_of(self, address),
                _operand(regs, consts, base, ops[pc + 3]),
                _operand(regs, consts, base, ops[pc + 4]),
            )
        elif o == op.RETURNDATACOPY:
            self.op_returndatacopy(
                _operand(regs, consts, base, ops[pc + 1]),
                _operand(regs, consts, base, ops[pc + 2]),
                _operand(regs, consts, base, ops[pc + 3]),
            )
        elif o == op.MSTORE8:
            offset = _operand(regs, consts, base, ops[pc + 1])
            self.expand(offset, 1)
            self.sync_memory(offset, 1)
            self.memory[offset] = _operand(regs, consts, base, ops[pc + 2]) & 0xFF
            self.forget_words(offset, 1)
        elif o == op.MCOPY:
            self.op_mcopy(
                _operand(regs, consts, base, ops[pc + 1]),
                _operand(regs, consts, base, ops[pc + 2]),
                _operand(regs, consts, base, ops[pc + 3]),
            )
        elif o == op.TLOAD:
            regs[base + ops[pc + 1]] = self.state.tload(_operand(regs, consts, base, ops[pc + 2]))
        elif o == op.TSTORE:
            self.need_writable("TSTORE")
            self.state.tstore(_operand(regs, consts, base, ops[pc + 1]), _operand(regs, consts, base, ops[pc + 2]))
        elif o in _MESSAGE_OPS:
            args = [_operand(regs, consts, base, ops[pc + 2 + i]) for i in range(op.POPS[o])]
            regs[base + ops[pc + 1]] = messages.dispatch(self, o, args, ops[pc + width])
            width += 1
        else:  # pragma: no cover - the translator only emits opcodes handled above
            raise Halt(Status.INVALID_OPCODE, f"opcode {op.name(o)} has no implementation")
        return pc + width

    def op_calldataload(self, offset: int) -> int:
        data = self.data
        if offset >= len(data):
            return 0
        word = data[offset : offset + 32]
        if len(word) < 32:
            word = word + bytes(32 - len(word))
        return int_from_bytes(word, "big")

    def op_sstore(self, key: int, value: int, rest: int) -> None:
        if self.is_static:
            self.need_writable("SSTORE")
        if self.gas + rest <= 2300:
            raise Halt(Status.OUT_OF_GAS, "SSTORE needs more than 2300 gas left (EIP-2200)")
        self.charge(self.state.sstore(key, value))

    def environment(self, o: int) -> int:
        """Instructions that push a fact about the run and read nothing.

        CALLER, CALLVALUE and CALLDATASIZE, which every ABI entry point reads,
        have their own branches at the top of ``execute_other``.
        """
        state = self.state
        block = state.block
        if o == op.ADDRESS:
            return state.address
        if o == op.RETURNDATASIZE:
            return len(self.returndata)
        if o == op.MSIZE:
            return self.memory_words << 5
        if o == op.SELFBALANCE:
            return state.balance
        if o == op.ORIGIN:
            return int.from_bytes(block.origin, "big")
        if o == op.GASPRICE:
            return block.gas_price
        if o == op.COINBASE:
            return int.from_bytes(block.coinbase, "big")
        if o == op.TIMESTAMP:
            return block.timestamp
        if o == op.NUMBER:
            return block.number
        if o == op.PREVRANDAO:
            return block.prevrandao
        if o == op.GASLIMIT:
            return block.gas_limit
        if o == op.CHAINID:
            return block.chain_id
        if o == op.BASEFEE:
            return block.base_fee
        if o == op.BLOBBASEFEE:
            return block.blob_base_fee
        raise Halt(Status.INVALID_OPCODE, f"opcode {op.name(o)} has no implementation")  # pragma: no cover

    def account_read(self, o: int, word: int) -> int:
        """BALANCE, EXTCODESIZE, EXTCODEHASH: through the host, which may refuse."""
        address = word & messages.ADDRESS_MASK
        self.charge(self.state.warm_address(address))
        if o == op.BALANCE:
            return messages.balance_of(self, address)
        code = messages.code_of(self, address)
        if o == op.EXTCODESIZE:
            return len(code)
        return int.from_bytes(keccak256(code), "big") if code else 0

    def op_blockhash(self, number: int) -> int:
        current = self.state.block.number
        if number >= current or number < current - 256:
            return 0
        return self.state.host.block_hash(number)

    def op_returndatacopy(self, dest: int, start: int, size: int) -> None:
        if start + size > len(self.returndata):
            raise Halt(
                Status.RETURNDATA_OUT_OF_BOUNDS,
                f"RETURNDATACOPY of [{start}, {start + size}) past the {len(self.returndata)} bytes of return data",
            )
        self.write_padded(dest, self.returndata, start, size)

    def op_mcopy(self, dest: int, source: int, size: int) -> None:
        if size == 0:
            return
        self.expand(max(dest, source), size)
        self.charge(3 * ((size + 31) >> 5))
        self.sync_memory(source, size)
        self.sync_memory(dest, size)
        self.memory[dest : dest + size] = self.memory[source : source + size]
        self.forget_words(dest, size)

    def op_keccak256(self, offset: int, size: int) -> int:
        if size == 0:
            return EMPTY_KECCAK_WORD
        self.expand(offset, size)
        self.charge(6 * ((size + 31) >> 5))
        if offset & 31 == 0 and (size == 32 or size == 64):
            # One or two aligned words (a hash chain, a mapping slot): hash them
            # from ``words`` when they are there, without syncing or slicing.
            words = self.words
            first = words[offset >> 5]
            if first is not None:
                if size == 32:
                    return int_from_bytes(keccak256(first.to_bytes(32, "big")), "big")
                second = words[(offset >> 5) + 1]
                if second is not None:
                    return int_from_bytes(keccak256(first.to_bytes(32, "big") + second.to_bytes(32, "big")), "big")
        self.sync_memory(offset, size)
        return int_from_bytes(keccak256(self.memory[offset : offset + size]), "big")

    def op_log(self, offset: int, size: int, topics: tuple[int, ...]) -> None:
        if self.is_static:
            self.need_writable(f"LOG{len(topics)}")
        data = self.read_memory(offset, size)
        self.charge(8 * size)
        self.state.logs.append(Log(self.state.address_bytes, topics, data))


_BINARY: Final = frozenset({op.SDIV, op.SMOD, op.SIGNEXTEND, op.SLT, op.SGT, op.BYTE, op.SAR})
_ACCOUNT_READS: Final = frozenset({op.BALANCE, op.EXTCODESIZE, op.EXTCODEHASH})
_MESSAGE_OPS: Final = frozenset({op.CALL, op.CALLCODE, op.DELEGATECALL, op.STATICCALL, op.CREATE, op.CREATE2})


def _operand(regs: list[int], consts: list[int], base: i64, x: i64) -> int:
    """The value of one operand field: a stack slot (x >= 0) or a constant."""
    return regs[base + x] if x >= 0 else consts[~x]


def _operands(regs: list[int], consts: list[int], base: i64, ops: list[i64], start: i64, count: i64) -> tuple[int, ...]:
    """The values of ``count`` operand fields from ``ops[start]`` on (LOG topics)."""
    values: list[int] = []
    for i in range(count):
        x = ops[start + i]
        values.append(regs[base + x] if x >= 0 else consts[~x])
    return tuple(values)


def _binary(o: int, a: int, b: int) -> int:
    if o == op.SDIV:
        return arith.sdiv(a, b)
    if o == op.SMOD:
        return arith.smod(a, b)
    if o == op.SIGNEXTEND:
        return arith.signextend(a, b)
    if o == op.SLT:
        return arith.slt(a, b)
    if o == op.SGT:
        return arith.sgt(a, b)
    if o == op.BYTE:
        return arith.byte(a, b)
    return arith.sar(a, b)


__all__ = ["Frame", "Halt", "memory_cost"]
