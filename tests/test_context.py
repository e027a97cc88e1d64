"""Ethereum's context in Missive (issue 26, item 4): block.timestamp in seconds, block.number,
CHAINID the ledger's own id, tx.origin the root of the message tree; all recorded, so replay and
re-execution stay bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_abi import encode
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ledger_actors import TOKEN, Ledger, transfer
from test_state_diffs import REPLICA, ExecutesAll

import missive.node as mn
from missive.actors.replay import replay
from missive.mailbox.admission import checker
from missive.mailbox.diffs import DiffError, StateDiff
from missive.mailbox.disk import StoreError
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
from missive.mailbox.records import Account, Receipt
from missive.mailbox.store import MAX_TIME_AHEAD, STORE_FORMAT, WELL_KNOWN_CHAIN_IDS, Store
from tests.copies_support import copies_of

REPO = Path(__file__).resolve().parents[1]
#: a fixed wall clock for the tests that move it (2026-12-02)
T0 = 1_796_000_000

CONTEXT = """# pragma version ^0.4.0
ts: public(uint256)
num: public(uint256)
cid: public(uint256)
orig: public(address)

@external
def poke():
    self.ts = block.timestamp
    self.num = block.number
    self.cid = chain.id
    self.orig = tx.origin
"""

#: Teller answers a query with the tx.origin it sees.
TELLER = """# pragma version ^0.4.0
@view
@external
def whoami() -> address:
    return tx.origin
"""

#: Asker sends a query to a teller and takes the answer in onReply, noting tx.origin at each step.
ASKER = """# pragma version ^0.4.0
interface System:
    def lastMessageId() -> bytes32: view

SYSTEM: constant(address) = 0x000000000000000000000000006D697373697665

asked: public(HashMap[bytes32, address])
origin_at_ask: public(address)
origin_at_reply: public(address)
told: public(address)

@external
def ask(teller: address):
    self.origin_at_ask = tx.origin
    nothing_yet: Bytes[32] = raw_call(teller, method_id("whoami()"), max_outsize=32, gas=200_000, is_static_call=True)
    self.asked[staticcall System(SYSTEM).lastMessageId()] = teller

@external
def onReply(requestId: bytes32, success: bool, data: Bytes[256]):
    assert msg.sender == self.asked[requestId], "reply from the wrong account"
    self.asked[requestId] = empty(address)
    self.origin_at_reply = tx.origin
    if success and len(data) == 32:
        self.told = abi_decode(data, address)
"""

#: Relay passes a call on, so that the asker's run is itself two messages from the root.
RELAY = """# pragma version ^0.4.0
interface Asker:
    def ask(teller: address): nonpayable

origin_at_relay: public(address)

@external
def go(asker: address, teller: address):
    self.origin_at_relay = tx.origin
    extcall Asker(asker).ask(teller, gas=1_000_000)
"""

#: Alarm schedules a message to itself; the scheduled run notes tx.origin and block.timestamp.
ALARM = """# pragma version ^0.4.0
interface System:
    def schedule(delay: uint256, message_gas: uint256, payload: Bytes[4]) -> bytes32: nonpayable

SYSTEM: constant(address) = 0x000000000000000000000000006D697373697665

origin_at_fire: public(address)
fired_at: public(uint256)

@external
def arm():
    extcall System(SYSTEM).schedule(5, 200_000, method_id("fire()"))

@external
def fire():
    assert msg.sender == self, "fire() is for the alarm's own scheduled message"
    self.origin_at_fire = tx.origin
    self.fired_at = block.timestamp
"""

#: An auction that closes by block.timestamp, as Ethereum auctions do.
AUCTION = """# pragma version ^0.4.0
beneficiary: public(address)
end: public(uint256)
highest_bidder: public(address)
highest_bid: public(uint256)
ended: public(bool)
refunds: public(HashMap[address, uint256])

@deploy
def __init__(beneficiary: address, duration: uint256):
    self.beneficiary = beneficiary
    self.end = block.timestamp + duration

@external
@payable
def bid():
    assert block.timestamp < self.end, "auction closed"
    assert msg.value > self.highest_bid, "bid too low"
    self.refunds[self.highest_bidder] += self.highest_bid
    self.highest_bidder = msg.sender
    self.highest_bid = msg.value

