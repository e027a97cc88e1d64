"""Lottery tickets (issue 24; docs/tickets.md): the ticket and its win test, the recipient's check
off the ledger, and the broker's records on it (fund, unlock, withdraw, redeem, overspend and the
penalty), each bad ticket refused with its reason and nothing changed, and replay re-checking
every record.  Real LMDB stores in temporary directories."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import attrs
import msgpack
import nacl.signing
import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from test_ledger_actors import Ledger

from missive.actors.replay import replay
from missive.cli.main import main as cli
from missive.keys import Key
from missive.mailbox import broker as ledger_broker
from missive.market.tickets import (
    BROKER,
    MAX_VALIDITY,
    ONE,
    UNLOCK_DELAY,
    Issuer,
    Payer,
    Recipient,
    SignedTicket,
    Ticket,
    TicketError,
    args_of,
    commitment_of,
    digest,
    sign,
    wins,
)
from missive.market.tickets.broker import Effect
from missive.vm.keccak import keccak256

ALWAYS = ONE - 1  # wins unless keccak(signature ‖ secret) is all ones
NEVER = 0
L = 2**252 + 27742317777372353535851937790883648493  # the order of Ed25519's group


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "node")


def op(ledger: Ledger, key: Key, name: str, *, signer: Key | None = None, **kwargs: Any) -> Effect:
    store = ledger.store
    args = args_of(name, ledger_broker.payer(store, key.address), **kwargs)
    by = signer or key
    signature = bytes(by.signing_key.sign(digest(store.chain_id, BROKER, name, key.address, args)).signature)
    return ledger_broker.ticket_op(store, name, key.address, args, by.public_key, signature)


def redeem(ledger: Ledger, key: Key, signed: SignedTicket | bytes, secret: bytes, *,
           signer: Key | None = None) -> Effect:
    raw = signed.encode() if isinstance(signed, SignedTicket) else signed
    return op(ledger, key, "redeem", signed=raw, secret=secret, signer=signer)


def ticket_for(ledger: Ledger, payer: Key, recipient: bytes, secret: bytes, face: int = 100,
               prob: int = ALWAYS, nonce: int = 0, expiry: int | None = None, chain_id: int | None = None,
               broker: bytes = BROKER) -> SignedTicket:
    store = ledger.store
    ticket = Ticket(payer.public_key, recipient, face, prob, nonce, commitment_of(secret),
                    store.clock() + MAX_VALIDITY if expiry is None else expiry,
                    store.chain_id if chain_id is None else chain_id, broker)
    return sign(ticket, payer.signing_key)


def winning(ledger: Ledger, payer: Key, recipient: bytes, face: int = 100, nonce: int = 0) -> tuple[SignedTicket, bytes]:
    """A ticket that wins (drawing secrets until one does: at ALWAYS that is the first)."""
    for i in range(100):
        secret = keccak256(b"secret %d %d" % (nonce, i))
        signed = ticket_for(ledger, payer, recipient, secret, face, nonce=nonce)
        if wins(signed.signature, secret, signed.ticket.win_prob):
            return signed, secret
    raise AssertionError("no winning ticket in 100 draws at probability ~1")


def balance(ledger: Ledger, address: bytes) -> int:
    account = ledger.store.account(address)
    return account.balance if account is not None else 0


def state(ledger: Ledger) -> tuple[Any, ...]:
    store = ledger.store
    return (list(store.ledger()), store.accounts(), ledger_broker.payers(store), ledger_broker.burned(store),
            store.scan("meta", b"tickets:"))


def held(ledger: Ledger) -> int:
    """Every coin: balances, and the broker's deposits, reserves and burned penalties."""
    return sum(a.balance for _, a in ledger.store.accounts()) + ledger_broker.held(ledger.store)


def replays(ledger: Ledger) -> None:
    report = replay(ledger.store)
    assert report.ok, report.divergence and report.divergence.describe()


def advance(ledger: Ledger, to: int) -> None:
    ledger.store.release_scheduled(to)  # logical time passes


# -- the ticket --------------------------------------------------------------------------------

seeds = st.binary(min_size=32, max_size=32)
uint256 = st.integers(0, 2**256 - 1)
uint64 = st.integers(0, 2**64 - 1)


@settings(max_examples=150, deadline=None)
@given(seed=seeds, recipient=st.binary(min_size=20, max_size=20), face=uint256, prob=uint256, nonce=uint64,
       secret=seeds, expiry=uint64, chain_id=uint64)
