"""A submit the sender's node turned away before admitting anything ("...; try another node": it
lost touch with the cluster or its worker lost its stake, and the cluster is moving the sender's
actor to another holder) is sent again by RemoteNode, the same signed message, for a bounded time;
a refusal about the message itself, or one that may follow an admission, is final at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from missive.cluster.remote import RemoteNode
from missive.keys import Keystore
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
from missive.node.signing import sign_external

LOST = "n2 has lost touch with most of the cluster and does not serve until it has caught up again; try another node"
MOVED = ("the cluster moved to epoch 4 and another node executes the sender now: this submit may or may not be "
         "handled; ask for its receipt before sending it again")


class Answers:
    """A stand-in for the home node: answers each ``submit`` from a script, recording what it was sent."""

    def __init__(self, script: list[list[dict[str, Any]]]) -> None:
        self.script, self.sent = script, []  # type: ignore[var-annotated]

    def __call__(self, method: str, params: Any = None, **_: Any) -> Any:
        assert method == "submit"
        self.sent.append(list(params))
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]


@pytest.fixture
def signed(tmp_path: Path) -> list[Any]:
    keys = Keystore(tmp_path / "keys", create=True)
    try:
        key = keys.new("alice")
        return [sign_external(key, Kind.CALL, bytes(20), b"", nonce=n, value=1, gas=30_000, chain_id=7)
                for n in range(2)]
    finally:
        keys.close()


def node(answers: Answers, retry: float = 5.0) -> RemoteNode:
    remote = RemoteNode("127.0.0.1", 1, None)
    remote._call = answers  # type: ignore[method-assign]
    remote.submit_retry = retry
    return remote


def test_a_submit_turned_away_is_sent_again_until_a_node_admits_it(signed: list[Any]) -> None:
    a, b = (s[0].id for s in signed)
    answers = Answers([[{"error": LOST}, {"id": b, "duplicate": False}], [{"error": LOST}],
                       [{"id": a, "duplicate": False}]])
    assert node(answers)._admit(signed, all_or_nothing=False) == [False, False]
    assert [len(sent) for sent in answers.sent] == [2, 1, 1]  # only the one turned away, and the same bytes
    assert answers.sent[1] == answers.sent[2] == answers.sent[0][:1]


def test_refusals_that_may_follow_an_admission_or_concern_the_message_are_final(signed: list[Any]) -> None:
    answers = Answers([[{"error": MOVED}, {"error": "nonce 1 is wrong for 0x..: expected 0"}]])
    results = node(answers)._admit(signed, all_or_nothing=False)
    assert [str(r) for r in results] == [MOVED, "nonce 1 is wrong for 0x..: expected 0"]
    assert all(isinstance(r, EnvelopeError) for r in results) and len(answers.sent) == 1


def test_a_node_that_keeps_turning_the_submit_away_gets_its_refusal_said_after_the_bound(signed: list[Any]) -> None:
    answers = Answers([[{"error": LOST}]])
    (result,) = node(answers, retry=0.5)._admit(signed[:1], all_or_nothing=False)
    assert isinstance(result, EnvelopeError) and str(result) == LOST
    assert 2 <= len(answers.sent) <= 5  # sent again, backing off, within the bound


def test_the_envelope_stays_known_once_admitted(signed: list[Any]) -> None:
    envelope: Envelope = signed[0][0]
    remote = node(Answers([[{"error": LOST}], [{"id": envelope.id, "duplicate": True}]]))
    assert remote._admit(signed[:1], all_or_nothing=False) == [True]
    assert remote._known[envelope.id] == envelope
