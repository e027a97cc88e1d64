"""``execute``: run one message's handler and return everything it did.

This is the VM's one way in.  It sets up the run state (EIP-2929 warm set,
storage view, balance), runs the top frame, and turns the outcome into an
:class:`~missive.vm.types.ExecutionResult`.  No exception escapes for any
code or input: hostile code ends in an exceptional halt with all gas used and
no effects, and so does a bug in a host callback, reported by its message.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from missive.vm.arith import int_from_bytes
from missive.vm.errors import Halt
from missive.vm.host import Host
from missive.vm.interpreter import Frame
from missive.vm.state import RunState, StorageSource
from missive.vm.translate import program_for
from missive.vm.types import BlockContext, ExecutionResult, Status

_DEFAULT_BLOCK = BlockContext()
_DEFAULT_HOST = Host()

# DELEGATECALL may nest 1024 frames deep, each a Python-level call in the pure
# build; make sure the interpreter's recursion limit is not what stops it.
if sys.getrecursionlimit() < 12000:
    sys.setrecursionlimit(12000)


def _check_address(name: str, value: bytes) -> None:
    if len(value) != 20:
        raise ValueError(f"{name} must be 20 bytes, got {len(value)}")


def execute(
    code: bytes,
    *,
    address: bytes = bytes(20),
    caller: bytes = bytes(20),
    value: int = 0,
    data: bytes = b"",
    gas: int = 10_000_000,
    storage: StorageSource | Mapping[int, int] | None = None,
    balance: int = 0,
    nonce: int = 0,
    block: BlockContext | None = None,
    host: Host | None = None,
    is_static: bool = False,
    message_id: bytes = bytes(32),
) -> ExecutionResult:
    """Run ``code`` as the handler of one message to the actor at ``address``.

    ``storage`` is the actor's committed storage (read lazily, never written);
    ``balance`` already includes ``value``, as in the EVM, where the value moves
    before the code runs.  ``gas_used`` in the result is the execution gas
    before refunds; ``gas_refund`` is the raw SSTORE refund counter (the caller
    applies the EIP-3529 cap, since it depends on the whole transaction).

    Raises ValueError only for malformed arguments (wrong address length,
    negative gas or value); anything the *code* does ends in a result.
    """
    _check_address("address", address)
    _check_address("caller", caller)
    if gas < 0 or value < 0 or balance < 0 or nonce < 0:
        raise ValueError("gas, value, balance and nonce must not be negative")
    if value >> 256 or balance >> 256:
        raise ValueError("value and balance must fit in 256 bits")
    block = block if block is not None else _DEFAULT_BLOCK
    # EIP-2929/3651: the actor, the caller, the origin and the coinbase start warm.
    warm_accounts = (address, caller, block.origin, block.coinbase)
    host = host if host is not None else _DEFAULT_HOST
    state = RunState(address, code, storage, balance, nonce, block, host, message_id, warm_accounts)
    frame = Frame(state, program_for(code), int_from_bytes(caller, "big"), value, data, gas, is_static, 0)
    try:
        output = frame.run()
    except Halt as halt:
        return _failed(halt.status, gas, halt.message, balance, nonce, state)
    except RecursionError:
        return _failed(Status.CALL_DEPTH, gas, "call depth exhausted the interpreter's stack", balance, nonce, state)
    except Exception as bug:  # a host callback failed: the run cannot stand
        return _failed(Status.UNSUPPORTED, gas, f"host error: {type(bug).__name__}: {bug}", balance, nonce, state)
    gas_used = gas - frame.gas
    if frame.reverted:
        return ExecutionResult(
            status=Status.REVERT,
            output=output,
            gas_used=gas_used,
            gas_refund=0,
            storage_writes={},
            logs=(),
            outbox=(),
            balance=balance,
            nonce=nonce,
            error="execution reverted",
            code_reads=tuple(state.code_reads),
        )
    return ExecutionResult(
        status=Status.SUCCESS,
        output=output,
        gas_used=gas_used,
        gas_refund=state.refund,
        storage_writes=state.storage_writes(),
        logs=tuple(state.logs),
        outbox=tuple(state.outbox),
        balance=state.balance,
        nonce=state.nonce,
        code_reads=tuple(state.code_reads),
    )


def _failed(status: Status, gas: int, message: str, balance: int, nonce: int, state: RunState) -> ExecutionResult:
    return ExecutionResult(
        status=status,
        output=b"",
        gas_used=gas,
        gas_refund=0,
        storage_writes={},
        logs=(),
        outbox=(),
        balance=balance,
        nonce=nonce,
        error=message,
        code_reads=tuple(state.code_reads),
    )
