"""The CLI starts fast: heavy modules are imported only by the commands that use them.

Asserted on what a fresh interpreter has imported (``sys.modules``), not on timings, so the test holds
on a slow or busy machine; ``python tools/bench/cli_start.py`` measures the seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: what `missive --help` must not import (each costs tens of milliseconds or more)
HEAVY_FOR_HELP = ("vyper", "missive.vm", "missive.node", "missive.mailbox.store", "missive.actors", "missive.cluster",
                  "missive.toolchain.conformance", "trio", "lmdb", "eth_abi", "eth_utils", "pydantic", "rich.table",
                  "rich.progress", "Crypto", "coincurve", "xml.sax")
#: what `missive send` must not import: it needs the ledger, the VM and eth_abi, not these
HEAVY_FOR_SEND = ("vyper", "missive.cluster", "missive.toolchain.conformance", "rich.table", "rich.progress",
                  "Crypto", "missive.vm.bn254", "nacl.pwhash")

PROBE = """
import json, sys
from missive.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
print("\\nMODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def imported_by(*args: str, cwd: Path) -> tuple[int, set[str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MISSIVE_UNENCRYPTED_KEYS": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)
    line = next(line for line in proc.stderr.splitlines() if line.startswith("MODULES "))
    return proc.returncode, set(json.loads(line.removeprefix("MODULES ")))


def loaded(modules: set[str], heavy: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in heavy))


def test_help_imports_nothing_heavy(tmp_path: Path) -> None:
    code, modules = imported_by("--help", cwd=tmp_path)
    assert code == 0
    assert loaded(modules, HEAVY_FOR_HELP) == []
    for command in (["send", "--help"], ["deploy", "--help"], ["replay", "--help"], ["cluster", "--help"]):
        code, modules = imported_by(*command, cwd=tmp_path)
        assert code == 0 and loaded(modules, HEAVY_FOR_HELP) == [], command


def test_send_does_not_import_the_compiler(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MISSIVE_UNENCRYPTED_KEYS": "1"}
    subprocess.run([sys.executable, "-m", "missive", "init", "--dir", "n"], cwd=tmp_path, env=env, check=True,
                   capture_output=True)
    (tmp_path / "Stop.hex").write_text("6001600c60003960016000f300\n")  # init code returning a one-byte STOP runtime
    address = subprocess.run([sys.executable, "-m", "missive", "deploy", "Stop.hex", "--dir", "n", "-q"], cwd=tmp_path,
                             env=env, check=True, capture_output=True, text=True).stdout.strip()
    code, modules = imported_by("send", address, "ping(uint256)", "5", "--dir", "n", cwd=tmp_path)
    assert code == 0
    assert "missive.node" in modules  # (the probe saw the command do its work)
    assert loaded(modules, HEAVY_FOR_SEND) == []
