"""The EVM instruction set as a table: name, static gas, stack inputs and outputs.

The translator reads this table to cut code into blocks, to sum each block's
static gas and to track stack heights; nothing here runs per instruction.
Dynamic costs (memory expansion, cold access, copy words, SSTORE metering)
are charged by the instruction's own code in the interpreter.

Static gas follows Cancun, plus Osaka's CLZ (EIP-7939, 5 gas).  Instructions whose whole cost is dynamic
(SLOAD, SSTORE, BALANCE, EXT*, CALL family) have static gas 0 here.
"""

from __future__ import annotations

from typing import Final

STOP: Final = 0x00
ADD: Final = 0x01
MUL: Final = 0x02
SUB: Final = 0x03
DIV: Final = 0x04
SDIV: Final = 0x05
MOD: Final = 0x06
SMOD: Final = 0x07
ADDMOD: Final = 0x08
MULMOD: Final = 0x09
EXP: Final = 0x0A
SIGNEXTEND: Final = 0x0B
LT: Final = 0x10
GT: Final = 0x11
SLT: Final = 0x12
SGT: Final = 0x13
EQ: Final = 0x14
ISZERO: Final = 0x15
AND: Final = 0x16
OR: Final = 0x17
XOR: Final = 0x18
NOT: Final = 0x19
BYTE: Final = 0x1A
SHL: Final = 0x1B
SHR: Final = 0x1C
SAR: Final = 0x1D
CLZ: Final = 0x1E  # EIP-7939 (Osaka)
KECCAK256: Final = 0x20
ADDRESS: Final = 0x30
BALANCE: Final = 0x31
ORIGIN: Final = 0x32
CALLER: Final = 0x33
CALLVALUE: Final = 0x34
CALLDATALOAD: Final = 0x35
CALLDATASIZE: Final = 0x36
CALLDATACOPY: Final = 0x37
CODESIZE: Final = 0x38
CODECOPY: Final = 0x39
GASPRICE: Final = 0x3A
EXTCODESIZE: Final = 0x3B
EXTCODECOPY: Final = 0x3C
RETURNDATASIZE: Final = 0x3D
RETURNDATACOPY: Final = 0x3E
EXTCODEHASH: Final = 0x3F
BLOCKHASH: Final = 0x40
COINBASE: Final = 0x41
TIMESTAMP: Final = 0x42
NUMBER: Final = 0x43
PREVRANDAO: Final = 0x44
GASLIMIT: Final = 0x45
CHAINID: Final = 0x46
SELFBALANCE: Final = 0x47
BASEFEE: Final = 0x48
BLOBHASH: Final = 0x49
BLOBBASEFEE: Final = 0x4A
POP: Final = 0x50
MLOAD: Final = 0x51
MSTORE: Final = 0x52
MSTORE8: Final = 0x53
SLOAD: Final = 0x54
SSTORE: Final = 0x55
JUMP: Final = 0x56
JUMPI: Final = 0x57
PC: Final = 0x58
MSIZE: Final = 0x59
GAS: Final = 0x5A
JUMPDEST: Final = 0x5B
TLOAD: Final = 0x5C
TSTORE: Final = 0x5D
MCOPY: Final = 0x5E
PUSH0: Final = 0x5F
PUSH1: Final = 0x60
PUSH32: Final = 0x7F
DUP1: Final = 0x80
DUP16: Final = 0x8F
SWAP1: Final = 0x90
SWAP16: Final = 0x9F
LOG0: Final = 0xA0
LOG4: Final = 0xA4
CREATE: Final = 0xF0
CALL: Final = 0xF1
CALLCODE: Final = 0xF2
RETURN: Final = 0xF3
DELEGATECALL: Final = 0xF4
CREATE2: Final = 0xF5
STATICCALL: Final = 0xFA
REVERT: Final = 0xFD
INVALID: Final = 0xFE
SELFDESTRUCT: Final = 0xFF

