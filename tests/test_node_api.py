"""The Python API of a node directory (missive.node): real Vyper, real LMDB files in temp dirs."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from test_ledger_actors import ASKER  # the query -> reply -> onReply contract

import missive.node as mn
from missive.actors.runtime import ExecutorLock
from missive.mailbox.envelope import EnvelopeError, Kind
from missive.toolchain.compiler import CompiledContract, compile_source

REPO = Path(__file__).resolve().parents[1]
TOKEN_PATH = REPO / "examples" / "Token.vy"

GADGET = """
# pragma version ^0.4.0
stored: public(uint256)
owner: public(address)

@deploy
@payable
def __init__(start: uint256):
    assert start != 13, "unlucky start"
    self.stored = start
    self.owner = msg.sender

@external
def store(x: uint256, y: uint256 = 1):
    self.stored = x * y

@external
@view
def checked(x: uint256) -> uint256:
    assert x < 100, "x too big"
    return x * 2

@external
@view
def pair(x: uint256) -> (uint256, address):
    return x + 1, self.owner

@external
@view
def words(xs: DynArray[uint256, 4], tag: bytes4, name: String[16]) -> (uint256, String[16], bool):
    total: uint256 = 0
    for x: uint256 in xs:
        total += x
    return total, name, tag == 0x01020304

@external
@payable
def deposit() -> uint256:
    return self.balance

@external
def fail_hard():
    x: uint256 = 0
    self.stored = 1 // x
