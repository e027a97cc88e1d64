"""Reading EVM bytecode without running it: instructions, basic blocks, constants on the stack.

What :mod:`missive.toolchain.check` and the init/runtime test of
:mod:`missive.toolchain.compiler` need, and no more: a disassembler that
knows each opcode's stack effect, and a per-block abstract stack that tracks
the values pushed as constants (and the contract's own ``ADDRESS``) through
``DUP``/``SWAP``/``POP`` and a little constant arithmetic.  Independent of
:mod:`missive.vm`, which executes; this only reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import attrs

#: opcode -> (name, items popped, items pushed); opcodes not listed are invalid.
OPCODES: Final[dict[int, tuple[str, int, int]]] = {
    0x00: ("STOP", 0, 0), 0x01: ("ADD", 2, 1), 0x02: ("MUL", 2, 1), 0x03: ("SUB", 2, 1), 0x04: ("DIV", 2, 1),
    0x05: ("SDIV", 2, 1), 0x06: ("MOD", 2, 1), 0x07: ("SMOD", 2, 1), 0x08: ("ADDMOD", 3, 1), 0x09: ("MULMOD", 3, 1),
    0x0A: ("EXP", 2, 1), 0x0B: ("SIGNEXTEND", 2, 1),
    0x10: ("LT", 2, 1), 0x11: ("GT", 2, 1), 0x12: ("SLT", 2, 1), 0x13: ("SGT", 2, 1), 0x14: ("EQ", 2, 1),
    0x15: ("ISZERO", 1, 1), 0x16: ("AND", 2, 1), 0x17: ("OR", 2, 1), 0x18: ("XOR", 2, 1), 0x19: ("NOT", 1, 1),
    0x1A: ("BYTE", 2, 1), 0x1B: ("SHL", 2, 1), 0x1C: ("SHR", 2, 1), 0x1D: ("SAR", 2, 1), 0x1E: ("CLZ", 1, 1),
    0x20: ("KECCAK256", 2, 1),
    0x30: ("ADDRESS", 0, 1), 0x31: ("BALANCE", 1, 1), 0x32: ("ORIGIN", 0, 1), 0x33: ("CALLER", 0, 1),
    0x34: ("CALLVALUE", 0, 1), 0x35: ("CALLDATALOAD", 1, 1), 0x36: ("CALLDATASIZE", 0, 1),
    0x37: ("CALLDATACOPY", 3, 0), 0x38: ("CODESIZE", 0, 1), 0x39: ("CODECOPY", 3, 0), 0x3A: ("GASPRICE", 0, 1),
    0x3B: ("EXTCODESIZE", 1, 1), 0x3C: ("EXTCODECOPY", 4, 0), 0x3D: ("RETURNDATASIZE", 0, 1),
    0x3E: ("RETURNDATACOPY", 3, 0), 0x3F: ("EXTCODEHASH", 1, 1),
    0x40: ("BLOCKHASH", 1, 1), 0x41: ("COINBASE", 0, 1), 0x42: ("TIMESTAMP", 0, 1), 0x43: ("NUMBER", 0, 1),
    0x44: ("PREVRANDAO", 0, 1), 0x45: ("GASLIMIT", 0, 1), 0x46: ("CHAINID", 0, 1), 0x47: ("SELFBALANCE", 0, 1),
    0x48: ("BASEFEE", 0, 1), 0x49: ("BLOBHASH", 1, 1), 0x4A: ("BLOBBASEFEE", 0, 1),
    0x50: ("POP", 1, 0), 0x51: ("MLOAD", 1, 1), 0x52: ("MSTORE", 2, 0), 0x53: ("MSTORE8", 2, 0),
    0x54: ("SLOAD", 1, 1), 0x55: ("SSTORE", 2, 0), 0x56: ("JUMP", 1, 0), 0x57: ("JUMPI", 2, 0), 0x58: ("PC", 0, 1),
    0x59: ("MSIZE", 0, 1), 0x5A: ("GAS", 0, 1), 0x5B: ("JUMPDEST", 0, 0), 0x5C: ("TLOAD", 1, 1),
    0x5D: ("TSTORE", 2, 0), 0x5E: ("MCOPY", 3, 0), 0x5F: ("PUSH0", 0, 1),
    0xA0: ("LOG0", 2, 0), 0xA1: ("LOG1", 3, 0), 0xA2: ("LOG2", 4, 0), 0xA3: ("LOG3", 5, 0), 0xA4: ("LOG4", 6, 0),
    0xF0: ("CREATE", 3, 1), 0xF1: ("CALL", 7, 1), 0xF2: ("CALLCODE", 7, 1), 0xF3: ("RETURN", 2, 0),
    0xF4: ("DELEGATECALL", 6, 1), 0xF5: ("CREATE2", 4, 1), 0xFA: ("STATICCALL", 6, 1), 0xFD: ("REVERT", 2, 0),
    0xFE: ("INVALID", 0, 0), 0xFF: ("SELFDESTRUCT", 1, 0),
}
for _n in range(1, 33):
    OPCODES[0x5F + _n] = (f"PUSH{_n}", 0, 1)
for _n in range(1, 17):
    OPCODES[0x7F + _n] = (f"DUP{_n}", _n, _n + 1)
    OPCODES[0x8F + _n] = (f"SWAP{_n}", _n + 1, _n + 1)

#: Opcodes after which control does not fall through to the next instruction.
TERMINATORS: Final = frozenset({0x00, 0x56, 0xF3, 0xFD, 0xFE, 0xFF})
_MASK: Final = (1 << 256) - 1

#: The abstract value of the contract's own address (``ADDRESS``) on the stack.
SELF: Final = -1


@attrs.frozen
class Instruction:
    pc: int
    op: int
    #: the pushed constant of a PUSHn (0 for PUSH0), else None
    arg: int | None = None

    @property
    def name(self) -> str:
        entry = OPCODES.get(self.op)
        return entry[0] if entry is not None else f"0x{self.op:02x}"

    @property
    def size(self) -> int:
        return 1 + (self.op - 0x5F if 0x60 <= self.op <= 0x7F else 0)


def strip_metadata(code: bytes) -> bytes:
    """The code without the CBOR metadata solc and Vyper append (its length is in the last two bytes)."""
    if len(code) < 4:
        return code
    length = int.from_bytes(code[-2:], "big")
    start = len(code) - 2 - length
    if 0 < length and start >= 0 and 0xA0 <= code[start] <= 0xBF:
        return code[:start]
    return code


def disassemble(code: bytes) -> list[Instruction]:
    out: list[Instruction] = []
    pc = 0
    while pc < len(code):
        op = code[pc]
        if 0x60 <= op <= 0x7F:
            width = op - 0x5F
            out.append(Instruction(pc, op, int.from_bytes(code[pc + 1: pc + 1 + width].ljust(width, b"\0"), "big")))
            pc += 1 + width
        else:
            out.append(Instruction(pc, op, 0 if op == 0x5F else None))
            pc += 1
    return out


@attrs.frozen
class Block:
    start: int
    instructions: tuple[Instruction, ...]


def blocks(instructions: list[Instruction]) -> dict[int, Block]:
    """Basic blocks by start pc: split at each JUMPDEST and after each jump or halt."""
    out: dict[int, Block] = {}
    current: list[Instruction] = []
    for ins in instructions:
        if ins.op == 0x5B and current:
            out[current[0].pc] = Block(current[0].pc, tuple(current))
            current = []
        current.append(ins)
        if ins.op in TERMINATORS or ins.op == 0x57:
            out[current[0].pc] = Block(current[0].pc, tuple(current))
            current = []
    if current:
        out[current[0].pc] = Block(current[0].pc, tuple(current))
    return out


def _fold(op: int, args: list[int | None]) -> int | None:
    if any(a is None or a == SELF for a in args):
        return None
    a = [int(x) for x in args if x is not None]
    if op == 0x01:
        return (a[0] + a[1]) & _MASK
    if op == 0x03:
        return (a[0] - a[1]) & _MASK
    if op == 0x02:
        return (a[0] * a[1]) & _MASK
    if op == 0x16:
        return a[0] & a[1]
    if op == 0x17:
        return a[0] | a[1]
    if op == 0x18:
        return a[0] ^ a[1]
    if op == 0x19:
        return a[0] ^ _MASK
    if op == 0x1B:
        return (a[1] << a[0]) & _MASK if a[0] < 256 else 0
    if op == 0x1C:
        return a[1] >> a[0] if a[0] < 256 else 0
    return None


class AbstractStack:
    """A block's stack as far as it is known: constants, :data:`SELF`, or None (unknown)."""

    def __init__(self, items: list[int | None] | None = None) -> None:
        self.items: list[int | None] = list(items) if items else []

    def copy(self) -> AbstractStack:
        return AbstractStack(self.items)

    def peek(self, depth: int = 0) -> int | None:
        """The item ``depth`` below the top (0 = top); None when unknown."""
        return self.items[-1 - depth] if depth < len(self.items) else None

    def step(self, ins: Instruction) -> None:
        op = ins.op
        entry = OPCODES.get(op)
        if entry is None:
            self.items.clear()
            return
        _, pops, pushes = entry
        if 0x80 <= op <= 0x8F:  # DUPn
            self.items.append(self.peek(op - 0x80))
            return
        if 0x90 <= op <= 0x9F:  # SWAPn
            n = op - 0x8F
            while len(self.items) <= n:
                self.items.insert(0, None)
            self.items[-1], self.items[-1 - n] = self.items[-1 - n], self.items[-1]
            return
        args = [self.peek(i) for i in range(pops)]
        del self.items[max(0, len(self.items) - pops):]
        if pushes:
            if ins.arg is not None:
                value: int | None = ins.arg
            elif op == 0x30:
                value = SELF
            else:
                value = _fold(op, args)
            self.items.append(value)


def walk(block: Block, stack: AbstractStack | None = None) -> Iterator[tuple[Instruction, AbstractStack]]:
    """Each instruction of ``block`` with the abstract stack just before it.

    ``stack`` is what is known of the stack on entry (changed in place; a new, unknown one if None):
    passing the stack a jump left lets a helper's return jump, to an address its caller pushed, resolve.
    """
    stack = stack if stack is not None else AbstractStack()
    for ins in block.instructions:
        yield ins, stack
        stack.step(ins)
