"""Clients waiting for a message to be handled on this node: woken by the commit, not by polling.

Why: a client that polls for a receipt either asks often (and loads the node
it is waiting on with reads) or seldom (and learns late).  A waiting client
instead leaves one request open; the runtime's commit observer wakes it the
moment the message's receipt is durable.

Two things can be waited for:

* the receipt of a message this node executes (``wait``), found by id;
* the reply to a request (``wait_reply``) that one of this node's accounts
  sent: replies are handled on the requester's node, but the client knows only
  the request's id.  Replies handled recently are remembered by request id
  (``RECENT_REPLIES`` of them), so a wait that starts just after the reply came
  back still finds it.

Registration and the look at the store happen in one step of the trio loop,
and observers run in the trio loop after the commit; so a commit is either
seen by the look or wakes the waiter, never neither.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import trio

from missive.mailbox.envelope import Envelope, Kind
from missive.mailbox.store import Outcome

#: Replies remembered by the id of the request they answer (for a wait that starts late).
RECENT_REPLIES = 65_536
#: The longest a client's request may stay open (it asks again after that).
MAX_WAIT = 30.0

T = TypeVar("T")


class Waiters:
    """Open waits for receipts (by message id) and replies (by request id)."""

    def __init__(self, recent: int = RECENT_REPLIES) -> None:
        self._handled: dict[bytes, trio.Event] = {}
        self._replied: dict[bytes, trio.Event] = {}
        self.recent: OrderedDict[bytes, bytes] = OrderedDict()  # request id -> reply id
        self._recent_limit = recent

    def observe(self, outcomes: list[tuple[Envelope, Outcome]]) -> None:
        """A runtime round committed: wake whoever waits for one of its messages."""
        for envelope, outcome in outcomes:
            event = self._handled.pop(outcome.message_id, None)
            if event is not None:
                event.set()
            if envelope.kind is Kind.REPLY:
                self.recent[envelope.request_id] = outcome.message_id
                if len(self.recent) > self._recent_limit:
                    self.recent.popitem(last=False)
                event = self._replied.pop(envelope.request_id, None)
                if event is not None:
                    event.set()

    async def receipt(self, message_id: bytes, look: Callable[[], T | None], timeout: float) -> T | None:
        """``look()`` once the message is handled here (or its answer now), None after ``timeout``."""
        with self._registered(self._handled, message_id) as event:
            found = look()
            if found is not None:
                return found
            with trio.move_on_after(min(timeout, MAX_WAIT)):
                await event.wait()
        return look()

    async def reply(self, request_id: bytes, timeout: float) -> bytes | None:
        """The id of the reply to ``request_id`` once it is handled here, None after ``timeout``."""
        with self._registered(self._replied, request_id) as event:
            if request_id not in self.recent:
                with trio.move_on_after(min(timeout, MAX_WAIT)):
                    await event.wait()
        return self.recent.get(request_id)

    @contextmanager
    def _registered(self, table: dict[bytes, trio.Event], key: bytes) -> Iterator[trio.Event]:
        """One event per key, shared by every waiter of it; dropped with the last of them."""
        event = table.setdefault(key, trio.Event())
        try:
            yield event
        finally:
            if not event.is_set() and table.get(key) is event and event.statistics().tasks_waiting == 0:
                del table[key]
