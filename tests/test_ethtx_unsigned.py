"""The payload an Ethereum signature covers, cut from the transaction's own bytes
(missive.mailbox.ethtx.unsigned_payload), is what rlp encodes, for every shape of transaction."""

from __future__ import annotations

import os

import rlp
from hypothesis import given, settings
from hypothesis import strategies as st

from missive.mailbox import ethtx

ints = st.one_of(st.integers(0, 0x7F), st.integers(0, 2**64), st.integers(0, 2**256 - 1))
data = st.one_of(st.binary(max_size=60), st.binary(min_size=56, max_size=600))
access = st.lists(st.tuples(st.binary(min_size=20, max_size=20), st.lists(st.binary(min_size=32, max_size=32),
                                                                          max_size=3)), max_size=3)
chain_ids = st.one_of(st.integers(1, 0x7F), st.integers(0x80, 2**64 - 1))


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from([0, 1, 2]), chain_id=chain_ids, nonce=ints, fee=ints, tip=ints, gas=ints, value=ints,
       to=st.sampled_from([b"", bytes(range(20))]), payload=data, access_list=access,
       vrs=st.tuples(st.integers(0, 2**70), st.integers(1, 2**256 - 1), st.integers(1, 2**256 - 1)))
def test_unsigned_payload_is_rlps(kind: int, chain_id: int, nonce: int, fee: int, tip: int, gas: int, value: int,
                                  to: bytes, payload: bytes, access_list: list[tuple[bytes, list[bytes]]],
                                  vrs: tuple[int, int, int]) -> None:
    entries = [[a, keys] for a, keys in access_list]
    if kind == 0:
        body = [nonce, fee, gas, to, value, payload]
        signed = rlp.encode([*body, *vrs])
        assert ethtx.unsigned_payload(signed, chain_id) == rlp.encode([*body, chain_id, 0, 0])
    else:
        body = ([chain_id, nonce, fee, gas, to, value, payload, entries] if kind == 1
                else [chain_id, nonce, tip, fee, gas, to, value, payload, entries])
        signed = rlp.encode([*body, *vrs])
        assert ethtx.unsigned_payload(signed, None) == rlp.encode(body)


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["legacy", "2930", "1559"]), chain_id=chain_ids, nonce=st.integers(0, 2**64 - 1),
       payload=data, to=st.sampled_from([b"", bytes(range(1, 21))]))
def test_decode_recovers_the_signer(kind: str, chain_id: int, nonce: int, payload: bytes, to: bytes) -> None:
    from eth_keys import keys  # type: ignore[attr-defined]

    key = os.urandom(32)
    fields: dict[str, object] = {"chainId": chain_id, "nonce": nonce, "gas": 90_000, "to": to, "value": 3,
                                 "data": payload}
    if kind == "1559":
        fields.update(maxFeePerGas=2 * 10**9, maxPriorityFeePerGas=10**9)
    else:
        fields["gasPrice"] = 10**9
        if kind == "2930":
            fields["accessList"] = [(bytes(range(20)), [bytes(32)])]
    tx = ethtx.decode(ethtx.sign_transaction(key, fields))
    assert tx.sender == keys.PrivateKey(key).public_key.to_canonical_address()
    assert (tx.chain_id, tx.nonce, tx.data, tx.to) == (chain_id, nonce, payload, to)
