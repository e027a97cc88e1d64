"""Ethereum-signed transactions as external messages (secp256k1 accounts beside the Ed25519 ones).

A wallet or web3.py signs an Ethereum transaction (legacy with EIP-155, EIP-2930 or EIP-1559) and
sends its raw bytes (``eth_sendRawTransaction``).  It becomes an ordinary external message:

=================  ==============================================================================
envelope field     from the transaction
=================  ==============================================================================
kind               ``deploy`` when ``to`` is empty, else ``call``
sender             the address recovered from the signature: keccak(public key)[12:], as in Ethereum
recipient          ``to``, or for a deploy the CREATE address of (sender, nonce)
value, payload     ``value``, ``data`` (init code for a deploy)
gas                the gas limit
bid                the fee the sender offers per gas: ``gasPrice``, or ``maxFeePerGas`` (EIP-1559)
nonce, chain_id    the transaction's own
time               the node's logical clock at admission (the one field the signature does not cover)
=================  ==============================================================================

The stored record is ``[envelope, public key, raw signed transaction]``: the *public key* slot
holds the signer's 64-byte secp256k1 key (x || y), which is how an Ethereum-signed message is told
from an Ed25519-signed one (32 bytes), and the *signature* slot holds the raw transaction.
:func:`verify` decodes the transaction again, recovers its signer and rebuilds the envelope from
it: admission runs it, and so does ``missive replay --check-signatures``, so a stored Ethereum
message is re-checked exactly as an Ed25519 one is.  The transaction hash (keccak of the raw
bytes) names the message to Ethereum tools; the store keeps ``tx hash -> message id``.

Decoding uses ``rlp`` and ``coincurve`` (libsecp256k1's bindings; MIT, py-evm's own dependencies), and
recovers the signer once: admission is handed the key it recovered.  Blob (type 3) and
set-code (type 4) transactions are refused by name, as are pre-EIP-155 legacy transactions (a
signature valid on every chain) and signatures with a high ``s`` (EIP-2).
"""

from __future__ import annotations

from typing import Any

import attrs

from missive.mailbox.envelope import MAX_GAS, Envelope, EnvelopeError, Kind
from missive.vm.creation import create_address
from missive.vm.keccak import keccak256

#: the public key slot of an Ethereum-signed message: an uncompressed secp256k1 key without its 0x04
PUBLIC_KEY_SIZE = 64
#: the largest raw transaction taken (a deploy's init code is at most MAX_PAYLOAD, 128 KiB)
MAX_RAW_SIZE = 132 * 1024
#: Ethereum's intrinsic gas of a transaction: a message carrying less is refused at admission
INTRINSIC_GAS = 21_000
#: the lowest fee per gas (bid) admitted from an Ethereum transaction: 1 gwei, as anvil's base fee
MIN_GAS_PRICE = 1_000_000_000
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def is_eth_public_key(public_key: bytes) -> bool:
    return len(public_key) == PUBLIC_KEY_SIZE


@attrs.frozen
class EthTransaction:
    """A decoded, signature-checked Ethereum transaction."""

    type: int
    chain_id: int
    nonce: int
    gas_price: int  # legacy/2930: gasPrice; 1559: maxFeePerGas
    max_priority_fee: int  # 1559: maxPriorityFeePerGas; else gasPrice
    gas: int
    to: bytes  # b"" for a deploy
    value: int
    data: bytes
    access_list: tuple[Any, ...]
    v: int
    r: int
    s: int
    sender: bytes
    public_key: bytes  # 64 bytes
    hash: bytes
    raw: bytes

    def envelope(self, time: int) -> Envelope:
        """The external message this transaction is, stamped with the node's logical ``time``."""
        if self.to:
            return Envelope(Kind.CALL, self.sender, self.to, value=self.value, payload=self.data, gas=self.gas,
                            bid=self.gas_price, nonce=self.nonce, time=time, chain_id=self.chain_id)
        return Envelope(Kind.DEPLOY, self.sender, create_address(self.sender, self.nonce), value=self.value,
                        payload=self.data, gas=self.gas, bid=self.gas_price, nonce=self.nonce, time=time,
                        chain_id=self.chain_id)


def _int(item: object, name: str) -> int:
    if not isinstance(item, bytes) or len(item) > 32 or item[:1] == b"\x00":
        raise EnvelopeError(f"transaction field {name} is not a canonical integer of at most 32 bytes")
    return int.from_bytes(item, "big")


def _address(item: object) -> bytes:
    if not isinstance(item, bytes) or len(item) not in (0, 20):
        raise EnvelopeError("transaction field to must be empty (a deploy) or a 20-byte address")
    return item


def _bytes(item: object, name: str) -> bytes:
    if not isinstance(item, bytes):
        raise EnvelopeError(f"transaction field {name} must be a byte string")
    return item


def _access_list(item: object) -> tuple[Any, ...]:
    if not isinstance(item, list):
        raise EnvelopeError("transaction field accessList must be a list")
    for entry in item:
        if (not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], bytes) or len(entry[0]) != 20
                or not isinstance(entry[1], list)
                or not all(isinstance(k, bytes) and len(k) == 32 for k in entry[1])):
            raise EnvelopeError("transaction field accessList must hold [address, [32-byte storage keys]] entries")
    return tuple(item)


