"""Missive: every contract an actor, every call a message on a ledger.

Setting ``MISSIVE_PURE_PYTHON=1`` before ``missive`` is imported makes the VM
(and the handler glue compiled with it, :data:`COMPILED_GLUE`) run from their
Python sources even where mypyc-compiled modules are installed.  Both builds
come from the same source and must behave identically; the switch exists so
that claim can be tested, and to debug the VM with Python tools.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

__version__ = "0.1.0"

#: Modules outside ``missive.vm`` that setup.py compiles with mypyc too: the
#: handler that runs around every message, live and in replay, and the ledger
#: records it decodes and encodes each time (keep in step with setup.py's
#: GLUE_MODULES; tests/test_build.py checks).
COMPILED_GLUE: tuple[str, ...] = (
    "missive.actors.handler",
    "missive.mailbox.envelope",
    "missive.mailbox.packing",
    "missive.mailbox.records",
)


def build_info() -> dict[str, object]:
    """Whether the VM and the glue compiled with it (:data:`COMPILED_GLUE`) run compiled by mypyc,
    module by module (``missive version`` shows it)."""
    from missive import vm

    return vm.build_info(COMPILED_GLUE)


class _PurePythonVM(importlib.abc.MetaPathFinder):
    """Finds ``missive.vm.*`` and :data:`COMPILED_GLUE` modules in their .py files, never in compiled ones."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not (fullname.startswith("missive.vm.") or fullname in COMPILED_GLUE) or not path:
            return None
        leaf = fullname.rpartition(".")[2]
        for directory in path:
            source = os.path.join(directory, leaf + ".py")
            if os.path.exists(source):
                loader = importlib.machinery.SourceFileLoader(fullname, source)
                return importlib.util.spec_from_file_location(fullname, source, loader=loader)
        return None


if os.environ.get("MISSIVE_PURE_PYTHON") == "1":
    sys.meta_path.insert(0, _PurePythonVM())
