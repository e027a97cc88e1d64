"""Raising a bid through :class:`~missive.cluster.remote.RemoteNode`: on a cluster a raise is a
message of its own (:mod:`missive.market.raises`, docs/market.md "Raising a bid on a cluster").

The call checks what it can see first, each refusal one line with nothing sent (the message
unknown, a signer other than its sender, a bid not above the message's own, the message handled,
a bid not above the highest raise of it waiting with its recipient's executor), then sends the
raise message, whose admission escrows gas × (new bid − the message's own bid) from the sender.
Whether it raises the message is settled where the message waits: applied when the message runs
(the escrow of a raise it supersedes is refunded then), or refunded whole if the message ran first.
"""

from __future__ import annotations

from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
from missive.mailbox.records import Receipt
from missive.market.raises import raise_payload, raised_bids
from missive.node.values import to_message_id


class RaiseClient:
    """What :class:`RemoteNode` adds for raising bids (a mixin: it uses the node's ``message``,
    ``receipt_of``, ``pending``, ``submit``, ``resolve_id``, ``_key`` and ``keystore``)."""

    def current_bid(self, message_id: bytes | str) -> int:
        """The bid a waiting message will run with, as its recipient's executor holds it now: its own,
        or the highest raise of it waiting there that fits it."""
        target_id, target = self._raisable(message_id)
        if self.receipt_of(target) is not None:  # type: ignore[attr-defined]
            raise EnvelopeError(f"message 0x{target_id.hex()} is already handled: it ran with its bid")
        return self._current(target_id, target)

    def raise_bid(self, message_id: bytes | str, new_bid: int, *, sender: object = None, wait: bool = False) -> int:
        """Raise the bid of a message still waiting to ``new_bid``, signed by ``sender`` (None: the
        message's sender if this keystore holds it, else the default account).  Returns the coin
        the raise escrows, gas × (``new_bid`` − the message's own bid).  Refused with one line
        (EnvelopeError), nothing sent: see the module.  ``wait``: return only once the raise is
        settled, raising EnvelopeError if it came too late (the message ran first: its escrow
        is refunded)."""
        if not isinstance(new_bid, int) or isinstance(new_bid, bool) or new_bid < 0 or new_bid >> 256:
            raise EnvelopeError(f"a bid is a fee per gas in [0, 2**256), not {new_bid!r}")
        target_id, target = self._raisable(message_id)
        if sender is None and self.keystore.find(target.sender.hex()) is not None:  # type: ignore[attr-defined]
            sender = target.sender
        key = self._key(sender)  # type: ignore[attr-defined]
        shown = f"0x{target_id.hex()}"
        if key.address != target.sender:
            raise EnvelopeError(f"only the sender of {shown} (0x{target.sender.hex()}) can raise its bid")
        if new_bid <= target.bid:
            raise EnvelopeError(f"a raise must offer more than the current bid of {shown} ({target.bid}), not {new_bid}")
        if self.receipt_of(target) is not None:  # type: ignore[attr-defined]
            raise EnvelopeError(f"message {shown} is already handled: its bid can no longer be raised")
        current = self._current(target_id, target)
        if new_bid <= current:
            raise EnvelopeError(f"a raise must offer more than the current bid of {shown} ({current}), not {new_bid}")
        sent = self.submit(Kind.RAISE, target.recipient, raise_payload(target_id, new_bid),  # type: ignore[attr-defined]
                           sender=key.address, value=0, gas=target.gas, wants_reply=False, bid=new_bid - target.bid)
        if wait:
            receipt: Receipt = sent.receipt()
            if receipt.refund == sent.envelope.gas * sent.envelope.bid and sent.envelope.bid:
                raise EnvelopeError(f"the raise of {shown} came too late: the message ran with bid {current} "
                                    f"first, and the raise's escrow ({receipt.refund}) went back to its sender")
        return target.gas * (new_bid - target.bid)

    def _raisable(self, message_id: bytes | str) -> tuple[bytes, Envelope]:
        target_id = self.resolve_id(message_id) if isinstance(message_id, str) else to_message_id(message_id)  # type: ignore[attr-defined]
        shown = f"0x{target_id.hex()}"
        target: Envelope | None = self.message(target_id)  # type: ignore[attr-defined]
        if target is None:
            raise EnvelopeError(f"unknown message {shown}: nothing to raise")
        if target.kind not in (Kind.CALL, Kind.QUERY, Kind.DEPLOY) or not target.is_external:
            raise EnvelopeError(f"message {shown} was not signed by an account as a call, query or deploy: "
                                "its bid cannot be raised")
        return target_id, target

    def _current(self, target_id: bytes, target: Envelope) -> int:
        waiting: list[Envelope] = self.pending(target.recipient)  # type: ignore[attr-defined]
        return raised_bids([target, *(e for e in waiting if e.id != target_id)]).get(target_id, target.bid)


__all__ = ["RaiseClient"]
