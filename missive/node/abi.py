"""ABI text and values, in one place for the Python API and the CLI.

Types and signatures as text (``transfer(address,uint256)``, ``(uint256,address)[]``),
arguments given as Python values (``encode_args``) or as command-line text
(``parse_text_args``), return data, logs and revert data decoded.  Everything that
does not fit raises :class:`~missive.node.errors.ArgumentError` naming the argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.abi import is_encodable
from eth_abi.exceptions import DecodingError, EncodingError
from eth_abi.grammar import ABIType, TupleType, normalize, parse

from missive.node.errors import ArgumentError, NodeError
from missive.node.values import parse_text_int, to_address
from missive.vm.keccak import keccak256

ERROR_SELECTOR: Final = keccak256(b"Error(string)")[:4]
PANIC_SELECTOR: Final = keccak256(b"Panic(uint256)")[:4]
PANIC_CODES: Final = {
    0x01: "assertion failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division or modulo by zero",
    0x21: "invalid enum value",
    0x22: "bad storage byte array",
    0x31: "pop on an empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory",
    0x51: "call to an uninitialised function",
}


# -- types and signatures ----------------------------------------------------------------------------


def abi_type(entry: dict[str, Any]) -> str:
    """The canonical type string of an ABI input/output entry (tuples spelled out)."""
    kind = str(entry.get("type", ""))
    if kind.startswith("tuple"):
        inner = ",".join(abi_type(c) for c in entry.get("components", []))
        return f"({inner}){kind[len('tuple'):]}"
    return kind


def type_str(t: ABIType) -> str:
    """The canonical text of a parsed ABI type."""
    return str(t.to_type_str())  # type: ignore[no-untyped-call]


def parse_type(text: str) -> ABIType:
    """Parse and check one ABI type (``uint`` -> ``uint256``); ArgumentError if it is not one."""
    try:
        parsed: ABIType = parse(normalize(text.strip()))  # type: ignore[no-untyped-call]
        parsed.validate()  # type: ignore[no-untyped-call]
    except Exception as exc:  # eth_abi raises parsimonious and ABITypeError variants
        raise ArgumentError(f"{text.strip()!r} is not an ABI type ({str(exc).splitlines()[0]})") from None
    return parsed


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets, parentheses and double quotes."""
    parts: list[str] = []
    depth, quoted, start = 0, False, 0
    for i, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def parse_types(text: str) -> list[str]:
    """A comma-separated list of ABI types, canonical (``uint,address`` -> ``[uint256, address]``)."""
    return [type_str(parse_type(t)) for t in split_top_level(text)] if text.strip() else []


def parse_signature(text: str) -> tuple[str, list[str], list[str] | None]:
    """``name(t1,t2)`` (optionally followed by ``(r1,r2)`` returns) -> (name, inputs, returns or None).

    A bare ``name`` gives ``(name, [], None)`` with inputs unknown; callers check
    ``"(" in text`` to tell it from a function without parameters.
    """
    text = text.strip()
    if "(" not in text:
        if not text.isidentifier():
            raise ArgumentError(f"{text!r} is not a function name or signature like 'transfer(address,uint256)'")
        return text, [], None
    name, rest = text.split("(", 1)
    name = name.strip()
    if not name.isidentifier():
        raise ArgumentError(f"{text!r}: {name!r} is not a function name")
    depth, end = 1, -1
    for i, char in enumerate(rest):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            end = i
            break
    if end < 0:
        raise ArgumentError(f"{text!r}: unbalanced parentheses")
    inner, tail = rest[:end], rest[end + 1:].strip()
    inputs = parse_types(inner)
    returns: list[str] | None = None
    if tail:
        tail = tail.removeprefix("returns").strip()
        if not (tail.startswith("(") and tail.endswith(")")):
            raise ArgumentError(f"{text!r}: expected return types in parentheses after the parameters")
        returns = parse_types(tail[1:-1])
    return name, inputs, returns


def parse_returns(text: str | None) -> list[str] | None:
    """Return types as given on a command line: ``uint256``, ``uint256,address`` or ``(uint256,address)``."""
    if text is None:
        return None
    body = text.strip()
    if body.startswith("(") and body.endswith(")") and len(split_top_level(body[1:-1])) > 1:
        body = body[1:-1]
    return parse_types(body)


def function_entry(name: str, inputs: Sequence[str], outputs: Sequence[str], mutability: str) -> dict[str, Any]:
    """An ABI entry for a function known by its signature alone (parameters unnamed)."""
    return {
        "type": "function",
        "name": name,
        "inputs": [{"name": "", "type": t} for t in inputs],
        "outputs": [{"name": "", "type": t} for t in outputs],
        "stateMutability": mutability,
    }


