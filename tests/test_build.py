"""The VM that runs is the one the user thinks runs."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import missive
from missive.vm.keccak import keccak256

REPO = Path(__file__).resolve().parents[1]


def test_build_info_matches_the_module_files() -> None:
    info = missive.build_info()
    modules = info["modules"]
    assert isinstance(modules, dict) and "interpreter" in modules
    assert set(missive.COMPILED_GLUE) <= set(modules)
    for name, compiled in modules.items():
        path = sys.modules[name if name in missive.COMPILED_GLUE else f"missive.vm.{name}"].__file__ or ""
        assert compiled == (not path.endswith(".py")), name
    assert info["compiled"] == all(modules.values())
    if os.environ.get("MISSIVE_EXPECT_COMPILED") == "1":  # set by .ci/run: the install must have compiled
        assert info["compiled"], f"mypyc-compiled VM expected, got {modules}"


def test_setup_compiles_the_glue_the_package_names() -> None:
    """setup.py's GLUE_MODULES and missive.COMPILED_GLUE (which the pure-Python switch reads) agree."""
    tree = ast.parse((REPO / "setup.py").read_text())
    glue = next(
        ast.literal_eval(node.value) for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "GLUE_MODULES" for t in node.targets)
    )
    assert sorted(path.removesuffix(".py").replace("/", ".") for path in glue) == sorted(missive.COMPILED_GLUE)


def test_pure_python_switch_loads_sources() -> None:
    env = dict(os.environ, MISSIVE_PURE_PYTHON="1")
    out = subprocess.run(
        [sys.executable, "-c", "import missive, missive.vm as v; print(missive.build_info()['compiled'], v.execute(bytes.fromhex('6001600201')).status.name)"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert out == ["False", "SUCCESS"]
    glue = subprocess.run(
        [sys.executable, "-c", "import missive, importlib; "
         "print(*(importlib.import_module(m).__file__.endswith('.py') for m in missive.COMPILED_GLUE))"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert glue == ["True"] * len(missive.COMPILED_GLUE)


def _glue_parity(pure: bool) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("MISSIVE_PURE_PYTHON", None)
    if pure:
        env["MISSIVE_PURE_PYTHON"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run([sys.executable, str(REPO / "tests" / "glue_parity.py")], env=env, capture_output=True,
                         text=True, check=True, cwd=REPO).stdout
    result: dict[str, Any] = json.loads(out)
    return result


#: The ledger's byte formats (tests/glue_parity.py's samples), as the code wrote them before the
#: handler glue was compiled (commit 5d53a23): existing stores must replay unchanged.  Changed on purpose
#: once since: store format 4 (envelope format 2) adds the chain id and origin to envelopes and
#: block.timestamp to receipts, accounts and the state root (issue 26, item 4); store format 6 adds the fee,
#: refund and coinbase to receipts (issue 23, the market).
LEDGER_ENCODINGS = [
    "dc00110202c414000102030405060708090a0b0c0d0e0f10111213c4140102030405060708090a0b0c0d0e0f1011121314c40105"
    "c4020102ce00015f90c4000307c400c3c3c40000cf0000fffffffffd70c400",
    "9233e4979fe1f70faf9e598d4b27b81949b51d61c341187401d3a0c9372afe47",
    "dc001102c4200000000000000000000000000000000000000000000000000000000000000000c4140102030405060708090a0b0c"
    "0d0e0f101112131404a773756363657373cd5208c4020001c4207272727272727272727272727272727272727272727272727272"
    "7272727272729193c4140102030405060708090a0b0c0d0e0f101112131492c40101c42080000000000000000000000000000000"
    "00000000000000000000000000000000c4016491c4206f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f"
    "6f6f9192c414000102030405060708090a0b0c0d0e0f10111213c420686868686868686868686868686868686868686868686868"
    "686868686868686809ce6b0cc900a0c402f618c41a0100000000000000000000000000000000000000000000000000c414000102"
    "030405060708090a0b0c0d0e0f10111213",
    "9902c409056bc75e2d6310000002c42063636363636363636363636363636363636363636363636363636363636363630304c420"
    "7373737373737373737373737373737373737373737373737373737373737373c4206b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b"
    "6b6b6b6b6b6b6b6b6b6b6b6b6b6bce6b0cc900",
    "efbe83452675a79bf94a96c7c0f328d3ea1536d4c372a6ba86e689df24a47cf7",
]
#: keccak256 of the JSON of glue_parity's ``handled`` (receipt, account, writes, messages sent).  Changed on
#: purpose twice since 5d53a23: a request that asks for a reply runs with its gas less the reply's reserve, and
#: the reply no longer gets a 100,000-gas floor from nowhere (issue 26); and store format 4 (issue 26, item 4):
#: block.timestamp in seconds recorded in receipts, accounts and the state root, chain id and origin in envelopes;
#: and store format 6 (issue 23): receipts record fee, refund and coinbase, and the run is made with a bid too.
HANDLED_DIGEST = "d6beb25254fa6a85303eea42110d74b0dfd45aef6273db3ca87ac81ae8f88749"


def test_compiled_glue_behaves_like_pure_python_and_writes_the_same_bytes() -> None:
    """Same decodes, same errors (hostile records included), same encodings and handler output, in both builds."""
    compiled, pure = _glue_parity(pure=False), _glue_parity(pure=True)
    assert compiled == pure
    assert pure["encodings"] == LEDGER_ENCODINGS
    assert keccak256(json.dumps(pure["handled"]).encode()).hex() == HANDLED_DIGEST
