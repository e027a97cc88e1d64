"""Running a stateless job's program, the same way for the worker and for the board's re-check.

A job program is EVM runtime code that touches no storage and sends no messages: its result
depends on its calldata alone, so any node can re-run it and get the same bytes, which is what
makes a wrong answer re-checkable evidence (docs/jobs.md).  :func:`stateless_refusal` reads the
code before the job is posted (the reachable instructions only, so data after the code does not
count); :func:`run_program` runs it on Missive's VM with a fixed context (no caller, no value,
time 0) and encodes the outcome; a run that still wrote storage, logged or sent anything (it
cannot, once the code passed, but the encoding does not trust that) is a failed result.
"""

from __future__ import annotations

from typing import Final

import msgpack

from missive.toolchain.evmcode import TERMINATORS, disassemble, strip_metadata
from missive.vm.execution import execute
from missive.vm.types import Status

#: opcodes a stateless program may not reach, by what they would do
FORBIDDEN: Final[dict[int, str]] = {
    0x54: "reads storage", 0x55: "writes storage",
    0xF0: "sends a message", 0xF1: "sends a message", 0xF2: "sends a message", 0xF4: "sends a message",
    0xF5: "sends a message", 0xFA: "sends a message", 0xFF: "sends a message",
    0xA0: "writes a log", 0xA1: "writes a log", 0xA2: "writes a log", 0xA3: "writes a log", 0xA4: "writes a log",
    0x31: "reads another account", 0x3B: "reads another account", 0x3C: "reads another account",
    0x3F: "reads another account", 0x40: "reads the chain's history",
}
#: the largest program (EVM code, or a circuit's bundle of key, witness generator and proving key)
MAX_PROGRAM: Final = 256 * 1024
#: the largest input (calldata, or a circuit's inputs as JSON)
MAX_INPUT: Final = 16 * 1024
#: the most gas a job may be given
MAX_GAS: Final = 50_000_000


def stateless_refusal(code: bytes) -> str | None:
    """Why ``code`` is not a stateless program (naming the first offending instruction), or None."""
    if not code:
        return "the program is empty"
    reachable = True  # falls through from the instruction before, or is a jump target
    for ins in disassemble(strip_metadata(code)):
        if ins.op == 0x5B:
            reachable = True
        if reachable and ins.op in FORBIDDEN:
            return (f"the program is not stateless: {ins.name} at offset {ins.pc} {FORBIDDEN[ins.op]} "
                    "(a job may use only its input)")
        if ins.op in TERMINATORS:
            reachable = False  # what follows is data until the next JUMPDEST
    return None


def encode_result(status: str, output: bytes) -> bytes:
    """A program's result as the ledger keeps it: msgpack ``[status, output]``."""
    return bytes(msgpack.packb([status, output], use_bin_type=True))


def decode_result(raw: bytes) -> tuple[str, bytes]:
    status, output = msgpack.unpackb(raw)
    return str(status), bytes(output)


def run_program(code: bytes, data: bytes, gas: int) -> bytes:
    """The result of one run: ``success`` or ``revert`` with the output, else the halt's name."""
    result = execute(code, data=data, gas=gas)
    if result.storage_writes or result.logs or result.outbox:
        return encode_result("not stateless", b"")
    if result.status is Status.SUCCESS:
        return encode_result("success", result.output)
    if result.status is Status.REVERT:
        return encode_result("revert", result.output)
    return encode_result(result.status.name.lower().replace("_", " "), b"")


__all__ = ["MAX_GAS", "MAX_INPUT", "MAX_PROGRAM", "decode_result", "encode_result", "run_program",
           "stateless_refusal"]
