"""A small EVM assembler, for tests, examples and ``missive vm exec --asm``.

Source is whitespace-separated mnemonics and values::

    PUSH1 0x01 PUSH1 2 ADD
    loop:                 # a label: becomes a JUMPDEST here
    PUSH @loop JUMP       # PUSH @label pushes the label's offset (PUSH2)
    PUSH 1000             # a bare PUSH picks the smallest PUSHn that fits

Comments start with ``#``.  Errors name the token and its position.
"""

from __future__ import annotations

from missive.errors import MissiveError
from missive.vm import opcodes as op


class AssemblyError(MissiveError, ValueError):
    pass


def _number(token: str) -> int:
    try:
        return int(token, 0)
    except ValueError:
        raise AssemblyError(f"expected a number, got {token!r}") from None


def assemble(source: str) -> bytes:
    tokens: list[str] = []
    for line in source.splitlines():
        tokens += line.split("#", 1)[0].split()
    # Two passes: label references are always PUSH2, so offsets are known after one.
    labels: dict[str, int] = {}
    for final in (False, True):
        out = bytearray()
        i = 0
        while i < len(tokens):
            token = tokens[i]
            i += 1
            if token.endswith(":"):
                labels[token[:-1]] = len(out)
                out.append(op.JUMPDEST)
                continue
            upper = token.upper()
            if upper.startswith("PUSH") and upper != "PUSH0":
                if i >= len(tokens):
                    raise AssemblyError(f"{token} at token {i} needs a value")
                arg = tokens[i]
                i += 1
                if arg.startswith("@"):
                    if final and arg[1:] not in labels:
                        raise AssemblyError(f"unknown label {arg[1:]!r}")
                    value, size = labels.get(arg[1:], 0), 2
                else:
                    value = _number(arg)
                    size = int(upper[4:]) if upper[4:] else max(1, (value.bit_length() + 7) // 8)
                if not 1 <= size <= 32 or value < 0 or value.bit_length() > 8 * size:
                    raise AssemblyError(f"{token} {arg}: value does not fit in {size} bytes")
                out.append(op.PUSH1 + size - 1)
                out += value.to_bytes(size, "big")
                continue
            if upper not in op.OPCODES:
                raise AssemblyError(f"unknown mnemonic {token!r} at token {i}")
            out.append(op.OPCODES[upper])
    return bytes(out)
