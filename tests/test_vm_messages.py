"""The instructions whose meaning Missive changes (SPEC §3), one behaviour per test."""

from __future__ import annotations

from missive.toolchain.asm import assemble
from missive.vm import SYSTEM_CONTRACT, Host, MessageKind, Status, execute
from missive.vm.keccak import keccak256
from missive.vm.messages import create2_address, create_address

ME = bytes.fromhex("00000000000000000000000000000000000000aa")
OTHER = bytes.fromhex("00000000000000000000000000000000000000bb")
LIB = bytes.fromhex("00000000000000000000000000000000000000cc")


def call(kind: str, *, gas: int = 50000, to: bytes = OTHER, value: int = 0, args: tuple[int, int] = (0, 0),
         out: tuple[int, int] = (0, 0)) -> str:
    """Assembly for one CALL/STATICCALL/DELEGATECALL with its stack arguments."""
    value_part = f"PUSH {value}" if kind in ("CALL", "CALLCODE") else ""
    return f"""
        PUSH {out[1]} PUSH {out[0]} PUSH {args[1]} PUSH {args[0]} {value_part}
        PUSH20 0x{to.hex()} PUSH {gas} {kind}
    """


def store_top_and_returndatasize() -> str:
    return "PUSH 0 SSTORE RETURNDATASIZE PUSH 1 SSTORE STOP"


def test_call_appends_a_call_message_and_returns_at_once() -> None:
    code = assemble("PUSH 0xdeadbeef PUSH 0 MSTORE" + call("CALL", args=(28, 4)) + store_top_and_returndatasize())
    r = execute(code, address=ME, balance=0, message_id=b"\x01" * 32)
    assert r.status is Status.SUCCESS
    assert r.storage_writes == {0: 1}  # pushed 1, return data empty (slot 1 stays 0)
    (m,) = r.outbox
    assert (m.kind, m.sender, m.recipient, m.payload, m.wants_reply) == (
        MessageKind.CALL, ME, OTHER, bytes.fromhex("deadbeef"), False)
    assert m.gas == 50000 and m.index == 0 and len(m.message_id) == 32


def test_nonzero_output_size_asks_for_a_reply() -> None:
    r = execute(assemble(call("CALL", out=(0, 32)) + "STOP"), address=ME)
    assert r.outbox[0].wants_reply is True


def test_staticcall_is_a_query_that_always_wants_a_reply() -> None:
    r = execute(assemble(call("STATICCALL") + "STOP"), address=ME)
    (m,) = r.outbox
    assert m.kind is MessageKind.QUERY and m.wants_reply and m.value == 0


def test_value_moves_out_of_the_balance_into_the_message() -> None:
    r = execute(assemble(call("CALL", value=700) + "STOP"), address=ME, balance=1000)
    assert r.balance == 300
    (m,) = r.outbox
    assert m.value == 700
    assert m.gas == 50000 + 2300  # the EVM's stipend travels with value
    assert r.balance + m.value == 1000  # nothing created, nothing lost


def test_insufficient_balance_pushes_zero_and_sends_nothing() -> None:
    r = execute(assemble(call("CALL", value=1001) + store_top_and_returndatasize()), address=ME, balance=1000)
    assert r.status is Status.SUCCESS
    assert r.outbox == () and r.balance == 1000
    assert r.storage_writes == {}  # pushed 0


def test_forwarded_gas_is_paid_by_the_sender_and_capped_at_63_64ths() -> None:
    code = assemble(call("CALL", gas=10**9) + "STOP")
    r = execute(code, address=ME, gas=100_000)
    (m,) = r.outbox
    left = 100_000 - 7 * 3 - 2600  # seven pushes, cold access to the recipient
    assert m.gas == left - left // 64
    assert r.gas_used == 100_000 - left + m.gas  # the message's gas came out of this run


def test_revert_drops_the_outbox_and_restores_value() -> None:
    code = assemble(call("CALL", value=5) + "PUSH 0 PUSH 0 REVERT")
    r = execute(code, address=ME, balance=10)
    assert r.status is Status.REVERT and r.outbox == () and r.balance == 10


