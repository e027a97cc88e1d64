"""What callers pass, as the ledger wants it: addresses, message ids, integers written as text.

Light on purpose (the CLI parses amounts with it before anything else is imported).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from missive.node.errors import ArgumentError


def to_address(value: object, what: str = "address") -> bytes:
    """A 20-byte address from bytes, ``0x`` hex text, or anything with an ``address`` attribute."""
    inner = getattr(value, "address", None)
    if isinstance(inner, bytes) and not isinstance(value, bytes):
        value = inner
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 20:
            raise ArgumentError(f"{what}: an address is 20 bytes, got {len(value)}")
        return bytes(value)
    if isinstance(value, str):
        body = value.strip()
        body = body[2:] if body[:2].lower() == "0x" else body
        if len(body) != 40:
            raise ArgumentError(f"{what}: {value!r} is not an address (need 40 hex digits, got {len(body)})")
        try:
            return bytes.fromhex(body)
        except ValueError:
            raise ArgumentError(f"{what}: {value!r} is not an address (not hex)") from None
    raise ArgumentError(f"{what}: expected an address (bytes, 0x-hex text, account or contract), got {type(value).__name__}")


def looks_like_address(text: str) -> bool:
    """``0x``-prefixed, or 40 hex digits: text meant as an address, never as an account name."""
    body = text.strip()
    return body[:2].lower() == "0x" or (len(body) == 40 and all(c in "0123456789abcdefABCDEF" for c in body))


def to_message_id(value: bytes | str) -> bytes:
    if isinstance(value, str):
        body = value.strip().removeprefix("0x").removeprefix("0X")
        try:
            value = bytes.fromhex(body)
        except ValueError:
            raise ArgumentError(f"{value!r} is not a message id (not hex)") from None
    if len(value) != 32:
        raise ArgumentError(f"a message id is 32 bytes, got {len(value)}")
    return value


def hexstr(data: bytes) -> str:
    return "0x" + data.hex()


def parse_text_int(text: str, where: str) -> int:
    """An integer written as text: decimal, ``0x`` hex, underscores, ``1e18``; may be negative."""
    cleaned = text.strip().replace("_", "")
    try:
        if cleaned.lower().lstrip("-").startswith("0x"):
            negative = cleaned.startswith("-")
            value = int(cleaned.lstrip("-")[2:], 16)
            value = -value if negative else value
        elif "e" in cleaned.lower() or "." in cleaned:
            exact = Decimal(cleaned)
            if exact != exact.to_integral_value():
                raise ValueError
            value = int(exact)
        else:
            value = int(cleaned, 10)
    except (ValueError, InvalidOperation):
        raise ArgumentError(f"{where}: {text!r} is not an integer (decimal, 0x-hex or 1e18)") from None
    return value
