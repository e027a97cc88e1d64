"""On one node a message's chain finishes: ``send``/``query``/``deploy`` wait for what their
message caused (replies, queries, scheduled ticks), say plainly what is still waiting, and
``missive serve`` keeps a node's actors running.  Real processes on real LMDB directories."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli_node import ADDRESS, fails, missive, ok

import missive.cli.node_cmds as node_cmds
import missive.node as mn
from missive.cli.main import main

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def chain_node(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A node with Ponger (value 42), Pinger and Ticker deployed from the CLI."""
    work = tmp_path_factory.mktemp("chains")
    ok(missive("init", cwd=work))
    names = {}
    for name, args in (("Ponger", ["42"]), ("Pinger", []), ("Ticker", [])):
        out = ok(missive("deploy", str(EXAMPLES / f"{name}.vy"), *args, "-q", cwd=work))
        found = ADDRESS.search(out)
        assert found is not None
        names[name] = found.group(0)
    return work, names


def test_request_and_reply_finish_within_send(chain_node: tuple[Path, dict[str, str]]) -> None:
    """Before: `send ping` returned after its own message, so the query and the reply it caused
    waited, and the next `query last_answer` read 0."""
    work, c = chain_node
    out = ok(missive("send", c["Pinger"], "ping", c["Ponger"], cwd=work))
    assert "caused:    2 message(s) handled" in out  # Ponger's run of the query, Pinger's onReply
    assert ok(missive("query", c["Pinger"], "last_answer", cwd=work)).strip() == "42"
    # and a later change is seen after one more ping, not two
    ok(missive("send", c["Ponger"], "set", "7", cwd=work))
    ok(missive("send", c["Pinger"], "ping", c["Ponger"], cwd=work))
    assert ok(missive("query", c["Pinger"], "last_answer", cwd=work)).strip() == "7"


def test_scheduled_ticks_all_run_within_one_send(chain_node: tuple[Path, dict[str, str]]) -> None:
    """Before: a scheduled tick advanced by one per CLI command."""
    work, c = chain_node
    out = ok(missive("send", c["Ticker"], "start", "5", "4", "--gas", "5000000", cwd=work))
    assert "caused:    4 message(s) handled" in out
    assert ok(missive("query", c["Ticker"], "count", cwd=work)).strip() == "4"
    assert ok(missive("query", c["Ticker"], "nextTick", cwd=work)).strip() == "0x" + "00" * 32


def test_unfinished_chain_is_named_and_runs_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """When the time limit ends first, the command names what waits and how to run it; `inbox`
    lists scheduled messages (it said "0 waiting" while `receipt` said pending); the next
    command runs them."""
    node_dir = tmp_path / "n"
    assert main(["init", "--dir", str(node_dir)]) == 0
    assert main(["deploy", str(EXAMPLES / "Ticker.vy"), "-q", "--dir", str(node_dir)]) == 0
    ticker = capsys.readouterr().out.strip().splitlines()[-1]
    monkeypatch.setattr(node_cmds, "FOLLOW_SECONDS", 0.0)  # no time to follow anything
    assert main(["send", ticker, "start", "5", "2", "--gas", "5000000", "--dir", str(node_dir)]) == 0
    captured = capsys.readouterr()
    assert "caused:" not in captured.out
    pending = [line for line in captured.err.splitlines() if line.startswith("pending:")]
    assert len(pending) == 1, captured.err
    assert "1 message(s) it caused not handled" in pending[0]
    due = re.search(rf"scheduled to {ticker} at t=(\d+)", pending[0])
    assert due is not None, pending[0]
    assert f"missive serve --dir {node_dir}" in pending[0]
    tick_id = re.search(r"\((0x[0-9a-f]{16})\)", pending[0])
    assert tick_id is not None

    assert main(["inbox", ticker, "--dir", str(node_dir)]) == 0
    inbox = capsys.readouterr().out
    assert "0 message(s) waiting" in inbox
    assert "1 scheduled message(s), not due yet" in inbox and tick_id.group(1) in inbox
    assert f"at t={due.group(1)}" in inbox

    monkeypatch.setattr(node_cmds, "FOLLOW_SECONDS", 10.0)
    assert main(["query", ticker, "count", "--dir", str(node_dir)]) == 0  # runs the node: both ticks
    # The query itself was handled before the ticks; the next one reads the count they left.
    capsys.readouterr()
    assert main(["query", ticker, "count", "--dir", str(node_dir)]) == 0
    assert capsys.readouterr().out.strip() == "2"


