"""msgpack encoding for the ledger's hot paths, with one reusable packer per thread.

``msgpack.packb`` builds a new ``Packer`` (and its buffer) on every call, which
costs more than packing a receipt or a state-root diff itself (about 0.4 µs of
0.6).  A packer can be reused, but not by two threads at once, and the store
commits on a worker thread while handlers run on the event loop's thread: so
each thread gets its own.  The bytes are exactly ``msgpack.packb(obj,
use_bin_type=True)``'s; a failed ``pack`` leaves the packer empty, ready for
the next call.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack

_local = threading.local()


def packb(obj: Any) -> bytes:
    """``msgpack.packb(obj, use_bin_type=True)``, without building a packer per call."""
    packer = getattr(_local, "packer", None)
    if packer is None:  # this thread's first call
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    packed: bytes = packer.pack(obj)
    return packed


__all__ = ["packb"]
