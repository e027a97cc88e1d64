"""Kernels: signed versioned statements; merge is idempotent, commutative, associative; forgeries fail."""

from __future__ import annotations

import random
from functools import cache

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from missive.consensus.kernel import Attester, Kernel, Statement, Verifier


@cache
def pool() -> tuple[Attester, ...]:
    rng = random.Random(7)
    return tuple(Attester(rng.randbytes(32)) for _ in range(6))


@cache
def statement(who: int, version: int, salt: int) -> Statement:
    """A valid statement; ``salt`` varies the content (salt != 0 at one version = equivocation)."""
    keys = pool()
    trusts = {keys[(who + d) % len(keys)].public_key: (version * 31 + salt * 7 + d) % 65536 for d in (1, 2)}
    return keys[who].statement(version, version, trusts)


statements = st.lists(st.builds(statement, st.integers(0, 5), st.integers(0, 4), st.integers(0, 1)), max_size=12)


def merged(*groups: list[Statement]) -> dict[bytes, Statement]:
    k = Kernel()
    for g in groups:
        k.merge(g)
    return k.snapshot()


@settings(max_examples=60, deadline=None)
@given(statements, statements, statements)
def test_merge_is_a_semilattice(a: list[Statement], b: list[Statement], c: list[Statement]) -> None:
    assert merged(a, a) == merged(a)  # idempotent
    assert merged(a, b) == merged(b, a)  # commutative
    assert merged(a, b, c) == merged(c, a, b) == merged(b + c, a)  # associative, any order
    assert merged(list(reversed(a))) == merged(a)


@settings(max_examples=60, deadline=None)
@given(statements)
def test_keeps_highest_version_per_attester_and_entry(sts: list[Statement]) -> None:
    k = Kernel()
    k.merge(sts)
    for s in sts:
        held = k.get(s.attester)
        assert held is not None and held.rank() >= s.rank()
        for subject, _ in s.trusts:
            e = k.entry(s.attester, subject)
            assert e is not None and e.version >= s.version
    assert len(k) == len({s.attester for s in sts})
    assert k.entry_count == sum(len(s.trusts) for s in k)


def test_newer_replaces_older_not_the_reverse() -> None:
    old, new = statement(0, 1, 0), statement(0, 3, 0)
    k = Kernel()
    assert k.add(new) and not k.add(old)
    assert k.get(old.attester) == new


def test_equivocation_is_resolved_alike_and_kept_as_evidence() -> None:
    a, b = statement(1, 2, 0), statement(1, 2, 1)
    assert a.version == b.version and a != b
    k1, k2 = Kernel(), Kernel()
    k1.merge([a, b])
    k2.merge([b, a])
    assert k1.snapshot() == k2.snapshot()
    assert k1.equivocations and k1.equivocations == k2.equivocations


def test_forged_and_tampered_statements_are_rejected() -> None:
    good = statement(0, 2, 0)
    impostor = pool()[1]
    # signed by someone else, claiming to be attester 0
    forged = Statement(good.attester, good.step, 9, good.k, good.trusts, impostor.statement(9, 9, dict(good.trusts)).signature)
    tampered = attrs.evolve(good, trusts=tuple((s, 65535) for s, _ in good.trusts))
    bumped = attrs.evolve(good, version=good.version + 1)
    k = Kernel()
    assert k.merge([forged, tampered, bumped]) == []
    assert len(k) == 0 and k.rejected == 3
    assert k.add(good) and not k.add(tampered)
    assert k.get(good.attester) == good


def test_wire_roundtrip_and_signature() -> None:
    s = statement(3, 4, 0)
    assert Statement.from_wire(s.wire) == s and s.verify()
    assert not attrs.evolve(s, step=5).verify()


def test_digest_tree_is_xor_of_statements_at_every_level() -> None:
    rng = random.Random(3)
    atts = [Attester(rng.randbytes(32)) for _ in range(40)]
    sts = [a.statement(1, 1, {atts[0].public_key: 1}) for a in atts]
    k = Kernel()
    k.merge(sts[:25])
    k.digests(3)  # cache a level, then change the kernel: the cache must not go stale
    k.merge(sts[25:] + [atts[0].statement(2, 2, {atts[1].public_key: 3})])
    for level in range(k.max_level + 1):
        expected = [0] * (1 << level)
        for s in k:
            expected[s.slot >> (64 - level) if level else 0] ^= s.digest
        assert list(k.digests(level)) == expected
        assert sorted(s.slot for s in k.in_buckets(level, range(1 << level))) == sorted(s.slot for s in k)


def test_verifier_cache_checks_each_statement_once() -> None:
    v = Verifier()
    k1, k2 = Kernel(v), Kernel(v)
    sts = [statement(i, 1, 0) for i in range(4)]
    k1.merge(sts)
    k2.merge(sts)
    assert v.checked == 4