# -- Python values -----------------------------------------------------------------------------------


def _prepare_value(t: ABIType, value: Any, where: str) -> Any:
    """Turn friendly Python values into what eth_abi encodes (addresses to bytes, hex to bytes)."""
    if t.is_array:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ArgumentError(f"{where}: expected a list for {type_str(t)}, got {type(value).__name__}")
        return [_prepare_value(t.item_type, v, where) for v in value]
    if isinstance(t, TupleType):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != len(t.components):
            raise ArgumentError(f"{where}: expected a tuple of {len(t.components)} values for {type_str(t)}")
        return tuple(_prepare_value(c, v, where) for c, v in zip(t.components, value, strict=True))
    base = getattr(t, "base", "")
    if base == "address":
        return to_address(value, where)
    if base == "bytes" and isinstance(value, str):
        return _hex(value.strip(), where, f"{type_str(t)} wants bytes or 0x-hex text", value)
    if base == "bool" and isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    return value


def _hex(text: str, where: str, wanted: str, given: str) -> bytes:
    """``0x``-prefixed hex text as bytes; ArgumentError saying what was ``wanted`` (``given``: as the caller wrote it)."""
    if text[:2].lower() != "0x":
        raise ArgumentError(f"{where}: {wanted}, got {given!r}")
    try:
        return bytes.fromhex(text[2:])
    except ValueError:
        raise ArgumentError(f"{where}: {given!r} is not hex") from None


def _where(what: str, names: Sequence[str], i: int, t: str) -> str:
    label = names[i] if i < len(names) and names[i] else f"#{i + 1}"
    return f"{what}: argument {label} ({t})"


def encode_args(types: Sequence[str], args: Sequence[Any], what: str, names: Sequence[str] = ()) -> bytes:
    """ABI-encode ``args``; ArgumentError naming the argument that does not fit."""
    if len(args) != len(types):
        raise ArgumentError(f"{what}: expected {len(types)} argument{'s' if len(types) != 1 else ''}, got {len(args)}")
    prepared = []
    for i, (t, value) in enumerate(zip(types, args, strict=True)):
        where = _where(what, names, i, t)
        v = _prepare_value(parse_type(t), value, where)
        if not is_encodable(t, v):
            raise ArgumentError(f"{where} cannot be {value!r}")
        prepared.append(v)
    try:
        return bytes(abi_encode(list(types), prepared))
    except (EncodingError, TypeError, ValueError) as exc:  # pragma: no cover - is_encodable checked each
        raise ArgumentError(f"{what}: {exc}") from None


def decode_values(types: Sequence[str], data: bytes, what: str) -> Any:
    """Decode return data: None for no outputs, the value for one, a tuple for several."""
    if not types:
        return None
    try:
        values = abi_decode(list(types), data)
    except (DecodingError, OverflowError, ValueError) as exc:
        raise NodeError(f"{what}: cannot decode return data 0x{data.hex()} as ({','.join(types)}): {exc}") from None
    return values[0] if len(values) == 1 else tuple(values)


def decode_inputs(types: Sequence[str], data: bytes) -> tuple[Any, ...] | None:
    """The arguments of calldata after its selector, or None if they do not decode as ``types``."""
    try:
        return tuple(abi_decode(list(types), data))
    except (DecodingError, OverflowError, ValueError):
        return None


