"""Refusals of requests only the cluster's members may make, carrying their reason as data.

The caller still gets one line (the RPC answers with the error's text,
:class:`~missive.net.rpc.Refused`), and a node logs one line; the fields are for code that
handles the refusal in-process.  Here, below the cluster, so that the receiver and execution
trust refuse with them too.
"""

from __future__ import annotations

from collections.abc import Mapping

from missive.identity import short_id
from missive.net.rpc import NotAllowed


class NotAMember(NotAllowed):
    """A request only cluster members may make (diffs, snapshots, epochs, trust frames, evidence...),
    from a key that is not one of the other members."""

    def __init__(self, method: str, peer: bytes) -> None:
        super().__init__(f"{method} is for cluster members; {short_id(peer)} is not one")
        self.method = method
        self.peer = peer


class NotAHolder(NotAllowed):
    """A member asked for an actor's copy (a snapshot) that it does not hold itself."""

    def __init__(self, name: str, address: bytes) -> None:
        super().__init__(f"{name} does not hold 0x{address.hex()}")
        self.name = name
        self.address = address


def require_member(names: Mapping[bytes, str], me: bytes, peer: bytes, method: str) -> str:
    """The name of cluster member ``peer`` (the caller of ``method``, never this node itself), or NotAMember."""
    if peer not in names or peer == me:
        raise NotAMember(method, peer)
    return names[peer]
