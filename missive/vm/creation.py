"""The rules of creating a contract, for every room: the new address and the size limits.

These are Ethereum's rules, not the VM's machinery, but the VM needs them (CREATE and CREATE2
push the new address at once) and the VM imports nothing of Missive outside ``vm/``
(tests/test_layers.py).  So they live here, in a leaf of the lowest room that imports only
:mod:`missive.vm.keccak`, and every room above uses this module rather than the instruction
code in :mod:`missive.vm.messages`:

- admission (``mailbox/``) checks a deploy's recipient is :func:`create_address` of its sender and
  nonce, and an Ethereum transaction's deploy gets that address (``mailbox/ethtx.py``);
- signing (``node/``) and the RPC's ``eth_call`` to a deploy compute it the same way;
- the handler (``actors/``) refuses deployed code over :data:`MAX_CODE_SIZE`, and a replica
  (``replicas/receiver.py``) refuses code sent to it over the same limit.

Compiled by mypyc with the rest of ``vm/``; the pure build runs the same code.
"""

from __future__ import annotations

from typing import Final

from missive.vm.keccak import keccak256

#: the largest code a deploy may leave behind (EIP-170)
MAX_CODE_SIZE: Final = 24576
#: the largest init code a CREATE, CREATE2 or deploy may carry (EIP-3860)
MAX_INITCODE_SIZE: Final = 49152


def _rlp_sender_nonce(sender: bytes, nonce: int) -> bytes:
    """RLP of [sender, nonce], the preimage of a CREATE address."""
    if nonce == 0:
        nonce_rlp = b"\x80"
    elif nonce < 0x80:
        nonce_rlp = bytes([nonce])
    else:
        raw = nonce.to_bytes((nonce.bit_length() + 7) // 8, "big")
        nonce_rlp = bytes([0x80 + len(raw)]) + raw
    body = b"\x94" + sender + nonce_rlp
    return bytes([0xC0 + len(body)]) + body


def create_address(sender: bytes, nonce: int) -> bytes:
    """The address CREATE (or a deploy message) gives the contract ``sender`` creates at ``nonce``."""
    return keccak256(_rlp_sender_nonce(sender, nonce))[12:]


def create2_address(sender: bytes, salt: int, init_code: bytes) -> bytes:
    """The address CREATE2 gives: keccak(0xff || sender || salt || keccak(init code))[12:] (EIP-1014)."""
    return keccak256(b"\xff" + sender + salt.to_bytes(32, "big") + keccak256(init_code))[12:]
