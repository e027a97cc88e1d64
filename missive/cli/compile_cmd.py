"""``missive compile FILE``: Vyper or Solidity source, a Foundry/Hardhat artifact, or hex bytecode
(init or runtime code) to init code, runtime code and ABI.

Prints the result, or with ``--out DIR`` writes ``NAME.bin`` (deploy code),
``NAME.runtime.bin`` and ``NAME.abi.json`` — the same layout ``compile``
accepts back as hex input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from missive.cli.common import EXIT_FAILED, EXIT_OK, CliError, make_console, print_json
from missive.toolchain.compiler import SUPPORTED_EVM_VERSIONS, CompiledContract, CompileError, CompileInputError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "compile",
        help="compile a Vyper or Solidity contract (or load an artifact or bytecode)",
        description="Compile a Vyper .vy or Solidity .sol file (solc-js: `missive toolchain install`) for the Cancun "
        "EVM (or --evm-version), or load a Foundry/Hardhat .json artifact or a .hex/.bin file of init or runtime bytecode (told apart by "
        "name, X.runtime.bin or .bin-runtime, and by content; its ABI is read from a sibling .abi/.json file).",
    )
    parser.add_argument("file", type=Path, metavar="FILE",
                        help=".vy or .sol source, a .json artifact, or .hex/.bin/.bin-runtime bytecode")
    parser.add_argument("--out", type=Path, metavar="DIR", help="write NAME.bin, NAME.runtime.bin, NAME.abi.json here")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--name", help="contract name (default: the file's stem)")
    parser.add_argument(
        "--evm-version",
        choices=SUPPORTED_EVM_VERSIONS,
        help="target EVM version (default: cancun, or a Vyper source's pragma); Vyper 0.4.3 and solc-js 0.8.28 know "
        "up to prague, not osaka (Osaka bytecode from a newer compiler runs: give its .bin or artifact)",
    )
    parser.set_defaults(handler=run)


def contract_json(contract: CompiledContract) -> dict[str, Any]:
    return {
        "name": contract.name,
        "language": contract.language,
        "source_path": str(contract.source_path) if contract.source_path else None,
        "bytecode": "0x" + contract.bytecode.hex(),
        "bytecode_size": len(contract.bytecode),
        "runtime_bytecode": "0x" + contract.runtime_bytecode.hex(),
        "runtime_size": len(contract.runtime_bytecode),
        "abi": contract.abi,
    }


def write_outputs(contract: CompiledContract, out: Path) -> list[Path]:
    """Write the three artefacts into ``out`` (created if needed) and return their paths."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        files = [
            (out / f"{contract.name}.bin", "0x" + contract.bytecode.hex() + "\n"),
            (out / f"{contract.name}.runtime.bin", "0x" + contract.runtime_bytecode.hex() + "\n"),
            (out / f"{contract.name}.abi.json", json.dumps(contract.abi, indent=2) + "\n"),
        ]
        for path, text in files:
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"--out {out}: cannot write: {exc.strerror or exc}") from exc
    return [path for path, _ in files]


def _signature(entry: dict[str, Any]) -> str:
    kind = entry.get("type", "function")
    inputs = ", ".join(f"{i.get('type', '?')} {i.get('name', '')}".strip() for i in entry.get("inputs", []))
    outputs = ", ".join(o.get("type", "?") for o in entry.get("outputs", []))
    text = f"{kind} {entry.get('name', '')}({inputs})".replace(" (", "(")
    if outputs:
        text += f" -> {outputs}"
    mutability = entry.get("stateMutability")
    if mutability and mutability != "nonpayable":
        text += f" [{mutability}]"
    return text


def run(args: argparse.Namespace) -> int:
    from missive.toolchain.compiler import compile_source

    try:
        contract = compile_source(args.file, name=args.name, evm_version=args.evm_version)
    except CompileInputError as exc:
        raise CliError(str(exc)) from exc
    except CompileError as exc:
        raise CliError(str(exc), EXIT_FAILED) from exc
    written = write_outputs(contract, args.out) if args.out is not None else []
    if args.json:
        data = contract_json(contract)
        if written:
            data["files"] = [str(p) for p in written]
        print_json(data)
        return EXIT_OK
    console = make_console()
    console.print(f"name:            {contract.name} ({contract.language})", markup=False)
    if contract.source_path is not None:
        console.print(f"source:          {contract.source_path}", markup=False)
    console.print(f"bytecode size:   {len(contract.bytecode)} bytes (deploy)", markup=False)
    console.print(f"runtime size:    {len(contract.runtime_bytecode)} bytes", markup=False)
    if written:
        for path in written:
            console.print(f"wrote            {path}", markup=False)
        return EXIT_OK
    console.print(f"runtime:         0x{contract.runtime_bytecode.hex()}", markup=False)
    if contract.abi:
        console.print("abi:", markup=False)
        for entry in contract.abi:
            console.print(f"  {_signature(entry)}", markup=False)
        console.print(json.dumps(contract.abi), markup=False)
    else:
        console.print("abi:             (none)", markup=False)
    return EXIT_OK