def _list(raw: bytes, what: str) -> list[Any]:
    import rlp

    try:
        items = rlp.decode(raw, strict=True)
    except Exception as exc:  # rlp's DecodingError, and anything malformed input makes it raise
        raise EnvelopeError(f"malformed {what}: not RLP ({exc})") from None
    if not isinstance(items, list):
        raise EnvelopeError(f"malformed {what}: expected an RLP list")
    return items


def _item_ends(encoded: bytes) -> tuple[int, list[int]]:
    """(where the payload starts, where each item ends) in ``encoded``, one RLP list that
    ``rlp.decode(strict=True)`` accepted (so every length here is canonical and in range)."""
    first = encoded[0]
    position = 1 if first <= 0xF7 else 1 + first - 0xF7
    start, ends = position, []
    while position < len(encoded):
        head = encoded[position]
        if head < 0x80:
            position += 1
        elif head <= 0xB7:  # a short string
            position += 1 + head - 0x80
        elif 0xC0 <= head <= 0xF7:  # a short list
            position += 1 + head - 0xC0
        else:  # a long string or list: the length's own length, then the length
            size = head - (0xB7 if head <= 0xBF else 0xF7)
            position += 1 + size + int.from_bytes(encoded[position + 1:position + 1 + size], "big")
        ends.append(position)
    return start, ends


