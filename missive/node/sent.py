"""What a message did: :class:`Sent` (one message this client sent, to wait for), :class:`Chain`
(the messages it caused, followed as they are handled) and :class:`Trace` (their tree, with receipts).

They work against :class:`~missive.node.api.NodeAPI`: the same on one node and on a cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import attrs

from missive.mailbox.envelope import Envelope, Kind
from missive.mailbox.records import Receipt
from missive.node.errors import Reverted
from missive.node.twins import run_sync
from missive.node.values import hexstr

if TYPE_CHECKING:
    from missive.node.api import NodeAPI
    from missive.node.contract import ContractFunction


class Sent:
    """A message the node has accepted (durable); wait for its handling with ``receipt()``/``reply()``."""

    def __init__(self, node: NodeAPI, envelope: Envelope, *, duplicate: bool = False,
                 function: ContractFunction | None = None) -> None:
        self.node = node
        self.envelope = envelope
        self.id = envelope.id
        self.kind = envelope.kind
        self.duplicate = duplicate
        self.function = function

    @property
    def hex(self) -> str:
        return hexstr(self.id)

    @property
    def what(self) -> str:
        if self.function is not None:
            return self.function.signature
        return f"{self.kind.name.lower()} 0x{self.id.hex()[:16]}"

    def __repr__(self) -> str:
        return f"<Sent {self.kind.name.lower()} {self.hex} to {hexstr(self.envelope.recipient)}>"

    # -- receipt ---------------------------------------------------------------------------

    def receipt(self, timeout: float | None = None) -> Receipt:
        """Run the node (or wait for the process running it) until this message is handled."""
        found = self.node.receipt_of(self.envelope)
        return found if found is not None else run_sync("receipt", lambda: self.areceipt(timeout))

    async def areceipt(self, timeout: float | None = None) -> Receipt:
        return await self.node.await_receipt(self.envelope, f"{self.what} (message {self.hex}) is not handled yet",
                                             timeout)

    def follow(self, timeout: float | None = None) -> Chain:
        """Wait until the messages this one caused are handled too (see :meth:`NodeAPI.afollow`)."""
        return self.node.follow(self.id, timeout)

    async def afollow(self, timeout: float | None = None) -> Chain:
        return await self.node.afollow(self.id, timeout)

    # -- reply -----------------------------------------------------------------------------

    def reply(self, timeout: float | None = None) -> Any:
        """The decoded answer: a query's reply, or a call's return value; raise Reverted on failure."""
        return run_sync("reply", lambda: self.areply(timeout))

    async def areply(self, timeout: float | None = None) -> Any:
        if self.envelope.wants_reply:
            reply, receipt = await self.node.await_reply(self.envelope, f"{self.what} (message {self.hex})", timeout)
            if not reply.success:
                raise Reverted(self.what, reason=self.node.explain(reply.payload, reply.sender), data=reply.payload,
                               status=receipt.status, error=receipt.error, receipt=receipt, message_id=self.id)
            data = reply.payload
        else:
            receipt = await self.areceipt(timeout)
            if not receipt.success:
                raise Reverted(self.what, reason=self.node.explain(receipt.output, receipt.recipient),
                               data=receipt.output,
                               status=receipt.status, error=receipt.error, receipt=receipt, message_id=self.id)
            data = receipt.output
            if self.kind is Kind.DEPLOY:
                return self.envelope.recipient
        if self.function is None:
            return data
        return self.function.decode_output(data)


@attrs.define
class Trace:
    """One message of a tree (``node.trace``): its envelope, its receipt (None while it waits), what it sent."""

    id: bytes
    envelope: Envelope
    receipt: Receipt | None
    children: list[Trace] = attrs.field(factory=list)

    def walk(self) -> Iterator[Trace]:
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def failed(self) -> list[Trace]:
        """The messages of the tree whose handler failed."""
        return [t for t in self.walk() if t.receipt is not None and not t.receipt.success]


class Chain:
    """The messages that one message caused, followed as they are handled.

    On one node the actors run only while a command (or ``missive serve``) runs
    them, so a command that returned once its own message was handled would leave
    the query, the reply and the scheduled tick that message caused waiting for
    the next command.  A chain is what such a command waits for instead.  It is
    followed incrementally: each look visits only the messages not yet seen
    handled, so following a long chain costs one receipt lookup per message.
    """

    def __init__(self, receipt_of: Callable[[bytes], Receipt | None], root: bytes) -> None:
        self._receipt_of = receipt_of
        self.root = root
        self._open: list[bytes] = [root]
        #: messages of the chain (the root excluded) handled so far
        self.handled = 0
        #: those whose handler failed: (message id, receipt)
        self.failed: list[tuple[bytes, Receipt]] = []

    @property
    def unfinished(self) -> tuple[bytes, ...]:
        """Ids of the chain's messages not handled yet (as of the last look)."""
        return tuple(self._open)

    @property
    def ok(self) -> bool:
        """Every message of the chain handled so far succeeded (see :attr:`failed`, :attr:`unfinished`)."""
        return not self.failed

    def __repr__(self) -> str:
        return (f"<Chain of 0x{self.root.hex()[:16]}: {self.handled} handled, {len(self.failed)} failed, "
                f"{len(self._open)} unfinished>")

    def done(self) -> bool:
        """Look again; True once every message of the chain is handled."""
        waiting: list[bytes] = []
        stack = self._open
        while stack:
            message_id = stack.pop()
            receipt = self._receipt_of(message_id)
            if receipt is None:
                waiting.append(message_id)
                continue
            if message_id != self.root:
                self.handled += 1
                if not receipt.success:
                    self.failed.append((message_id, receipt))
            stack.extend(receipt.outgoing)
        self._open = waiting
        return not waiting
