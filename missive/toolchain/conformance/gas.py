"""The transaction around a state test's one message: intrinsic gas, the EIP-7623 calldata floor,
the EIP-3529 refund cap, blob and priority fees (Cancun unless noted).

Part of :mod:`missive.toolchain.conformance` (which says what the runner checks, and how).
"""

from __future__ import annotations

from typing import Final

import attrs

from missive.toolchain.conformance.cases import FORK_ORDER, Account, Case

# Transaction-level gas constants (Cancun unless noted).
TX_BASE_GAS: Final = 21_000
TX_DATA_ZERO_GAS: Final = 4
TX_DATA_NONZERO_GAS: Final = 16
ACCESS_LIST_ADDRESS_GAS: Final = 2_400
ACCESS_LIST_STORAGE_KEY_GAS: Final = 1_900
REFUND_QUOTIENT: Final = 5  # EIP-3529
FLOOR_GAS_PER_TOKEN: Final = 10  # EIP-7623 (Prague)
BLOB_BASE_FEE_UPDATE_FRACTION: Final = {"Cancun": 3_338_477, "Prague": 5_007_716}
MIN_BLOB_BASE_FEE: Final = 1


def fake_exponential(factor: int, numerator: int, denominator: int) -> int:
    """EIP-4844's integer approximation of factor * e**(numerator/denominator)."""
    i, output, accum = 1, 0, factor * denominator
    while accum > 0:
        output += accum
        accum = (accum * numerator) // (denominator * i)
        i += 1
    return output // denominator


def _effective_gas_price(gas_price: int | None, max_fee: int | None, max_prio: int | None, base_fee: int) -> int | None:
    """Legacy: gasPrice.  EIP-1559: min(maxFeePerGas, baseFee + maxPriorityFeePerGas)."""
    if max_fee is not None:
        return min(max_fee, base_fee + (max_prio or 0))
    return gas_price


@attrs.frozen
class TxCosts:
    """What the runner charges around the VM run for a state-test transaction."""

    intrinsic: int
    floor: int
    effective_gas_price: int
    invalid: str | None


def intrinsic_gas(data: bytes, access_list_addresses: int = 0, access_list_keys: int = 0) -> int:
    """21000 + 4 per zero / 16 per non-zero calldata byte + EIP-2930 access-list costs."""
    zeros = data.count(0)
    return (
        TX_BASE_GAS
        + TX_DATA_ZERO_GAS * zeros
        + TX_DATA_NONZERO_GAS * (len(data) - zeros)
        + ACCESS_LIST_ADDRESS_GAS * access_list_addresses
        + ACCESS_LIST_STORAGE_KEY_GAS * access_list_keys
    )


def floor_gas(data: bytes) -> int:
    """EIP-7623 (Prague): a transaction pays at least 21000 + 10 per calldata token."""
    zeros = data.count(0)
    tokens = zeros + 4 * (len(data) - zeros)
    return TX_BASE_GAS + FLOOR_GAS_PER_TOKEN * tokens


def _fork_at_least(fork: str, other: str) -> bool:
    return fork in FORK_ORDER and FORK_ORDER.index(fork) >= FORK_ORDER.index(other)


def transaction_costs(case: Case) -> TxCosts:
    """Intrinsic gas, floor, effective gas price and why the transaction is invalid (if it is)."""
    intrinsic = intrinsic_gas(case.data, case.access_list_addresses, case.access_list_keys)
    floor = floor_gas(case.data) if _fork_at_least(case.fork, "Prague") else 0
    base_fee = case.block.base_fee
    price = _effective_gas_price(case.gas_price, case.max_fee_per_gas, case.max_priority_fee_per_gas, base_fee)
    sender = case.pre.get(case.sender, Account())
    invalid = None
    if price is None:
        invalid = "transaction has neither gasPrice nor maxFeePerGas"
        price = 0
    elif case.max_fee_per_gas is not None and (case.max_priority_fee_per_gas or 0) > case.max_fee_per_gas:
        invalid = "maxPriorityFeePerGas exceeds maxFeePerGas"
    elif (case.max_fee_per_gas if case.max_fee_per_gas is not None else price) < base_fee:
        invalid = f"fee per gas below the base fee {base_fee}"
    elif case.gas < max(intrinsic, floor):
        invalid = f"gas limit {case.gas} below the intrinsic gas {max(intrinsic, floor)}"
    elif case.gas > case.block.gas_limit:
        invalid = f"gas limit {case.gas} above the block gas limit {case.block.gas_limit}"
    elif case.tx_nonce != sender.nonce:
        invalid = f"nonce {case.tx_nonce} but the sender's nonce is {sender.nonce}"
    elif sender.code:
        invalid = "sender has code (EIP-3607)"
    else:
        max_price = case.max_fee_per_gas if case.max_fee_per_gas is not None else price
        upfront = case.gas * max_price + case.value
        if sender.balance < upfront:
            invalid = f"sender balance {sender.balance} below the upfront cost {upfront}"
    return TxCosts(intrinsic=intrinsic, floor=floor, effective_gas_price=price, invalid=invalid)
