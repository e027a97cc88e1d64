"""Developer tooling around the VM: compiling contracts and checking the VM against public vectors.

``compiler`` turns Vyper sources (or Solidity's hex output) into bytecode;
``conformance`` runs Ethereum's test vectors through :func:`missive.vm.execute`.
The conformance names are loaded on first use so that compiling (or just
importing the CLI) does not pay for the VM import.
"""

from __future__ import annotations

import importlib
from typing import Any

from missive.toolchain.compiler import CompiledContract, CompileError, CompileInputError, compile_source, parse_hex

_CONFORMANCE_NAMES = frozenset({"Case", "CaseResult", "Summary", "Outcome", "iter_cases", "run_case", "run_paths"})

__all__ = [
    "Case",
    "CaseResult",
    "CompileError",
    "CompileInputError",
    "CompiledContract",
    "Outcome",
    "Summary",
    "compile_source",
    "iter_cases",
    "parse_hex",
    "run_case",
    "run_paths",
]


def __getattr__(name: str) -> Any:
    if name in _CONFORMANCE_NAMES:
        return getattr(importlib.import_module("missive.toolchain.conformance"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
