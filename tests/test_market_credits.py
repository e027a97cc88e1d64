"""A commit credits fees and refunds on the stored account bytes (issue 23, Speed).

``credit_encoded`` stands in for ``Account.decode(raw).credited(amount).encode()`` in the
commit: it must give the same bytes for every account, and refuse a damaged record the same way.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from missive.mailbox.records import Account, RecordError, credit_encoded

ACCOUNTS = st.builds(
    Account,
    balance=st.integers(0, 2**255),
    nonce=st.integers(0, 2**64 - 1),
    code_hash=st.sampled_from([b"", bytes(range(32))]),
    handled=st.integers(0, 2**40),
    clock=st.integers(0, 2**63),
    state_root=st.binary(min_size=32, max_size=32),
    public_key=st.sampled_from([b"", bytes(32), bytes(range(64))]),
    timestamp=st.integers(0, 2**40),
)


@given(ACCOUNTS, st.integers(0, 2**255 - 1))
def test_crediting_the_encoded_account_gives_the_bytes_of_the_credited_account(account: Account, amount: int) -> None:
    raw = account.encode()
    assert credit_encoded(raw, amount) == account.credited(amount).encode()
    assert Account.decode(credit_encoded(raw, amount)).balance == account.balance + amount


@pytest.mark.parametrize("raw", [b"\xc1", msgpack.packb([1, 2, 3]), msgpack.packb([99, b"", 0, b"", 0, 0, b"", b"", 0]),
                                 msgpack.packb([Account().encode()])])
def test_a_damaged_account_record_is_refused_as_decode_refuses_it(raw: bytes) -> None:
    with pytest.raises(RecordError) as decoded:
        Account.decode(raw)
    with pytest.raises(RecordError) as credited:
        credit_encoded(raw, 1)
    assert str(credited.value) == str(decoded.value)