def test_static_run_refuses_to_send_messages() -> None:
    r = execute(assemble(call("CALL") + "STOP"), address=ME, is_static=True)
    assert r.status is Status.STATIC_VIOLATION and r.outbox == ()
    assert "read-only" in r.error


def test_static_run_refuses_storage_writes_and_logs() -> None:
    for source in ("PUSH 1 PUSH 0 SSTORE", "PUSH 0 PUSH 0 LOG0", "PUSH 1 PUSH 0 TSTORE", "PUSH 0 PUSH 0 PUSH 0 CREATE"):
        r = execute(assemble(source), address=ME, is_static=True)
        assert r.status is Status.STATIC_VIOLATION, source
        assert r.gas_used == 10_000_000


class Library(Host):
    def __init__(self, code: dict[bytes, bytes]) -> None:
        self.code = code

    def code_at(self, address: bytes) -> bytes:
        return self.code.get(address, b"")


def test_delegatecall_runs_library_code_on_the_callers_storage() -> None:
    lib = assemble("PUSH 42 PUSH 7 SSTORE CALLER PUSH 0 MSTORE PUSH 32 PUSH 0 RETURN")
    code = assemble(call("DELEGATECALL", to=LIB, out=(0, 32)) + "PUSH 0 SSTORE PUSH 0 MLOAD PUSH 1 SSTORE STOP")
    caller = bytes.fromhex("00000000000000000000000000000000000000ee")
    r = execute(code, address=ME, caller=caller, host=Library({LIB: lib}))
    assert r.status is Status.SUCCESS
    assert r.storage_writes == {7: 42, 0: 1, 1: int.from_bytes(caller, "big")}
    assert r.code_reads == (LIB,)
    assert r.outbox == ()


def test_failed_delegatecall_rolls_back_its_writes_and_messages() -> None:
    lib = assemble("PUSH 1 PUSH 9 SSTORE" + call("CALL", to=OTHER) + "PUSH 0 PUSH 0 REVERT")
    code = assemble("PUSH 5 PUSH 8 SSTORE" + call("DELEGATECALL", to=LIB) + "PUSH 0 SSTORE STOP")
    r = execute(code, address=ME, host=Library({LIB: lib}))
    assert r.status is Status.SUCCESS
    assert r.storage_writes == {8: 5}  # slot 0 gets the 0 DELEGATECALL pushed
    assert r.outbox == ()


def test_reverted_delegatecall_undoes_what_a_successful_inner_one_did() -> None:
    # inner writes slot 3 and warms slot 5, and succeeds; middle then reverts,
    # which must undo inner's effects too: slot 3 stays unwritten and slot 5 is
    # cold again for the top frame (GAS around its SLOAD measures 2100 + 7).
    inner = assemble("PUSH 5 SLOAD POP PUSH 1 PUSH 3 SSTORE STOP")
    middle = assemble(call("DELEGATECALL", to=OTHER) + "POP PUSH 0 PUSH 0 REVERT")
    code = assemble(call("DELEGATECALL", to=LIB) + "POP GAS PUSH 5 SLOAD POP GAS SWAP1 SUB PUSH 9 SSTORE STOP")
    r = execute(code, address=ME, host=Library({LIB: middle, OTHER: inner}))
    assert r.status is Status.SUCCESS
    assert r.storage_writes == {9: 2100 + 3 + 2 + 2}


def test_successful_nested_delegatecalls_keep_their_writes() -> None:
    inner = assemble("PUSH 1 PUSH 3 SSTORE STOP")
    middle = assemble(call("DELEGATECALL", to=OTHER) + "POP PUSH 2 PUSH 4 SSTORE STOP")
    code = assemble(call("DELEGATECALL", to=LIB) + "POP " + call("DELEGATECALL", to=OTHER) + "POP PUSH 5 SLOAD PUSH 6 SSTORE STOP")
    r = execute(code, address=ME, host=Library({LIB: middle, OTHER: inner}), storage={5: 7})
    assert r.status is Status.SUCCESS
    assert r.storage_writes == {3: 1, 4: 2, 6: 7}


