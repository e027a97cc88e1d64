"""A receipt's logsBloom: the endpoint's own (made with the VM's keccak) is eth-bloom's, bit for bit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from missive.mailbox.records import Receipt
from missive.rpc.methods import EMPTY_BLOOM, bloom

eth_bloom = pytest.importorskip("eth_bloom", reason="eth-bloom is a test extra (pip install -e '.[test]')")

logs = st.lists(st.tuples(st.binary(min_size=20, max_size=20), st.lists(st.integers(0, 2**256 - 1), max_size=4),
                          st.binary(max_size=8)), max_size=6)


def receipt_with(entries: list[tuple[bytes, list[int], bytes]]) -> Receipt:
    return Receipt(bytes(32), bytes(20), 0, "ok", 21_000, b"", bytes(32),
                   tuple((emitter, tuple(topics), data) for emitter, topics, data in entries), (), (), 0)


@settings(max_examples=200, deadline=None)
@given(logs)
def test_bloom_is_eth_blooms(entries: list[tuple[bytes, list[int], bytes]]) -> None:
    expected = eth_bloom.BloomFilter()
    for emitter, topics, _ in entries:
        expected.add(emitter)
        for topic in topics:
            expected.add(topic.to_bytes(32, "big"))
    made = bloom(receipt_with(entries))
    assert made == int(expected).to_bytes(256, "big")
    assert (made == EMPTY_BLOOM) == (not entries)
