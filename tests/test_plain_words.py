"""Words that say what happened: ledger labels for a cluster's records, replay --until, differences, status.

(Issue 21, item 7.)  Each is checked as the user sees it: the lines the CLI prints.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from missive.cli.cluster_cmds import WIDTH, status_lines
from missive.mailbox.diffs import StateDiff
from missive.mailbox.records import Account, Receipt, difference
from missive.node import Node, special_record

REPO = Path(__file__).resolve().parents[1]


def missive(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MISSIVE_DIR", None)
    return subprocess.run([sys.executable, "-m", "missive", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def test_state_diff_and_rollback_records_are_labelled() -> None:
    actor, executor = bytes.fromhex("ab" * 20), bytes.fromhex("cd" * 32)
    diff = StateDiff(actor, 7, Account(balance=5), ((1, 2),), b"", (), (), b"", b"", epoch=3, version=4, prev_epoch=3)
    record = special_record(12, ["diff", executor, diff.encode()], "n2")
    assert record is not None and record.type == "diff" and record.address == actor and record.node == "n2"
    assert "missing" not in record.detail
    assert f"state diff of 0x{actor.hex()} version 4 (epoch 3)" in record.detail
    assert "executor 0xcdcdcdcdcdcdcdcd.." in record.detail and "1 slot(s) written" in record.detail
    rollback = special_record(13, ["rollback", actor, 9, Account().encode(), [], [4, 5]])
    assert rollback is not None and rollback.detail.startswith(f"rollback of 0x{actor.hex()} to mailbox position 9")
    assert "gives up 2 record(s)" in rollback.detail
    assert special_record(1, ["accept", bytes(32)]) is None


def test_replay_until_an_id_not_on_the_ledger_is_an_error(tmp_path: Path) -> None:
    with Node.init(tmp_path / "n", default_balance=10) as node:
        bob = node.new_account("bob")
        node.send(bob.address, b"", value=1).receipt()
    absent = "0x" + "ab" * 32
    proc = missive("replay", "--dir", "n", "--until", absent, cwd=tmp_path)
    assert proc.returncode == 3 and "replay ok" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and absent in lines[0] and "no such message on the ledger" in lines[0]


def test_a_difference_points_at_the_first_differing_byte() -> None:
    code = bytes(range(256)) * 11  # a contract's code: 2.8 KB
    changed = bytearray(code)
    changed[1500] ^= 0xFF
    text = difference(code, bytes(changed))
    assert "first differs at byte 1500 (2816 bytes)" in text
    assert len(text) < 200  # not two 5.6 KB hex blobs
    assert "difference" not in difference(b"\x01", b"\x02") and difference(b"\x01", b"\x02") == "expected 0x01, got 0x02"
    shorter = difference(code, code[:-10])
    assert "first differs at byte 2806 (expected 2816 bytes, got 2806)" in shorter
    a, b = (Receipt(bytes(32), bytes(20), 0, "success", 1, output, bytes(32), (), (), (), 0)
            for output in (code, bytes(changed)))
    (line,) = a.differences(b)
    assert line.startswith("output: first differs at byte 1500") and len(line) < 200


def test_cluster_status_fits_80_columns() -> None:
    peers = {f"n{i}": True for i in range(2, 12)}
    up = {
        "name": "n1", "up": [f"n{i}" for i in range(2, 9)], "port": 45123, "serving": False, "joining": True,
        "epoch": 12345, "id": bytes(range(32)), "actors": 123456, "replicas_held": 234567, "handled": 12345678,
        "rate": 12345.6, "backlog": 99999, "standby": 88888, "outbound": 77777, "replicating": 66666, "peers": peers,
    }
    down = {"name": "n12", "up": False, "port": 45124}
    lines = status_lines([up, down])
    assert all(len(line) <= WIDTH for line in lines), [line for line in lines if len(line) > WIDTH]
    text = "\n".join(lines)
    for needle in ("catching up, joining", "epoch 12345", "id 0x0001020304050607", "actors 123456",
                   "copies 234567", "backlog 99999", "diffs out 66666", "n2✓", "n9·", "n12", "down"):
        assert needle in text, needle