def _rlp_list(payload: bytes) -> bytes:
    if len(payload) < 56:
        return bytes([0xC0 + len(payload)]) + payload
    size = len(payload).to_bytes((len(payload).bit_length() + 7) // 8, "big")
    return bytes([0xF7 + len(size)]) + size + payload


def _rlp_int(n: int) -> bytes:
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return body if len(body) == 1 and body[0] < 0x80 else bytes([0x80 + len(body)]) + body


def unsigned_payload(encoded: bytes, chain_id: int | None) -> bytes:
    """The RLP list a transaction's signature covers, cut from its own encoding rather than encoded
    again (the re-encoding was half of :func:`decode`'s time): the list of its items but the last
    three (v, r, s), and for a legacy transaction (``chain_id`` given, EIP-155) the first six and
    then chain id, 0, 0.  ``encoded``: the list (for a typed transaction, without its type byte)."""
    start, ends = _item_ends(encoded)
    if chain_id is None:
        return _rlp_list(encoded[start:ends[-4]])
    return _rlp_list(encoded[start:ends[5]] + _rlp_int(chain_id) + b"\x80\x80")


def decode(raw: bytes) -> EthTransaction:
    """Decode and check a raw signed transaction; :class:`EnvelopeError` names what is wrong.
    (rlp and coincurve are imported when used: the store imports this module, every command the store.)"""
    import coincurve

    if not isinstance(raw, bytes) or not raw:
        raise EnvelopeError("empty transaction")
    if len(raw) > MAX_RAW_SIZE:
        raise EnvelopeError(f"transaction of {len(raw)} bytes exceeds the {MAX_RAW_SIZE}-byte limit")
    first = raw[0]
    if first >= 0xC0:  # legacy: an RLP list
        items = _list(raw, "legacy transaction")
        if len(items) != 9:
            raise EnvelopeError("malformed legacy transaction: expected 9 fields")
        nonce, gas_price, gas, to, value, data = (_int(items[0], "nonce"), _int(items[1], "gasPrice"),
                                                  _int(items[2], "gas"), _address(items[3]), _int(items[4], "value"),
                                                  _bytes(items[5], "data"))
        v, r, s = _int(items[6], "v"), _int(items[7], "r"), _int(items[8], "s")
        if v in (27, 28):
            raise EnvelopeError("a legacy transaction without a chain id (pre-EIP-155) is valid on every chain; "
                                "sign it with this ledger's chain id")
        if v < 35:
            raise EnvelopeError(f"malformed legacy transaction: v = {v}")
        chain_id, parity = (v - 35) // 2, (v - 35) % 2
        unsigned = unsigned_payload(raw, chain_id)
        tx_type, tip, access = 0, gas_price, ()
    elif first in (1, 2):
        items = _list(raw[1:], f"type-{first} transaction")
        expected = 11 if first == 1 else 12
        if len(items) != expected:
            raise EnvelopeError(f"malformed type-{first} transaction: expected {expected} fields")
        chain_id, nonce = _int(items[0], "chainId"), _int(items[1], "nonce")
        if first == 1:
            tip = gas_price = _int(items[2], "gasPrice")
            rest = items[3:]
        else:
            tip, gas_price = _int(items[2], "maxPriorityFeePerGas"), _int(items[3], "maxFeePerGas")
            if tip > gas_price:
                raise EnvelopeError("maxPriorityFeePerGas is more than maxFeePerGas")
            rest = items[4:]
        gas, to, value, data = _int(rest[0], "gas"), _address(rest[1]), _int(rest[2], "value"), _bytes(rest[3], "data")
        access = _access_list(rest[4])
        parity, r, s = _int(rest[5], "yParity"), _int(rest[6], "r"), _int(rest[7], "s")
        if parity > 1:
            raise EnvelopeError(f"malformed type-{first} transaction: yParity = {parity}")
        v = parity
        unsigned = bytes([first]) + unsigned_payload(raw[1:], None)
        tx_type = first
    elif first in (3, 4):
        raise EnvelopeError(f"type-{first} transactions ({'blob' if first == 3 else 'set-code'}) are not supported")
    else:
        raise EnvelopeError(f"unknown transaction type {first}")
    if not 0 < r < SECP256K1_N or not 0 < s <= SECP256K1_N // 2:
        raise EnvelopeError("bad signature: r or s out of range (a high s is refused, EIP-2)")
    if chain_id >> 64:
        raise EnvelopeError(f"chain id {chain_id} is out of range")
    if gas > MAX_GAS:
        raise EnvelopeError(f"gas {gas} exceeds the per-message limit {MAX_GAS}")
    try:  # coincurve (libsecp256k1) directly: eth-keys' objects around it took a quarter of the time
        public = coincurve.PublicKey.from_signature_and_message(
            r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([parity]), keccak256(unsigned), hasher=None)
    except ValueError as exc:
        raise EnvelopeError(f"bad signature: {exc}") from None
    public_key = public.format(compressed=False)[1:]
    return EthTransaction(tx_type, chain_id, nonce, gas_price, tip, gas, to, value, data, access, v, r, s,
                          keccak256(public_key)[12:], public_key, keccak256(raw), raw)


def tx_type(raw: bytes) -> int:
    """The type of a raw transaction :func:`decode` accepted (its first byte; a legacy one starts
    with an RLP list): what a receipt says, without recovering the signer again."""
    return raw[0] if raw and raw[0] < 0xC0 else 0


def verify(envelope: Envelope, public_key: bytes, raw: bytes) -> EthTransaction:
    """Check an Ethereum-signed message: ``raw`` decodes, is signed by ``public_key``, and is exactly
    ``envelope`` (every field but the node's time).  Admission and replay both run this."""
    tx = decode(raw)
    if tx.public_key != public_key:
        raise EnvelopeError(f"the transaction is not signed by the key stored with message 0x{envelope.id.hex()}")
    if tx.envelope(envelope.time) != envelope:
        raise EnvelopeError(f"message 0x{envelope.id.hex()} is not the transaction signed with it")
    return tx


def admit(envelope: Envelope, balance: int) -> None:
    """Ethereum's admission rules on top of Missive's: intrinsic gas, the lowest fee, and funds for
    the value plus the whole gas limit at the offered fee (only the value moves now: the fee is the
    bid the market will use)."""
    if envelope.gas < INTRINSIC_GAS:
        raise EnvelopeError(f"intrinsic gas too low: gas {envelope.gas} is under {INTRINSIC_GAS}")
    if envelope.bid < MIN_GAS_PRICE:
        raise EnvelopeError(f"transaction underpriced: fee per gas {envelope.bid} is under the minimum "
                            f"{MIN_GAS_PRICE}")
    cost = envelope.value + envelope.gas * envelope.bid
    if cost > balance:
        raise EnvelopeError(f"insufficient funds for gas * price + value: 0x{envelope.sender.hex()} has {balance}, "
                            f"the transaction needs {cost}")


def sign_transaction(private_key: bytes, fields: dict[str, Any]) -> bytes:
    """A raw signed transaction (type 2 when ``maxFeePerGas`` is given, 1 with ``accessList``, else
    legacy with EIP-155): for tests, tools and the keystore's Ethereum keys."""
    import rlp
    from eth_keys import keys as eth_keys  # type: ignore[attr-defined]

    key = eth_keys.PrivateKey(private_key)
    chain_id, nonce, gas = fields["chainId"], fields.get("nonce", 0), fields.get("gas", 1_000_000)
    to, value, data = fields.get("to", b""), fields.get("value", 0), fields.get("data", b"")
    if "maxFeePerGas" in fields:
        body = [chain_id, nonce, fields.get("maxPriorityFeePerGas", 0), fields["maxFeePerGas"], gas, to, value, data,
                list(fields.get("accessList", []))]
        sig = key.sign_msg_hash(keccak256(b"\x02" + rlp.encode(body)))
        return b"\x02" + bytes(rlp.encode([*body, sig.v, sig.r, sig.s]))
    if "accessList" in fields:
        body = [chain_id, nonce, fields["gasPrice"], gas, to, value, data, list(fields["accessList"])]
        sig = key.sign_msg_hash(keccak256(b"\x01" + rlp.encode(body)))
        return b"\x01" + bytes(rlp.encode([*body, sig.v, sig.r, sig.s]))
    body = [nonce, fields["gasPrice"], gas, to, value, data]
    sig = key.sign_msg_hash(keccak256(rlp.encode([*body, chain_id, 0, 0])))
    return bytes(rlp.encode([*body, chain_id * 2 + 35 + sig.v, sig.r, sig.s]))
