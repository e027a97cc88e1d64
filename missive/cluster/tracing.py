"""Where a message's time goes on its way through a cluster: per-message step timestamps.

Why: a cross-node query -> reply passes some ten steps on two nodes (admitted,
forwarded, stored, handled, and the same back for the reply).  Its latency is
their sum, and no single profile shows which of them waits.  With
``MISSIVE_TRACE_DIR`` set in a node's environment, the node appends one line
per message per step to ``<dir>/<node name>.trace``::

    <time.monotonic()> <step> <message id hex> [<request id hex>]

(the request id only on ``handled`` lines of replies, to pair a reply with
its query).  The monotonic clock is the machine's, so the files of nodes on
one machine line up; :func:`step_latencies` turns them into per-step
figures (``tools/bench/cluster.py --trace`` prints them).  Tracing costs a
decode per record and a line per message per step: it is for diagnosis, off
by default, and costs one attribute test per step when off.

Steps, in path order: ``submitted`` (a client's submit reached the node
executing its sender), ``admitted`` (durably accepted), ``forwarded`` (its
node's sender task hands it to a peer's ``deliver``), ``arrived`` (the
peer's ``deliver`` began), ``stored`` (durable there), ``handled`` (its
handler run committed).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from missive.mailbox.envelope import Envelope, EnvelopeError
from missive.mailbox.signed import record_envelope

ENV_VAR = "MISSIVE_TRACE_DIR"
#: A query's steps and then its reply's, on the asking node (A) and the answering one (B).
QUERY_PATH = (("A", "submitted", "query"), ("A", "admitted", "query"), ("A", "forwarded", "query"),
              ("B", "arrived", "query"), ("B", "stored", "query"), ("B", "handled", "query"),
              ("B", "forwarded", "reply"), ("A", "arrived", "reply"), ("A", "stored", "reply"),
              ("A", "handled", "reply"))


class Tracer:
    """One node's trace file (or nothing: :attr:`on` is False unless ``MISSIVE_TRACE_DIR`` is set)."""

    def __init__(self, name: str, directory: str | None = None) -> None:
        directory = os.environ.get(ENV_VAR) if directory is None else directory
        self._file: IO[str] | None = None
        if directory:
            Path(directory).mkdir(parents=True, exist_ok=True)
            self._file = open(Path(directory) / f"{name}.trace", "a", buffering=1 << 16)  # noqa: SIM115

    @property
    def on(self) -> bool:
        return self._file is not None

    def ids(self, step: str, message_ids: Iterable[bytes]) -> None:
        if self._file is None:
            return
        now = f"{time.monotonic():.6f}"
        self._file.writelines(f"{now} {step} {m.hex()}\n" for m in message_ids)

    def records(self, step: str, records: Iterable[bytes]) -> list[bytes]:
        """Stored message records (``[canonical, public key, signature]``), as nodes send them.
        Returns their ids (none when off), for a later step of the same records."""
        if self._file is None:
            return []
        ids = [_record_id(raw) for raw in records]
        self.ids(step, ids)
        return ids

    def handled(self, envelopes: Iterable[Envelope]) -> None:
        if self._file is None:
            return
        now = f"{time.monotonic():.6f}"
        self._file.writelines(f"{now} handled {e.id.hex()} {e.request_id.hex()}\n" for e in envelopes)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _record_id(raw: bytes) -> bytes:
    """A stored record's message id (b"" if it does not decode: the line is then skipped)."""
    try:
        return record_envelope(raw).id
    except (EnvelopeError, ValueError, TypeError, IndexError):
        return b""


def step_latencies(asking: Path, answering: Path) -> dict[str, dict[str, float]]:
    """Per step of :data:`QUERY_PATH` (and the whole path): p50/p90/p99 in ms and the sample count,
    over the queries the asking node's trace saw submitted and whose reply it handled."""
    nodes = {"A": _read(asking), "B": _read(answering)}
    reply_to = {request: message for message, request in nodes["A"][1].items() if request}
    gaps: dict[str, list[float]] = {}
    for query, steps in nodes["A"][0].items():
        if "submitted" not in steps or query not in reply_to:
            continue
        ids = {"query": query, "reply": reply_to[query]}
        times = [nodes[node][0].get(ids[which], {}).get(step) for node, step, which in QUERY_PATH]
        if any(t is None for t in times):
            continue
        for (node, step, which), before, after in zip(QUERY_PATH[1:], times[:-1], times[1:], strict=True):
            gaps.setdefault(f"{which} {step} ({node})", []).append((after - before) * 1000)  # type: ignore[operator]
        gaps.setdefault("whole path", []).append((times[-1] - times[0]) * 1000)  # type: ignore[operator]
    return {name: _summary(values) for name, values in gaps.items()}


def _read(path: Path) -> tuple[dict[bytes, dict[str, float]], dict[bytes, bytes]]:
    """(message id -> step -> first time, handled message id -> its request id)."""
    steps: dict[bytes, dict[str, float]] = {}
    requests: dict[bytes, bytes] = {}
    with open(path) as lines:
        for line in lines:
            fields = line.split()
            if len(fields) < 3 or not fields[2]:
                continue
            message = bytes.fromhex(fields[2])
            steps.setdefault(message, {}).setdefault(fields[1], float(fields[0]))
            if fields[1] == "handled" and len(fields) == 4:
                requests[message] = bytes.fromhex(fields[3])
    return steps, requests


def _summary(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"n": len(values), "p50": values[0] if values else float("nan"), "p90": float("nan"),
                "p99": float("nan")}
    q = statistics.quantiles(values, n=100)
    return {"n": len(values), "p50": q[49], "p90": q[89], "p99": q[98]}