def test_nested_delegatecall_keeps_the_original_context() -> None:
    inner = assemble("CALLER PUSH 3 SSTORE ADDRESS PUSH 4 SSTORE STOP")
    middle = assemble(call("DELEGATECALL", to=OTHER) + "POP STOP")
    code = assemble(call("DELEGATECALL", to=LIB) + "POP STOP")
    caller = bytes.fromhex("00000000000000000000000000000000000000ee")
    r = execute(code, address=ME, caller=caller, host=Library({LIB: middle, OTHER: inner}))
    assert r.storage_writes == {3: int.from_bytes(caller, "big"), 4: int.from_bytes(ME, "big")}
    assert r.code_reads == (LIB, OTHER)


def test_delegatecall_depth_is_limited() -> None:
    # A library that delegatecalls itself forever stops at depth 1024, not with a crash.
    looping = assemble(call("DELEGATECALL", to=LIB, gas=10**9) + "PUSH 1 SSTORE STOP")
    r = execute(looping, address=ME, host=Library({LIB: looping}), gas=10**9)
    assert r.status in (Status.SUCCESS, Status.OUT_OF_GAS, Status.CALL_DEPTH)


def test_create_computes_the_address_and_sends_a_deploy_message() -> None:
    init = assemble("PUSH 0 PUSH 0 RETURN")
    code = assemble(f"PUSH{len(init)} 0x{init.hex()} PUSH 0 MSTORE PUSH {len(init)} PUSH {32 - len(init)} PUSH 3 CREATE PUSH 0 SSTORE STOP")
    r = execute(code, address=ME, balance=10, nonce=5)
    expected = create_address(ME, 5)
    assert r.storage_writes == {0: int.from_bytes(expected, "big")}
    (m,) = r.outbox
    assert (m.kind, m.recipient, m.deploy_address, m.payload, m.value) == (MessageKind.DEPLOY, expected, expected, init, 3)
    assert r.nonce == 6 and r.balance == 7


def test_create_address_matches_known_ethereum_vector() -> None:
    # The first contract created by 0x6ac7ea33f8831ea9dcc53393aaa88b25a785dbf0 (nonce 0).
    sender = bytes.fromhex("6ac7ea33f8831ea9dcc53393aaa88b25a785dbf0")
    assert create_address(sender, 0).hex() == "cd234a471b72ba2f1ccf0a70fcaba648a5eecd8d"
    assert create_address(sender, 1).hex() == "343c43a37d37dff08ae8c4a11544c718abb4fcf8"


def test_create2_address_matches_eip1014_examples() -> None:
    assert create2_address(bytes(20), 0, b"\x00").hex() == "4d1a2e2bb4f88f0250f26ffff098b0b30b26bf38"
    sender = bytes.fromhex("deadbeef00000000000000000000000000000000")
    salt = int("000000000000000000000000feed000000000000000000000000000000000000", 16)
    assert create2_address(sender, salt, b"\x00").hex() == "d04116cdd17bebe565eb2422f2497e06cc1c9833"


def test_create2_in_the_vm_uses_salt_and_init_code() -> None:
    code = assemble("PUSH 0xAB PUSH 0 MSTORE8 PUSH 77 PUSH 1 PUSH 0 PUSH 0 CREATE2 PUSH 0 SSTORE STOP")
    r = execute(code, address=ME)
    expected = create2_address(ME, 77, b"\xab")
    assert r.storage_writes == {0: int.from_bytes(expected, "big")}
    assert r.outbox[0].salt == 77


def test_reading_another_actors_balance_fails_naming_the_opcode() -> None:
    r = execute(assemble(f"PUSH20 0x{OTHER.hex()} BALANCE STOP"), address=ME)
    assert r.status is Status.FORBIDDEN_READ and "BALANCE" in r.error
    own = execute(assemble("ADDRESS BALANCE PUSH 0 SSTORE SELFBALANCE PUSH 1 SSTORE STOP"), address=ME, balance=9)
    assert own.storage_writes == {0: 9, 1: 9}


def test_selfdestruct_sends_the_balance_in_a_message() -> None:
    r = execute(assemble(f"PUSH20 0x{OTHER.hex()} SELFDESTRUCT"), address=ME, balance=55)
    assert r.status is Status.SUCCESS and r.balance == 0
    (m,) = r.outbox
    assert (m.kind, m.recipient, m.value, m.payload) == (MessageKind.CALL, OTHER, 55, b"")


