"""Contract actors on the LMDB ledger (one node): real Vyper, real LMDB files in temp dirs."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import vyper
from eth_abi import decode, encode

from missive.actors.runtime import Runtime
from missive.keys import Key, Keystore
from missive.mailbox.admission import checker
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
from missive.mailbox.store import Store
from missive.replicas.records import Placement
from missive.toolchain.compiler import wrap_runtime
from missive.vm.creation import create_address
from missive.vm.keccak import keccak256
from tests.copies_support import copies_of

TOKEN = """
# pragma version ^0.4.0
balanceOf: public(HashMap[address, uint256])

@deploy
def __init__(supply: uint256):
    self.balanceOf[msg.sender] = supply

@external
def transfer(to: address, amount: uint256) -> bool:
    self.balanceOf[msg.sender] -= amount
    self.balanceOf[to] += amount
    return True
"""

ASKER = """
# pragma version ^0.4.0
interface System:
    def lastMessageId() -> bytes32: view

SYSTEM: constant(address) = 0x000000000000000000000000006D697373697665
answer: public(uint256)
asked: public(bytes32)
replies: public(uint256)

@external
def ask(token: address, who: address):
    ignored: Bytes[32] = raw_call(token, concat(method_id("balanceOf(address)"), convert(who, bytes32)), max_outsize=32, gas=100000, is_static_call=True)
    self.asked = staticcall System(SYSTEM).lastMessageId()

@external
def onReply(request_id: bytes32, success: bool, data: Bytes[256]):
    assert request_id == self.asked
    self.replies += 1
    if success:
        self.answer = convert(slice(data, 0, 32), uint256)

@external
@payable
def fail():
    raise "no"
