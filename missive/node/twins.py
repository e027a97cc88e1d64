"""Blocking twins of coroutines: every call that runs the node or waits is a coroutine (``a``-prefixed,
for trio code) with a plain twin that runs it in its own ``trio.run``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from missive.node.errors import NodeError

T = TypeVar("T")


def in_trio() -> bool:
    """Whether this thread is inside a trio run (where a blocking twin cannot start another)."""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def run_sync(name: str, make: Callable[[], Awaitable[T]]) -> T:
    """Run the coroutine twin of ``name`` to completion with ``trio.run``."""
    if in_trio():
        raise NodeError(f"{name}() runs its own trio loop; inside trio code use `await ...a{name}()` instead")
    return trio.run(make)
