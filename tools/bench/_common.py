"""Helpers shared by Missive's benchmarks: CPU timing and JSON result files.

Benchmarks measure CPU time (``time.process_time``) rather than wall time so a
busy CI machine or a laptop changing clock speed disturbs the figures less,
and keep the *best* of several repeats, because noise only ever adds time.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: Repository root (tools/bench/_common.py -> ../..).
REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "tools" / "bench" / "results"


def cpu_best_of(fn: Callable[[T], object], repeats: int, setup: Callable[[], T]) -> float:
    """Best CPU time in seconds of ``repeats`` calls of ``fn(setup())``.

    ``setup`` runs untimed before each repeat, so every repeat starts from the
    same state (a freshly deployed contract, say) instead of the previous
    repeat's leftovers.  The garbage collector is paused during each timed call
    (and run before it) so a collection caused by earlier garbage is not
    billed to a later run.
    """
    best = float("inf")
    for _ in range(max(1, repeats)):
        prepared = setup()
        gc.collect()
        gc.disable()
        try:
            start = time.process_time()
            fn(prepared)
            elapsed = time.process_time() - start
        finally:
            gc.enable()
        best = min(best, elapsed)
    return best


def no_setup() -> None:
    """The ``setup`` for benchmarks whose runs leave nothing behind."""
    return None


def machine_info() -> dict[str, Any]:
    """Where the figures come from: enough to tell two result files apart."""
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON, creating the directory; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return path