def test_a_signed_ticket_decodes_to_itself_and_its_hash_binds_every_field(
        seed: bytes, recipient: bytes, face: int, prob: int, nonce: int, secret: bytes, expiry: int,
        chain_id: int) -> None:
    key = nacl.signing.SigningKey(seed)
    ticket = Ticket(bytes(key.verify_key), recipient, face, prob, nonce, commitment_of(secret), expiry, chain_id)
    signed = sign(ticket, key)
    assert SignedTicket.decode(signed.encode()) == signed
    # every field is in the signed hash: change one and the hash changes
    for changed in (Ticket(ticket.payer_key, ticket.recipient, face ^ 1, prob, nonce, ticket.commitment, expiry,
                           chain_id),
                    Ticket(ticket.payer_key, ticket.recipient, face, prob, nonce, ticket.commitment, expiry,
                           chain_id ^ 1),
                    Ticket(ticket.payer_key, ticket.recipient, face, prob, nonce, ticket.commitment, expiry, chain_id,
                           b"\x01" * 20),
                    Ticket(ticket.payer_key, bytes(20), face, prob, nonce ^ 1, ticket.commitment, expiry, chain_id)):
        assert changed.hash() != ticket.hash()


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(st.binary(max_size=600), st.builds(lambda items: msgpack.packb(items, use_bin_type=True),
                                                        st.lists(st.one_of(st.integers(-5, 2**64 - 1),
                                                                           st.binary(max_size=70)),
                                                                 max_size=11))))
def test_malformed_ticket_bytes_are_refused_in_one_line(raw: bytes) -> None:
    try:
        SignedTicket.decode(raw)
    except TicketError as refused:
        assert "\n" not in str(refused) and str(refused).startswith("malformed ticket")