@external
def close():
    assert block.timestamp >= self.end, "not yet"
    assert not self.ended, "already closed"
    self.ended = True
    send(self.beneficiary, self.highest_bid)
"""


def _source(tmp: Path, name: str, text: str) -> Path:
    path = tmp / f"{name}.vy"
    path.write_text(text)
    return path


class Clock:
    """A wall clock the test moves (seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def node(tmp_path: Path) -> Iterator[mn.Node]:
    made = mn.Node.init(tmp_path / "node", default_balance=10**24)
    yield made
    made.close()


# -- CHAINID ---------------------------------------------------------------------------------------


def test_each_ledger_has_its_own_chain_id_never_a_well_known_one(tmp_path: Path) -> None:
    ids = set()
    for i in range(6):
        with Store(tmp_path / f"s{i}", create=True) as store:
            ids.add(store.chain_id)
        with Store(tmp_path / f"s{i}") as again:  # kept in the store's meta
            assert again.chain_id in ids
    assert len(ids) == 6 and not ids & WELL_KNOWN_CHAIN_IDS and all(0 < c < 2**48 for c in ids)
    assert 1 in WELL_KNOWN_CHAIN_IDS and 31337 in WELL_KNOWN_CHAIN_IDS


def test_chainid_opcode_gives_the_ledger_s_id(node: mn.Node, tmp_path: Path) -> None:
    contract = node.deploy(_source(tmp_path, "Context", CONTEXT))
    contract.poke().receipt()
    assert contract.cid() == node.chain_id != 1


def test_a_message_signed_for_one_ledger_is_refused_by_another(tmp_path: Path) -> None:
    mine, other = Ledger(tmp_path / "mine"), Store(tmp_path / "other", create=True)
    alice = mine.alice
    other.create_account(alice.address, alice.public_key, 10**18)  # the same key, funded on both
    envelope = Envelope(Kind.CALL, alice.address, mine.bob.address, value=5, nonce=0, gas=50_000,
                        chain_id=mine.store.chain_id)
    signed = alice.sign(envelope)
    (refused,) = other.accept([signed], checker(other))
    assert isinstance(refused, EnvelopeError)
    assert str(refused) == (f"the message is signed for chain id {mine.store.chain_id}, not this ledger's "
                            f"({other.chain_id}): it was made for another ledger")
    assert other.account(alice.address).nonce == 0  # type: ignore[union-attr]  # nothing changed
    (accepted,) = mine.store.accept([signed], mine.check)
    assert not isinstance(accepted, EnvelopeError)
    # changing the chain id changes the id the signature is over: the forgery's signature fails
    forged = Envelope(Kind.CALL, alice.address, mine.bob.address, value=5, nonce=0, gas=50_000,
                      chain_id=other.chain_id)
    (bad,) = other.accept([(forged, signed[1], signed[2])], checker(other))
    assert isinstance(bad, EnvelopeError) and "bad signature" in str(bad)
    other.close()


def test_a_cluster_config_with_another_chain_id_is_refused_by_the_store(tmp_path: Path) -> None:
    with Store(tmp_path / "s", create=True, chain_id=424242) as store:
        assert store.chain_id == 424242
    with pytest.raises(StoreError, match="holds the ledger of chain id 424242, not 777"):
        Store(tmp_path / "s", chain_id=777)


def _missive(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "missive", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


def test_cli_shows_the_chain_id_and_a_message_signed_for_another_ledger_is_refused(tmp_path: Path) -> None:
    made = _missive("init", "--dir", str(tmp_path / "a"), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    shown = next(line for line in made.stdout.splitlines() if line.startswith("chain id "))
    chain_id = int(shown.split()[2])
    version = _missive("version", "--json", "--dir", str(tmp_path / "a"), cwd=tmp_path)
    assert json.loads(version.stdout)["ledger"] == {"dir": str(tmp_path / "a"), "chain_id": chain_id,
                                                    "store_format": STORE_FORMAT}
    assert _missive("init", "--dir", str(tmp_path / "b"), cwd=tmp_path).returncode == 0
    missing = _missive("version", "--dir", str(tmp_path / "none"), cwd=tmp_path)
    assert missing.returncode == 3 and missing.stderr.count("\n") == 1 and "no Missive node" in missing.stderr
    # A message signed with a's key for a's ledger, taken to b (where the same key is funded): refused
    # by b's admission, in one line, and then accepted by a.
    script = f"""
import sys
from pathlib import Path
import missive.node as mn
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
a, b = mn.Node.open(Path({str(tmp_path / 'a')!r})), mn.Node.open(Path({str(tmp_path / 'b')!r}))
key = a.keystore.get('default')
b.store.create_account(key.address, key.public_key, 10**18)
signed = key.sign(Envelope(Kind.CALL, key.address, bytes(20), value=1, nonce=0, gas=50_000, chain_id=a.chain_id))
(refused,) = b.store.accept([signed], b._check)
print(refused)
(accepted,) = a.store.accept([signed], a._check)
print(type(accepted).__name__)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first.startswith(f"the message is signed for chain id {chain_id}, not this ledger's") and second == "Accepted"


# -- block.timestamp and block.number --------------------------------------------------------------


def test_block_timestamp_is_seconds_of_the_node_s_clock_and_block_number_the_logical_time(
        node: mn.Node, tmp_path: Path) -> None:
    contract = node.deploy(_source(tmp_path, "Context", CONTEXT))
    before = int(time.time())
    sent = contract.poke()
    receipt = sent.receipt()
    after = int(time.time())
    assert before <= contract.ts() <= after and contract.ts() == receipt.timestamp
    assert contract.num() == receipt.time  # block.number: the actor's logical (Lamport) time
    assert contract.orig() == node.default.hex


def test_block_timestamp_never_goes_back_for_an_actor_and_replay_uses_the_recorded_times(
        node: mn.Node, tmp_path: Path) -> None:
    clock = Clock(T0)
    node.store.wall_clock = clock
    contract = node.deploy(_source(tmp_path, "Context", CONTEXT))
    seen = []
    for now in (T0 + 10, T0 + 3, T0 + 3, T0 + 50, T0 + 49):  # the node's clock steps back twice
        clock.now = now
        receipt = contract.poke().receipt()
        seen.append((contract.ts(), receipt.timestamp))
    assert seen == [(T0 + 10,) * 2, (T0 + 10,) * 2, (T0 + 10,) * 2, (T0 + 50,) * 2, (T0 + 50,) * 2]
    assert node.store.account(contract._address).timestamp == T0 + 50  # type: ignore[union-attr]
    clock.now = T0 + 10**6  # replay runs long after: it uses the recorded times, not its clock
    report = replay(node.store)
    assert report.ok, report.divergence and report.divergence.describe()


def test_a_receipt_whose_time_was_changed_is_a_divergence(node: mn.Node, tmp_path: Path) -> None:
    node.store.wall_clock = Clock(T0)
    contract = node.deploy(_source(tmp_path, "Context", CONTEXT))
    node.store.wall_clock = Clock(T0 + 100)
    sent = contract.poke()
    receipt, victim = sent.receipt(), sent.id
    assert receipt is not None and receipt.timestamp == T0 + 100
    for tampered in (T0 + 101, T0 - 1):  # later (the run would have seen it), earlier (behind the actor)
        with node.store.env.begin(write=True) as txn:
            txn.put(victim, receipt.replace(timestamp=tampered).encode(), db=node.store.db["receipts"])
        report = replay(node.store)
        assert report.divergence is not None and report.divergence.message_id == victim
        assert any(d.startswith("state_root: expected") for d in report.divergence.differences), \
            report.divergence.differences


def test_an_auction_closes_by_seconds_not_by_message_count(node: mn.Node, tmp_path: Path) -> None:
    clock = Clock(T0)
    node.store.wall_clock = clock
    beneficiary = node.new_account("beneficiary")
    bidders = [node.new_account(f"bidder{i}", balance=10**20) for i in range(3)]
    auction = node.deploy(_source(tmp_path, "Auction", AUCTION), beneficiary.address, 3600)
    assert auction.end() == T0 + 3600
    for i in range(12):  # many messages, little time: still open
        clock.now = T0 + 10 + i
        auction.bid.send(sender=bidders[i % 3], value=1000 + i).reply()
    assert auction.highest_bid() == 1011
    clock.now = T0 + 1800
    with pytest.raises(mn.Reverted, match="not yet"):
        auction.close.send().reply()
    clock.now = T0 + 3600
    with pytest.raises(mn.Reverted, match="auction closed"):
        auction.bid.send(sender=bidders[0], value=10**6).reply()
    auction.close.send().reply()
    assert auction.ended() and node.balance(beneficiary.address) == 1011
    assert replay(node.store).ok


# -- tx.origin -------------------------------------------------------------------------------------


def test_tx_origin_is_the_external_account_at_the_root_through_call_query_and_reply(
        node: mn.Node, tmp_path: Path) -> None:
    teller = node.deploy(_source(tmp_path, "Teller", TELLER))
    asker = node.deploy(_source(tmp_path, "Asker", ASKER))
    relay = node.deploy(_source(tmp_path, "Relay", RELAY))
    carol = node.new_account("carol", balance=10**20)
    chain = relay.go.send(asker._address, teller._address, sender=carol).follow()
    assert not chain.failed and not chain.unfinished
    root = carol.hex
    assert relay.origin_at_relay() == root  # carol -> relay (call)
    assert asker.origin_at_ask() == root  # relay -> asker (call)
    assert asker.told() == root  # asker -> teller (query): the teller saw carol too
    assert asker.origin_at_reply() == root  # teller -> asker (reply)
    assert replay(node.store).ok


def test_a_scheduled_message_keeps_the_origin_and_runs_at_the_clock_of_its_handling(
        node: mn.Node, tmp_path: Path) -> None:
    clock = Clock(T0)
    node.store.wall_clock = clock
    alarm = node.deploy(_source(tmp_path, "Alarm", ALARM))
    dave = node.new_account("dave", balance=10**20)
    sent = alarm.arm.send(sender=dave)
    sent.receipt()
    clock.now = T0 + 7
    chain = sent.follow()
    assert not chain.failed and not chain.unfinished
    assert alarm.origin_at_fire() == dave.hex and alarm.fired_at() == T0 + 7
    assert replay(node.store).ok


# -- cluster holders -------------------------------------------------------------------------------


def _diffs_made_at(path: Path, now: float) -> list[StateDiff]:
    ledger = Ledger(path)
    copies_of(ledger.store, ExecutesAll())
    ledger.store.wall_clock = Clock(now)
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    ledger.submit(ledger.alice, Kind.CALL, token, transfer(ledger.bob.address, 5))
    ledger.run()
    return [StateDiff.decode(raw) for _, raw in copies_of(ledger.store).queued("replicate", REPLICA, 10**6)]


def test_a_holder_refuses_a_diff_whose_time_is_too_far_ahead_of_its_clock(tmp_path: Path) -> None:
    ahead = _diffs_made_at(tmp_path / "fast", T0 + MAX_TIME_AHEAD + 1)
    with Store(tmp_path / "replica", create=True) as replica:
        replica.wall_clock = Clock(T0)
        done, refused = copies_of(replica).apply_diffs(b"E" * 32, ahead)
        assert isinstance(refused, DiffError)
        assert f"is {MAX_TIME_AHEAD + 1} s ahead of this node's clock (at most {MAX_TIME_AHEAD} s is taken)" \
            in str(refused)
        assert done < len(ahead) and all(d.receipts == () for d in ahead[:done])  # only those without runs
        replica.wall_clock = Clock(T0 + 1)  # its clock catches up: the same diffs go in
        assert copies_of(replica).apply_diffs(b"E" * 32, ahead) == (len(ahead), None)
    within = _diffs_made_at(tmp_path / "close", T0 + MAX_TIME_AHEAD)
    with Store(tmp_path / "replica2", create=True) as replica:
        replica.wall_clock = Clock(T0)
        assert copies_of(replica).apply_diffs(b"E" * 32, within) == (len(within), None)


# -- the encodings ---------------------------------------------------------------------------------

addresses = st.binary(min_size=20, max_size=20)
u64 = st.integers(0, 2**64 - 1)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(list(Kind)), sender=addresses, recipient=addresses, value=st.integers(0, 2**256 - 1),
       payload=st.binary(max_size=64), gas=st.integers(0, 30_000_000), nonce=u64, time=u64, not_before=u64,
       chain_id=u64, origin=addresses, internal=st.booleans(), wants_reply=st.booleans())
def test_envelopes_round_trip_with_chain_id_and_origin(
        kind: Kind, sender: bytes, recipient: bytes, value: int, payload: bytes, gas: int, nonce: int, time: int,
        not_before: int, chain_id: int, origin: bytes, internal: bool, wants_reply: bool) -> None:
    if kind is Kind.RAISE:  # an account's own message, with no value and no reply (missive.market.raises)
        internal, value, wants_reply = False, 0, False
    parent = b"p" * 32 if internal else b""
    request_id = b"q" * 32 if kind in (Kind.REPLY, Kind.BOUNCE) else b""
    envelope = Envelope(kind, sender, recipient, value=value, payload=payload, gas=gas, nonce=nonce, time=time,
                        request_id=request_id, wants_reply=wants_reply, parent=parent, not_before=not_before,
                        chain_id=0 if internal else chain_id, origin=origin if internal else b"")
    decoded = Envelope.decode(envelope.canonical())
    assert decoded == envelope and decoded.id == envelope.id
    assert decoded.root_account == (origin if internal else sender)
    if not internal:  # another ledger's copy of the same message is another message
        other = Envelope(kind, sender, recipient, value=value, payload=payload, gas=gas, nonce=nonce, time=time,
                         request_id=request_id, wants_reply=wants_reply, not_before=not_before,
                         chain_id=(chain_id + 1) % 2**64)
        assert other.id != envelope.id


@settings(max_examples=200, deadline=None)
@given(timestamp=u64, time=u64, clock=u64, position=u64)
def test_receipts_and_accounts_round_trip_with_their_timestamp(timestamp: int, time: int, clock: int,
                                                               position: int) -> None:
    receipt = Receipt(b"m" * 32, b"r" * 20, position, "success", 21_000, b"", b"s" * 32, (), (), (), time,
                      timestamp=timestamp)
    assert Receipt.decode(receipt.encode()) == receipt and Receipt.decode(receipt.encode()).timestamp == timestamp
    account = Account(5, 1, b"", 2, clock, b"s" * 32, b"", timestamp)
    assert Account.decode(account.encode()) == account and Account.decode(account.encode()).timestamp == timestamp


def test_envelope_rules_for_chain_id_and_origin() -> None:
    with pytest.raises(EnvelopeError, match="an internal message names no chain id"):
        Envelope(Kind.CALL, bytes(20), bytes(20), parent=b"p" * 32, chain_id=5).validate()
    with pytest.raises(EnvelopeError, match="an external message names no origin"):
        Envelope(Kind.CALL, bytes(20), bytes(20), origin=b"o" * 20, chain_id=5).validate()
    with pytest.raises(EnvelopeError, match="origin must be empty or a 20-byte address"):
        Envelope(Kind.CALL, bytes(20), bytes(20), parent=b"p" * 32, origin=b"o" * 19).validate()


def test_a_format_3_store_is_refused_by_name() -> None:
    import lmdb
    import msgpack

    with tempfile.TemporaryDirectory() as tmp:
        with Store(Path(tmp), create=True) as store:
            with store.env.begin(write=True) as txn:
                txn.put(b"format", msgpack.packb(3), db=store.db["meta"])
        with pytest.raises(StoreError, match="store format 3 .its block.timestamp was the logical clock and its "
                                             "CHAINID 1"):
            Store(Path(tmp))
        assert lmdb  # (imported for the store's environment)


def test_a_format_4_store_is_refused_by_name() -> None:
    """Format 4 ledgers were run by a VM without CLZ and the Prague/Osaka precompiles."""
    import msgpack

    with tempfile.TemporaryDirectory() as tmp:
        Store(Path(tmp), create=True).close()
        with Store(Path(tmp)) as store, store.env.begin(write=True) as txn:
            txn.put(b"format", msgpack.packb(4), db=store.db["meta"])
        with pytest.raises(StoreError, match="store format 4 .its VM had no CLZ, BLS12-381 or P256VERIFY"):
            Store(Path(tmp), readonly=True)


def test_a_format_5_store_is_refused_by_name() -> None:
    """Format 5 ledgers' messages paid no fees: their receipts record none (issue 23)."""
    import msgpack

    with tempfile.TemporaryDirectory() as tmp:
        Store(Path(tmp), create=True).close()
        with Store(Path(tmp)) as store, store.env.begin(write=True) as txn:
            txn.put(b"format", msgpack.packb(5), db=store.db["meta"])
        with pytest.raises(StoreError, match="store format 5 .its messages paid no fees"):
            Store(Path(tmp), readonly=True)
