"""How fast the ``missive`` command starts: the imports it pays before it does anything.

Three figures, each the best of ``--repeats`` runs (noise only ever adds time):

* ``import missive.cli``: the sum of top-level cumulative times of
  ``python -X importtime -c "import missive.cli"`` (what every command pays
  before parsing its arguments);
* ``missive --help``: the same sum for the whole command, and its wall time;
* ``missive send`` (a token transfer on a fresh node, run to its receipt): the
  imports it pays in all, including what it needs for its work (the ledger,
  the VM, trio, eth_abi), and its wall time.

Target (issue 21): ``--help`` and ``send`` reach their work within 0.3 s of
imports.  Prints the figures and writes JSON (default
tools/bench/results/cli_start.json).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

TARGET_S = 0.3


def imports_seconds(stderr: str) -> float:
    """Sum of the top-level cumulative import times in ``-X importtime`` output."""
    total = 0
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.split("|")
        if len(parts) == 3 and parts[2].startswith(" ") and not parts[2].startswith("  ") and parts[1].strip().isdigit():
            total += int(parts[1])
    return total / 1e6


def run(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """(import seconds, wall seconds, stdout) of ``python -X importtime ARGS``."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.splitlines()[-1:]}")
    return imports_seconds(proc.stderr), wall, proc.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=_common.RESULTS / "cli_start.json")
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(_common.REPO), "MISSIVE_UNENCRYPTED_KEYS": "1"}
    env.pop("MISSIVE_DIR", None)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="missive-cli-start-") as tmp:
        work = Path(tmp)
        subprocess.run([sys.executable, "-m", "missive", "init", "--dir", "n"], cwd=work, env=env, check=True,
                       capture_output=True)
        token = subprocess.run([sys.executable, "-m", "missive", "deploy", str(_common.REPO / "examples" / "Token.vy"),
                                "T", "T", "1000000", "--dir", "n", "-q"], cwd=work, env=env, check=True,
                               capture_output=True, text=True).stdout.strip()
        cases = {
            "import missive.cli": ["-c", "import missive.cli"],
            "missive --help": ["-m", "missive", "--help"],
            "missive send": ["-m", "missive", "send", token, "transfer(address,uint256)", "0x" + "aa" * 20, "1",
                             "--dir", "n"],
        }
        for name, command in cases.items():
            runs = [run(command, env, work)[:2] for _ in range(max(1, args.repeats))]
            figures[name] = {"imports_s": min(r[0] for r in runs), "wall_s": min(r[1] for r in runs)}
    figures["target_imports_s"] = TARGET_S
    figures["machine"] = _common.machine_info()
    print(f"{'':22} {'imports':>9} {'wall':>9}   (best of {args.repeats}; target: imports < {TARGET_S} s)")
    for name in cases:
        f = figures[name]
        mark = "ok" if f["imports_s"] < TARGET_S else "over"
        print(f"{name:22} {f['imports_s']:8.3f}s {f['wall_s']:8.3f}s   {mark}")
    path = _common.write_json(args.out, figures)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
