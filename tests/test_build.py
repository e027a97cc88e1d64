"""The VM that runs is the one the user thinks runs."""

from __future__ import annotations

import os
import subprocess
import sys

import missive.vm as vm


def test_build_info_matches_the_module_files() -> None:
    info = vm.build_info()
    modules = info["modules"]
    assert isinstance(modules, dict) and "interpreter" in modules
    for name, compiled in modules.items():
        path = sys.modules[f"missive.vm.{name}"].__file__ or ""
        assert compiled == (not path.endswith(".py")), name
    assert info["compiled"] == all(modules.values())
    if os.environ.get("MISSIVE_EXPECT_COMPILED") == "1":  # set by .ci/run: the install must have compiled
        assert info["compiled"], f"mypyc-compiled VM expected, got {modules}"


def test_pure_python_switch_loads_sources() -> None:
    env = dict(os.environ, MISSIVE_PURE_PYTHON="1")
    out = subprocess.run(
        [sys.executable, "-c", "import missive.vm as v; print(v.build_info()['compiled'], v.execute(bytes.fromhex('6001600201')).status.name)"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert out == ["False", "SUCCESS"]