def test_python_api_follow(tmp_path: Path) -> None:
    """`Sent.follow()`: the chain a message caused, with what failed and what is unfinished."""
    node = mn.Node.init(tmp_path / "n", default_balance=10**24)
    try:
        ponger = node.deploy(EXAMPLES / "Ponger.vy", 5)
        pinger = node.deploy(EXAMPLES / "Pinger.vy")
        sent = pinger.ping.send(ponger.address)
        sent.receipt()
        early = sent.follow(timeout=0)
        assert early.unfinished and early.handled == 0  # the query is still queued
        chain = sent.follow()
        assert chain.unfinished == () and chain.handled == 2 and chain.failed == []
        assert pinger.last_answer() == 5
        # A failing link is reported: a reply nobody asked for reverts in onReply.
        bogus = pinger.onReply.send(b"\x01" * 32, True, b"")
        assert not bogus.receipt().success
    finally:
        node.close()


def _serve(node_dir: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="80")
    return subprocess.Popen([sys.executable, "-m", "missive", "serve", "--dir", str(node_dir)], cwd=node_dir.parent,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_serve_runs_what_others_send_and_stops_on_ctrl_c(chain_node: tuple[Path, dict[str, str]]) -> None:
    work, c = chain_node
    node_dir = work / ".missive"
    server = _serve(node_dir)
    try:
        assert server.stderr is not None
        assert server.stderr.readline().startswith("serving the actors of")  # said once the lock is held
        deadline = time.monotonic() + 60
        # a second executor on the same directory: one line, nothing handled twice
        fails(missive("serve", "--dir", str(node_dir), cwd=work), 2, "another process", "is running the actors")
        out = ok(missive("send", c["Ponger"], "set", "99", "--no-wait", cwd=work))
        message_id = re.search(r"0x[0-9a-f]{64}", out)
        assert message_id is not None
        while "status:    success" not in missive("receipt", message_id.group(0), cwd=work).stdout:
            assert time.monotonic() < deadline, "serve did not handle a message sent with --no-wait"
            time.sleep(0.1)
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=60)
    assert server.returncode == 130, (out, err)
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("missive")] == [
        line for line in err.splitlines() if "interrupted; stopped after handling" in line]
    assert ok(missive("query", c["Ponger"], "value", cwd=work)).strip() == "99"


def test_serve_refuses_what_is_not_a_node(tmp_path: Path) -> None:
    """Before: a traceback, and an `executor.lock` left in the directory."""
    empty = tmp_path / "empty"
    empty.mkdir()
    fails(missive("serve", "--dir", str(empty), cwd=tmp_path), 3, "no Missive node")
    assert list(empty.iterdir()) == []
    proc = subprocess.run([sys.executable, "-m", "missive.actors.serve", str(empty)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr and "no Missive node" in proc.stderr
    assert list(empty.iterdir()) == []
    help_run = subprocess.run([sys.executable, "-m", "missive.actors.serve", "--help"], capture_output=True,
                              text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert help_run.returncode == 0 and "usage" in help_run.stdout and "Traceback" not in help_run.stderr


@pytest.mark.parametrize("argv", [["send", "0x" + "11" * 20, "f()", "--timeout", "-1"],
                                  ["query", "0x" + "11" * 20, "f()", "--timeout", "nan"],
                                  ["demo", "--pace", "-1"]])
def test_negative_durations_are_usage_errors(tmp_path: Path, argv: list[str]) -> None:
    """Before: `send --timeout -1` failed with a traceback after storing its message."""
    ok(missive("init", cwd=tmp_path))
    before = (tmp_path / ".missive" / "data.mdb").read_bytes()
    fails(missive(*argv, cwd=tmp_path), 2, "argument")
    assert (tmp_path / ".missive" / "data.mdb").read_bytes() == before
