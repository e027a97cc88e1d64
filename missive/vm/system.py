"""Missive's system contract: synchronous helpers for handlers (SPEC §3).

It lives at :data:`~missive.vm.types.SYSTEM_CONTRACT` and is called like any
contract, with ABI-encoded calldata, so Vyper and Solidity code can declare it
as an interface::

    interface System:
        def sentMessageId(index: uint256) -> bytes32: view
        def lastMessageId() -> bytes32: view
        def currentMessageId() -> bytes32: view
        def now() -> uint256: view
        def schedule(delay: uint256, gas: uint256, payload: Bytes[...]) -> bytes32: nonpayable

``sentMessageId(i)`` is the id of the i-th message this run has sent (what a
request's ``onReply`` will be given as ``requestId``).  ``schedule`` sends the
actor a ``scheduled`` message ``delay`` logical-time units from now, carrying
``payload`` as calldata and ``gas`` prepaid out of this run.  Failures revert
with an ``Error(string)`` that names what was wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from missive.vm.keccak import keccak256
from missive.vm.types import MessageKind

if TYPE_CHECKING:
    from missive.vm.interpreter import Frame


def selector(signature: str) -> int:
    return int.from_bytes(keccak256(signature.encode())[:4], "big")


SENT_MESSAGE_ID: Final = selector("sentMessageId(uint256)")
LAST_MESSAGE_ID: Final = selector("lastMessageId()")
CURRENT_MESSAGE_ID: Final = selector("currentMessageId()")
NOW: Final = selector("now()")
SCHEDULE: Final = selector("schedule(uint256,uint256,bytes)")
ERROR_SELECTOR: Final = bytes.fromhex("08c379a0")
#: Logical time stays far inside 64 bits: a schedule() delay is at most 2**32.
MAX_DELAY: Final = 1 << 32


def error_data(message: str) -> bytes:
    """ABI encoding of ``Error(string)``, the revert data Solidity and Vyper use."""
    raw = message.encode()
    padded = raw + bytes(-len(raw) % 32)
    return ERROR_SELECTOR + (32).to_bytes(32, "big") + len(raw).to_bytes(32, "big") + padded


def _word(payload: bytes, index: int) -> int:
    start = 4 + 32 * index
    return int.from_bytes(payload[start : start + 32].ljust(32, b"\x00"), "big")


def call_system(frame: Frame, payload: bytes, gas: int, static: bool) -> tuple[bool, bytes, int]:
    """Run one system-contract function: (success, return or revert data, gas it used beyond the base cost)."""
    if len(payload) < 4:
        return False, error_data("system contract: calldata shorter than a 4-byte selector"), 0
    fn = int.from_bytes(payload[:4], "big")
    state = frame.state
    if fn == SENT_MESSAGE_ID:
        index = _word(payload, 0)
        if index >= len(state.outbox):
            return False, error_data(f"system contract: no message {index} sent in this run (sent {len(state.outbox)})"), 0
        return True, state.outbox[index].message_id, 0
    if fn == LAST_MESSAGE_ID:
        return True, state.outbox[-1].message_id if state.outbox else bytes(32), 0
    if fn == CURRENT_MESSAGE_ID:
        return True, state.message_id, 0
    if fn == NOW:
        return True, state.block.logical_time.to_bytes(32, "big"), 0
    if fn == SCHEDULE:
        return _schedule(frame, payload, gas, static)
    return False, error_data(f"system contract: unknown function selector 0x{fn:08x}"), 0


def _schedule(frame: Frame, payload: bytes, gas: int, static: bool) -> tuple[bool, bytes, int]:
    from missive.vm.messages import emit

    if static:
        return False, error_data("system contract: schedule() sends a message and cannot run read-only"), 0
    delay, message_gas, offset = _word(payload, 0), _word(payload, 1), _word(payload, 2)
    if delay > MAX_DELAY:
        return False, error_data(f"system contract: schedule() delay {delay} exceeds {MAX_DELAY}"), 0
    start = 4 + offset + 32
    if start > len(payload):
        return False, error_data("system contract: schedule() payload offset points past the calldata"), 0
    length = int.from_bytes(payload[start - 32 : start], "big")
    if start + length > len(payload):
        return False, error_data("system contract: schedule() payload length runs past the calldata"), 0
    if message_gas > gas:
        return False, error_data(f"system contract: schedule() asks for {message_gas} gas but only {gas} is left"), 0
    message = emit(
        frame,
        MessageKind.SCHEDULED,
        frame.state.address_bytes,
        0,
        payload[start : start + length],
        message_gas,
        wants_reply=False,
        delay=delay,
    )
    return True, message.message_id, message_gas
