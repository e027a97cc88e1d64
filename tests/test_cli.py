"""The ``missive`` CLI, run as a user runs it: ``python -m missive ...`` in a subprocess.

These check the contract with users and scripts: exit statuses (0 ok, 1 the
checked thing failed, 2 bad input), machine-readable ``--json`` output, the
final ``N passed, M failed`` line, and no Python traceback for bad input.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import missive

REPO = Path(__file__).resolve().parents[1]
VECTORS = REPO.parent / "shared" / "conformance"

COUNTER = """\
# pragma version ^0.4.0
count: public(uint256)

@external
def bump(by: uint256) -> uint256:
    self.count += by
    return self.count
"""


def missive_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["COLUMNS"] = "80"  # long lines must not be re-wrapped even on a narrow terminal
    return subprocess.run(
        [sys.executable, "-m", "missive", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env,
        timeout=600,
    )


def assert_clean_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


def test_version() -> None:
    proc = missive_cli("version")
    assert proc.returncode == 0, proc.stderr
    assert f"missive {missive.__version__}" in proc.stdout
    assert "Python 3." in proc.stdout
    assert "compiled by mypyc" in proc.stdout or "pure Python" in proc.stdout
    data = json.loads(missive_cli("version", "--json").stdout)
    assert data["missive"] == missive.__version__
    assert isinstance(data["vm"]["compiled"], bool) and data["vm"]["modules"]


def test_help_lists_command_groups() -> None:
    proc = missive_cli("--help")
    assert proc.returncode == 0
    for command in ("version", "compile", "vm"):
        assert command in proc.stdout
    assert missive_cli().returncode == 2


def test_compile(tmp_path: Path) -> None:
    source = tmp_path / "Counter.vy"
    source.write_text(COUNTER)
    proc = missive_cli("compile", str(source))
    assert proc.returncode == 0, proc.stderr
    assert "Counter" in proc.stdout and "bytecode size:" in proc.stdout
    assert "function bump(uint256 by) -> uint256" in proc.stdout

    data = json.loads(missive_cli("compile", str(source), "--json").stdout)
    assert data["name"] == "Counter" and data["runtime_bytecode"].startswith("0x")
    assert data["runtime_bytecode"][2:] in data["bytecode"]  # one hex line, never wrapped
    assert {e["name"] for e in data["abi"]} == {"count", "bump"}

    out = tmp_path / "build"
    proc = missive_cli("compile", str(source), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["Counter.abi.json", "Counter.bin", "Counter.runtime.bin"]
    assert (out / "Counter.runtime.bin").read_text().strip() == data["runtime_bytecode"]
    # ... and what --out wrote is accepted back as hex input, ABI included.
    again = json.loads(missive_cli("compile", str(out / "Counter.runtime.bin"), "--json").stdout)
    assert again["name"] == "Counter" and again["abi"] == data["abi"] and again["language"] == "hex"


def test_compile_errors(tmp_path: Path) -> None:
    assert_clean_error(missive_cli("compile", str(tmp_path / "Nope.vy")), 2, "Nope.vy: no such file")
    broken = tmp_path / "Broken.vy"
    broken.write_text("@external\ndef f()\n    pass\n")
    assert_clean_error(missive_cli("compile", str(broken)), 1, "SyntaxException", "line 2")
    bad = tmp_path / "bad.hex"
    bad.write_text("0x60016x")
    assert_clean_error(missive_cli("compile", str(bad)), 2, "invalid hex character 'x' at offset 7")
    other = tmp_path / "a.txt"
    other.write_text("")
    assert_clean_error(missive_cli("compile", str(other)), 2, "unknown extension '.txt'")


# PUSH1 0 CALLDATALOAD PUSH1 0 SSTORE; LOG1(0, 32, topic 0xaa);
# CALL(gas 50000, 0xaa..aa, value 1, in 0..4, out 0..32); POP; RETURN(0, 32)
CALLER_CODE = (
    "0x600035600055" + "60aa60206000a1" + "60206000600460006001" + "73" + "aa" * 20 + "61c350f150" + "60206000f3"
)


def test_vm_exec_json() -> None:
    proc = missive_cli(
        "vm", "exec", "--code", CALLER_CODE,
        "--calldata", "0x" + "00" * 31 + "ff",
        "--gas", "200_000", "--value", "5", "--storage", "1=2", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "success" and data["success"] is True
    assert data["storage_writes"] == {"0x0": "0xff"}
    assert data["output"] == "0x" + "00" * 32
    assert 0 < data["gas_used"] < 200_000
    assert data["logs"] == [
        {"address": "0x" + "00" * 20, "topics": ["0x" + "00" * 31 + "aa"], "data": "0x" + "00" * 32}
    ]
    (message,) = data["messages"]
    assert message["kind"] == "call" and message["recipient"] == "0x" + "aa" * 20
    assert message["value"] == 1 and message["wants_reply"] is True and message["payload"] == "0x00000000"
    assert len(message["message_id"]) == 66
    assert data["balance"] == 4


def test_vm_exec_human_output_and_failures(tmp_path: Path) -> None:
    proc = missive_cli("vm", "exec", "--code", CALLER_CODE, "--value", "5", "--gas", "200000")
    assert proc.returncode == 0, proc.stderr
    assert "success" in proc.stdout and "call to 0x" + "aa" * 20 in proc.stdout
    reverted = missive_cli("vm", "exec", "--code", "0x60006000fd", "--json")
    assert reverted.returncode == 1 and json.loads(reverted.stdout)["status"] == "revert"
    halted = missive_cli("vm", "exec", "--code", "0x600056")
    assert halted.returncode == 1 and "bad jump destination" in halted.stdout
    static = missive_cli("vm", "exec", "--code", "0x600160005500", "--static", "--json")
    assert static.returncode == 1 and json.loads(static.stdout)["status"].startswith("state change")
    code_file = tmp_path / "code.hex"
    code_file.write_text("0x6001600055\n00\n")
    from_file = json.loads(missive_cli("vm", "exec", "--code", f"@{code_file}", "--json").stdout)
    assert from_file["storage_writes"] == {"0x0": "0x1"}


def test_vm_exec_bad_input_exits_2_with_a_message(tmp_path: Path) -> None:
    assert_clean_error(
        missive_cli("vm", "exec", "--code", "0x60zz"), 2, "--code", "invalid hex character 'z' at offset 4"
    )
    assert_clean_error(
        missive_cli("vm", "exec", "--code", "0x00", "--calldata", "0x123"), 2, "--calldata", "odd number"
    )
    assert_clean_error(
        missive_cli("vm", "exec", "--code", "0x00", "--gas", "lots"), 2, "--gas", "'lots' is not a number"
    )
    assert_clean_error(missive_cli("vm", "exec", "--code", "0x00", "--address", "0x12"), 2, "--address")
    assert_clean_error(
        missive_cli("vm", "exec", "--code", "0x00", "--storage", "7"), 2, "--storage '7': expected KEY=VALUE"
    )
    assert_clean_error(missive_cli("vm", "exec", "--code", f"@{tmp_path / 'none.hex'}"), 2, "no such file")
    assert_clean_error(missive_cli("vm", "exec"), 2, "--code")


@pytest.fixture
def vectors() -> Path:
    if not VECTORS.is_dir():
        pytest.fail(f"conformance vectors not found at {VECTORS}")
    return VECTORS


def test_vm_conformance_one_directory(vectors: Path) -> None:
    proc = missive_cli("vm", "conformance", str(vectors / "legacy_constantinople" / "vmBlockInfoTest"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "3 passed, 0 failed"
    assert any("xfailed" in line and "vmBlockInfoTest/difficulty" in line for line in lines)


def test_vm_conformance_reports_failures(vectors: Path, tmp_path: Path) -> None:
    original = vectors / "legacy_constantinople" / "vmArithmeticTest" / "add0.json"
    document = json.loads(original.read_text())
    account = document["add0"]["post"]["0x0f572e5295c57f15886f9b263e2f6d2d6c7b5ec6"]
    account["storage"]["0x00"] = "0x02"
    (tmp_path / "add0.json").write_text(json.dumps(document))
    proc = missive_cli("vm", "conformance", str(tmp_path), str(vectors / "eest_state_tests" / "frontier"))
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout and f"{tmp_path.name}/add0" in proc.stdout
    assert (
        "storage[0x00]: expected 0x02, got 0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffe"
        in proc.stdout
    )
    assert proc.stdout.strip().splitlines()[-1] == "48 passed, 1 failed"

    data = json.loads(missive_cli("vm", "conformance", "--json", str(tmp_path)).stdout)
    assert data["failed"] == 1 and data["results"][0]["outcome"] == "failed"


def test_vm_conformance_bad_path() -> None:
    assert_clean_error(missive_cli("vm", "conformance", "/nonexistent/vectors"), 2, "no such file or directory")
