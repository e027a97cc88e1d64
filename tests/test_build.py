"""The VM that runs is the one the user thinks runs."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import missive
import missive.vm as vm

REPO = Path(__file__).resolve().parents[1]


def test_build_info_matches_the_module_files() -> None:
    info = vm.build_info()
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
        [sys.executable, "-c", "import missive.vm as v; print(v.build_info()['compiled'], v.execute(bytes.fromhex('6001600201')).status.name)"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert out == ["False", "SUCCESS"]
    glue = subprocess.run(
        [sys.executable, "-c", "import missive, importlib; "
         "print(*(importlib.import_module(m).__file__.endswith('.py') for m in missive.COMPILED_GLUE))"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert glue == ["True"] * len(missive.COMPILED_GLUE)
