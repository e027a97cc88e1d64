"""A cluster's raise messages (issue 23 item 2 on a cluster; docs/market.md "Raising a bid on a
cluster"): the rule that settles them from the order the messages were handled in, the way a round
arranges them, the runs it gives, and what a node alone says to one.

The rule is what keeps an honest executor from being slashed: every holder that re-executes a
diff, and anyone checking evidence, settles each raise from the same order, so the fees of a
raised run agree everywhere; and it conserves the coin: each raise's escrow is refunded or part of
its message's ``gas × bid``, exactly once."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from test_ledger_actors import Ledger

from missive.actors.handler import ActorState, run_handler
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
from missive.mailbox.records import Account
from missive.market.raises import (
    arrange,
    effective_bids,
    raise_misfit,
    raise_payload,
    raise_target,
    raised_bids,
    rank_bid,
)
from missive.node.signing import sign_external

ALICE, BOB, ACTOR = b"\xa1" * 20, b"\xb0" * 20, b"\xac" * 20


def message(sender: bytes, nonce: int, bid: int, gas: int = 1_000) -> Envelope:
    return Envelope(Kind.CALL, sender, ACTOR, gas=gas, bid=bid, nonce=nonce, chain_id=7)


def raising(target: Envelope, new_bid: int, nonce: int, *, sender: bytes | None = None,
            gas: int | None = None, bid: int | None = None) -> Envelope:
    return Envelope(Kind.RAISE, sender or target.sender, target.recipient, gas=target.gas if gas is None else gas,
                    bid=new_bid - target.bid if bid is None else bid, payload=raise_payload(target.id, new_bid),
                    nonce=nonce, chain_id=7)


def test_a_raise_right_before_its_message_keeps_its_escrow_for_it_and_the_message_runs_with_its_bid() -> None:
    m = message(ALICE, 0, bid=2)
    q = raising(m, 9, 1)
    bids = effective_bids([(q.id, q), (m.id, m)])
    assert bids == {q.id: 0, m.id: 9}  # the raise refunds nothing: its gas × 7 is now the message's
    assert rank_bid(q) == 9 and raise_target(q) == (m.id, 9)


def test_a_raise_not_right_before_its_message_refunds_its_whole_escrow() -> None:
    m, other = message(ALICE, 0, bid=2), message(BOB, 0, bid=1)
    q = raising(m, 9, 1)
    assert effective_bids([(m.id, m), (q.id, q)]) == {}  # the message ran first
    assert effective_bids([(q.id, q), (other.id, other), (m.id, m)]) == {}  # another message between
    assert effective_bids([(q.id, q)]) == {}  # alone


def test_a_second_raise_refunds_the_escrow_of_the_one_it_supersedes() -> None:
    m = message(ALICE, 0, bid=2, gas=10)
    first, second = raising(m, 5, 1), raising(m, 9, 2)
    bids = effective_bids([(first.id, first), (second.id, second), (m.id, m)])
    assert bids == {first.id: 0, second.id: 3, m.id: 9}
    # escrow in: 10×2 + 10×3 + 10×7 = 120 = 10×9 (the run) + 10×3 (the second raise's refund)
    lower = raising(m, 4, 3)  # after the raise to 9: not above the bid so far, refunded whole
    assert effective_bids([(first.id, first), (second.id, second), (lower.id, lower), (m.id, m)])[m.id] == 9
    assert lower.id not in effective_bids([(first.id, first), (second.id, second), (lower.id, lower), (m.id, m)])


def test_raises_that_do_not_fit_their_message_refund_whole_and_say_why() -> None:
    m = message(ALICE, 0, bid=2)
    cases = {
        "only the sender of": raising(m, 9, 1, sender=BOB),
        "with its gas": raising(m, 9, 1, gas=m.gas + 1),
        "its bid must be 7, not 8": raising(m, 9, 1, bid=8),
        "more than the current bid": raising(m, 2, 1),
    }
    for words, q in cases.items():
        misfit = raise_misfit(q, m.id, m, m.bid)
        assert misfit is not None and words in misfit, (words, misfit)
        assert effective_bids([(q.id, q), (m.id, m)]) == {}, words
    reply = Envelope(Kind.REPLY, BOB, ACTOR, request_id=b"\x01" * 32, parent=b"\x02" * 32)
    assert "cannot be raised" in (raise_misfit(raising(m, 9, 1), reply.id, reply, 0) or "")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 20), st.booleans()), min_size=1, max_size=30),
       st.randoms(use_true_random=False))
def test_arranged_raises_conserve_every_escrow(plan: list[tuple[int, int, bool]], rng: object) -> None:
    """Any share of a round (messages and raises of them, or of messages not in it, in any queue
    order): arranged, every raise is refunded or kept by its message, and each message's run
    escrow is its own plus what its raises kept."""
    import random

    assert isinstance(rng, random.Random)
    targets = [message(ALICE, n, bid=rng.randint(0, 4), gas=rng.randint(1, 50)) for n in range(4)]
    batch: list[tuple[bytes, bytes, Envelope]] = []
    nonce = 10
    for which, new_bid, include in plan:
        target = targets[which]
        q = raising(target, target.bid + new_bid, nonce)  # a raise of 0 does not fit: refunded
        nonce += 1
        batch.append((len(batch).to_bytes(8, "big"), q.id, q))
        if include and all(target.id != m for _, m, _ in batch):
            batch.insert(rng.randint(0, len(batch)), (b"", target.id, target))
    batch = [(n.to_bytes(8, "big"), m, e) for n, (_, m, e) in enumerate(batch)]
    arranged = arrange(batch)
    assert sorted(k for k, _, _ in arranged) == sorted(k for k, _, _ in batch)  # nothing lost or added
    originals = {m: e for _, m, e in batch}
    kept: dict[bytes, int] = {}
    for _, message_id, running in arranged:
        original = originals[message_id]
        if original.kind is Kind.RAISE:
            assert 0 <= running.bid <= original.bid
            named = raise_target(original)[0]
            kept[named] = kept.get(named, 0) + original.gas * (original.bid - running.bid)
    for target in targets:
        runs = [e for _, m, e in arranged if m == target.id]
        if runs:
            assert runs[0].gas * runs[0].bid == target.gas * target.bid + kept.get(target.id, 0)
        else:
            assert kept.get(target.id, 0) == 0  # no message in the share: every raise of it refunded whole


def test_a_raise_runs_no_code_and_its_receipt_refunds_what_it_did_not_keep() -> None:
    m = message(ALICE, 0, bid=2, gas=100)
    q = raising(m, 9, 1)
    actor = ActorState(ACTOR, Account(balance=5), b"\x60\x00\x60\x00\xfd")  # code that would revert
    receipt, writes, _, outgoing, delta = run_handler(actor, q, q.id, None, lambda a: (b"", b""), 1, 7, b"\xcb" * 20)
    assert receipt.success and receipt.gas_used == 0 and receipt.fee == 0 and receipt.refund == 100 * 7
    assert not writes and not outgoing and delta == 0


def test_envelopes_refuse_a_raise_that_carries_value_or_wants_a_reply() -> None:
    m = message(ALICE, 0, bid=2)
    for bad in (Envelope(Kind.RAISE, ALICE, ACTOR, value=1, payload=raise_payload(m.id, 3)),
                Envelope(Kind.RAISE, ALICE, ACTOR, wants_reply=True, payload=raise_payload(m.id, 3))):
        try:
            bad.validate()
        except EnvelopeError as err:
            assert "carries no value" in str(err)
        else:
            raise AssertionError("validated")
    for payload in (b"\xc1", raise_payload(m.id, 3)[:-1], b"\x92\xc4\x01\x00\x03"):
        try:
            raise_target(Envelope(Kind.RAISE, ALICE, ACTOR, payload=payload))
        except EnvelopeError as err:
            assert str(err).startswith("malformed raise")
        else:
            raise AssertionError(payload)


def test_a_node_alone_refuses_a_raise_message_in_one_line(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "node")
    m = message(ledger.alice.address, 0, bid=0)
    signed = sign_external(ledger.alice, Kind.RAISE, ACTOR, raise_payload(m.id, 3), nonce=0, value=0, gas=m.gas,
                           bid=3, chain_id=ledger.store.chain_id)
    before = (list(ledger.store.ledger()), ledger.store.accounts())
    (result,) = ledger.store.accept([signed], ledger.check)
    assert isinstance(result, EnvelopeError) and "on a node alone a bid is raised by a raise record" in str(result)
    assert (list(ledger.store.ledger()), ledger.store.accounts()) == before


def test_the_bids_waiting_messages_will_run_with_count_the_raises_waiting_with_them() -> None:
    m, other = message(ALICE, 0, bid=2), message(BOB, 0, bid=4)
    first, second, lower, stranger = raising(m, 5, 1), raising(m, 9, 2), raising(m, 3, 3), raising(other, 6, 1)
    assert raised_bids([m, other, first, second, lower]) == {m.id: 9}  # the lower one does not fit: refunded
    assert raised_bids([m, stranger]) == {}  # a raise of another's message: not its sender's
    assert raised_bids([first]) == {}  # its message is not waiting here
