"""Per-message step tracing (missive/cluster/tracing.py): what a node writes when asked to, and the
per-step latencies read back from two nodes' files."""

from __future__ import annotations

import time
from pathlib import Path

import msgpack
import pytest

from missive.cluster.tracing import QUERY_PATH, Tracer, step_latencies
from missive.mailbox.envelope import Envelope, Kind

ASKER, TOKEN = b"\x01" * 20, b"\x02" * 20


def record(envelope: Envelope) -> bytes:
    """A message as nodes store and send it (signature fields do not matter to tracing)."""
    return msgpack.packb([envelope.canonical(), b"k" * 32, b"s" * 64])  # type: ignore[no-any-return]


def test_nodes_trace_only_when_the_environment_names_a_directory(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISSIVE_TRACE_DIR", str(tmp_path / "traces"))
    tracer = Tracer("n1")
    assert tracer.on
    tracer.ids("submitted", [b"\xab" * 32])
    tracer.close()
    (line,) = (tmp_path / "traces" / "n1.trace").read_text().splitlines()
    assert line.split()[1:] == ["submitted", "ab" * 32]

    monkeypatch.delenv("MISSIVE_TRACE_DIR")
    quiet = Tracer("n2")
    assert not quiet.on
    quiet.ids("submitted", [b"\xab" * 32])  # nothing to write to, and no error
    quiet.close()
    assert sorted(p.name for p in (tmp_path / "traces").iterdir()) == ["n1.trace"]


def test_step_latencies_follow_a_query_and_its_reply_over_two_nodes(tmp_path: Path) -> None:
    queries = [Envelope(Kind.QUERY, ASKER, TOKEN, nonce=n, wants_reply=True) for n in range(3)]
    replies = [Envelope(Kind.REPLY, TOKEN, ASKER, request_id=q.id, parent=q.id) for q in queries]
    asking, answering = Tracer("a", str(tmp_path)), Tracer("b", str(tmp_path))
    started = time.monotonic()
    for query, reply in zip(queries, replies, strict=True):
        for node, step, which in QUERY_PATH:
            tracer = asking if node == "A" else answering
            message = query if which == "query" else reply
            if step == "handled":
                tracer.handled([message])
            elif step in ("forwarded", "arrived", "stored"):
                tracer.records(step, [record(message)])
            else:
                tracer.ids(step, [message.id])
            time.sleep(0.002)
    # a query whose reply never came back is left out, not counted as fast
    lost = Envelope(Kind.QUERY, ASKER, TOKEN, nonce=9, wants_reply=True)
    asking.ids("submitted", [lost.id])
    asking.close()
    answering.close()
    elapsed_ms = (time.monotonic() - started) * 1000

    steps = step_latencies(tmp_path / "a.trace", tmp_path / "b.trace")

    assert list(steps) == [f"{which} {step} ({node})" for node, step, which in QUERY_PATH[1:]] + ["whole path"]
    for name, row in steps.items():
        assert row["n"] == 3, name
        if name != "whole path":
            assert 2.0 <= row["p50"] < elapsed_ms, name  # each step slept 2 ms after the previous one
    assert steps["whole path"]["p50"] >= 2.0 * (len(QUERY_PATH) - 1)


def test_undecodable_records_are_skipped_not_fatal(tmp_path: Path) -> None:
    tracer = Tracer("a", str(tmp_path))
    tracer.records("arrived", [b"\xc1 not msgpack", msgpack.packb(["not", "an", "envelope"])])
    tracer.close()
    lines = (tmp_path / "a.trace").read_text().splitlines()
    assert len(lines) == 2 and all(line.split()[1] == "arrived" and len(line.split()) == 2 for line in lines)
    assert step_latencies(tmp_path / "a.trace", tmp_path / "a.trace") == {}
