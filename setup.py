"""Build hook: compile missive/vm, and the per-message glue around it, with mypyc.

Everything else in the project is plain Python.  ``MISSIVE_NO_MYPYC=1`` at
install time skips compilation (the pure-Python modules then run, identically,
only slower); ``MISSIVE_PURE_PYTHON=1`` at run time ignores compiled modules.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VM_MODULES = sorted(
    str(path.relative_to(HERE)) for path in (HERE / "missive" / "vm").glob("*.py") if path.name != "__init__.py"
)
#: Outside the VM: the handler the runtime and replay run around every message,
#: and the ledger records it reads and writes for each (keep in step with
#: ``missive.COMPILED_GLUE``; tests/test_build.py checks).
GLUE_MODULES = [
    "missive/actors/handler.py",
    "missive/mailbox/envelope.py",
    "missive/mailbox/packing.py",
    "missive/mailbox/records.py",
]


def ext_modules() -> list:
    if os.environ.get("MISSIVE_NO_MYPYC") == "1":
        return []
    from mypyc.build import mypycify

    # The glue imports modules that stay Python (the store): mypy reads their types but does not
    # report their errors, so a type slip there cannot break the install (the compiled modules
    # themselves are still checked).
    extensions = mypycify(["--ignore-missing-imports", "--follow-imports=silent", *VM_MODULES, *GLUE_MODULES],
                          opt_level="3", debug_level="0")
    for extension in extensions:
        extension.extra_compile_args = [*(extension.extra_compile_args or []), *compile_flags()]
    return extensions


def compile_flags() -> list[str]:
    """Extra C flags for the compiled modules: GCC only, where they are known to be accepted.

    mypyc puts its runtime (list indexing, int boxing...) into the same C file
    as the compiled code, but in a shared library built with -fPIC GCC must
    assume any exported function may be replaced at load time, so it calls
    each through the PLT and never inlines one.  ``-fno-semantic-interposition``
    lifts that: the interpreter's list reads and writes are inlined, which made
    the compiled workloads 7-25% faster (docs/vm.md).
    """
    compiler = str(sysconfig.get_config_var("CC") or "")
    if sys.platform.startswith("linux") and compiler.split()[:1] and "gcc" in compiler.split()[0]:
        return ["-fno-semantic-interposition"]
    return []


setup(ext_modules=ext_modules())
