"""Messages between nodes, several deliveries in flight per peer, still in order.

Why: a message crossing nodes is durable at the receiver before the sender
drops it (SPEC §4), so a delivery's answer comes after the receiver's fsync.
With one delivery in flight per peer, a message queued just after one left
waits for that answer before it may leave: that wait was most of a
forward's time (p90 3-4 ms of the 5-6 ms a query spends in two forwards).
Here a sender keeps up to ``WINDOW`` deliveries on the wire at once.

What keeps per-pair FIFO with several in flight:

* The sender numbers nothing new: each batch names the outbound key of the
  batch before it (``after``) and its own last key (``last``).  The first
  batch of a *stream* has ``after`` None and starts right after what the
  peer acknowledged last, so it overlaps what the peer holds, never skips.
* The receiver takes a batch only if it starts a stream or follows the batch
  it took last from that peer (:class:`Line`); anything else is refused
  whole, and so is everything behind it, because it no longer follows.  A
  batch lost with a connection, refused or failed therefore never lets a
  later one in ahead of it.
* The check runs inside the writer's transaction, in the order the writes
  joined it, and they join in the order the batches arrived: the RPC read
  loop runs the receiving handler's synchronous part
  (:meth:`missive.net.rpc.RpcConnection._begin`).
* On any failure or refusal the sender drops what it has in flight and
  starts a new stream from the last acknowledged key; the receiver drops the
  copies of what it already has by id.  Nothing is lost, nothing is handled
  twice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from missive.errors import MissiveError
from missive.net import NetError, PeerLink
from missive.net.rpc import Pending

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Deliveries on the wire at once per peer.
WINDOW = 4
#: Seconds a delivery may take before the sender gives up on it and starts again.
DELIVERY_TIMEOUT = 10.0
#: Seconds the sender pauses after a failed delivery before it starts a new stream.
RETRY_AFTER = 0.2


class NotInLine(MissiveError):
    """A delivery that does not follow the one taken last from its sender."""


def parse(params: Any) -> tuple[list[bytes], bytes | None, bytes]:
    """The records, ``after`` and ``last`` of a ``deliver`` call's params; ValueError names what is wrong."""
    if not isinstance(params, dict):
        raise ValueError(f"a delivery is a map of records, after and last, not {type(params).__name__}")
    records, after, last = params.get("records"), params.get("after"), params.get("last")
    if not isinstance(records, list) or not records or not all(isinstance(r, bytes) for r in records):
        raise ValueError("a delivery's records must be a non-empty list of byte strings")
    if after is not None and not isinstance(after, bytes):
        raise ValueError("a delivery's 'after' must be a key (bytes) or nil")
    if not isinstance(last, bytes):
        raise ValueError("a delivery's 'last' must be a key (bytes)")
    return records, after, last


class Line:
    """The receiver's side: per sending node, the last key of the last batch it took."""

    def __init__(self) -> None:
        self._last: dict[bytes, bytes] = {}

    def take(self, sender: bytes, after: bytes | None, last: bytes, store: Callable[[], T]) -> T:
        """Run ``store()`` if this batch starts a stream or follows the last one taken from
        ``sender``; raise :class:`NotInLine` otherwise.  Call it inside the write (in the
        writer's order): if ``store()`` raises, the position does not move, so the batches
        behind this one are refused too."""
        if after is not None and self._last.get(sender) != after:
            raise NotInLine(f"this delivery follows {_key(after)}, the last one taken from its sender "
                            f"ended at {_key(self._last.get(sender))}: its sender starts again")
        result = store()
        self._last[sender] = last
        return result


def _key(key: bytes | None) -> str:
    return "nothing" if key is None else f"key {key.hex()[-16:]}"


async def send(link: PeerLink, batch_after: Callable[[bytes | None], Awaitable[list[tuple[bytes, bytes]]]],
               acknowledged: Callable[[list[bytes], int, str | None], None], *, window: int = WINDOW) -> None:
    """Deliver, forever, what ``batch_after(key)`` gives (the queued records after ``key``,
    oldest first, as (key, record); it waits while there are none) to ``link``'s ``deliver``,
    keeping up to ``window`` deliveries in flight.  ``acknowledged(keys, done, problem)`` is
    told each answer, in order; a failure starts a new stream from the last acknowledged key."""
    start: bytes | None = None  # the last key the peer acknowledged: a new stream starts after it
    while True:
        start = await _stream(link, batch_after, acknowledged, start, window)
        await trio.sleep(RETRY_AFTER)


async def _stream(link: PeerLink, batch_after: Callable[[bytes | None], Awaitable[list[tuple[bytes, bytes]]]],
                  acknowledged: Callable[[list[bytes], int, str | None], None],
                  start: bytes | None, window: int) -> bytes | None:
    """One stream: send and collect answers until something fails; return the last key acknowledged."""
    slots = trio.Semaphore(window)
    put, in_flight = trio.open_memory_channel[tuple[list[bytes], Pending]](window)

    async def sender() -> None:
        sent, after = start, None  # the first batch of a stream says it follows nothing
        while True:
            await slots.acquire()  # taken before the batch is read: what queues while waiting goes with it
            batch = await batch_after(sent)
            keys = [key for key, _ in batch]
            pending = await link.start("deliver", {"records": [raw for _, raw in batch], "after": after,
                                                   "last": keys[-1]})
            put.send_nowait((keys, pending))  # never full (a slot per place); no checkpoint between the two
            sent = after = keys[-1]

    pending: Pending | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        try:
            while True:
                keys, pending = await in_flight.receive()
                try:
                    with trio.fail_after(DELIVERY_TIMEOUT):
                        done, problem = await pending.wait()
                except (NetError, trio.TooSlowError) as exc:
                    log.debug("delivery of %d message(s) to %s failed (%s); starting again", len(keys),
                              link, exc or "timed out")
                    return start
                acknowledged(keys, done, problem)
                if done < len(keys):  # refused as out of line: start again from what it has
                    log.debug("%s refused a delivery: %s", link, problem)
                    return start
                start = keys[-1]
                slots.release()
        finally:
            nursery.cancel_scope.cancel()
            if pending is not None:
                pending.abandon()  # the one being waited on when it failed, if any
            while True:  # the rest would be refused anyway: do not send them
                try:
                    _, queued = in_flight.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                queued.abandon()