"""


@pytest.fixture(scope="module")
def token_code() -> CompiledContract:
    return compile_source(TOKEN_PATH)


@pytest.fixture
def node(tmp_path: Path) -> Any:
    n = mn.Node.init(tmp_path / "node")
    yield n
    n.close()


def deploy_token(node: mn.Node, code: CompiledContract, sender: mn.Wallet, supply: int = 10**6) -> mn.Contract:
    return node.deploy(code.bytecode, "Tok", "TOK", supply, sender=sender, abi=code.abi, name="Token")


def test_deploy_transfer_and_query(node: mn.Node, token_code: CompiledContract) -> None:
    alice = node.new_account("alice", balance=10**21)
    bob = node.new_account("bob")
    assert node.default == alice  # no "default" key: the first account created
    token = node.deploy(TOKEN_PATH, "Tok", "TOK", 10**6)  # from the .vy file, sender defaults to alice
    assert node.account(token.address).is_contract  # type: ignore[union-attr]
    assert token.name() == "Tok" and token.symbol() == "TOK" and token.decimals() == 18

    sent = token.transfer(bob.address, 10, sender=alice)
    # durable, waiting, not handled: the node runs only when asked to
    assert isinstance(sent, mn.Sent) and sent.kind is Kind.CALL
    assert node.receipt(sent.id) is None and node.message(sent.id) is not None
    assert [e.id for e in node.inbox(token)] == [sent.id]
    receipt = sent.receipt()
    assert receipt.success and node.inbox(token) == []
    assert sent.reply() is True  # the call's return value, decoded
    assert token.events(receipt) == [("Transfer", {"sender": alice.hex, "receiver": bob.hex, "value": 10})]

    more = [token.transfer(bob, 1) for _ in range(3)]  # wallets stand for their addresses
    assert node.run_until_idle() == 3 and node.run_until_idle() == 0
    assert all(node.receipt(s.hex).success for s in more)  # type: ignore[union-attr]
    assert token.balanceOf(bob) == 13
    assert token.balanceOf(alice.hex, sender=bob) == 10**6 - 13

    # the token's mailbox is the ordered record of what it handled, with receipts
    handled = node.mailbox(token)
    assert [r.position for _, r in handled] == list(range(len(handled)))  # type: ignore[union-attr]
    ids = [e.id for e, _ in handled]
    assert ids[0] == token.deployment.id and ids[4:8] == [sent.id] + [s.id for s in more]  # type: ignore[union-attr]
    # queries answer in the querier's mailbox: bob got one reply
    replies = [e for e, _ in node.mailbox(bob) if e.kind is Kind.REPLY]
    assert len(replies) == 1 and replies[0].sender == token.address

    kinds = [r.type for r in node.ledger()]
    # the node's own worker (its ledger key's account, registered by init), then alice and bob
    assert kinds[:4] == ["genesis", "worker", "genesis", "genesis"] and kinds.count("accept") == 10
    tail = node.ledger(last=2)
    assert [r.type for r in tail] == ["receipt", "receipt"] and tail[-1].receipt is not None
    assert node.resolve_id(sent.hex[:18]) == sent.id


def test_async_twins_under_trio(node: mn.Node, token_code: CompiledContract) -> None:
    alice = node.new_account("default", balance=10**21)
    bob = node.new_account("bob")

    async def main() -> None:
        token = await node.adeploy(token_code.bytecode, "Tok", "TOK", 1000, abi=token_code.abi)
        sent = await token.transfer.acall(bob.address, 7)
        assert (await sent.areceipt()).success
        assert await sent.areply() is True
        sent2 = token.transfer(bob, 3)  # sending never runs trio: fine inside it
        await node.arun_until_idle()
        assert node.receipt(sent2.id).success  # type: ignore[union-attr]
        # several tasks waiting at once: one runs the actors, the others watch the store
        results: dict[str, int] = {}

        async def ask(who: mn.Wallet) -> None:
            results[who.name] = await token.balanceOf.acall(who)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, alice)
            nursery.start_soon(ask, bob)
        assert results == {"default": 990, "bob": 10}
        # the blocking twin refuses inside trio, before anything is sent
        nonce = alice.nonce
        with pytest.raises(mn.NodeError, match="acall"):
            token.balanceOf(bob)
        with pytest.raises(mn.NodeError, match="arun_until_idle"):
            node.run_until_idle()
        assert alice.nonce == nonce

    trio.run(main)
    assert node.default == alice


def test_contract_query_reaches_on_reply(node: mn.Node, token_code: CompiledContract) -> None:
    alice = node.new_account("alice", balance=10**21)
    token = deploy_token(node, token_code, alice, supply=777)
    asker = node.deploy(ASKER, name="Asker")
    sent = asker.ask(token.address, alice.address)
    receipt = sent.receipt()
    assert receipt.success and len(receipt.outgoing) == 1  # the query to the token
    query = node.message(receipt.outgoing[0])
    assert query is not None and query.kind is Kind.QUERY and query.recipient == token.address
    node.run_until_idle()  # query -> token -> reply -> asker.onReply
    assert node.account(asker.address).handled == 3  # type: ignore[union-attr]  # deploy, ask, reply
    assert asker.replies() == 1 and asker.answer() == 777
    assert asker.asked() == receipt.outgoing[0]


def test_reverts_raise_with_reason(node: mn.Node, token_code: CompiledContract) -> None:
    alice = node.new_account("alice", balance=10**21)
    token = deploy_token(node, token_code, alice, supply=100)
    sent = token.transfer(alice, 1000)
    receipt = sent.receipt()
    assert receipt.status == "revert"
    with pytest.raises(mn.Reverted, match="transfer.*reverted: balance too low") as info:
        sent.reply()
    assert info.value.reason == "balance too low" and info.value.receipt == receipt

    gadget = node.deploy(GADGET, 5)
    with pytest.raises(mn.Reverted, match="x too big") as info:
        gadget.checked(500)  # a query's failure comes back in its reply
    assert info.value.status == "revert"
    assert gadget.checked(21) == 42
    with pytest.raises(mn.Reverted, match="panic|reverted"):
        gadget.fail_hard().reply()
    with pytest.raises(mn.Reverted, match="deploying contract reverted: unlucky start"):
        node.deploy(GADGET, 13)
    before = alice.balance
    paid = gadget.deposit(value=1234)
    assert paid.reply() == 1234 and alice.balance == before - 1234 and gadget.balance == 1234
    # value carried by a failed call bounces back
    bounced = node.send(gadget, gadget.fail_hard.encode(), value=500)
    assert alice.balance == before - 1234 - 500  # in flight
    assert not bounced.receipt().success
    node.run_until_idle()
    assert alice.balance == before - 1234 and gadget.balance == 1234


def test_abi_values_and_overloads(node: mn.Node) -> None:
    alice = node.new_account("alice", balance=10**21)
    gadget = node.deploy(GADGET, 5, value=99)
    assert gadget.balance == 99 and gadget.stored() == 5
    assert gadget.pair(1) == (2, alice.hex)
    assert gadget.words([1, 2, 3], "0x01020304", "hey") == (6, "hey", True)
    assert gadget.words([], b"\x00" * 4, "") == (0, "", False)
    # Vyper default arguments make overloads; the argument count picks one
    assert isinstance(gadget.store, mn.OverloadedFunction)
    gadget.store(7).receipt()
    assert gadget.stored() == 7
    gadget.store(7, 3).receipt()
    assert gadget.stored() == 21
    gadget.function("store(uint256,uint256)")(2, 2).receipt()
    assert gadget.stored() == 4
    with pytest.raises(mn.ArgumentError, match="no overload takes 3"):
        gadget.store(1, 2, 3)


def test_bad_calls_fail_before_anything_is_sent(node: mn.Node, token_code: CompiledContract) -> None:
    alice = node.new_account("alice", balance=10**21)
    token = deploy_token(node, token_code, alice)
    length, nonce = node.ledger_length(), alice.nonce
    with pytest.raises(AttributeError, match="no function 'transferr'; functions: allowance, approve, balanceOf"):
        token.transferr(alice, 1)
    with pytest.raises(mn.ArgumentError, match=r"transfer\(address,uint256\): expected 2 arguments, got 1"):
        token.transfer(alice)
    with pytest.raises(mn.ArgumentError, match="argument amount \\(uint256\\) cannot be -1"):
        token.transfer(alice, -1)
    with pytest.raises(mn.ArgumentError, match="cannot be 'ten'"):
        token.transfer(alice, "ten")
    with pytest.raises(mn.ArgumentError, match="'0x1234' is not an address"):
        token.transfer("0x1234", 1)
    with pytest.raises(mn.ArgumentError, match="nonpayable: it cannot receive value"):
        token.transfer(alice, 1, value=5)
    with pytest.raises(mn.ArgumentError, match="a query cannot carry value"):
        token.balanceOf(alice, value=5)
    with pytest.raises(mn.KeystoreError, match="no key 'mallory'"):
        token.transfer(alice, 1, sender="mallory")
    with pytest.raises(mn.ArgumentError, match="gas must be"):
        token.transfer(alice, 1, gas=10**9)
    with pytest.raises(mn.ArgumentError, match="constructor: expected 3 arguments"):
        node.deploy(token_code.bytecode, "x", abi=token_code.abi)
    with pytest.raises(TypeError):
        token.transfer(alice, 1, sendr=alice)
    assert node.ledger_length() == length and alice.nonce == nonce
    # what admission refuses comes back as its EnvelopeError, and changes nothing
    poor = node.new_account("poor")
    with pytest.raises(EnvelopeError, match="balance too low"):
        node.send(token, b"", value=1, sender=poor)
    with pytest.raises(EnvelopeError, match="unknown contract"):
        node.send(b"\x42" * 20, b"\x01\x02\x03\x04")


def test_raw_messages_and_reopen(tmp_path: Path, token_code: CompiledContract) -> None:
    path = tmp_path / "node"
    with mn.Node.init(path, default_balance=10**20) as node:
        assert node.default.name == "default"
        bob = node.new_account("bob")
        token = deploy_token(node, token_code, node.default)
        data = token.transfer.encode(bob, 5)
        assert node.send(token.address, data).receipt().success
        answer = node.query(token.hex, token.balanceOf.encode(bob)).reply()
        assert answer == (5).to_bytes(32, "big")
        address = token.address
    with pytest.raises(mn.NodeError, match="already exists"):
        mn.Node.init(path)
    with pytest.raises(mn.StoreError, match="no Missive node"):
        mn.Node.open(tmp_path / "elsewhere")
    with mn.Node.open(path) as node:
        again = node.at(address)  # the ABI registered at deploy
        assert again.balanceOf(node.wallet("bob")) == 5
        assert [w.name for w in node.wallets()] == ["default", "bob"]
        with pytest.raises(mn.NodeError, match="no contract at"):
            node.at(b"\x01" * 20)


def test_waits_for_another_executor(node: mn.Node, token_code: CompiledContract) -> None:
    alice = node.new_account("alice", balance=10**21)
    token = deploy_token(node, token_code, alice)
    other = ExecutorLock(node.path)  # as if another process were running the actors
    other.acquire()
    try:
        sent = token.transfer(alice, 1)
        with pytest.raises(mn.NodeTimeout, match="not handled yet"):
            sent.receipt(timeout=0.2)
        releaser = threading.Timer(0.3, other.release)
        releaser.start()
        started = time.monotonic()
        assert sent.receipt(timeout=30).success  # polled, then ran the actors itself once free
        assert time.monotonic() - started >= 0.2
        releaser.join()
    finally:
        other.release()


def test_send_many_is_one_group_commit_all_or_nothing(node: mn.Node, token_code: CompiledContract) -> None:
    alice = node.new_account("alice", balance=10**21)
    bob = node.new_account("bob", balance=10)
    token = deploy_token(node, token_code, alice)
    seen: list[tuple[bytes, bool]] = []
    stop = node.observe(lambda pairs: seen.extend((e.id, r.success) for e, r in pairs))
    sent = node.send_many([(alice, token, token.transfer.encode(bob.address, i)) for i in range(1, 6)]
                          + [(bob, token, token.approve.encode(alice.address, 3))])
    assert [s.envelope.nonce for s in sent[:5]] == list(range(alice.nonce - 5, alice.nonce))  # per-sender order
    node.run_until_idle()
    assert token.balanceOf(bob.address) == 15
    assert [message_id for message_id, _ in seen[:6]] and {s.id for s in sent} <= {i for i, _ in seen}
    stop()
    seen.clear()
    ledger_before, alice_nonce = node.ledger_length(), alice.nonce
    # one refused message (bob has 10 wei, asks to send 11) and nothing of the batch is sent
    with pytest.raises(EnvelopeError, match="message 1 of 2 refused.*balance too low"):
        node.send_many([(alice, token, token.transfer.encode(bob.address, 1)), (bob, token, b"")], value=11)
    assert node.ledger_length() == ledger_before and alice.nonce == alice_nonce and node.inbox(token) == []
    token.transfer(bob.address, 1, sender=alice).receipt()
    assert seen == []  # the observer was stopped
