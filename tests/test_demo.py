"""`missive demo`, the README's main job: it must show every kind of message and end in checked state."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from missive.demo import DemoResult, run_demo
from missive.node import Node


class RecordingView:
    """A view that keeps what the demo showed, scene by scene."""

    def __init__(self) -> None:
        self.scenes: dict[str, list[tuple[str, str, str]]] = {}
        self.current = ""
        self.names: dict[bytes, str] = {}
        self.progress: list[int] = []
        self.bulk: tuple[int, float] | None = None
        self.notes: list[str] = []
        #: per scene, (sender, bid) of each message handled, in the order handled
        self.bids: dict[str, list[tuple[str, int]]] = {}

    def begin(self, node: Node, names: dict[bytes, str]) -> None:
        self.names = names

    def step(self, number: int, title: str, explanation: str) -> None:
        self.current = title
        self.scenes[title] = []

    def round(self, pairs: list[Any]) -> None:
        for envelope, receipt in pairs:
            self.scenes[self.current].append((envelope.kind.name.lower(), self.names.get(envelope.recipient, "?"),
                                              receipt.status))
            self.bids.setdefault(self.current, []).append((self.names.get(envelope.sender, "?"), envelope.bid))

    def bulk_start(self, total: int) -> None:
        self.progress.clear()

    def bulk_advance(self, handled: int) -> None:
        self.progress.append(handled)

    def bulk_done(self, handled: int, seconds: float) -> None:
        self.bulk = (handled, seconds)

    def note(self, text: str) -> None:
        self.notes.append(text)


def test_demo_shows_each_kind_of_message_and_ends_consistent(tmp_path: Path) -> None:
    view = RecordingView()
    result: DemoResult = run_demo(tmp_path / "node", view, bulk=300, senders=5)
    scenes = view.scenes
    assert [k for k, _, _ in scenes["Deploy three contracts"]].count("deploy") == 3
    # request -> the token runs transferFrom -> the reply reaches the escrow
    assert [(k, who) for k, who, _ in scenes["A request and its reply"]][-2:] == [("call", "Token"), ("reply", "Escrow")]
    assert ("query", "Token", "success") in scenes["A query and its reply"]
    assert ("call", "Token", "revert") in scenes["A failing callee"]  # transferFrom without approval
    assert scenes["A bounce"] == [("call", "Escrow", "revert"), ("bounce", "carol", "success")]
    assert [k for k, _, _ in scenes["Scheduled messages"]] == ["call", "scheduled", "scheduled", "scheduled"]
    # the market: alice's transfer, queued last with the lowest bid and then raised, runs first, then
    # carol's (bid 5) and bob's (bid 3), each sender's in order; the fees land in the worker's coinbase
    assert view.bids["The market"] == [("alice", 9), ("carol", 5), ("carol", 5), ("bob", 3), ("bob", 3)]
    assert any(note.startswith("alice raised her transfer") for note in view.notes)
    landed = next(note for note in view.notes if note.startswith("fees: "))
    assert int(landed.split()[1]) > 0
    assert view.bulk is not None and view.bulk[0] == 300 and view.progress[-1] == 300
    assert [(d["deal"], d["stage"]) for d in result.deals] == [(1, "RELEASED"), (2, "CANCELLED")]
    assert len(result.ticks) == 3 and result.ticks == sorted(result.ticks)
    assert result.token_balances["carol"] == 3_000 + 1_000  # her transfer plus the released deal
    assert result.supply_conserved and result.native_conserved
    assert result.replay_problem is None and result.replay_checked == sum(result.messages_by_kind.values())


def test_demo_command_keeps_a_node_the_other_commands_can_read(tmp_path: Path) -> None:
    node_dir = tmp_path / "demo"
    env = {**os.environ, "COLUMNS": "160"}
    run = subprocess.run([sys.executable, "-m", "missive", "demo", "--dir", str(node_dir), "--pace", "0",
                          "--messages", "100"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr + run.stdout
    for expected in ("answers transferFrom", "bounce", "scheduled", "token supply conserved",
                     "every receipt matches"):
        assert expected in run.stdout
    replayed = subprocess.run([sys.executable, "-m", "missive", "replay", "--dir", str(node_dir)],
                              capture_output=True, text=True, timeout=300)
    assert replayed.returncode == 0 and "sealed through ledger record" in replayed.stdout, replayed.stderr + replayed.stdout
    checking = subprocess.run([sys.executable, "-m", "missive", "replay", "--dir", str(node_dir), "--check-signatures"],
                              capture_output=True, text=True, timeout=300)
    assert checking.returncode == 0 and "every client signature re-checked" in checking.stdout, checking.stdout
    assert replayed.stdout.split(" receipts")[0] == checking.stdout.split(" receipts")[0]  # the same count checked
    again = subprocess.run([sys.executable, "-m", "missive", "demo", "--dir", str(node_dir)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "not empty" in again.stderr


def test_the_cluster_demo_shows_a_lying_node_caught_and_slashed(tmp_path: Path) -> None:
    """`missive demo --cluster` (issue 23): its slashing scene restarts a node with the wrong-diffs
    fault; the holders that re-execute its diffs catch it, the registry forfeits its pledge (a tenth
    to the accuser, the rest burned), every node distrusts it and its token carries on elsewhere."""
    env = {**os.environ, "COLUMNS": "200", "MISSIVE_UNENCRYPTED_KEYS": "1"}
    run = subprocess.run([sys.executable, "-m", "missive", "demo", "--cluster", "--dir", str(tmp_path / "c"),
                          "--pace", "0", "--messages", "60"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr + run.stdout
    out = run.stdout
    assert 'n3 restarts with [trust] fault = "wrong-diffs"' in out
    assert "forfeits its whole pledge of 1000000: 100000 (10%) to n" in out and "900000 burned" in out
    assert "every other node distrusts n3" in out
    handled_by = out.split("dave's transfer to the token is handled by ")[1].split(" now")[0]
    assert handled_by in ("n1", "n2")  # not the liar
    assert "✓ slashing: n3 lost its pledge of 1000000; the registry holds 2900000 = stakes 2000000 + burned 900000" in out
    assert "✓ native coin conserved" in out and "every receipt matches" in out