#: (name, static gas, pops, pushes) for every defined opcode.  PUSH/DUP/SWAP/LOG
#: ranges are filled in below.
_TABLE: dict[int, tuple[str, int, int, int]] = {
    STOP: ("STOP", 0, 0, 0),
    ADD: ("ADD", 3, 2, 1),
    MUL: ("MUL", 5, 2, 1),
    SUB: ("SUB", 3, 2, 1),
    DIV: ("DIV", 5, 2, 1),
    SDIV: ("SDIV", 5, 2, 1),
    MOD: ("MOD", 5, 2, 1),
    SMOD: ("SMOD", 5, 2, 1),
    ADDMOD: ("ADDMOD", 8, 3, 1),
    MULMOD: ("MULMOD", 8, 3, 1),
    EXP: ("EXP", 10, 2, 1),
    SIGNEXTEND: ("SIGNEXTEND", 5, 2, 1),
    LT: ("LT", 3, 2, 1),
    GT: ("GT", 3, 2, 1),
    SLT: ("SLT", 3, 2, 1),
    SGT: ("SGT", 3, 2, 1),
    EQ: ("EQ", 3, 2, 1),
    ISZERO: ("ISZERO", 3, 1, 1),
    AND: ("AND", 3, 2, 1),
    OR: ("OR", 3, 2, 1),
    XOR: ("XOR", 3, 2, 1),
    NOT: ("NOT", 3, 1, 1),
    BYTE: ("BYTE", 3, 2, 1),
    SHL: ("SHL", 3, 2, 1),
    SHR: ("SHR", 3, 2, 1),
    SAR: ("SAR", 3, 2, 1),
    CLZ: ("CLZ", 5, 1, 1),
    KECCAK256: ("KECCAK256", 30, 2, 1),
    ADDRESS: ("ADDRESS", 2, 0, 1),
    BALANCE: ("BALANCE", 0, 1, 1),
    ORIGIN: ("ORIGIN", 2, 0, 1),
    CALLER: ("CALLER", 2, 0, 1),
    CALLVALUE: ("CALLVALUE", 2, 0, 1),
    CALLDATALOAD: ("CALLDATALOAD", 3, 1, 1),
    CALLDATASIZE: ("CALLDATASIZE", 2, 0, 1),
    CALLDATACOPY: ("CALLDATACOPY", 3, 3, 0),
    CODESIZE: ("CODESIZE", 2, 0, 1),
    CODECOPY: ("CODECOPY", 3, 3, 0),
    GASPRICE: ("GASPRICE", 2, 0, 1),
    EXTCODESIZE: ("EXTCODESIZE", 0, 1, 1),
    EXTCODECOPY: ("EXTCODECOPY", 0, 4, 0),
    RETURNDATASIZE: ("RETURNDATASIZE", 2, 0, 1),
    RETURNDATACOPY: ("RETURNDATACOPY", 3, 3, 0),
    EXTCODEHASH: ("EXTCODEHASH", 0, 1, 1),
    BLOCKHASH: ("BLOCKHASH", 20, 1, 1),
    COINBASE: ("COINBASE", 2, 0, 1),
    TIMESTAMP: ("TIMESTAMP", 2, 0, 1),
    NUMBER: ("NUMBER", 2, 0, 1),
    PREVRANDAO: ("PREVRANDAO", 2, 0, 1),
    GASLIMIT: ("GASLIMIT", 2, 0, 1),
    CHAINID: ("CHAINID", 2, 0, 1),
    SELFBALANCE: ("SELFBALANCE", 5, 0, 1),
    BASEFEE: ("BASEFEE", 2, 0, 1),
    BLOBHASH: ("BLOBHASH", 3, 1, 1),
    BLOBBASEFEE: ("BLOBBASEFEE", 2, 0, 1),
    POP: ("POP", 2, 1, 0),
    MLOAD: ("MLOAD", 3, 1, 1),
    MSTORE: ("MSTORE", 3, 2, 0),
    MSTORE8: ("MSTORE8", 3, 2, 0),
    SLOAD: ("SLOAD", 0, 1, 1),
    SSTORE: ("SSTORE", 0, 2, 0),
    JUMP: ("JUMP", 8, 1, 0),
    JUMPI: ("JUMPI", 10, 2, 0),
    PC: ("PC", 2, 0, 1),
    MSIZE: ("MSIZE", 2, 0, 1),
    GAS: ("GAS", 2, 0, 1),
    JUMPDEST: ("JUMPDEST", 1, 0, 0),
    TLOAD: ("TLOAD", 100, 1, 1),
    TSTORE: ("TSTORE", 100, 2, 0),
    MCOPY: ("MCOPY", 3, 3, 0),
    PUSH0: ("PUSH0", 2, 0, 1),
    CREATE: ("CREATE", 32000, 3, 1),
    CALL: ("CALL", 0, 7, 1),
    CALLCODE: ("CALLCODE", 0, 7, 1),
    RETURN: ("RETURN", 0, 2, 0),
    DELEGATECALL: ("DELEGATECALL", 0, 6, 1),
    CREATE2: ("CREATE2", 32000, 4, 1),
    STATICCALL: ("STATICCALL", 0, 6, 1),
    REVERT: ("REVERT", 0, 2, 0),
    INVALID: ("INVALID", 0, 0, 0),
    SELFDESTRUCT: ("SELFDESTRUCT", 5000, 1, 0),
}
for _n in range(1, 33):
    _TABLE[PUSH1 + _n - 1] = (f"PUSH{_n}", 3, 0, 1)
for _n in range(1, 17):
    _TABLE[DUP1 + _n - 1] = (f"DUP{_n}", 3, _n, _n + 1)
    _TABLE[SWAP1 + _n - 1] = (f"SWAP{_n}", 3, _n + 1, _n + 1)
for _n in range(5):
    _TABLE[LOG0 + _n] = (f"LOG{_n}", 375 + 375 * _n, 2 + _n, 0)

NAMES: Final[dict[int, str]] = {op: row[0] for op, row in _TABLE.items()}
OPCODES: Final[dict[str, int]] = {row[0]: op for op, row in _TABLE.items()}

#: Per-opcode rows as flat lists indexed by opcode; -1 pops marks "undefined".
STATIC_GAS: Final[list[int]] = [0] * 256
POPS: Final[list[int]] = [-1] * 256
PUSHES: Final[list[int]] = [0] * 256
for _op, (_name, _gas, _pops, _pushes) in _TABLE.items():
    STATIC_GAS[_op] = _gas
    POPS[_op] = _pops
    PUSHES[_op] = _pushes

#: Instructions after which control never falls through to the next one.
TERMINATORS: Final = frozenset({STOP, JUMP, RETURN, REVERT, INVALID, SELFDESTRUCT})


def is_defined(op: int) -> bool:
    return POPS[op] >= 0


def name(op: int) -> str:
    """Mnemonic of ``op``; undefined bytes read as ``INVALID(0x..)``."""
    return NAMES.get(op, f"INVALID(0x{op:02x})")
