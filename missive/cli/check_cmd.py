"""``missive check FILE``: where a contract expects a synchronous answer (:mod:`missive.toolchain.check`);
``missive toolchain install|status``: solc-js for Solidity, the zk prover, and anvil for the RPC bench.

``check`` exits 0 when nothing would be refused at deploy (notes may be listed), 1 when something
would, 2 for input it cannot read or compile.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from missive.cli.common import EXIT_FAILED, EXIT_OK, CliError, make_console, print_json
from missive.toolchain.compiler import SUPPORTED_EVM_VERSIONS


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "check", help="find where a contract expects a synchronous answer",
        description="Report every place where FILE (.vy, .sol, a Foundry/Hardhat .json artifact, or .bin/.hex init "
        "or runtime bytecode) expects a call to answer at once, which Missive's messages do not. Findings marked "
        "'refused' stop `missive deploy` unless --accept-async names them. Exit status 1 if there is one.")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--name", default=None, help="the contract, when the file defines several")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--evm-version", choices=SUPPORTED_EVM_VERSIONS, help="compile a source for this EVM version, as "
                   "`missive compile --evm-version` (default: cancun, or a Vyper source's pragma)")
    p.set_defaults(handler=run_check)

    toolchain = subparsers.add_parser("toolchain", help="install or show solc-js and the zk prover (circom2, snarkjs)")
    commands = toolchain.add_subparsers(dest="toolchain_command", metavar="COMMAND")
    commands.required = True
    p = commands.add_parser("install", help="npm install the pinned solc-js, circom2, snarkjs and anvil (needs Node.js "
                            "and npm)",
                            description="Run `npm install --prefix DIR solc@VERSION`, DIR being $MISSIVE_SOLC_DIR or "
                            "~/.cache/missive/solc, `npm install --prefix ZK snarkjs@V circom2@V` (the zk prover "
                            "for `missive job`), ZK being $MISSIVE_ZK_DIR or ~/.cache/missive/zk, and `npm install "
                            "--prefix ANVIL @foundry-rs/anvil@V` (the peer tools/bench/rpc.py compares `missive rpc` "
                            "with; only a warning if it fails), ANVIL being $MISSIVE_ANVIL_DIR or "
                            "~/.cache/missive/anvil.")
    p.set_defaults(handler=run_install)
    p = commands.add_parser("status", help="are solc-js, the zk prover and anvil installed, where, which version")
    p.set_defaults(handler=run_status)


def compile_for_check(file: Path, name: str | None, evm_version: str | None = None) -> Any:
    from missive.toolchain.compiler import CompileError, CompileInputError, compile_source

    try:
        return compile_source(file, name=name, evm_version=evm_version)
    except CompileInputError as exc:
        raise CliError(str(exc)) from exc
    except CompileError as exc:
        raise CliError(str(exc), EXIT_FAILED) from exc


def run_check(args: argparse.Namespace) -> int:
    from missive.toolchain.check import FIXES, GUIDE, check_contract

    contract = compile_for_check(args.file, args.name, args.evm_version)
    report = check_contract(contract)
    status = EXIT_FAILED if report.refused else EXIT_OK
    if args.json:
        print_json({"name": report.name, "file": str(args.file), "on_reply": report.has_on_reply,
                    "refused": len(report.refused), "findings": [f.as_json() for f in report.findings],
                    "guide": GUIDE})
        return status
    console = make_console()
    if not report.findings:
        console.print(f"{report.name}: no findings: nothing in it expects a call to answer at once", markup=False)
        return EXIT_OK
    for finding in report.findings:
        label = "refused" if finding.refused else "note"
        console.print(f"{label:<8} {finding.line()}", markup=False)
        console.print(f"{'':<8}   fix: {FIXES[finding.kind]}", markup=False)
    notes = len(report.findings) - len(report.refused)
    console.print(f"{report.name}: {len(report.refused)} refused at deploy, {notes} note(s); see {GUIDE}",
                  markup=False)
    if report.refused:
        kinds = ",".join(dict.fromkeys(f.kind for f in report.refused))
        console.print(f"deploy anyway (meaning changes as described): missive deploy {args.file} "
                      f"--accept-async {kinds}", markup=False)
    return status


def run_install(args: argparse.Namespace) -> int:
    from missive.toolchain import ethers, solidity, zk

    console = make_console()
    npm(console, solidity.solc_dir(), f"solc-js {solidity.SOLC_VERSION} and ethers {ethers.ETHERS_VERSION}",
        solidity.install)
    console.print(f"solc-js {solidity.installed_version()} ready: `missive compile X.sol` works; ethers "
                  f"{ethers.installed_version()} for JavaScript against `missive rpc`", markup=False)
    # the zk prover beside it (issue 25): circom2 and snarkjs, run as separate processes
    npm(console, zk.zk_dir(), f"snarkjs {zk.SNARKJS_VERSION}, circom2 {zk.CIRCOM2_VERSION} and zokrates-js "
        f"{zk.ZOKRATES_VERSION}", zk.install)
    console.print("circom2, snarkjs and zokrates-js ready: zk jobs can be proved (`missive job`)", markup=False)
    install_anvil(console)
    return EXIT_OK


def install_anvil(console: Any) -> None:
    """anvil is only the RPC bench's peer: a platform without its binary, or a failed download, is one
    warning line, and what was installed before stays usable (exit 0)."""
    from missive.toolchain import anvil

    warn = make_console(stderr=True)
    if anvil.platform_package() is None:
        warn.print(f"warning: anvil not installed: {anvil.missing_reason()} (only tools/bench/rpc.py uses it)",
                      markup=False)
        return
    try:
        npm(console, anvil.anvil_dir(), f"anvil {anvil.ANVIL_VERSION}", anvil.install)
    except CliError as exc:
        warn.print(f"warning: {exc} (only tools/bench/rpc.py uses anvil)", markup=False)
        return
    reason = anvil.missing_reason()
    if reason is not None:
        warn.print(f"warning: {reason}", markup=False)
        return
    console.print(f"anvil {anvil.installed_version()} ready: tools/bench/rpc.py compares `missive rpc` with it",
                  markup=False)


def npm(console: Any, target: Path, what: str, install: Any) -> None:
    """Run one pinned npm install into ``target``, or fail in one line saying why."""
    console.print(f"installing {what} into {target} (npm)", markup=False)
    try:
        done = install(target)
    except FileNotFoundError:
        raise CliError("npm is not on PATH: install Node.js (with npm) first", EXIT_FAILED) from None
    except OSError as exc:
        raise CliError(f"cannot install into {target}: {exc.strerror or exc}", EXIT_FAILED) from exc
    if done.returncode != 0:
        lines = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()
        raise CliError(f"npm install of {what} failed: {lines[-1]}", EXIT_FAILED)


def run_status(args: argparse.Namespace) -> int:
    from missive.toolchain import solidity

    reason = solidity.missing_reason()
    if reason is not None:
        raise CliError(reason, EXIT_FAILED)
    console = make_console()
    console.print(f"solc-js {solidity.installed_version()} in {solidity.solc_dir()} (pinned "
                  f"{solidity.SOLC_VERSION})", markup=False)
    from missive.toolchain import zk

    zk_reason = zk.missing_reason()
    if zk_reason is not None:
        raise CliError(zk_reason, EXIT_FAILED)
    versions = ", ".join(f"{name} {version}" for name, version in zk.installed_versions().items())
    console.print(f"{versions} in {zk.zk_dir()}", markup=False)
    from missive.toolchain import anvil

    # not an error when missing: nothing but the RPC bench runs anvil
    anvil_reason = anvil.missing_reason()
    console.print(f"anvil {anvil.installed_version()} in {anvil.binary()}" if anvil_reason is None
                  else f"anvil: {anvil_reason}", markup=False)
    return EXIT_OK
