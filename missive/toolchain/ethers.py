"""ethers (the npm ``ethers`` package, v6), for scripts and tests that drive ``missive rpc`` from JavaScript.

Installed by the same one command as solc-js, ``missive toolchain install`` (one ``npm install``
into the same directory, :func:`missive.toolchain.solidity.solc_dir`), which ``.ci/run`` runs.
Missive itself never loads it: a script runs as its own ``node`` process, finding the package
through ``NODE_PATH`` (:func:`node_env`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Final

from missive.toolchain.solidity import solc_dir

#: The ethers version ``missive toolchain install`` installs (and CI tests with).
ETHERS_VERSION: Final = "6.17.0"


def modules_dir() -> Path:
    return solc_dir() / "node_modules"


def installed_version() -> str | None:
    try:
        return str(json.loads((modules_dir() / "ethers" / "package.json").read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError):
        return None


def missing_reason() -> str | None:
    """Why an ethers script cannot run here, in one line; None when it can."""
    if shutil.which("node") is None:
        return "ethers scripts need Node.js (`node` is not on PATH): install Node.js, then run `missive toolchain install`"
    if installed_version() is None:
        return f"ethers is not installed (looked in {modules_dir()}): run `missive toolchain install` (npm install of " \
               f"ethers@{ETHERS_VERSION} beside solc-js), or set MISSIVE_SOLC_DIR"
    return None


def node_env() -> dict[str, str]:
    """The environment a ``node`` script needs to ``require("ethers")``."""
    paths = [str(modules_dir()), *filter(None, os.environ.get("NODE_PATH", "").split(os.pathsep))]
    return {**os.environ, "NODE_PATH": os.pathsep.join(paths)}
