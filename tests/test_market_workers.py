"""The worker registry (issue 23 step 3, first part; docs/market.md "Workers"): signed records on the
ledger that lock a stake, unbond it and give it back after a delay, replayed and re-checked; a node
registered as a worker pays fees to its coinbase and refuses bids below its minimum at admission."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from eth_abi import encode
from test_ledger_actors import TOKEN, Ledger, selector
from test_market_fees import balance, submit

from missive.actors.replay import replay
from missive.cli.main import main as cli
from missive.keys import Key
from missive.mailbox.envelope import EnvelopeError, Kind
from missive.market.workers import MIN_STAKE, UNBOND_DELAY, Worker, args_of, digest


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "node")


def op(ledger: Ledger, key: Key, name: str, stake: int = 0, coinbase: bytes | None = None, min_bid: int = 0,
       *, signer: Key | None = None) -> Worker:
    store = ledger.store
    args = args_of(name, stake, key.address if coinbase is None else coinbase, min_bid, store.clock())
    signature = bytes((signer or key).signing_key.sign(digest(store.chain_id, name, key.address, args)).signature)
    return store.worker_op(name, key.address, args, (signer or key).public_key, signature)


def held(ledger: Ledger) -> int:
    """Every coin: balances, stakes and unbonding stakes (nothing is in flight in these tests)."""
    store = ledger.store
    return (sum(a.balance for _, a in store.accounts())
            + sum(w.stake + w.unbonding for _, w in store.workers()))


def test_register_unbond_withdraw_conserve_and_replay(ledger: Ledger) -> None:
    alice, bob = ledger.alice, ledger.bob
    token = ledger.deploy(alice, TOKEN, encode(["uint256"], [1000]))  # before the minimum bid
    supply, before = held(ledger), balance(ledger, alice.address)
    worker = op(ledger, alice, "register", 10**17, bob.address, 2)
    assert worker == Worker(10**17, bob.address, 2) and ledger.store.coinbase() == bob.address
    assert balance(ledger, alice.address) == before - 10**17 and held(ledger) == supply
    # the node now executes as alice's worker: bids below 2 are refused at admission, with the minimum
    with pytest.raises(EnvelopeError, match="below this node's minimum bid 2"):
        submit(ledger, bob, Kind.CALL, alice.address, bid=1)
    message = submit(ledger, alice, Kind.CALL, token, selector("transfer(address,uint256)")
                     + encode(["address", "uint256"], [bob.address, 1]), bid=2, gas=100_000)
    ledger.run()
    receipt = ledger.store.receipt(message)
    assert receipt is not None and receipt.fee and receipt.coinbase == bob.address  # fees to the worker's coinbase
    before -= 100_000 * 2 - receipt.refund
    unbonding = op(ledger, alice, "unbond")
    assert unbonding.stake == 0 and unbonding.unbonding == 10**17
    assert unbonding.release_at == ledger.store.clock() + UNBOND_DELAY
    with pytest.raises(EnvelopeError, match="unbonding already"):
        op(ledger, alice, "unbond")
    with pytest.raises(EnvelopeError, match="to go"):
        op(ledger, alice, "withdraw")
    ledger.store.release_scheduled(unbonding.release_at)  # logical time passes
    middle = balance(ledger, alice.address)
    op(ledger, alice, "withdraw")
    assert balance(ledger, alice.address) == middle + 10**17 and held(ledger) == supply
    report = replay(ledger.store)
    assert report.ok, report.divergence and report.divergence.describe()
    assert [r[1] for _, r in ledger.store.ledger() if r[0] == "worker"] == ["register", "unbond", "withdraw"]


@pytest.mark.parametrize("case", ["above balance", "below minimum", "twice", "forged", "unbond unregistered",
                                  "withdraw nothing"])
def test_a_bad_registry_operation_is_one_line_and_changes_nothing(ledger: Ledger, case: str) -> None:
    alice, bob = ledger.alice, ledger.bob
    op(ledger, bob, "register", MIN_STAKE)

    def state() -> object:
        return list(ledger.store.ledger()), ledger.store.accounts(), ledger.store.workers()

    before = state()
    with pytest.raises(EnvelopeError) as refused:
        if case == "above balance":
            op(ledger, alice, "register", 10**19)
        elif case == "below minimum":
            op(ledger, alice, "register", MIN_STAKE - 1)
        elif case == "twice":
            op(ledger, bob, "register", MIN_STAKE)
        elif case == "forged":
            op(ledger, alice, "register", MIN_STAKE, signer=bob)
        elif case == "unbond unregistered":
            op(ledger, alice, "unbond")
        else:
            op(ledger, alice, "withdraw")
    assert "\n" not in str(refused.value)
    assert state() == before


def test_missive_worker_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISSIVE_UNENCRYPTED_KEYS", "1")
    node = str(tmp_path / "n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        assert cli(["init", "--dir", node]) == 0
        assert cli(["worker", "register", "--stake", "5000", "--min-bid", "3", "--dir", node]) == 0
        assert cli(["worker", "status", "--dir", node]) == 0
        assert cli(["worker", "unbond", "--dir", node]) == 0
        assert cli(["worker", "unbond", "--dir", node]) == 2
    text = out.getvalue()
    assert "registered: stake 5000 locked" in text and "min bid 3  (this node's worker)" in text
    assert "unbonding 5000: withdraw from logical time" in text and "a second unbond changes nothing" in text
