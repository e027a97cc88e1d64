"""Missive's VM: EVM bytecode (Cancun) on a register machine, compiled by mypyc.

The one way in is :func:`execute`.  See ``translate`` for the register format,
``interpreter`` for the machine, ``messages`` for the instructions whose
meaning Missive changes (SPEC §3) and ``system`` for the system contract.
"""

from __future__ import annotations

from collections.abc import Iterable

from missive.vm.execution import execute
from missive.vm.host import ForbiddenRead, Host
from missive.vm.types import (
    SYSTEM_CONTRACT,
    BlockContext,
    ExecutionResult,
    Log,
    MessageKind,
    OutgoingMessage,
    Status,
)

__all__ = [
    "SYSTEM_CONTRACT",
    "BlockContext",
    "ExecutionResult",
    "ForbiddenRead",
    "Host",
    "Log",
    "MessageKind",
    "OutgoingMessage",
    "Status",
    "build_info",
    "execute",
]


def build_info(glue: Iterable[str] = ()) -> dict[str, object]:
    """Whether the VM in use was compiled by mypyc, module by module.

    The VM's modules are named as in this package (``interpreter``); ``glue``, modules
    outside the VM compiled with it, by their full names (:func:`missive.build_info` passes
    :data:`missive.COMPILED_GLUE`: the VM imports nothing of Missive outside itself).
    ``MISSIVE_PURE_PYTHON=1`` in the environment (read when ``missive`` is first imported)
    forces the pure-Python modules even where compiled ones exist.
    """
    import importlib
    import pkgutil

    names = {info.name: f"{__name__}.{info.name}" for info in pkgutil.iter_modules(__path__)}
    names.update({name: name for name in glue})
    modules: dict[str, bool] = {}
    for name, module_name in names.items():
        module = importlib.import_module(module_name)
        modules[name] = not (getattr(module, "__file__", "") or "").endswith(".py")
    return {"compiled": bool(modules) and all(modules.values()), "modules": modules}