def test_precompiles_stay_synchronous() -> None:
    # identity (0x04) copies its input into the return area and return data.
    code = assemble("PUSH 0x1234 PUSH 0 MSTORE"
                    + call("STATICCALL", to=(4).to_bytes(20, "big"), args=(30, 2), out=(64, 32))
                    + "PUSH 0 SSTORE RETURNDATASIZE PUSH 1 SSTORE PUSH 64 MLOAD PUSH 2 SSTORE STOP")
    r = execute(code, address=ME)
    assert r.storage_writes == {0: 1, 1: 2, 2: 0x1234 << 240}
    assert r.outbox == ()


def system_call(kind: str, calldata: bytes, out: int = 32) -> str:
    words = calldata + bytes(-len(calldata) % 32)
    stores = " " + " ".join(f"PUSH32 0x{words[i:i + 32].hex()} PUSH {0x100 + i} MSTORE" for i in range(0, len(words), 32))
    return stores + " " + call(kind, to=SYSTEM_CONTRACT, args=(0x100, len(calldata)), out=(0, out))


def selector(signature: str) -> bytes:
    return keccak256(signature.encode())[:4]


def test_system_contract_gives_the_ids_of_sent_messages() -> None:
    code = assemble(call("CALL") + call("STATICCALL")
                    + system_call("STATICCALL", selector("sentMessageId(uint256)") + (1).to_bytes(32, "big"))
                    + "POP PUSH 0 MLOAD PUSH 0 SSTORE"
                    + system_call("STATICCALL", selector("lastMessageId()"))
                    + "POP PUSH 0 MLOAD PUSH 1 SSTORE STOP")
    r = execute(code, address=ME, message_id=b"\x07" * 32)
    second = int.from_bytes(r.outbox[1].message_id, "big")
    assert r.storage_writes == {0: second, 1: second}


def test_system_contract_schedule_sends_a_scheduled_message_to_self() -> None:
    payload = b"\xca\xfe"
    calldata = (selector("schedule(uint256,uint256,bytes)") + (30).to_bytes(32, "big") + (40000).to_bytes(32, "big")
                + (96).to_bytes(32, "big") + len(payload).to_bytes(32, "big") + payload.ljust(32, b"\x00"))
    r = execute(assemble(system_call("CALL", calldata) + "PUSH 0 SSTORE PUSH 0 MLOAD PUSH 1 SSTORE STOP"), address=ME)
    (m,) = r.outbox
    assert (m.kind, m.recipient, m.payload, m.delay, m.gas) == (MessageKind.SCHEDULED, ME, payload, 30, 40000)
    assert r.storage_writes == {0: 1, 1: int.from_bytes(m.message_id, "big")}


def test_system_contract_now_and_unknown_selector() -> None:
    from missive.vm import BlockContext

    code = assemble(system_call("STATICCALL", selector("now()")) + "POP PUSH 0 MLOAD PUSH 0 SSTORE"
                    + system_call("STATICCALL", b"\x00\x00\x00\x01") + "PUSH 1 SSTORE STOP")
    r = execute(code, address=ME, block=BlockContext(logical_time=99), storage={1: 5})
    assert r.storage_writes == {0: 99, 1: 0}  # unknown function: the call fails (pushes 0)


def test_schedule_is_refused_in_a_query() -> None:
    calldata = selector("schedule(uint256,uint256,bytes)") + bytes(64) + (96).to_bytes(32, "big") + bytes(32)
    r = execute(assemble(system_call("STATICCALL", calldata) + "PUSH 0 SSTORE STOP"), address=ME)
    assert r.storage_writes == {} and r.outbox == ()


def test_schedule_refuses_a_delay_that_would_overflow_logical_time() -> None:
    calldata = (selector("schedule(uint256,uint256,bytes)") + (2**200).to_bytes(32, "big") + (1000).to_bytes(32, "big")
                + (96).to_bytes(32, "big") + bytes(32))
    r = execute(assemble(system_call("CALL", calldata) + "PUSH 0 SSTORE STOP"), address=ME, storage={0: 7})
    assert r.status is Status.SUCCESS and r.outbox == () and r.storage_writes == {0: 0}  # the call failed
