"""``missive version``: which Missive, which Python, and whether the VM is the mypyc-compiled one.

The last point matters for bug reports and benchmarks: the compiled and the
pure-Python VM must behave identically but differ a lot in speed.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any

from missive.cli.common import EXIT_OK, make_console, print_json


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("version", help="show versions and whether the VM is compiled by mypyc")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--dir", type=Path, default=None,
                        help="also show the node directory's ledger: its chain id (CHAINID) and store format")
    parser.set_defaults(handler=run)


def missive_version() -> str:
    """``missive.__version__``, else the installed distribution's version."""
    import missive

    version = getattr(missive, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        return dist_version("missive")
    except PackageNotFoundError:
        return "unknown"


def vm_build_info() -> dict[str, Any]:
    """``missive.build_info()``, or a description of why it is unavailable."""
    try:
        import missive.vm  # noqa: F401 - the VM itself: a broken one is reported, not raised
        from missive import build_info
    except Exception as exc:  # a broken VM must not break `missive version`
        return {"compiled": None, "modules": {}, "error": f"cannot import missive.vm: {exc}"}
    info = dict(build_info())
    info.setdefault("modules", {})
    return info


def describe_build(info: dict[str, Any]) -> str:
    if info.get("error"):
        return f"unknown ({info['error']})"
    modules: dict[str, bool] = info.get("modules", {})
    if info.get("compiled"):
        return f"compiled by mypyc ({len(modules)} modules)"
    compiled = sorted(name for name, flag in modules.items() if flag)
    if compiled:
        pure = sorted(name for name, flag in modules.items() if not flag)
        return f"partly compiled by mypyc; pure Python: {', '.join(pure)}"
    return "pure Python (not compiled by mypyc)"


def run(args: argparse.Namespace) -> int:
    info = vm_build_info()
    data: dict[str, Any] = {
        "missive": missive_version(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": sys.platform,
        "vm": {
            "compiled": info.get("compiled"),
            "modules": info.get("modules", {}),
            "description": describe_build(info),
        },
    }
    if args.dir is not None:
        from missive.cli.common import CliError, exit_code
        from missive.mailbox.disk import StoreError
        from missive.mailbox.store import STORE_FORMAT
        from missive.node import Node

        try:
            node = Node.open(args.dir)
        except StoreError as exc:
            raise CliError(str(exc), exit_code(exc)) from exc
        try:
            data["ledger"] = {"dir": str(args.dir), "chain_id": node.chain_id, "store_format": STORE_FORMAT}
        finally:
            node.close()
    if args.json:
        print_json(data)
        return EXIT_OK
    console = make_console()
    console.print(f"missive {data['missive']}", markup=False)
    console.print(f"Python {data['python']} ({data['implementation']}) on {data['platform']}", markup=False)
    console.print(f"VM: {data['vm']['description']}", markup=False)
    if "ledger" in data:
        ledger = data["ledger"]
        console.print(f"ledger at {ledger['dir']}: chain id {ledger['chain_id']}, store format "
                      f"{ledger['store_format']}", markup=False)
    return EXIT_OK