"""


def selector(signature: str) -> bytes:
    return keccak256(signature.encode())[:4]


def compile_init(source: str) -> bytes:
    return bytes.fromhex(vyper.compile_code(source, output_formats=["bytecode"])["bytecode"][2:])


class Ledger:
    """A node directory with two funded accounts, driven synchronously."""

    def __init__(self, path: Path, placement: Placement | None = None) -> None:
        self.store = Store(path, create=True)
        if placement is not None:
            copies_of(self.store, placement)
        self.keys = Keystore(path, create=True)
        self.alice = self.keys.new("alice")
        self.bob = self.keys.new("bob")
        for key in (self.alice, self.bob):
            self.store.create_account(key.address, key.public_key, 10**18)
        self.check = checker(self.store)
        self.runtime = Runtime(self.store)

    def nonce(self, key: Key) -> int:
        account = self.store.account(key.address)
        return account.nonce if account is not None else 0

    def submit(self, key: Key, kind: Kind, to: bytes, payload: bytes = b"", value: int = 0, gas: int = 500_000,
               wants_reply: bool = False) -> bytes:
        env = Envelope(kind, key.address, to, value=value, payload=payload, gas=gas, nonce=self.nonce(key), wants_reply=wants_reply,
                       chain_id=self.store.chain_id)
        (result,) = self.store.accept([key.sign(env)], self.check)
        if isinstance(result, EnvelopeError):
            raise result
        return result.message_id

    def deploy(self, key: Key, source: str, args: bytes = b"") -> bytes:
        address = create_address(key.address, self.nonce(key))
        message_id = self.submit(key, Kind.DEPLOY, address, compile_init(source) + args, gas=3_000_000)
        self.run()
        receipt = self.store.receipt(message_id)
        assert receipt is not None and receipt.success, receipt
        return address

    def run(self) -> int:
        """Handle everything, as a node would: on a cluster node's store, messages made here for actors
        held here wait for their records' acknowledgement (Store.release_held); here every record
        counts as acknowledged at once."""
        handled = 0
        while True:
            released = self.release_held()
            ran = trio.run(self.runtime.run)
            handled += ran
            if not released and not ran:
                return handled

    def release_held(self) -> int:
        if self.store.replication is None:
            return 0
        copies = copies_of(self.store)
        keys = [key for key, _ in copies.queued("outbound", copies.placement.me, 10**6)]
        if not keys:
            return 0
        (placed,) = self.store.write_together([lambda txn: copies.release_held(keys, txn)])
        return int(placed) + len(keys)

    def balance_of(self, token: bytes, who: bytes) -> int:
        qid = self.submit(self.bob, Kind.QUERY, token, selector("balanceOf(address)") + encode(["address"], [who]), wants_reply=True)
        self.run()
        for message_id in reversed(self.store.mailbox(self.bob.address)):
            envelope = self.store.message(message_id)[0]  # type: ignore[index]
            if envelope.kind is Kind.REPLY and envelope.request_id == qid:
                assert envelope.success
                return int(decode(["uint256"], envelope.payload)[0])
        raise AssertionError("no reply")


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "node")


def transfer(to: bytes, amount: int) -> bytes:
    return selector("transfer(address,uint256)") + encode(["address", "uint256"], [to, amount])


def test_deploy_transfer_and_query_reply(ledger: Ledger) -> None:
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    ids = [ledger.submit(ledger.alice, Kind.CALL, token, transfer(ledger.bob.address, 10)) for _ in range(5)]
    assert ledger.run() == 5
    assert all(ledger.store.receipt(i).success for i in ids)  # type: ignore[union-attr]
    assert ledger.balance_of(token, ledger.bob.address) == 50
    assert ledger.balance_of(token, ledger.alice.address) == 950
    # the mailbox is the ordered record of what the token handled
    assert ledger.store.mailbox(token)[1:6] == ids


def test_contract_query_reply_reaches_on_reply(ledger: Ledger) -> None:
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [777]))
    asker = ledger.deploy(ledger.alice, ASKER)
    call = selector("ask(address,address)") + encode(["address", "address"], [token, ledger.alice.address])
    ledger.submit(ledger.alice, Kind.CALL, asker, call)
    ledger.run()  # ask -> query to token -> reply to asker -> onReply
    storage = ledger.store.storage(asker)
    assert 777 in storage.values()
    assert ledger.store.account(asker).handled == 3  # type: ignore[union-attr]  # deploy, ask, reply


def test_failed_call_bounces_value_and_changes_nothing(ledger: Ledger) -> None:
    asker = ledger.deploy(ledger.alice, ASKER)
    before = ledger.store.account(ledger.alice.address).balance  # type: ignore[union-attr]
    message_id = ledger.submit(ledger.alice, Kind.CALL, asker, selector("fail()"), value=12345)
    assert ledger.store.account(ledger.alice.address).balance == before - 12345  # type: ignore[union-attr]  # in flight
    ledger.run()
    receipt = ledger.store.receipt(message_id)
    assert receipt is not None and receipt.status == "revert"
    assert ledger.store.account(asker).balance == 0  # type: ignore[union-attr]
    assert ledger.store.account(ledger.alice.address).balance == before  # type: ignore[union-attr]  # bounced back


def test_duplicate_delivery_is_handled_once(ledger: Ledger) -> None:
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [100]))
    env = Envelope(Kind.CALL, ledger.alice.address, token, payload=transfer(ledger.bob.address, 1), gas=200_000,
                   nonce=ledger.nonce(ledger.alice), chain_id=ledger.store.chain_id)
    signed = ledger.alice.sign(env)
    first, again = ledger.store.accept([signed, signed], ledger.check)
    assert not first.duplicate and again.duplicate  # type: ignore[union-attr]
    ledger.run()
    assert ledger.store.accept([signed], ledger.check)[0].duplicate  # type: ignore[union-attr]
    ledger.run()
    assert ledger.balance_of(token, ledger.bob.address) == 1


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda env, pk, sig: (env, pk, bytes(64)), "bad signature"),
        (lambda env, pk, sig: (env, bytes(32), sig), "does not belong"),
        (lambda env, pk, sig: (Envelope(env.kind, env.sender, env.recipient, payload=env.payload, nonce=env.nonce + 5, gas=env.gas, chain_id=env.chain_id), pk, sig), "bad signature"),
    ],
)
def test_forged_messages_are_rejected_and_change_nothing(ledger: Ledger, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [100]))
    seq_before = list(ledger.store.ledger())
    env = Envelope(Kind.CALL, ledger.alice.address, token, payload=transfer(ledger.bob.address, 1), nonce=ledger.nonce(ledger.alice),
                   chain_id=ledger.store.chain_id)
    (result,) = ledger.store.accept([mutate(*ledger.alice.sign(env))], ledger.check)
    assert isinstance(result, EnvelopeError) and message in str(result)
    assert list(ledger.store.ledger()) == seq_before


def test_admission_errors_name_the_problem(ledger: Ledger) -> None:
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [100]))
    stranger = ledger.keys.new("stranger")
    with pytest.raises(EnvelopeError, match="unknown account"):
        ledger.submit(stranger, Kind.CALL, token, transfer(ledger.bob.address, 1))
    with pytest.raises(EnvelopeError, match="balance too low"):
        ledger.submit(ledger.alice, Kind.CALL, token, transfer(ledger.bob.address, 1), value=10**19)
    with pytest.raises(EnvelopeError, match="unknown contract"):
        ledger.submit(ledger.alice, Kind.CALL, b"\x42" * 20, b"\x01\x02\x03\x04")
    with pytest.raises(EnvelopeError, match="exceeds"):
        ledger.submit(ledger.alice, Kind.CALL, token, b"\x00" * (200 * 1024))
    env = Envelope(Kind.CALL, ledger.alice.address, token, payload=b"", nonce=ledger.nonce(ledger.alice) + 1,
                   chain_id=ledger.store.chain_id)
    (result,) = ledger.store.accept([ledger.alice.sign(env)], ledger.check)
    assert isinstance(result, EnvelopeError) and "nonce" in str(result)


def test_malformed_envelope_bytes_are_rejected_clearly() -> None:
    for raw, message in [(b"\xc1", "not msgpack"), (b"\x90", "17 fields"), (Envelope(Kind.CALL, bytes(20), bytes(20)).canonical()[:-3], "not msgpack")]:
        with pytest.raises(EnvelopeError, match=message):
            Envelope.decode(raw)


def test_fifo_per_sender_and_state_survives_reopen(ledger: Ledger, tmp_path: Path) -> None:
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [100]))
    ids = [ledger.submit(ledger.alice, Kind.CALL, token, transfer(ledger.bob.address, 1)) for _ in range(20)]
    ledger.run()
    positions = [ledger.store.receipt(i).position for i in ids]  # type: ignore[union-attr]
    assert positions == sorted(positions)
    ledger.store.close()
    reopened = Store(tmp_path / "node")
    assert reopened.account(token).handled == 21  # type: ignore[union-attr]
    assert sum(reopened.storage(token).values()) == 100


def test_a_busy_actor_does_not_starve_the_others(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "node")
    busy = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [10**6]))
    quiet = ledger.deploy(ledger.bob, TOKEN, encode(["uint256"], [10]))
    ledger.runtime = Runtime(ledger.store, batch=8, per_actor=4)
    for _ in range(40):
        ledger.submit(ledger.alice, Kind.CALL, busy, transfer(ledger.bob.address, 1))
    quiet_id = ledger.submit(ledger.bob, Kind.CALL, quiet, transfer(ledger.alice.address, 1))
    runtime = ledger.runtime
    trio.run(lambda: runtime.run(until=lambda: runtime.rounds >= 1))
    assert runtime.handled_total == 5  # 4 (the cap) from the busy actor, 1 from the quiet one
    assert ledger.store.receipt(quiet_id) is not None  # handled in the first round, not after the 40


def test_on_reply_cannot_be_forged_by_a_call(ledger: Ledger) -> None:
    asker = ledger.deploy(ledger.alice, ASKER)
    forged = selector("onReply(bytes32,bool,bytes)") + encode(["bytes32", "bool", "bytes"], [bytes(32), True, bytes(32)])
    message_id = ledger.submit(ledger.bob, Kind.CALL, asker, forged, value=5)
    ledger.run()
    receipt = ledger.store.receipt(message_id)
    assert receipt is not None and receipt.status == "failed" and "reply message" in receipt.error
    assert ledger.store.account(asker).balance == 0  # type: ignore[union-attr]  # the value bounced


def test_a_callee_that_halts_still_answers_out_of_the_requests_own_gas(ledger: Ledger) -> None:
    """The reply to a callee that halted exceptionally still runs onReply, on gas kept back from the request
    (REPLY_GAS_FLOOR, at most half of it), never on gas from nowhere (before: a 100,000-gas floor was added)."""
    halting = create_address(ledger.alice.address, ledger.nonce(ledger.alice))
    deployed = ledger.submit(ledger.alice, Kind.DEPLOY, halting, wrap_runtime(b"\xfe"), gas=100_000)  # INVALID
    asker = ledger.deploy(ledger.alice, ASKER)
    assert ledger.store.receipt(deployed).success  # type: ignore[union-attr]
    ask = ledger.submit(ledger.alice, Kind.CALL, asker, selector("ask(address,address)")
                        + encode(["address", "address"], [halting, ledger.bob.address]))
    ledger.run()
    (query_id,) = ledger.store.receipt(ask).outgoing  # type: ignore[union-attr]
    query = ledger.store.message(query_id)[0]  # type: ignore[index]
    halted = ledger.store.receipt(query_id)
    assert halted is not None and not halted.success and halted.status != "revert" and query.gas == 100_000
    (reply_id,) = halted.outgoing
    reply = ledger.store.message(reply_id)[0]  # type: ignore[index]
    assert reply.gas == 50_000 and halted.gas_used + reply.gas == query.gas  # nothing beyond what the query had
    assert ledger.store.receipt(reply_id).success  # type: ignore[union-attr]  # onReply ran on it
    assert ledger.store.storage(asker).get(2) == 1  # replies == 1


def test_a_message_stamped_far_in_the_future_is_refused(ledger: Ledger) -> None:
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [10]))
    env = Envelope(Kind.QUERY, ledger.alice.address, token, payload=selector("balanceOf(address)") + encode(["address"], [token]),
                   nonce=ledger.nonce(ledger.alice), time=2**64 - 1, wants_reply=True, chain_id=ledger.store.chain_id)
    (result,) = ledger.store.accept([ledger.alice.sign(env)], ledger.check)
    assert isinstance(result, EnvelopeError) and "too far ahead" in str(result)
    assert ledger.store.pending() == []
