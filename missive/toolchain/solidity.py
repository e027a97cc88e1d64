"""Solidity through solc-js (the npm ``solc`` package), run with Node.js.

Installed once by ``missive toolchain install`` (``npm install --prefix DIR
solc@SOLC_VERSION ethers@ETHERS_VERSION``; DIR is ``$MISSIVE_SOLC_DIR``, else ``~/.cache/missive/solc``).
Compiling runs ``solcjs --standard-json`` for the Cancun EVM (or the ``--evm-version`` asked for:
0.8.28 knows up to prague, not osaka) with the source's
directory as base path and, as include paths, Missive's Solidity library (so
``import "missive/Missive.sol";`` works) and every ``node_modules`` above the
source (``@openzeppelin/contracts/...``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

#: The solc-js version ``missive toolchain install`` installs (and CI tests with).
SOLC_VERSION: Final = "0.8.28"
#: Where Missive's Solidity library lives: ``import "missive/Missive.sol";``.
LIBRARY_DIR: Final = Path(__file__).parent / "solidity"
EVM_VERSION: Final = "cancun"


def solc_dir() -> Path:
    return tool_dir("MISSIVE_SOLC_DIR", "solc")


def tool_dir(variable: str, name: str) -> Path:
    """Where an npm tool lives: ``$variable``, else ``~/.cache/missive/NAME`` (XDG_CACHE_HOME honoured)."""
    explicit = os.environ.get(variable)
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "missive" / name


def solcjs_path() -> Path:
    return solc_dir() / "node_modules" / "solc" / "solc.js"


def missing_reason() -> str | None:
    """Why Solidity cannot be compiled here, in one line; None when it can."""
    if shutil.which("node") is None:
        return "compiling Solidity needs Node.js (`node` is not on PATH) and solc-js: install Node.js, then run " \
               "`missive toolchain install`"
    if not solcjs_path().is_file():
        return f"solc-js is not installed (looked in {solc_dir()}): run `missive toolchain install` (npm install of " \
               f"solc@{SOLC_VERSION}), or set MISSIVE_SOLC_DIR"
    return None


def install(target: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``npm install --prefix TARGET solc@SOLC_VERSION ethers@ETHERS_VERSION`` (the one npm command:
    ethers drives ``missive rpc`` from JavaScript, :mod:`missive.toolchain.ethers`); the caller reports
    failures."""
    from missive.toolchain.ethers import ETHERS_VERSION

    return npm_install(target or solc_dir(), f"solc@{SOLC_VERSION}", f"ethers@{ETHERS_VERSION}")


def npm_install(where: Path, *packages: str) -> subprocess.CompletedProcess[str]:
    """``npm install --prefix WHERE PACKAGES`` (FileNotFoundError without npm); the caller reports failures."""
    where.mkdir(parents=True, exist_ok=True)
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm")
    return subprocess.run([npm, "install", "--prefix", str(where), "--no-audit", "--no-fund", *packages],
                          capture_output=True, text=True, check=False)


def installed_version() -> str | None:
    package = solc_dir() / "node_modules" / "solc" / "package.json"
    try:
        return str(json.loads(package.read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError):
        return None


def include_paths(source: Path) -> list[Path]:
    paths = [LIBRARY_DIR]
    for parent in [source.resolve().parent, *source.resolve().parents]:
        modules = parent / "node_modules"
        if modules.is_dir():
            paths.append(modules)
        if (parent / "lib").is_dir() and (parent / "foundry.toml").is_file():
            paths.append(parent / "lib")
    return paths


def compile_standard_json(source: Path, text: str, *, evm_version: str = EVM_VERSION) -> dict[str, Any]:
    """Run solc-js on one file; return its standard-JSON output (errors included, not raised)."""
    from missive.toolchain.compiler import CompileError, CompileInputError

    reason = missing_reason()
    if reason is not None:
        raise CompileInputError(reason)
    base = source.resolve().parent
    unit = source.name
    request = {
        "language": "Solidity",
        "sources": {unit: {"content": text}},
        "settings": {
            "evmVersion": evm_version,
            "optimizer": {"enabled": False},
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object",
                                            "evm.deployedBytecode.sourceMap"]}},
        },
    }
    command = ["node", str(solcjs_path().parent / "solc.js"), "--standard-json", "--base-path", str(base)]
    for path in include_paths(source):
        command += ["--include-path", str(path)]
    try:
        done = subprocess.run(command, input=json.dumps(request), capture_output=True, text=True, check=False,
                              cwd=base, timeout=600)
    except subprocess.TimeoutExpired as exc:
        raise CompileError(f"{source}: solc-js took more than {exc.timeout:g} s") from exc
    stdout = done.stdout
    start = stdout.find("{")
    try:
        output: dict[str, Any] = json.loads(stdout[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        output = {}
    if not output:
        detail = (done.stderr.strip() or stdout.strip() or f"exit status {done.returncode}").splitlines()[-1]
        raise CompileError(f"{source}: solc-js failed: {detail}")
    return output


def line_starts(text: str) -> list[int]:
    starts = [0]
    for index, char in enumerate(text.encode("utf-8")):
        if char == 0x0A:
            starts.append(index + 1)
    return starts


def pc_lines(runtime: bytes, source_map: str, text: str, file_index: int) -> dict[int, int]:
    """solc's compressed source map (``s:l:f:j:m`` per instruction) as runtime offset -> line."""
    from bisect import bisect_right

    from missive.toolchain.evmcode import disassemble

    starts = line_starts(text)
    instructions = disassemble(runtime)
    out: dict[int, int] = {}
    s, f = -1, -1
    for ins, entry in zip(instructions, source_map.split(";"), strict=False):
        fields = entry.split(":")
        if fields and fields[0]:
            s = int(fields[0])
        if len(fields) > 2 and fields[2]:
            f = int(fields[2])
        if f == file_index and s >= 0:
            out[ins.pc] = bisect_right(starts, s)
    return out
