"""The cluster's refusals that carry their reason as data (beside the door's ``BadRequest`` and
``NotAllowed``, :mod:`missive.cluster.door`).

The caller still gets one line (the RPC answers with the error's text, :class:`~missive.net.rpc.Refused`),
and a node logs one line; the fields are for code that handles the refusal in-process.
"""

from __future__ import annotations

from collections.abc import Mapping

from missive.cluster.door import NotAllowed
from missive.identity import short_id


class NotAMember(NotAllowed):
    """A request only cluster members may make (epochs, trust frames, evidence...), from a key that is
    not one of the other members."""

    def __init__(self, method: str, peer: bytes) -> None:
        super().__init__(f"{method} is for cluster members; {short_id(peer)} is not one")
        self.method = method
        self.peer = peer


def require_member(names: Mapping[bytes, str], me: bytes, peer: bytes, method: str) -> str:
    """The name of cluster member ``peer`` (the caller of ``method``, never this node itself), or NotAMember."""
    if peer not in names or peer == me:
        raise NotAMember(method, peer)
    return names[peer]
