"""Build hook: compile missive/vm with mypyc.

Everything else in the project is plain Python.  ``MISSIVE_NO_MYPYC=1`` at
install time skips compilation (the pure-Python VM then runs, identically,
only slower); ``MISSIVE_PURE_PYTHON=1`` at run time ignores compiled modules.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VM_MODULES = sorted(
    str(path.relative_to(HERE)) for path in (HERE / "missive" / "vm").glob("*.py") if path.name != "__init__.py"
)


def ext_modules() -> list:
    if os.environ.get("MISSIVE_NO_MYPYC") == "1":
        return []
    from mypyc.build import mypycify

    return mypycify(["--ignore-missing-imports", *VM_MODULES], opt_level="3", debug_level="0")


setup(ext_modules=ext_modules())