def format_value(value: Any, *, tuples: str = "()") -> str:
    """A decoded value as text: ``true``, ``0x..`` for bytes, ``[a, b]`` for lists, tuples in ``tuples``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v, tuples=tuples) for v in value) + "]"
    if isinstance(value, tuple):
        return tuples[0] + ", ".join(format_value(v, tuples=tuples) for v in value) + tuples[1]
    return str(value)


# -- command-line text ---------------------------------------------------------------------------------


#: How an address written as text becomes bytes: (text, where) -> address (a node also takes account names).
AddressReader = Callable[[str, str], bytes]


def parse_text_value(t: ABIType, text: str, where: str, address: AddressReader = to_address) -> Any:
    """One argument written as text (``[a,b]`` arrays, ``(a,b)`` tuples, quoted or bare strings) as the
    Python value for ABI type ``t``."""
    text = text.strip()
    if t.is_array or isinstance(t, TupleType):
        opening, closing = ("[", "]") if t.is_array else ("(", ")")
        if not (text.startswith(opening) and text.endswith(closing)):
            raise ArgumentError(f"{where}: {type_str(t)} is written {opening}a,b,...{closing}, got {text!r}")
        inner = text[1:-1].strip()
        items = split_top_level(inner) if inner else []
        if t.is_array:
            return [parse_text_value(t.item_type, item, where, address) for item in items]
        assert isinstance(t, TupleType)
        if len(items) != len(t.components):
            raise ArgumentError(f"{where}: {type_str(t)} has {len(t.components)} fields, got {len(items)}")
        return tuple(parse_text_value(c, item, where, address) for c, item in zip(t.components, items, strict=True))
    base = getattr(t, "base", "")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if base in ("uint", "int"):
        return parse_text_int(text, where)
    if base == "address":
        return address(text, where)
    if base == "bool":
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ArgumentError(f"{where}: {text!r} is not a bool (true/false)")
    if base == "bytes":
        return _hex(text, where, f"{type_str(t)} is written as 0x-hex", text)
    if base == "string":
        return text
    raise ArgumentError(f"{where}: arguments of type {type_str(t)} are not supported on the command line")


def parse_text_args(types: Sequence[str], names: Sequence[str], texts: Sequence[str], what: str,
                    address: AddressReader = to_address) -> list[Any]:
    """Arguments written as text, one per ABI type; ArgumentError naming the one that does not fit."""
    if len(texts) != len(types):
        plural = "s" if len(types) != 1 else ""
        raise ArgumentError(f"{what}: expected {len(types)} argument{plural} ({', '.join(types) or 'none'}), "
                            f"got {len(texts)}")
    return [parse_text_value(parse_type(t), text, _where(what, names, i, t), address)
            for i, (t, text) in enumerate(zip(types, texts, strict=True))]


# -- logs and revert data ----------------------------------------------------------------------------


def _signature_of(entry: dict[str, Any], types: Sequence[str]) -> bytes:
    return keccak256(f"{entry.get('name', '')}({','.join(types)})".encode())


def decode_log(abi: Sequence[dict[str, Any]], topics: Sequence[int], data: bytes) -> tuple[str, dict[str, Any]] | None:
    """(event name, arguments) of a log, if ``abi`` has an event matching its first topic."""
    if not topics:
        return None
    for entry in abi:
        if entry.get("type") != "event" or entry.get("anonymous"):
            continue
        inputs = entry.get("inputs", [])
        types = [abi_type(i) for i in inputs]
        if int.from_bytes(_signature_of(entry, types), "big") != topics[0]:
            continue
        indexed = [(i, t) for i, t in zip(inputs, types, strict=True) if i.get("indexed")]
        plain = [(i, t) for i, t in zip(inputs, types, strict=True) if not i.get("indexed")]
        if len(indexed) != len(topics) - 1:
            continue
        out: dict[str, Any] = {}
        try:
            for (i, t), topic in zip(indexed, topics[1:], strict=True):
                word = topic.to_bytes(32, "big")
                dynamic = t in ("string", "bytes") or t.endswith("]") or t.startswith("(")
                out[i.get("name", "")] = word if dynamic else abi_decode([t], word)[0]
            values = abi_decode([t for _, t in plain], data) if plain else ()
        except (DecodingError, OverflowError, ValueError):
            return None
        for (i, _), v in zip(plain, values, strict=True):
            out[i.get("name", "")] = v
        return str(entry.get("name", "")), out
    return None


def revert_reason(data: bytes, abi: Iterable[dict[str, Any]] = ()) -> str | None:
    """The reason in revert data: ``Error(string)`` text, a ``Panic(uint256)`` code explained, or a custom
    error of ``abi`` (``InsufficientBalance(from=0x.., balance=0, needed=5)``); None if none of them fits."""
    try:
        if data[:4] == ERROR_SELECTOR:
            return str(abi_decode(["string"], data[4:])[0])
        if data[:4] == PANIC_SELECTOR:
            code = int(abi_decode(["uint256"], data[4:])[0])
            return f"panic 0x{code:02x} ({PANIC_CODES.get(code, 'unknown panic code')})"
    except (DecodingError, UnicodeDecodeError, OverflowError):
        return None
    if len(data) < 4:
        return None
    for entry in abi:
        if entry.get("type") != "error":
            continue
        inputs = entry.get("inputs", [])
        types = [abi_type(i) for i in inputs]
        if _signature_of(entry, types)[:4] != data[:4]:
            continue
        values = decode_inputs(types, data[4:])
        if values is None:
            continue
        shown = ", ".join((f"{i.get('name')}=" if i.get("name") else "") + format_value(v, tuples="[]")
                          for i, v in zip(inputs, values, strict=True))
        return f"{entry.get('name', '')}({shown})"
    return None
