"""The one way an external message is made: its envelope built, checked and signed by an account key.

:meth:`missive.node.base.BaseNode.submit`/``send_many`` (the node API, on one node and on a
cluster) and :class:`missive.cluster.client.ClusterClient` (the bare cluster client of the
benchmarks and fault runs) all sign through :func:`sign_external`; what differs between them is
only where the nonce, the chain id and the clock come from, and where the signed message goes.
"""

from __future__ import annotations

import msgpack

from missive.keys import Key
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
from missive.vm.creation import create_address

#: A signed external message as it is submitted: (envelope, public key, signature over its id).
Signed = tuple[Envelope, bytes, bytes]


def sign_external(key: Key, kind: Kind, to: bytes | None, payload: bytes, *, nonce: int, value: int, gas: int,
                  chain_id: int, wants_reply: bool = False, time: int = 0, bid: int = 0) -> Signed:
    """``key``'s message number ``nonce``, signed for the ledger ``chain_id``; a deploy goes to the address
    it creates (``to`` is ignored), anything else to ``to``.  EnvelopeError if the envelope is not valid."""
    recipient = create_address(key.address, nonce) if kind is Kind.DEPLOY else to
    if recipient is None:
        raise EnvelopeError("recipient must be a 20-byte address")  # as envelope.validate() says
    envelope = Envelope(kind, key.address, recipient, value=value, payload=payload, gas=gas, bid=bid, nonce=nonce, time=time,
                        wants_reply=wants_reply, chain_id=chain_id)
    envelope.validate()
    return key.sign(envelope)


def pack_signed(signed: Signed) -> bytes:
    """A signed message as a cluster node's ``submit`` takes it: msgpack of [canonical envelope, key, signature]."""
    return msgpack.packb([signed[0].canonical(), signed[1], signed[2]])  # type: ignore[no-any-return]
