"""Pay by bid (issue 23, SPEC §7; docs/market.md): escrow at admission, fee and refund with the receipt.

Each rule on one node with real contracts: who pays for a plain run, a failed and an out-of-gas
run, messages a handler sends, replies, bounces and scheduled messages; a balance that cannot
cover value + escrow; replay reproducing every escrow, fee and refund; ``--bid`` and ``bid=``.
(The conservation property over random workloads with crashes and restarts is in
tests/test_ledger_properties.py; fees on a cluster in tests/test_cluster.py.)
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from eth_abi import encode
from test_ledger_actors import ASKER, TOKEN, Ledger, selector

import missive.node as mn
from missive.actors.replay import replay
from missive.cli.main import main as cli
from missive.keys import Key
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
from missive.mailbox.store import Store

TICKER = Path(__file__).resolve().parent.parent / "examples" / "Ticker.vy"
BID = 7


def balance(ledger: Ledger, address: bytes) -> int:
    account = ledger.store.account(address)
    return account.balance if account is not None else 0


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "node")


def submit(ledger: Ledger, key: Key, kind: Kind, to: bytes, payload: bytes = b"", *, value: int = 0,
           gas: int = 500_000, bid: int = BID, wants_reply: bool = False) -> bytes:
    env = Envelope(kind, key.address, to, value=value, payload=payload, gas=gas, bid=bid,
                   nonce=ledger.nonce(key), wants_reply=wants_reply, chain_id=ledger.store.chain_id)
    (result,) = ledger.store.accept([key.sign(env)], ledger.check)
    if isinstance(result, EnvelopeError):
        raise result
    return result.message_id


def test_admission_escrows_gas_times_bid_and_the_receipt_pays_fee_and_refund(ledger: Ledger) -> None:
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    coinbase = ledger.store.coinbase()
    before = balance(ledger, ledger.alice.address)
    message = submit(ledger, ledger.alice, Kind.CALL, token, selector("transfer(address,uint256)")
                     + encode(["address", "uint256"], [ledger.bob.address, 10]), gas=200_000)
    assert balance(ledger, ledger.alice.address) == before - 200_000 * BID  # escrowed, beside the value (0)
    ledger.run()
    receipt = ledger.store.receipt(message)
    assert receipt is not None and receipt.success
    assert receipt.fee == receipt.gas_used * BID and receipt.coinbase == coinbase
    assert receipt.refund == (200_000 - receipt.gas_used) * BID
    assert balance(ledger, coinbase) == receipt.fee  # credited in the receipt's own commit
    assert balance(ledger, ledger.alice.address) == before - receipt.fee
    assert replay(ledger.store).ok


def test_a_balance_that_cannot_cover_value_and_escrow_is_refused_and_nothing_changes(ledger: Ledger) -> None:
    poor = ledger.keys.new("poor")
    ledger.store.create_account(poor.address, poor.public_key, 1_000_000)
    head = list(ledger.store.ledger())
    with pytest.raises(EnvelopeError, match=r"has 1000000, the message carries 1 and escrows 1000000 for its fees "
                                            r"\(gas 100000 × bid 10\)"):
        submit(ledger, poor, Kind.CALL, ledger.bob.address, value=1, gas=100_000, bid=10)
    assert list(ledger.store.ledger()) == head and balance(ledger, poor.address) == 1_000_000
    submit(ledger, poor, Kind.CALL, ledger.bob.address, value=0, gas=100_000, bid=10)  # exactly covered
    assert balance(ledger, poor.address) == 0
    ledger.run()
    assert balance(ledger, poor.address) == 1_000_000  # a plain transfer runs no code: all refunded


def test_failed_and_out_of_gas_runs_pay_what_they_used_and_their_value_bounces_free(ledger: Ledger) -> None:
    asker = ledger.deploy(ledger.alice, ASKER)
    start = balance(ledger, ledger.alice.address)
    reverted = submit(ledger, ledger.alice, Kind.CALL, asker, selector("fail()"), value=5, gas=100_000)
    starved = submit(ledger, ledger.alice, Kind.CALL, asker, selector("fail()"), value=5, gas=21_100)
    ledger.run()
    coinbase_before = 0
    for message, gas in ((reverted, 100_000), (starved, 21_100)):
        receipt = ledger.store.receipt(message)
        assert receipt is not None and not receipt.success
        bounce = ledger.store.message(receipt.outgoing[0])[0]  # type: ignore[index]
        assert bounce.kind is Kind.BOUNCE and bounce.gas == 0 and bounce.value == 5  # carries no escrow
        assert receipt.fee == receipt.gas_used * BID and receipt.refund == (gas - receipt.gas_used) * BID
        coinbase_before += receipt.fee
    assert balance(ledger, ledger.store.coinbase()) == coinbase_before
    assert balance(ledger, ledger.alice.address) == start - coinbase_before  # both values came back
    assert replay(ledger.store).ok


def test_messages_a_handler_sends_and_replies_carry_their_share_of_the_escrow_on(ledger: Ledger) -> None:
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    asker = ledger.deploy(ledger.alice, ASKER)
    start = balance(ledger, ledger.bob.address)
    ask = submit(ledger, ledger.bob, Kind.CALL, asker, selector("ask(address,address)")
                 + encode(["address", "address"], [token, ledger.alice.address]), gas=600_000)
    ledger.run()
    receipt = ledger.store.receipt(ask)
    assert receipt is not None and receipt.success
    (query_id,) = receipt.outgoing
    query = ledger.store.message(query_id)[0]  # type: ignore[index]
    assert query.kind is Kind.QUERY and query.bid == BID  # the bid travels with the forwarded gas
    # the run's own gas is its gas used less the gas the query carries on
    assert receipt.fee == (receipt.gas_used - query.gas) * BID
    assert receipt.fee + receipt.refund + query.gas * BID == 600_000 * BID
    answered = ledger.store.receipt(query_id)
    assert answered is not None
    (reply_id,) = answered.outgoing
    reply = ledger.store.message(reply_id)[0]  # type: ignore[index]
    assert reply.kind is Kind.REPLY and reply.bid == BID and reply.gas == query.gas - answered.gas_used
    assert answered.refund == 0  # a request's unused gas goes on with its reply
    replied = ledger.store.receipt(reply_id)
    assert replied is not None and replied.success
    fees = receipt.fee + answered.fee + replied.fee
    assert balance(ledger, ledger.store.coinbase()) == fees
    assert balance(ledger, ledger.bob.address) == start - fees  # every refund reached bob, tx.origin
    assert replay(ledger.store).ok


def test_scheduled_messages_are_paid_from_the_gas_the_scheduling_run_set_aside(tmp_path: Path) -> None:
    node = mn.Node.init(tmp_path / "node", default_balance=10**24, encrypt_keys=False)
    node.default_bid = 3
    ticker = node.deploy(TICKER)
    start = node.balance(node.default.address)
    sent = ticker.start(2, 3, gas=2_000_000)
    assert sent.follow(timeout=30).ok
    fees = 0
    kinds = []
    for item in node.trace(sent.id).walk():
        assert item.receipt is not None and item.envelope.bid == 3
        kinds.append(item.envelope.kind)
        fees += item.receipt.fee
    assert kinds.count(Kind.SCHEDULED) == 3
    # the default account is also the node's coinbase (`missive init`): it pays the fees to itself
    assert node.store.coinbase() == node.default.address
    assert node.balance(node.default.address) == start
    node.close()
    assert replay(Store(tmp_path / "node", readonly=True)).ok


def test_bid_from_the_cli_and_the_python_api_and_a_bid_of_zero_changes_nothing(tmp_path: Path) -> None:
    node = tmp_path / "node"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli(["init", "--dir", str(node), "--unencrypted-keys"]) == 0
        assert cli(["account", "new", "bob", "--dir", str(node)]) == 0
    n = mn.Node.open(node)
    bob = n.wallet("bob")
    n.send(bob.address, value=10**20).receipt()
    receipt = n.send(n.default.address, sender="bob").receipt()
    assert (receipt.fee, receipt.refund, receipt.coinbase) == (0, 0, b"")  # bids of 0: as before the market
    receipt = n.send(n.default.address, sender="bob", bid=2, gas=50_000).receipt()
    assert (receipt.fee, receipt.refund) == (0, 100_000)  # bid= in Python: a plain transfer is all refunded
    assert n.balance(bob.address) == 10**20
    n.close()
    example = Path(__file__).resolve().parent.parent / "examples" / "Token.vy"
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli(["deploy", str(example), "Tok", "TOK", "1000", "--dir", str(node), "--bid", "1"]) == 0
    n = mn.Node.open(node)
    (token,) = [a for a, account in n.accounts().items() if account.is_contract]
    n.close()
    transfer = ["send", "0x" + token.hex(), "transfer(address,uint256)", "0x" + bob.address.hex(), "5",
                "--dir", str(node)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli([*transfer, "--bid", "5"])
    assert status == 0 and "fee:" in out.getvalue(), out.getvalue()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = cli([*transfer, "--from", "bob", "--bid", str(10**20)])
    assert status == 2 and "escrows" in err.getvalue() and err.getvalue().count("\n") == 1, err.getvalue()
