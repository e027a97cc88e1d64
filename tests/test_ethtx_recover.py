"""The signer ethtx.decode recovers with libsecp256k1 (coincurve) is the one eth-keys recovers, and a
signature that recovers no key is one clear error."""

from __future__ import annotations

import pytest
import rlp
from eth_keys import keys  # type: ignore[attr-defined]
from hypothesis import given, settings
from hypothesis import strategies as st

from missive.mailbox import ethtx
from missive.mailbox.envelope import EnvelopeError

FIELDS = {"chainId": 5, "gas": 100_000, "maxFeePerGas": 2 * 10**9, "maxPriorityFeePerGas": 10**9,
          "to": bytes(range(20)), "data": b"\x01\x02"}


@settings(max_examples=50, deadline=None)
@given(secret=st.integers(1, ethtx.SECP256K1_N - 1), nonce=st.integers(0, 2**64 - 1))
def test_the_recovered_signer_is_eth_keys_one(secret: int, nonce: int) -> None:
    private = secret.to_bytes(32, "big")
    tx = ethtx.decode(ethtx.sign_transaction(private, {**FIELDS, "nonce": nonce}))
    public = keys.PrivateKey(private).public_key
    assert tx.public_key == public.to_bytes()
    assert tx.sender == public.to_canonical_address()


def test_a_signature_that_recovers_no_key_is_refused() -> None:
    raw = ethtx.sign_transaction(bytes(31) + b"\x07", {**FIELDS, "nonce": 0})
    items = rlp.decode(raw[1:])
    items[-2] = b"\x05"  # r = 5: x = 5 is on no point of secp256k1, so no key recovers from it
    with pytest.raises(EnvelopeError, match="^bad signature"):
        ethtx.decode(raw[:1] + rlp.encode(items))
