"""The instructions whose meaning Missive changes (SPEC §3).

* CALL appends a ``call`` message to the outbox and returns at once with empty
  return data; the value leaves the caller's balance into the message.  A
  non-zero output size asks for a reply.  STATICCALL appends a ``query``,
  which always asks for a reply.  Neither runs the callee.
* The gas a CALL/STATICCALL/CREATE forwards (capped by the EVM's 63/64 rule)
  is paid by the sending run and travels with the message, as in the EVM; so a
  whole tree of messages can never burn more gas than its root was given.
* DELEGATECALL and CALLCODE stay synchronous: they run another account's
  immutable code, fetched through the host, on this actor's own state.
* Precompiles (0x01..0x11, 0x100) and the system contract answer synchronously, to
  any of the call instructions.  Value cannot be sent to them: such a call
  fails (pushes 0), since they could never spend it.
* CREATE/CREATE2 compute the new address at once (EVM rules), push it, and
  send a ``deploy`` message carrying the init code.
* SELFDESTRUCT (EIP-6780 meaning) sends the whole balance to the beneficiary in
  a ``call`` message with empty payload, and stops.

One EVM charge is deliberately absent: the 25000 gas for a value transfer that
creates a new account.  Whether the recipient exists is another actor's state,
which a handler cannot know synchronously (and must not depend on, or replay
on another node could differ).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import attrs

from missive.vm import opcodes as op
from missive.vm.creation import MAX_INITCODE_SIZE, create2_address, create_address
from missive.vm.errors import Halt
from missive.vm.host import ForbiddenRead
from missive.vm.precompiles import is_precompile, run_precompile
from missive.vm.state import COLD_ACCOUNT_ACCESS, WARM_ACCESS
from missive.vm.translate import program_for
from missive.vm.types import SYSTEM_CONTRACT, MessageKind, OutgoingMessage, Status

if TYPE_CHECKING:
    from missive.vm.interpreter import Frame

ADDRESS_MASK: Final = (1 << 160) - 1
SYSTEM_ADDRESS: Final = int.from_bytes(SYSTEM_CONTRACT, "big")
CALL_VALUE_COST: Final = 9000
CALL_STIPEND: Final = 2300
MAX_CALL_DEPTH: Final = 1024
SYSTEM_CALL_COST: Final = 100
SYSTEM_CODE: Final = b"\xfe"


def to_address(word: int) -> bytes:
    return (word & ADDRESS_MASK).to_bytes(20, "big")


def all_but_one_64th(gas: int) -> int:
    return gas - gas // 64


# -- reads of other accounts ------------------------------------------------------


def balance_of(frame: Frame, address: int) -> int:
    state = frame.state
    if address == state.address:
        return state.balance
    try:
        return state.host.balance_of(to_address(address))
    except ForbiddenRead as refused:
        raise Halt(
            Status.FORBIDDEN_READ,
            f"BALANCE of 0x{address:040x}: another actor's balance cannot be read synchronously ({refused})",
        ) from None


def code_of(frame: Frame, address: int) -> bytes:
    """Code of ``address`` (immutable, so reading it is allowed) — recorded for replay."""
    state = frame.state
    if address == state.address:
        return state.own_code
    if address == SYSTEM_ADDRESS:
        # The system contract answers natively; it shows one byte of code so that
        # compilers' "is there a contract?" checks (EXTCODESIZE > 0) pass.
        return SYSTEM_CODE
    raw = to_address(address)
    try:
        code = state.host.code_at(raw)
    except ForbiddenRead as refused:
        raise Halt(Status.FORBIDDEN_READ, f"code of 0x{address:040x}: {refused}") from None
    state.code_reads.append(raw)
    return code


# -- the call family --------------------------------------------------------------


def dispatch(frame: Frame, o: int, args: list[int], rest: int) -> int:
    """Run CALL/CALLCODE/DELEGATECALL/STATICCALL/CREATE/CREATE2; return the word to push."""
    if o == op.CREATE or o == op.CREATE2:
        return create(frame, o, args, rest)
    if o == op.CALL or o == op.CALLCODE:
        gas, to, value, in_off, in_size, out_off, out_size = args
    else:
        gas, to, in_off, in_size, out_off, out_size = args
        value = 0
    to &= ADDRESS_MASK
    frame.expand(in_off, in_size)
    frame.expand(out_off, out_size)
    cost = frame.state.warm_address(to)
    if value and o == op.CALL:
        frame.need_writable("CALL with value")
    if value:
        cost += CALL_VALUE_COST
    frame.charge(cost)
    forwarded = min(gas, all_but_one_64th(frame.gas + rest))
    if in_size:
        frame.sync_memory(in_off, in_size)
    payload = bytes(frame.memory[in_off : in_off + in_size]) if in_size else b""
    frame.returndata = b""

    if is_precompile(to) or to == SYSTEM_ADDRESS:
        if value:
            return 0
        return _synchronous(frame, to, payload, forwarded, out_off, out_size, static=o == op.STATICCALL)
    if o == op.DELEGATECALL or o == op.CALLCODE:
        if value > frame.state.balance:
            return 0
        stipend = CALL_STIPEND if value else 0
        return _run_code(frame, o, to, value, payload, forwarded, stipend, out_off, out_size)
    # CALL and STATICCALL become messages.
    if frame.is_static:
        raise Halt(Status.STATIC_VIOLATION, f"{op.name(o)} to 0x{to:040x} would send a message from a read-only (query) run")
    state = frame.state
    if value > state.balance:
        return 0
    state.balance -= value
    frame.charge(forwarded)
    kind = MessageKind.QUERY if o == op.STATICCALL else MessageKind.CALL
    emit(
        frame,
        kind,
        to_address(to),
        value,
        payload,
        forwarded + (CALL_STIPEND if value else 0),
        wants_reply=kind is MessageKind.QUERY or out_size > 0,
    )
    return 1


def emit(
    frame: Frame,
    kind: MessageKind,
    recipient: bytes,
    value: int,
    payload: bytes,
    gas: int,
    wants_reply: bool,
    deploy_address: bytes = b"",
    salt: int | None = None,
    delay: int = 0,
) -> OutgoingMessage:
    """Append a message to the outbox, stamped with the id the ledger will give it."""
    state = frame.state
    message = OutgoingMessage(
        kind=kind,
        sender=state.address_bytes,
        recipient=recipient,
        value=value,
        payload=payload,
        gas=gas,
        wants_reply=wants_reply,
        index=len(state.outbox),
        deploy_address=deploy_address,
        salt=salt,
        delay=delay,
    )
    message = attrs.evolve(message, message_id=state.host.message_id(message, state.message_id))
    state.outbox.append(message)
    return message


def _write_output(frame: Frame, output: bytes, out_off: int, out_size: int) -> None:
    n = min(out_size, len(output))
    if n:
        frame.sync_memory(out_off, n)
        frame.memory[out_off : out_off + n] = output[:n]
        frame.forget_words(out_off, n)


def _synchronous(frame: Frame, to: int, payload: bytes, gas: int, out_off: int, out_size: int, static: bool) -> int:
    """Precompiles and the system contract: run now, return data as in the EVM."""
    if to == SYSTEM_ADDRESS:
        from missive.vm.system import call_system

        if gas < SYSTEM_CALL_COST:
            frame.charge(gas)
            return 0
        ok, output, extra = call_system(frame, payload, gas - SYSTEM_CALL_COST, static or frame.is_static)
        frame.charge(SYSTEM_CALL_COST + extra if ok else gas)
        frame.returndata = output
        _write_output(frame, output, out_off, out_size)
        return 1 if ok else 0
    result = run_precompile(to, payload, gas)
    frame.charge(result.gas_used)
    if not result.success:
        return 0
    frame.returndata = result.output
    _write_output(frame, result.output, out_off, out_size)
    return 1


def _run_code(
    frame: Frame, o: int, to: int, value: int, payload: bytes, gas: int, stipend: int, out_off: int, out_size: int
) -> int:
    """DELEGATECALL/CALLCODE: another account's code on this actor's own state, now."""
    from missive.vm.interpreter import Frame as FrameClass

    if frame.depth + 1 > MAX_CALL_DEPTH:
        return 0
    code = code_of(frame, to)
    state = frame.state
    frame.charge(gas)
    if o == op.DELEGATECALL:
        caller, value = frame.caller, frame.value
    else:
        caller = state.address
    sub = FrameClass(state, program_for(code), caller, value, payload, gas + stipend, frame.is_static, frame.depth + 1)
    mark = state.checkpoint()
    try:
        output = sub.run()
    except Halt:
        state.rollback(mark)
        return 0
    frame.gas += sub.gas
    frame.returndata = output
    _write_output(frame, output, out_off, out_size)
    if sub.reverted:
        state.rollback(mark)
        return 0
    state.commit(mark)
    return 1


# -- CREATE, CREATE2, SELFDESTRUCT ---------------------------------------------------------


def create(frame: Frame, o: int, args: list[int], rest: int) -> int:
    value, offset, size = args[0], args[1], args[2]
    frame.need_writable(op.name(o))
    if size > MAX_INITCODE_SIZE:
        raise Halt(Status.OUT_OF_GAS, f"{op.name(o)} init code of {size} bytes exceeds {MAX_INITCODE_SIZE} (EIP-3860)")
    init_code = frame.read_memory(offset, size)
    words = (size + 31) >> 5
    frame.charge(2 * words + (6 * words if o == op.CREATE2 else 0))
    frame.returndata = b""
    state = frame.state
    if value > state.balance:
        return 0
    if o == op.CREATE:
        address = create_address(state.address_bytes, state.nonce)
        salt: int | None = None
    else:
        salt = args[3]
        address = create2_address(state.address_bytes, salt, init_code)
    state.nonce += 1
    state.balance -= value
    gas = all_but_one_64th(frame.gas + rest)
    frame.charge(gas)
    emit(frame, MessageKind.DEPLOY, address, value, init_code, gas, wants_reply=False, deploy_address=address, salt=salt)
    return int.from_bytes(address, "big")


def selfdestruct(frame: Frame, beneficiary_word: int) -> None:
    frame.need_writable("SELFDESTRUCT")
    beneficiary = beneficiary_word & ADDRESS_MASK
    state = frame.state
    # EIP-2929: only a cold beneficiary costs extra (2600); a warm one costs nothing more.
    frame.charge(0 if state.warm_address(beneficiary) == WARM_ACCESS else COLD_ACCOUNT_ACCESS)
    if beneficiary != state.address and state.balance > 0:
        value = state.balance
        state.balance = 0
        emit(frame, MessageKind.CALL, to_address(beneficiary), value, b"", 0, wants_reply=False)