def test_the_win_test_hits_its_probability_and_depends_on_the_secret() -> None:
    key = nacl.signing.SigningKey(b"\x07" * 32)
    quarter = ONE // 4
    won = 0
    for nonce in range(4000):
        secret = keccak256(b"s%d" % nonce)
        signed = sign(Ticket(bytes(key.verify_key), b"\x01" * 20, 1, quarter, nonce, commitment_of(secret), 10, 1),
                      key)
        won += wins(signed.signature, secret, quarter)
    assert 850 < won < 1150  # 1,000 expected; σ ≈ 27
    # the same signature under another secret is an independent draw: a payer who does not know
    # the secret cannot aim for losing tickets
    outcomes = {wins(signed.signature, keccak256(b"other %d" % i), ONE // 2) for i in range(40)}
    assert outcomes == {True, False}


def test_nobody_but_the_payer_makes_a_second_valid_signature_of_a_ticket(ledger: Ledger) -> None:
    """The recipient cannot draw again by altering the signature (S + L, the classic Ed25519
    malleation, is refused), so its outcome is fixed once signed."""
    alice, bob = ledger.alice, ledger.bob
    op(ledger, alice, "fund", deposit=1000)
    signed, secret = winning(ledger, alice, bob.address)
    s = int.from_bytes(signed.signature[32:], "little") + L
    mangled = SignedTicket(signed.ticket, signed.signature[:32] + s.to_bytes(32, "little"))
    before = state(ledger)
    with pytest.raises(TicketError, match="bad signature"):
        redeem(ledger, bob, mangled, secret)
    assert state(ledger) == before


# -- off the ledger: the recipient's check -----------------------------------------------------


def funded(ledger: Ledger, deposit: int = 10_000, reserve: int = 1_000, recipients: tuple[bytes, ...] = ()) -> Payer:
    return op(ledger, ledger.alice, "fund", deposit=deposit, reserve=reserve,
              recipients=recipients or (ledger.bob.address,)).payer


@pytest.mark.parametrize("case", ["wrong signature", "another chain", "another broker", "wrong recipient",
                                  "wrong commitment", "reused nonce", "expired", "too long", "oversized",
                                  "above allowance", "payer unlocking", "payer in default", "no payer",
                                  "malformed"])
def test_each_bad_ticket_is_refused_off_the_ledger_with_its_reason(ledger: Ledger, case: str) -> None:
    alice, bob = ledger.alice, ledger.bob
    store = ledger.store
    funded(ledger)
    me = Recipient(bob.address)
    commitment = me.commitment(alice.address)
    issuer = Issuer(alice.signing_key, alice.public_key)

    def issue(face: int = 100, **kwargs: Any) -> SignedTicket:
        return issuer.issue(bob.address, commitment, face, ONE // 2, chain_id=store.chain_id, clock=store.clock(),
                            **kwargs)

    def take(signed: SignedTicket | bytes) -> Any:
        ticket = signed if isinstance(signed, SignedTicket) else SignedTicket.decode(signed)
        return me.take(ticket, chain_id=store.chain_id, clock=store.clock(),
                       payer=ledger_broker.payer(store, ticket.ticket.payer), save=False)

    take(issue())  # nonce 0 taken
    expected = {
        "wrong signature": "bad signature", "another chain": "is for chain", "another broker": "is for broker",
        "wrong recipient": "not this recipient", "wrong commitment": "wrong commitment",
        "reused nonce": "not above the last", "expired": "expired at", "too long": "more than 1000 past now",
        "oversized": "more than a ticket's", "above allowance": "above this recipient's allowance",
        "payer unlocking": "is unlocking", "payer in default": "overspent",
        "no payer": "has nothing at the ticket broker", "malformed": "malformed",
    }[case]
    with pytest.raises(TicketError, match=expected) as refused:
        if case == "wrong signature":
            good = issue()
            take(SignedTicket(good.ticket, sign(good.ticket, bob.signing_key).signature))
        elif case == "another chain":
            take(sign(Ticket(alice.public_key, bob.address, 1, 1, 5, commitment, 10, store.chain_id + 1),
                      alice.signing_key))
        elif case == "another broker":
            take(sign(Ticket(alice.public_key, bob.address, 1, 1, 5, commitment, 10, store.chain_id, b"\x02" * 20),
                      alice.signing_key))
        elif case == "wrong recipient":
            take(sign(Ticket(alice.public_key, alice.address, 1, 1, 5, commitment, 10, store.chain_id),
                      alice.signing_key))
        elif case == "wrong commitment":
            take(sign(Ticket(alice.public_key, bob.address, 1, 1, 5, keccak256(b"x"), 10, store.chain_id),
                      alice.signing_key))
        elif case == "reused nonce":
            issuer.next_nonce = 0
            take(issue())
        elif case == "expired":
            advance(ledger, 20)
            take(issue(expiry=20))
        elif case == "too long":
            take(issue(expiry=store.clock() + MAX_VALIDITY + 1))
        elif case == "oversized":
            take(issue().encode() + b"\x00" * 400)
        elif case == "above allowance":
            take(issue(face=1_001))
        elif case == "payer unlocking":
            op(ledger, alice, "unlock")
            take(issue())
        elif case == "payer in default":  # a winner of 10,500 against a deposit of 10,000 made alice default
            redeem(ledger, bob, *winning(ledger, alice, bob.address, 10_500, nonce=50))
            take(issue())
        elif case == "no payer":
            me.commitment(ledger.bob.address)
            take(sign(Ticket(bob.public_key, bob.address, 1, 1, 5, me.commitment(bob.address), 10, store.chain_id),
                      bob.signing_key))
        else:
            take(b"\x93\x01\x02\x03")
    assert "\n" not in str(refused.value)
    assert me.payers[alice.address].last_nonce == 0  # a refused ticket changed nothing


def test_a_ticket_within_the_allowance_counts_the_winnings_not_yet_redeemed(ledger: Ledger) -> None:
    alice, bob = ledger.alice, ledger.bob
    store = ledger.store
    funded(ledger, reserve=250)
    me = Recipient(bob.address)
    issuer = Issuer(alice.signing_key, alice.public_key)
    commitment = me.commitment(alice.address)
    taken = [me.take(issuer.issue(bob.address, commitment, 100, ALWAYS, chain_id=store.chain_id, clock=0),
                     chain_id=store.chain_id, clock=0, payer=ledger_broker.payer(store, alice.address))
             for _ in range(2)]
    assert all(t.wins for t in taken) and me.unredeemed(alice.address) == 200
    with pytest.raises(TicketError, match="100 with 200 unredeemed is above this recipient's allowance"):
        me.take(issuer.issue(bob.address, commitment, 100, ALWAYS, chain_id=store.chain_id, clock=0),
                chain_id=store.chain_id, clock=0, payer=ledger_broker.payer(store, alice.address))


# -- on the ledger: fund, unlock, withdraw -------------------------------------------------------


def test_fund_unlock_withdraw_after_the_delay_and_funding_cancels_an_unlock(ledger: Ledger) -> None:
    alice, bob = ledger.alice, ledger.bob
    supply, start = held(ledger), balance(ledger, alice.address)
    payer = funded(ledger, 5_000, 2_000)
    assert (payer.deposit, payer.reserve, payer.recipients) == (5_000, 2_000, (bob.address,))
    assert balance(ledger, alice.address) == start - 7_000 and held(ledger) == supply
    assert op(ledger, alice, "unlock").payer.unlock_at == UNLOCK_DELAY
    with pytest.raises(TicketError, match="unlocking already"):
        op(ledger, alice, "unlock")
    advance(ledger, 400)
    assert op(ledger, alice, "fund", deposit=1).payer.unlock_at == 0  # funding cancels the unlock
    with pytest.raises(TicketError, match="has not unlocked"):
        op(ledger, alice, "withdraw")
    assert op(ledger, alice, "unlock").payer.unlock_at == 400 + UNLOCK_DELAY
    advance(ledger, 400 + UNLOCK_DELAY - 1)
    with pytest.raises(TicketError, match="1 to go"):
        op(ledger, alice, "withdraw")
    advance(ledger, 400 + UNLOCK_DELAY)
    after = op(ledger, alice, "withdraw").payer
    assert after.held == 0 and balance(ledger, alice.address) == start and held(ledger) == supply
    replays(ledger)


def test_a_payer_cannot_front_run_a_redemption_by_withdrawing(ledger: Ledger) -> None:
    """The recipient took a winning ticket; the payer unlocks at once: the recipient still has
    until the ticket's expiry to redeem, and the payer cannot withdraw before that."""
    alice, bob = ledger.alice, ledger.bob
    funded(ledger, 100, 0, (bob.address,))
    signed, secret = winning(ledger, alice, bob.address)
    op(ledger, alice, "unlock")
    advance(ledger, signed.ticket.expiry - 1)  # the last moment the ticket is good
    with pytest.raises(TicketError, match="to go"):
        op(ledger, alice, "withdraw")
    before = balance(ledger, bob.address)
    redeem(ledger, bob, signed, secret)
    assert balance(ledger, bob.address) == before + 100
    assert UNLOCK_DELAY >= MAX_VALIDITY  # what makes it hold for every ticket taken before the unlock


@pytest.mark.parametrize("case", ["above balance", "nothing", "reserve without recipients", "forged",
                                  "copied operation", "recipient twice", "change recipients", "extra arguments"])
def test_a_bad_fund_is_refused_and_changes_nothing(ledger: Ledger, case: str) -> None:
    alice, bob = ledger.alice, ledger.bob
    funded(ledger, 10, 10)
    store = ledger.store
    before = state(ledger)
    with pytest.raises(TicketError) as refused:
        if case == "above balance":
            op(ledger, alice, "fund", deposit=10**19)
        elif case == "nothing":
            op(ledger, alice, "fund")
        elif case == "reserve without recipients":
            op(ledger, bob, "fund", reserve=5)
        elif case == "forged":
            op(ledger, alice, "fund", deposit=5, signer=bob)
        elif case == "copied operation":  # alice's first fund, signed for operation 0, sent again
            args = args_of("fund", Payer(), deposit=10, reserve=10, recipients=(bob.address,))
            signature = bytes(alice.signing_key.sign(digest(store.chain_id, BROKER, "fund", alice.address,
                                                            args)).signature)
            ledger_broker.ticket_op(store, "fund", alice.address, args, alice.public_key, signature)
        elif case == "recipient twice":
            op(ledger, bob, "fund", reserve=5, recipients=(alice.address, alice.address))
        elif case == "extra arguments":  # a signed unlock carrying more than its operation count
            args = [1, b"\x01" * 5000]
            signature = bytes(alice.signing_key.sign(digest(store.chain_id, BROKER, "unlock", alice.address,
                                                            args)).signature)
            ledger_broker.ticket_op(store, "unlock", alice.address, args, alice.public_key, signature)
        else:
            op(ledger, alice, "fund", reserve=5, recipients=(alice.address,))
    assert "\n" not in str(refused.value)
    assert state(ledger) == before


# -- on the ledger: redeeming ----------------------------------------------------------------------


def test_a_winning_ticket_pays_its_recipient_once_and_replay_reproduces_it(ledger: Ledger) -> None:
    alice, bob = ledger.alice, ledger.bob
    supply = held(ledger)
    funded(ledger, 1_000, 0)
    signed, secret = winning(ledger, alice, bob.address, 300)
    before = balance(ledger, bob.address)
    effect = redeem(ledger, bob, signed, secret)
    assert effect.paid == (300, 0) and balance(ledger, bob.address) == before + 300
    assert ledger_broker.payer(ledger.store, alice.address).deposit == 700  # type: ignore[union-attr]
    frozen = state(ledger)
    with pytest.raises(TicketError, match="redeemed already"):
        redeem(ledger, bob, signed, secret)
    assert state(ledger) == frozen and held(ledger) == supply
    replays(ledger)


@pytest.mark.parametrize("case", ["replayed", "copy by someone else", "expired", "wrong secret", "not a winner",
                                  "another chain", "another broker", "bad signature", "forged redeem",
                                  "malformed", "oversized", "no funds", "too long", "face value 0", "reused nonce"])
def test_each_bad_redemption_is_refused_with_its_reason_and_changes_nothing(ledger: Ledger, case: str) -> None:
    alice, bob = ledger.alice, ledger.bob
    carol = ledger.keys.new("carol")
    ledger.store.create_account(carol.address, carol.public_key, 10**18)
    store = ledger.store
    funded(ledger, 1_000, 0)
    signed, secret = winning(ledger, alice, bob.address)
    redeem(ledger, bob, signed, secret)
    fresh, fresh_secret = winning(ledger, alice, bob.address, nonce=1)
    before = state(ledger)
    expected = {
        "replayed": "redeemed already", "copy by someone else": "only its recipient can redeem it",
        "expired": "expired at", "wrong secret": "wrong secret", "not a winner": "does not win",
        "another chain": "is for chain", "another broker": "is for broker", "bad signature": "bad signature",
        "forged redeem": "not signed by its account", "malformed": "malformed ticket",
        "oversized": "malformed ticket", "no funds": "nothing left", "too long": "past now",
        "face value 0": "pays nothing", "reused nonce": "reused nonce",
    }[case]
    with pytest.raises(TicketError, match=expected) as refused:
        if case == "replayed":
            redeem(ledger, bob, signed, secret)
        elif case == "copy by someone else":  # carol saw bob's ticket and secret: it pays no one
            redeem(ledger, carol, fresh, fresh_secret)
        elif case == "expired":
            advance(ledger, fresh.ticket.expiry)
            before = state(ledger)
            redeem(ledger, bob, fresh, fresh_secret)
        elif case == "wrong secret":
            redeem(ledger, bob, fresh, keccak256(b"a secret that might win"))
        elif case == "not a winner":
            redeem(ledger, bob, ticket_for(ledger, alice, bob.address, fresh_secret, prob=NEVER, nonce=2),
                   fresh_secret)
        elif case == "another chain":
            redeem(ledger, bob, ticket_for(ledger, alice, bob.address, fresh_secret, chain_id=store.chain_id + 1),
                   fresh_secret)
        elif case == "another broker":
            redeem(ledger, bob, ticket_for(ledger, alice, bob.address, fresh_secret, broker=b"\x05" * 20),
                   fresh_secret)
        elif case == "bad signature":
            redeem(ledger, bob, SignedTicket(fresh.ticket, sign(fresh.ticket, carol.signing_key).signature),
                   fresh_secret)
        elif case == "forged redeem":  # carol signs a redemption in bob's name
            redeem(ledger, bob, fresh, fresh_secret, signer=carol)
        elif case == "malformed":
            redeem(ledger, bob, b"\xc1not a ticket", fresh_secret)
        elif case == "oversized":
            redeem(ledger, bob, fresh.encode() + bytes(500), fresh_secret)
        elif case == "no funds":
            poor, poor_secret = winning(ledger, bob, alice.address)  # bob never funded
            redeem(ledger, alice, poor, poor_secret)
        elif case == "too long":
            redeem(ledger, bob, ticket_for(ledger, alice, bob.address, fresh_secret, nonce=3,
                                           expiry=store.clock() + MAX_VALIDITY + 1), fresh_secret)
        elif case == "face value 0":
            redeem(ledger, bob, ticket_for(ledger, alice, bob.address, fresh_secret, face=0, nonce=4), fresh_secret)
        else:  # another ticket under the redeemed one's commitment and nonce (0)
            redeem(ledger, bob, ticket_for(ledger, alice, bob.address, secret, face=99), secret)
    assert "\n" not in str(refused.value)
    assert state(ledger) == before
    replays(ledger)


def test_the_used_ticket_set_keeps_a_ticket_only_until_it_expires(ledger: Ledger) -> None:
    alice, bob = ledger.alice, ledger.bob
    funded(ledger, 10_000, 0)
    for nonce in range(5):
        redeem(ledger, bob, *winning(ledger, alice, bob.address, nonce=nonce))
    assert ledger_broker.used_count(ledger.store) == 5
    advance(ledger, MAX_VALIDITY)  # they all expire at MAX_VALIDITY (issued at time 0)
    late, secret = winning(ledger, alice, bob.address, nonce=9)
    redeem(ledger, bob, late, secret)
    assert ledger_broker.used_count(ledger.store) == 1  # the five expired entries were dropped
    replays(ledger)


# -- overspend and the penalty ---------------------------------------------------------------------


def test_a_recipient_within_its_allowance_is_paid_in_full_when_the_payer_spent_its_deposit_elsewhere(
        ledger: Ledger) -> None:
    """Alice funds 500 of deposit and a reserve of 2,000 for bob and carol (allowance 1,000 each).
    Bob holds winners for 900 (within his allowance).  Alice first pays her deposit away to carol,
    a recipient of her own making, with winners far beyond it: carol drains the deposit and her
    own allowance, no more.  Bob is then paid all 900 from the reserve; alice is in default, and
    what is left of her reserve is burned once her tickets have expired."""
    alice, bob = ledger.alice, ledger.bob
    carol = ledger.keys.new("carol")
    ledger.store.create_account(carol.address, carol.public_key, 0)
    supply = held(ledger)
    funded(ledger, 500, 2_000, (bob.address, carol.address))
    bobs = [winning(ledger, alice, bob.address, 450, nonce=n) for n in (1, 2)]
    for n in range(10, 13):  # carol's winners: 3 × 600 = 1,800 against a deposit of 500
        redeem(ledger, carol, *winning(ledger, alice, carol.address, 600, nonce=n))
    payer = ledger_broker.payer(ledger.store, alice.address)
    assert payer is not None and payer.in_default and payer.deposit == 0
    assert balance(ledger, carol.address) == 500 + 1_000  # the deposit, then her allowance: no more
    assert payer.allowance(bob.address) == 1_000 and payer.allowance(carol.address) == 0
    with pytest.raises(TicketError, match="nothing left"):  # a fourth: her allowance is spent
        redeem(ledger, carol, *winning(ledger, alice, carol.address, 600, nonce=13))
    with pytest.raises(TicketError, match="frozen by an overspend"):
        op(ledger, alice, "fund", reserve=10)
    before = balance(ledger, bob.address)
    for signed, secret in bobs:
        assert redeem(ledger, bob, signed, secret).paid == (0, 450)
    assert balance(ledger, bob.address) == before + 900  # paid in full
    assert held(ledger) == supply
    # the unlock delay passes: alice gets back no reserve while in default
    op(ledger, alice, "unlock")
    advance(ledger, UNLOCK_DELAY)
    op(ledger, alice, "withdraw")
    after = ledger_broker.payer(ledger.store, alice.address)
    assert after is not None and after.reserve == 0 and after.burned == 100  # 2,000 − 1,000 − 900
    assert ledger_broker.burned(ledger.store) == 100 and held(ledger) == supply
    replays(ledger)


def test_a_recipient_beyond_its_allowance_gets_only_the_allowance(ledger: Ledger) -> None:
    alice, bob = ledger.alice, ledger.bob
    funded(ledger, 0 + 1, 300, (bob.address,))
    signed, secret = winning(ledger, alice, bob.address, 1_000)
    assert redeem(ledger, bob, signed, secret).paid == (1, 300)
    more, more_secret = winning(ledger, alice, bob.address, 10, nonce=1)
    with pytest.raises(TicketError, match="nothing left"):
        redeem(ledger, bob, more, more_secret)
    replays(ledger)


# -- replay ----------------------------------------------------------------------------------------


def test_replay_refuses_a_redemption_the_broker_would_have_refused(ledger: Ledger) -> None:
    """A tickets record written past the checks (a losing ticket paid out) is a divergence."""
    alice, bob = ledger.alice, ledger.bob
    funded(ledger, 1_000, 0)
    store = ledger.store
    secret = keccak256(b"loses")
    losing = ticket_for(ledger, alice, bob.address, secret, prob=NEVER)
    args = args_of("redeem", signed=losing.encode(), secret=secret)
    signature = bytes(bob.signing_key.sign(digest(store.chain_id, BROKER, "redeem", bob.address, args)).signature)
    with store.writing() as txn:
        account = store.account(bob.address, txn)
        assert account is not None
        txn.put(bob.address, account.replace(balance=account.balance + 100).encode(), db=store.db["accounts"])
        store.append(txn, ["tickets", "redeem", bob.address, 0, *args, bob.public_key, signature])
    report = replay(store)
    assert not report.ok and report.divergence is not None
    assert "does not win" in report.divergence.describe()


# -- the recipient's file --------------------------------------------------------------------------


def test_the_recipients_secrets_and_winners_survive_a_restart_in_a_private_file(ledger: Ledger,
                                                                                 tmp_path: Path) -> None:
    alice, bob = ledger.alice, ledger.bob
    store = ledger.store
    funded(ledger)
    path = tmp_path / "tickets" / "bob.recipient"
    me = Recipient(bob.address, path)
    commitment = me.commitment(alice.address)
    issuer = Issuer(alice.signing_key, alice.public_key)
    signed = issuer.issue(bob.address, commitment, 100, ALWAYS, chain_id=store.chain_id, clock=0)
    assert me.take(signed, chain_id=store.chain_id, clock=0, payer=ledger_broker.payer(store, alice.address)).wins
    assert path.stat().st_mode & 0o777 == 0o600  # it holds secrets
    again = Recipient(bob.address, path)
    assert again.commitment(alice.address) == commitment and again.winners() == me.winners()
    with pytest.raises(TicketError, match="not above the last"):  # the nonce it took is remembered
        again.take(signed, chain_id=store.chain_id, clock=0, payer=ledger_broker.payer(store, alice.address))
    path.write_bytes(b"\x92\x01")  # damaged
    with pytest.raises(TicketError, match="cannot read the recipient's ticket state") as refused:
        Recipient(bob.address, path)
    assert "\n" not in str(refused.value)


def test_a_defaulted_payers_leftover_reserve_is_burned_by_a_later_redemption(ledger: Ledger) -> None:
    alice, bob = ledger.alice, ledger.bob
    carol = ledger.keys.new("carol")
    ledger.store.create_account(carol.address, carol.public_key, 0)
    supply = held(ledger)
    funded(ledger, 100, 1_000, (bob.address, carol.address))
    redeem(ledger, bob, *winning(ledger, alice, bob.address, 300))  # 100 + 200 from the reserve: default
    advance(ledger, MAX_VALIDITY - 1)  # the window is not over: nothing burned yet
    op(ledger, alice, "fund", deposit=50)
    assert ledger_broker.burned(ledger.store) == 0
    advance(ledger, MAX_VALIDITY)
    late, secret = winning(ledger, alice, carol.address, 50, nonce=7)
    assert redeem(ledger, carol, late, secret).paid == (50, 0)  # from the new deposit
    payer = ledger_broker.payer(ledger.store, alice.address)
    assert payer is not None and not payer.in_default and payer.reserve == 0 and payer.burned == 800
    assert ledger_broker.burned(ledger.store) == 800 and held(ledger) == supply
    op(ledger, alice, "fund", reserve=10)  # out of default: a new reserve is taken
    replays(ledger)


def test_replay_notices_a_broker_state_the_ledger_does_not_explain(ledger: Ledger) -> None:
    """A payer's record changed in the store behind the ledger's back (a deposit grown by hand)."""
    alice = ledger.alice
    funded(ledger, 1_000, 0)
    store = ledger.store
    payer = ledger_broker.payer(store, alice.address)
    assert payer is not None
    with store.writing() as txn:
        txn.put(b"tickets:payer:" + alice.address, attrs.evolve(payer, deposit=5_000).encode(), db=store.db["meta"])
    report = replay(store)
    assert not report.ok and report.divergence is not None
    assert f"the ticket broker's record of payer 0x{alice.address.hex()}" in report.divergence.describe()


def test_missive_ledger_describes_a_malformed_tickets_record_without_failing() -> None:
    from missive.node import special_record

    for record in (["tickets"], ["tickets", "redeem", b"\x01" * 20, 0, b"junk", b"s", b"k", b"sig"],
                   ["tickets", "fund", b"\x01" * 20, 0, 0, 5, b"", [], b"k", b"sig"]):
        shown = special_record(7, record)
        # too short to be a tickets record: the ledger decoder says so; the right shape, the wrong fields: describe
        assert shown is not None and ("malformed" in shown.detail or "corrupt tickets record" in shown.detail)


# -- the Python API and the CLI --------------------------------------------------------------------


def test_the_python_api_issues_checks_and_redeems(tmp_path: Path) -> None:
    from missive.node import Node

    node = Node.init(tmp_path / "n", default_balance=10**18)
    try:
        bob = node.new_account("bob", 0)
        node.tickets.fund(10_000, 5_000, [bob.address])
        commitment = node.tickets.commitment(node.default.address, recipient=bob)
        results = []
        for _ in range(40):
            signed = node.tickets.issue(bob.address, commitment, 100, ONE // 4)
            results.append(node.tickets.check(signed.hex(), recipient=bob).wins)
        assert 0 < sum(results) < 40
        redeemed = node.tickets.redeem(recipient=bob)
        assert len(redeemed) == sum(results) and all(isinstance(e, Effect) for _, e in redeemed)
        assert node.store.account(bob.address).balance == 100 * sum(results)  # type: ignore[union-attr]
        assert node.tickets.commitment(node.default.address, recipient=bob) != commitment  # rotated
        with pytest.raises(TicketError, match="wrong commitment"):  # the old commitment is gone
            node.tickets.check(node.tickets.issue(bob.address, commitment, 100, ONE // 4), recipient=bob)
    finally:
        node.close()


def test_missive_tickets_commands(tmp_path: Path) -> None:
    node = str(tmp_path / "n")
    out = io.StringIO()

    def run(*argv: str) -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            return cli([*argv, "--dir", node])

    assert run("init") == 0
    assert run("account", "new", "bob") == 0
    assert run("tickets", "fund", "--deposit", "1000", "--reserve", "500", "--recipient", "bob") == 0
    out.truncate(0), out.seek(0)
    assert run("tickets", "commitment", "default", "--as", "bob") == 0
    commitment = out.getvalue().strip()
    out.truncate(0), out.seek(0)
    assert run("tickets", "issue", "--to", "bob", "--commitment", commitment, "--face-value", "100",
               "--win-prob", "1") == 0
    ticket = out.getvalue().strip()
    assert run("tickets", "check", ticket, "--as", "bob") == 0
    assert run("tickets", "check", ticket, "--as", "bob") == 2  # the same nonce again
    assert run("tickets", "check", "zz", "--as", "bob") == 2
    assert run("tickets", "issue", "--to", "bob", "--commitment", commitment, "--face-value", "1",
               "--win-prob", "2") == 2
    assert run("tickets", "redeem", "--as", "bob") == 0
    assert run("tickets", "status") == 0
    assert run("tickets", "unlock") == 0
    assert run("tickets", "withdraw") == 2
    assert run("ledger") == 0
    assert run("replay") == 0
    text = out.getvalue()
    assert "WINS (redeem it)" in text and "not above the last one taken" in text and "paid 100" in text
    assert "deposit 900  reserve 500  redeemed 1 (100 paid)" in text and "allowance 500" in text
    assert "1000 to go" in text and "tickets redeem by 0x" in text and "Traceback" not in text
    assert all(len(line) < 400 for line in text.splitlines() if line != ticket)  # one line per answer


# -- properties ------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, 400), st.integers(1, 255)), min_size=1, max_size=3),
       cut=st.integers(0, 8))
def test_a_mangled_copy_of_a_redeemed_ticket_pays_nothing(flips: list[tuple[int, int]], cut: int,
                                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    """Bytes flipped in (or cut from) a redeemed winning ticket: refused in one line, nothing changed."""
    ledger = Ledger(tmp_path_factory.mktemp("mangled") / "node")
    try:
        alice, bob = ledger.alice, ledger.bob
        funded(ledger, 1_000, 0)
        signed, secret = winning(ledger, alice, bob.address)
        redeem(ledger, bob, signed, secret)
        raw = bytearray(signed.encode())
        for position, delta in flips:
            raw[position % len(raw)] ^= delta
        mangled = bytes(raw[: len(raw) - cut])
        before = state(ledger)
        with pytest.raises(TicketError) as refused:
            redeem(ledger, bob, mangled, secret)
        assert "\n" not in str(refused.value)
        assert state(ledger) == before
    finally:
        ledger.store.close()
        ledger.keys.close()


#: what happens next: the honest recipient takes a ticket (kept if it wins, while its check allows it)
#: or redeems what it holds; a Sybil recipient of the payer's redeems a large winner; the payer funds,
#: unlocks or withdraws; logical time passes (the honest recipient redeems first: it is diligent)
TAKE = st.tuples(st.just("take"), st.sampled_from([1, 100, 400]))
SYBIL = st.tuples(st.just("sybil"), st.sampled_from([50, 700, 3_000]))
STEPS = st.lists(st.one_of(TAKE, TAKE, TAKE, st.just(("redeem",)), SYBIL, SYBIL,
                           st.tuples(st.just("fund"), st.integers(0, 600), st.integers(0, 600)),
                           st.just(("unlock",)), st.just(("withdraw",)),
                           st.tuples(st.just("time"), st.integers(1, 700))), min_size=5, max_size=30)


@settings(max_examples=200, deadline=None)
@given(steps=STEPS, deposit=st.sampled_from([0, 100, 1_000]), reserve=st.sampled_from([2, 900, 3_000]))
@example(steps=[("take", 400), ("take", 400), ("take", 400), ("sybil", 3_000), ("redeem",), ("take", 400),
                ("unlock",), ("time", 700), ("withdraw",), ("time", 700), ("withdraw",)], deposit=0, reserve=1_000)
def test_a_recipient_within_its_allowance_is_always_paid_in_full(steps: list[tuple[Any, ...]], deposit: int,
                                                                 reserve: int,
                                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    """Whatever the payer does with its deposit (winners paid to a Sybil recipient first, unlocks,
    withdrawals, more funding) and whenever it happens, every winning ticket the honest recipient
    took (its check passed) is paid its whole face value when redeemed before it expires; coin is
    conserved and replay rebuilds it all."""
    ledger = Ledger(tmp_path_factory.mktemp("allowance") / "node")
    try:
        alice, bob = ledger.alice, ledger.bob
        sybil = ledger.keys.new("sybil")
        store = ledger.store
        store.create_account(sybil.address, sybil.public_key, 0)
        supply = held(ledger)
        op(ledger, alice, "fund", deposit=deposit, reserve=reserve, recipients=(bob.address, sybil.address))
        me = Recipient(bob.address)
        issuer = Issuer(alice.signing_key, alice.public_key)
        nonce = 10_000

        def redeem_all() -> None:
            for signed, secret in me.winners():
                before = balance(ledger, bob.address)
                effect = redeem(ledger, bob, signed, secret)  # never refused: it was taken within the allowance
                event("the honest recipient drew on the reserve" if effect.paid[1] else "paid from the deposit")
                assert balance(ledger, bob.address) == before + signed.ticket.face_value
                me.forget(signed)
            me.rotate(alice.address)

        for step in steps:
            if step[0] in ("redeem", "time"):  # the honest recipient's redemptions are never refused
                redeem_all()
                if step[0] == "time":
                    advance(ledger, store.clock() + step[1])
                continue
            try:
                if step[0] == "take":
                    signed = issuer.issue(bob.address, me.commitment(alice.address), step[1], ONE // 2,
                                          chain_id=store.chain_id, clock=store.clock())
                    me.take(signed, chain_id=store.chain_id, clock=store.clock(),
                            payer=ledger_broker.payer(store, alice.address))
                elif step[0] == "sybil":
                    nonce += 1
                    redeem(ledger, sybil, *winning(ledger, alice, sybil.address, step[1], nonce=nonce))
                elif step[0] == "fund":
                    op(ledger, alice, "fund", deposit=step[1], reserve=step[2])
                else:
                    op(ledger, alice, step[0])
            except TicketError as refused:  # the payer's or the Sybil's, or a ticket the check refused
                assert "\n" not in str(refused)
            assert held(ledger) == supply
        payer = ledger_broker.payer(store, alice.address)
        event("the payer defaulted" if payer is not None and (payer.in_default or payer.burned) else "no default")
        redeem_all()
        replays(ledger)
    finally:
        ledger.store.close()
        ledger.keys.close()
