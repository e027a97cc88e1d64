"""``eth_accounts`` and ``eth_sendTransaction``: the endpoint signs for keys the operator unlocked.

A wallet keeps its own keys and sends signed transactions (``eth_sendRawTransaction``); scripts
written for anvil or a Hardhat node instead ask the node to sign (``eth_sendTransaction`` from
one of ``eth_accounts``).  ``missive rpc --unlock NAME`` (repeatable) unlocks the Ethereum
(secp256k1) keys of that name in the node's (or the cluster directory's) keystore when the
endpoint starts, asking for the keystore's passphrase then if it is encrypted.  Those keys are
held in the endpoint's memory only and used for one thing: signing a transaction from their
address that a request asked for.  No method returns a key or signs arbitrary data (no
``eth_sign``, no ``personal_*``), and no key is unlocked unless named.

Anyone who can reach the endpoint can spend from an unlocked account, so, as geth does, unlocking
is refused when the endpoint listens beyond loopback, unless ``--allow-insecure-unlock`` says the
operator means it.
"""

from __future__ import annotations

from typing import Any

from missive.errors import MissiveError
from missive.keys import EthKey, Key


class UnlockRefused(MissiveError):
    """A key cannot be unlocked for signing (the text says which and why)."""


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def unlocked(keystore: Any, names: list[str], host: str, allow_insecure: bool) -> list[EthKey]:
    """The Ethereum keys ``names`` from ``keystore``, checked for what they may be used for."""
    if names and host not in LOOPBACK and not allow_insecure:
        raise UnlockRefused(f"--unlock with --host {host}: anyone who reaches the endpoint could spend from the "
                            "unlocked accounts; listen on 127.0.0.1, or add --allow-insecure-unlock if you mean it")
    keys: list[EthKey] = []
    for name in names:
        key: Key = keystore.get(name)
        if not isinstance(key, EthKey):
            raise UnlockRefused(f"--unlock {name}: an Ed25519 key signs Missive messages, not Ethereum transactions; "
                                "make an Ethereum one with `missive account new NAME --kind eth`")
        keys.append(key)
    return keys


def transaction_fields(*, chain_id: int, nonce: int, gas: int, to: bytes | None, value: int,
                       data: bytes, gas_price: int | None, max_fee: int | None, priority_fee: int | None) -> dict[str, Any]:
    """What ``eth_sendTransaction`` signs: legacy with EIP-155 when ``gasPrice`` was given, else EIP-1559."""
    fields: dict[str, Any] = {"chainId": chain_id, "nonce": nonce, "gas": gas, "to": to or b"", "value": value,
                              "data": data}
    if gas_price is not None:
        fields["gasPrice"] = gas_price
    else:
        fields["maxFeePerGas"] = max_fee
        fields["maxPriorityFeePerGas"] = min(priority_fee or 0, max_fee or 0)
    return fields
