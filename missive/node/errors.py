"""What the node API raises: :class:`NodeError` and its kinds (the family of ``missive.node``
under :class:`~missive.errors.MissiveError`; the cluster client adds its own in
``missive.cluster.remote``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from missive.errors import BadInput, Failed, MissiveError, NotFound

if TYPE_CHECKING:
    from missive.mailbox.records import Receipt


class NodeError(MissiveError):
    """The node cannot do what was asked; the text says why."""


class ArgumentError(NodeError, BadInput, TypeError):
    """Arguments that do not fit the function's ABI (nothing was sent)."""


class UnknownMessage(NodeError, NotFound):
    """No message with that id (or prefix) here."""


class UnknownFunction(NodeError, NotFound):
    """No function of that name (or no ABI at all) known for a contract."""


class NotHandled(NodeError, Failed):
    """The node went idle and the awaited message was still not handled."""


class NodeTimeout(NodeError, Failed, TimeoutError):
    """A wait took longer than its ``timeout``."""


class AsyncHazard(NodeError):
    """A deploy refused: the code would change meaning silently under message semantics (``missive check``
    names each place); pass ``accept_async=`` with the finding's kind (or ``kind@offset``) to deploy anyway."""

    def __init__(self, message: str, findings: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.findings = tuple(findings)


class Reverted(NodeError, Failed):
    """A message's handler failed: revert (with its decoded reason when there is one) or halt."""

    def __init__(self, what: str, *, reason: str | None, data: bytes, status: str, error: str = "",
                 receipt: Receipt | None = None, message_id: bytes = b"") -> None:
        self.what = what
        self.reason = reason
        self.data = data
        self.status = status
        self.error = error
        self.receipt = receipt
        self.message_id = message_id
        if reason is not None:
            detail = reason
        elif status == "revert":
            detail = f"no reason given (revert data 0x{data.hex()})" if data else "no reason given"
        else:
            detail = error or status
        super().__init__(f"{what} {'reverted' if status == 'revert' else 'failed'}: {detail}")
