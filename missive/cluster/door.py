"""The door of a cluster node's RPC: every request's parameters checked before anything is done.

Why a door and not checks scattered through the handlers: a node answers
anyone who completes a handshake, and junk parameters used to reach deep into
the handlers and fail there with whatever ``bytes(...)`` or ``int(...)`` or a
missing key raised, each logged with a traceback.  Worse, one
``create_account`` with a 19-byte address was *written*, and every peer then
refused the state diff about it, forever.  Here each parameter is checked for
exactly what the handler needs (an address is 20 bytes, an id 32, a balance
below 2**256...) and a request that does not fit is refused with one line
saying what was wrong (:class:`BadRequest`); nothing has been done by then.

Also here: who may make the administrative requests (:func:`require_operator`)
and whether the development faucet is on (:func:`require_development`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from missive.identity import short_id
from missive.mailbox.disk import DiskFull
from missive.net.rpc import NotAllowed, Refused

ADDRESS_SIZE = 20
ID_SIZE = 32
KEY_SIZE = 32
#: Largest position a ledger read may name (ledger sequence numbers are 8-byte keys).
MAX_SEQ = 2**63 - 1


class BadRequest(Refused, ValueError):
    """A request whose parameters do not fit the method; the text (one line) says how."""


_KINDS = {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a map"}


def _kind(value: object) -> str:
    """What a client sent, named for an error message (never its content: it may be huge)."""
    if isinstance(value, bytes):
        return f"{len(value)} bytes"
    return "nothing" if value is None else _KINDS.get(type(value), f"a {type(value).__name__}")


def table(params: Any, method: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """``params`` as a map holding every ``required`` key and no key but those and ``optional``
    ones (a key the method does not know is a client with the wrong idea: better told than ignored)."""
    keys = ", ".join(required + optional)
    if not isinstance(params, dict):
        raise BadRequest(f"{method} takes a map {{{keys}}}, not {_kind(params)}")
    missing = [key for key in required if key not in params]
    if missing:
        raise BadRequest(f"{method}: missing {', '.join(missing)} (it takes {{{keys}}})")
    unknown = [key for key in params if key not in required and key not in optional]
    if unknown:
        shown = ", ".join(repr(key)[:40] for key in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        raise BadRequest(f"{method}: unknown parameter {shown} (it takes {{{keys}}})")
    return params


def sized(value: Any, size: int, what: str, method: str) -> bytes:
    """``value`` as exactly ``size`` bytes."""
    if not isinstance(value, bytes) or len(value) != size:
        raise BadRequest(f"{method}: {what} must be {size} bytes, not {_kind(value)}")
    return value


def address(value: Any, method: str, what: str = "address") -> bytes:
    """An actor's or account's address: exactly 20 bytes."""
    return sized(value, ADDRESS_SIZE, what, method)


def message_id(value: Any, method: str, what: str = "id") -> bytes:
    """A message id: exactly 32 bytes."""
    return sized(value, ID_SIZE, what, method)


def public_key(value: Any, method: str, what: str = "public_key") -> bytes:
    """An Ed25519 public key: exactly 32 bytes."""
    return sized(value, KEY_SIZE, what, method)


def optional_address(value: Any, method: str, what: str) -> bytes | None:
    return None if value is None else address(value, method, what)


def optional_message_id(value: Any, method: str, what: str) -> bytes | None:
    return None if value is None else message_id(value, method, what)


def u256(value: Any, method: str, what: str) -> int:
    """A 256-bit unsigned amount: big-endian bytes (at most 32; how clients send it) or an integer."""
    if isinstance(value, bytes) and len(value) <= 32:
        return int.from_bytes(value, "big")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**256:
        return value
    raise BadRequest(f"{method}: {what} must be a non-negative amount below 2**256 (at most 32 big-endian "
                     f"bytes), not {_kind(value) if not isinstance(value, int) else value}")


def count(value: Any, method: str, what: str, maximum: int = MAX_SEQ) -> int | None:
    """An optional whole number from 0 to ``maximum`` (None: not given)."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        shown = value if isinstance(value, int) else _kind(value)
        raise BadRequest(f"{method}: {what} must be a whole number from 0 to {maximum}, not {shown}")
    return value


def flag(value: Any, method: str, what: str) -> bool:
    """An optional yes/no (None: no)."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"{method}: {what} must be true or false, not {_kind(value)}")
    return value


def prefix(value: Any, method: str, what: str = "prefix") -> bytes:
    """The start of a message id: 1 to 32 bytes."""
    if not isinstance(value, bytes) or not 1 <= len(value) <= ID_SIZE:
        raise BadRequest(f"{method}: {what} must be 1 to {ID_SIZE} bytes, not {_kind(value)}")
    return value


def require_operator(peer: bytes, operator: bytes | None, method: str) -> None:
    """Only the cluster operator's key may make administrative requests (stop the node, mint
    coin, start a replay).  A node with no operator configured refuses them to everybody."""
    if operator is None:
        raise NotAllowed(f"{method} needs the cluster operator's key, and this node has none configured "
                         "(operator = \"hex id\" in its config)")
    if peer != operator:
        raise NotAllowed(f"{method} needs the cluster operator's key ({short_id(peer)} is not it)")


def require_development(development: bool, method: str) -> None:
    """The faucet mints coin from nothing: only a development cluster has it."""
    if not development:
        raise NotAllowed(f"{method} is the development faucet, and it is off on this node "
                         "(development = true in the config turns it on)")


Handler = Callable[[bytes, Any], Awaitable[Any]]


#: How a refusal for a full disk begins: a client tells it apart by it (its CLI exits 74).
DISK_FULL = "DiskFull: "


class DiskRefused(Refused):
    """A write refused because this node's disk is full: nothing was written; the client may retry."""


def refusing_on_full_disk(handler: Handler) -> Handler:
    """``handler``, with a full disk answered as one refusal line (``DiskFull: the disk holding ...``)
    rather than logged as a handler's bug with a traceback on every request while it lasts."""

    async def checked(peer: bytes, params: Any) -> Any:
        try:
            return await handler(peer, params)
        except DiskFull as exc:
            raise DiskRefused(f"{DISK_FULL}{exc}") from None

    return checked


def without_params(method: str, handler: Handler) -> Handler:
    """``handler`` for a method that takes no parameters: anything but none (or an empty map or list)
    is refused, so that a client with the wrong idea hears so instead of getting an answer to
    a question it did not ask."""

    async def checked(peer: bytes, params: Any) -> Any:
        if params is not None and params != {} and params != []:
            raise BadRequest(f"{method} takes no parameters, not {_kind(params)}")
        return await handler(peer, params)

    return checked
