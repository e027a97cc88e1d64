"""The gossip engine: each of the three modes, the messages, and the mode choice."""

from __future__ import annotations

import random
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from missive.consensus import gossip
from missive.consensus.gossip import (
    Gossiper,
    InSync,
    Push,
    Rows,
    Summary,
    Versions,
    Whole,
    decode,
    encode,
    exchange,
    wire_size,
)
from missive.consensus.kernel import Attester, Kernel, Statement, Verifier


@cache
def statements(n: int = 300) -> tuple[Statement, ...]:
    rng = random.Random(11)
    atts = [Attester(rng.randbytes(32)) for _ in range(n)]
    return tuple(a.statement(3, 3, {atts[(i + d) % n].public_key: rng.randrange(1 << 16) for d in (1, 2, 3)}) for i, a in enumerate(atts))


def gossiper(sts: list[Statement] | tuple[Statement, ...], verifier: Verifier | None = None) -> Gossiper:
    g = Gossiper(Kernel(verifier or Verifier()))
    g.kernel.merge(sts)
    return g


def run(a: Gossiper, b: Gossiper) -> list[tuple[str, int]]:
    """One exchange a -> b; returns (message type, bytes) of every message on the wire."""
    log: list[tuple[str, int]] = []

    def send(m: gossip.Message) -> gossip.Message | None:
        data = encode(m)
        assert decode(data) == m and wire_size(m) == len(data)
        log.append((type(m).__name__, len(data)))
        reply = b.handle(decode(data))
        if reply is not None:
            assert wire_size(reply) == len(encode(reply))
            log.append((type(reply).__name__, wire_size(reply)))
        return reply

    exchange(a, send)
    return log


def test_gossip_about_gossip_when_little_is_shared() -> None:
    """A new node (empty kernel) gets the whole kernel in one exchange and gives back what it has."""
    sts = statements()
    old = gossiper(sts[:290])
    new = gossiper(sts[290:])
    log = run(new, old)
    assert [t for t, _ in log] == ["Summary", "Whole", "Rows"]
    assert old.modes["whole"] == 1
    assert new.kernel.snapshot() == old.kernel.snapshot() and len(new.kernel) == 300
    # the answer to the whole kernel is exactly the complement: the 10 statements old lacked
    rows = decode(encode(Rows(tuple(sts[290:]))))
    assert log[2][1] == wire_size(rows)


def test_reduced_gossip_sends_only_the_missing_parts() -> None:
    sts = statements()
    a = gossiper(sts[:295])
    b = gossiper(sts[5:])
    log = run(a, b)
    assert [t for t, _ in log] == ["Summary", "Versions", "Rows", "Rows"]
    assert b.modes["reduced"] == 1 and b.modes["whole"] == 0
    assert a.kernel.snapshot() == b.kernel.snapshot() and len(a.kernel) == 300
    statement_bytes = sum(size for t, size in log if t == "Rows")
    missing = wire_size(Rows(sts[:5])) + wire_size(Rows(sts[295:]))
    assert statement_bytes <= missing + 8 * 5 + 16  # the missing statements plus the wanted slots
    whole = wire_size(Whole(tuple(sts), True))
    assert sum(size for _, size in log) < whole / 4


def test_reduced_gossip_carries_newer_versions() -> None:
    sts = list(statements()[:100])
    rng = random.Random(11)
    atts = [Attester(rng.randbytes(32)) for _ in range(300)][:100]
    newer = atts[7].statement(9, 9, {atts[8].public_key: 65535})
    a = gossiper(sts)
    b = gossiper(sts + [newer])
    run(a, b)
    assert a.kernel.get(atts[7].public_key) == newer


def test_in_sync_costs_one_summary() -> None:
    sts = statements()
    a, b = gossiper(sts), gossiper(sts)
    log = run(a, b)
    assert [t for t, _ in log] == ["Summary", "InSync"]
    assert b.modes["in_sync"] == 1


def test_targeted_push_reaches_the_concerned_node_at_once() -> None:
    sts = statements()
    a = gossiper(sts[:1])
    b = gossiper(sts[1:50])
    push = a.push([sts[0]])
    assert isinstance(push, Push) and a.modes["targeted"] == 1
    assert b.handle(decode(encode(push))) is None
    assert b.kernel.get(sts[0].attester) == sts[0]


def test_mode_follows_the_shared_fraction() -> None:
    sts = statements()
    b = gossiper(sts[:200])
    for overlap, expected in ((0, Whole), (20, Whole), (150, Versions), (200, InSync)):
        a = gossiper(sts[200 - overlap : 200] if overlap else sts[250:])
        share, _ = b.share(a.summary())
        reply = b.handle(a.summary())
        assert isinstance(reply, expected), (overlap, share, reply)
    assert b.share(gossiper(sts[100:200]).summary())[0] > b.share(gossiper(sts[180:200]).summary())[0]


def test_forged_statement_in_gossip_is_rejected() -> None:
    sts = statements()
    forged = Statement(sts[0].attester, 5, 5, 16, sts[1].trusts, sts[1].signature)
    b = gossiper(sts[1:3])
    b.handle(Push((forged,)))
    b.handle(Rows((forged,), ()))
    assert b.kernel.get(sts[0].attester) is None and b.kernel.rejected == 2


@pytest.mark.parametrize(
    "data",
    [b"", b"\x91\xa1Z", encode(InSync())[:1], b"\x94\xa1S\x01\x02\xc4\x03abc"],
)
def test_malformed_messages_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode(data)


def test_summary_with_inconsistent_digests_is_refused() -> None:
    b = gossiper(statements()[:10])
    with pytest.raises(ValueError):
        b.handle(Summary(10, 3, bytes(8)))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 119), max_size=120), st.lists(st.integers(0, 119), max_size=120))
def test_any_two_kernels_converge_in_one_exchange(xs: list[int], ys: list[int]) -> None:
    sts = statements()[:120]
    a = gossiper([sts[i] for i in xs])
    b = gossiper([sts[i] for i in ys])
    union = {sts[i].attester: sts[i] for i in set(xs) | set(ys)}
    run(a, b)
    assert a.kernel.snapshot() == b.kernel.snapshot() == union


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 299), max_size=40), st.sampled_from(["S", "W", "V", "R", "P", "I"]))
def test_wire_size_is_the_encoded_length(picks: list[int], tag: str) -> None:
    sts = tuple(statements()[i] for i in picks)
    m: gossip.Message = {
        "S": Summary(len(sts), 2, bytes(32)),
        "W": Whole(sts, bool(len(sts) % 2)),
        "V": Versions(5, tuple(range(len(sts))), tuple(s.slot for s in sts), tuple(range(0, 3000 * len(sts), 3000))),
        "R": Rows(sts, tuple(s.slot for s in sts[:3])),
        "P": Push(sts),
        "I": InSync(),
    }[tag]
    assert wire_size(m) == len(encode(m))
    assert decode(encode(m)) == m
