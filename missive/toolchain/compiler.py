"""Turn contract sources into EVM bytecode a Missive actor can be deployed from.

Accepted:

* Vyper sources (``.vy``), compiled in-process with the ``vyper`` package's
  Python API for the Cancun EVM (the schedule Missive's VM implements), so a
  user needs no separate compiler binary;
* Solidity sources (``.sol``), compiled by solc-js (:mod:`missive.toolchain.solidity`;
  ``missive toolchain install`` installs it);
* Foundry (``out/X.sol/X.json``) and Hardhat (``artifacts/.../X.json``) artifacts,
  as they are: ABI, init code and runtime code;
* a file of hex bytecode (``.hex``/``.bin``/``.bin-runtime``).  ``NAME.runtime.bin``
  and ``.bin-runtime`` are runtime code; otherwise the content decides: init code
  (``solc --bin``) copies its runtime out of itself and returns it, and runtime
  code (``solc --bin-runtime``) is wrapped in a minimal init code that does that.
  The ABI is picked up from a sibling ``.abi``/``.json`` file when there is one.

Every failure is a :class:`CompileError` whose message says what was wrong and
where (file, line, byte offset), because the CLI shows it to a user verbatim.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final

import attrs

from missive.errors import BadInput, Failed

#: EVM version Vyper compiles for unless the source pins one with a pragma.
DEFAULT_EVM_VERSION: Final = "cancun"
#: EVM versions whose compiled code Missive's VM runs: Cancun's instruction set is a superset of
#: the older ones; Prague added no instruction (its BLS12-381 precompiles run here) and Osaka CLZ
#: and P256VERIFY, which run here too.  Whether a compiler can target one is its own matter: Vyper
#: 0.4.3 and solc-js 0.8.28 stop at prague (:func:`compile_source` says so for osaka).
SUPPORTED_EVM_VERSIONS: Final = ("london", "paris", "shanghai", "cancun", "prague", "osaka")

VYPER_SUFFIXES: Final = (".vy",)
SOLIDITY_SUFFIXES: Final = (".sol",)
ARTIFACT_SUFFIXES: Final = (".json",)
HEX_SUFFIXES: Final = (".hex", ".bin", ".bin-runtime")
LANGUAGES: Final = ("vyper", "solidity", "hex", "artifact")

_EVM_PRAGMA = re.compile(r"^\s*#\s*pragma\s+evm-version\s+(\S+)", re.MULTILINE)
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class CompileError(Failed):
    """A contract could not be turned into bytecode; the message says why.

    Raised as is when the compiler rejected the source (a user must fix the
    contract); see :class:`CompileInputError` for input that never got that far.
    """


class CompileInputError(CompileError, BadInput):
    """The input itself is unusable: missing file, unknown extension, malformed hex or ABI.

    Kept distinct so a CLI can tell "you pointed me at the wrong thing" (usage,
    exit 2) from "your contract does not compile" (exit 1).
    """


@attrs.frozen
class CompiledContract:
    """The result of compiling one contract.

    ``bytecode`` is what a deploy message carries (init code; for hex input
    it equals the runtime code, since nothing else is known), and
    ``runtime_bytecode`` is what ends up stored at the actor's address.
    """

    name: str
    bytecode: bytes
    runtime_bytecode: bytes
    abi: list[dict[str, Any]] = attrs.field(hash=False)
    source_path: Path | None = None
    #: "vyper", "solidity", "hex" or "artifact": where the bytecode came from.
    language: str = "vyper"
    #: runtime code offset -> source line (1-based), when the compiler gave a source map
    pc_lines: dict[int, int] | None = attrs.field(default=None, hash=False)


def parse_hex(text: str, *, what: str = "hex input") -> bytes:
    """Decode hex text with an optional ``0x`` prefix; whitespace is ignored.

    Unlike ``bytes.fromhex`` the error names the offending character's
    offset (and line/column for multi-line files), so a user can find a stray
    character in a long bytecode file.
    """
    stripped = text.strip()
    start = len(text) - len(text.lstrip())
    if stripped[:2] in ("0x", "0X"):
        start += 2
    digits: list[str] = []
    for offset in range(start, len(text)):
        char = text[offset]
        if char in _HEX_DIGITS:
            digits.append(char)
        elif not char.isspace():
            line = text.count("\n", 0, offset) + 1
            column = offset - (text.rfind("\n", 0, offset) + 1) + 1
            where = f"offset {offset}" + (f" (line {line}, column {column})" if "\n" in text.rstrip() else "")
            raise CompileInputError(f"{what}: invalid hex character {char!r} at {where}")
    if len(digits) % 2:
        raise CompileInputError(f"{what}: odd number of hex digits ({len(digits)}); the last byte is incomplete")
    return bytes.fromhex("".join(digits))


def compile_source(
    path_or_source: str | Path,
    *,
    name: str | None = None,
    evm_version: str | None = None,
    language: str | None = None,
) -> CompiledContract:
    """Compile a contract from a file or from source text.

    ``path_or_source`` is a file when it is a :class:`~pathlib.Path`, or a
    single-line string naming an existing file or ending in a known suffix;
    any other string is source text (Vyper, or hex if ``language="hex"`` or it
    is nothing but hex digits).  ``evm_version`` defaults to Cancun unless the
    source has an ``# pragma evm-version`` line (Vyper); it is passed to solc for
    Solidity, and ignored for bytecode and artifacts (already compiled).
    """
    if language is not None and language not in LANGUAGES:
        raise CompileInputError(f"unknown language {language!r} (expected one of {', '.join(LANGUAGES)})")
    if evm_version is not None and evm_version not in SUPPORTED_EVM_VERSIONS:
        raise CompileInputError(
            f"EVM version {evm_version!r} is not supported (Missive runs {', '.join(SUPPORTED_EVM_VERSIONS)})"
        )
    if _looks_like_path(path_or_source):
        return _compile_file(Path(path_or_source), name=name, evm_version=evm_version, language=language)
    source = str(path_or_source)
    if language == "hex" or (language is None and _is_hex_text(source)):
        code = parse_hex(source)
        if not code:
            raise CompileInputError("hex input: no bytecode")
        init, runtime = init_and_runtime(code)
        return CompiledContract(name=name or "contract", bytecode=init, runtime_bytecode=runtime, abi=[], language="hex")
    return _compile_vyper(source, name=name or "contract", path=None, evm_version=evm_version)


def _looks_like_path(value: str | Path) -> bool:
    if isinstance(value, Path):
        return True
    if "\n" in value or not value.strip():
        return False
    candidate = Path(value)
    known = VYPER_SUFFIXES + SOLIDITY_SUFFIXES + ARTIFACT_SUFFIXES + HEX_SUFFIXES
    return candidate.suffix.lower() in known or candidate.is_file()


def _is_hex_text(text: str) -> bool:
    body = text.strip()
    if body[:2] in ("0x", "0X"):
        body = body[2:]
    return bool(body) and all(c in _HEX_DIGITS or c.isspace() for c in body)


def _compile_file(path: Path, *, name: str | None, evm_version: str | None, language: str | None) -> CompiledContract:
    if not path.exists():
        raise CompileInputError(f"{path}: no such file")
    if not path.is_file():
        raise CompileInputError(f"{path}: not a file")
    suffix = path.suffix.lower()
    if language is None:
        if suffix in VYPER_SUFFIXES:
            language = "vyper"
        elif suffix in SOLIDITY_SUFFIXES:
            language = "solidity"
        elif suffix in ARTIFACT_SUFFIXES:
            language = "artifact"
        elif suffix in HEX_SUFFIXES:
            language = "hex"
        else:
            raise CompileInputError(
                f"{path}: unknown extension {path.suffix or '(none)'!r}; expected .vy (Vyper), .sol (Solidity), "
                ".json (a Foundry or Hardhat artifact) or .hex/.bin/.bin-runtime (hex bytecode)"
            )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CompileInputError(f"{path}: not UTF-8 text (byte offset {exc.start})") from exc
    except OSError as exc:
        raise CompileInputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if language == "vyper":
        return _compile_vyper(text, name=name or path.stem, path=path, evm_version=evm_version)
    if language == "solidity":
        return _compile_solidity(text, name=name, path=path, evm_version=evm_version)
    if language == "artifact":
        return _load_artifact(text, name=name, path=path)
    code = parse_hex(text, what=str(path))
    if not code:
        raise CompileInputError(f"{path}: no bytecode in file")
    base = _hex_base_name(path)
    if path.name.lower().endswith((".runtime.bin", ".runtime.hex", ".bin-runtime")):
        init, runtime = wrap_runtime(code), code
    else:
        init, runtime = init_and_runtime(code)
    return CompiledContract(
        name=name or base,
        bytecode=init,
        runtime_bytecode=runtime,
        abi=_sibling_abi(path, base),
        source_path=path,
        language="hex",
    )


def _hex_base_name(path: Path) -> str:
    """``Token.runtime.bin`` (as ``missive compile --out`` writes) names ``Token``."""
    stem = path.stem
    return stem[: -len(".runtime")] if stem.endswith(".runtime") and len(stem) > len(".runtime") else stem


def wrap_runtime(runtime: bytes) -> bytes:
    """Minimal init code that returns ``runtime``: PUSH2 len DUP1 PUSH1 10 PUSH0 CODECOPY PUSH0 RETURN."""
    if len(runtime) > 0xFFFF:
        raise CompileInputError(f"runtime code of {len(runtime)} bytes is too large to deploy")
    return b"\x61" + len(runtime).to_bytes(2, "big") + bytes.fromhex("80600a5f395ff3") + runtime


def embedded_runtime(code: bytes) -> bytes | None:
    """The runtime code that init code ``code`` copies out of itself and returns; None if it does not look like
    init code: a ``CODECOPY`` of a later part of itself to memory, then, in the same basic block, a ``RETURN`` of
    that memory (solc patches immutables in between; the copy returned here has them zero)."""
    from missive.toolchain.evmcode import blocks, disassemble, walk

    table = blocks(disassemble(code))
    for start in sorted(table):
        copied: list[tuple[int, int, int]] = []  # (memory offset, code offset, size)
        for ins, stack in walk(table[start]):  # (the stack just before `ins`)
            if ins.op == 0x39:  # CODECOPY(dest, offset, size)
                dest, offset, size = stack.peek(0), stack.peek(1), stack.peek(2)
                if dest is not None and dest >= 0 and offset is not None and size is not None and \
                        offset > ins.pc and 0 < size and offset + size <= len(code):
                    copied.append((dest, offset, size))
            elif ins.op == 0xF3 and copied:  # RETURN(offset, size)
                for dest, offset, size in copied:
                    if stack.peek(0) == dest and stack.peek(1) == size:
                        return code[offset: offset + size]
    return None


def init_and_runtime(code: bytes) -> tuple[bytes, bytes]:
    """(init code, runtime code) of bytecode of either kind, told apart by content."""
    runtime = embedded_runtime(code)
    if runtime is not None:
        return code, runtime
    return wrap_runtime(code), code


def _code_field(value: Any, what: str) -> bytes:
    if isinstance(value, dict):  # Foundry: {"object": "0x..", "sourceMap": ...}
        value = value.get("object")
    if not isinstance(value, str):
        raise CompileInputError(f"{what}: expected hex bytecode")
    if "__" in value:
        raise CompileInputError(f"{what}: the bytecode has unlinked library references (__$...$__); link them first")
    return parse_hex(value, what=what)


def _load_artifact(text: str, *, name: str | None, path: Path) -> CompiledContract:
    """A Foundry or Hardhat artifact: ``abi``, ``bytecode`` (init) and ``deployedBytecode`` (runtime)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CompileInputError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    if not isinstance(data, dict) or "bytecode" not in data:
        raise CompileInputError(f"{path}: not a Foundry or Hardhat artifact (no 'bytecode'); an ABI alone goes "
                                "beside a .bin file")
    abi = data.get("abi", [])
    if not isinstance(abi, list) or not all(isinstance(e, dict) for e in abi):
        raise CompileInputError(f"{path}: 'abi' must be a list of objects")
    init = _code_field(data["bytecode"], f"{path}: bytecode")
    runtime = _code_field(data["deployedBytecode"], f"{path}: deployedBytecode") if "deployedBytecode" in data else b""
    if not init:
        raise CompileInputError(f"{path}: empty bytecode (an interface or abstract contract cannot be deployed)")
    if not runtime:
        runtime = embedded_runtime(init) or b""
    contract_name = name or str(data.get("contractName") or path.stem)
    return CompiledContract(name=contract_name, bytecode=init, runtime_bytecode=runtime, abi=list(abi),
                            source_path=path, language="artifact")


def _compile_solidity(text: str, *, name: str | None, path: Path, evm_version: str | None = None) -> CompiledContract:
    from missive.toolchain import solidity

    target = evm_version or solidity.EVM_VERSION
    output = solidity.compile_standard_json(path, text, evm_version=target)
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if any("Invalid EVM version" in str(e.get("message", "")) for e in errors):
        raise CompileInputError(
            f"{path}: solc-js {solidity.installed_version() or solidity.SOLC_VERSION} cannot compile for {target!r} "
            f"(0.8.28 knows up to prague); Missive runs what a newer solc emits for {target} as a .bin/.hex or "
            "Foundry/Hardhat artifact"
        )
    if errors:
        first = errors[0]
        location = first.get("sourceLocation") or {}
        where = str(path)
        if location.get("file") == path.name and "start" in location:
            line = text.encode("utf-8")[: int(location["start"])].count(b"\n") + 1
            where = f"{path}:{line}"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise CompileError(f"{where}: {first.get('type', 'Error')}: {first.get('message', 'solc failed')}{more}")
    contracts = output.get("contracts", {}).get(path.name, {})
    deployable = {n: c for n, c in contracts.items() if c.get("evm", {}).get("bytecode", {}).get("object")}
    if name is not None:
        if name not in contracts:
            raise CompileInputError(f"{path}: no contract {name!r}; it defines {', '.join(contracts) or 'none'}")
        chosen = name
    elif path.stem in deployable:
        chosen = path.stem
    elif len(deployable) == 1:
        chosen = next(iter(deployable))
    else:
        raise CompileInputError(f"{path}: {len(deployable)} deployable contracts ({', '.join(deployable) or 'none'}); "
                                "pick one with --name")
    entry = contracts[chosen]
    evm = entry.get("evm", {})
    init = _code_field(evm.get("bytecode", {}).get("object", ""), f"{path}: {chosen}")
    if not init:
        raise CompileInputError(f"{path}: {chosen} is abstract or an interface: no bytecode to deploy")
    runtime = _code_field(evm.get("deployedBytecode", {}).get("object", ""), f"{path}: {chosen}")
    source_index = next((i for i, unit in enumerate(sorted(output.get("sources", {}))) if unit == path.name), 0)
    index = output.get("sources", {}).get(path.name, {}).get("id", source_index)
    lines = solidity.pc_lines(runtime, evm.get("deployedBytecode", {}).get("sourceMap", ""), text, int(index))
    return CompiledContract(name=chosen, bytecode=init, runtime_bytecode=runtime, abi=list(entry.get("abi", [])),
                            source_path=path, language="solidity", pc_lines=lines or None)


def _sibling_abi(path: Path, base: str) -> list[dict[str, Any]]:
    """The ABI from ``STEM.abi``, ``STEM.abi.json`` or ``STEM.json`` next to ``path``, else []."""
    stems = dict.fromkeys([path.stem, base])
    for stem in stems:
        for suffix in (".abi", ".abi.json", ".json"):
            candidate = path.with_name(stem + suffix)
            if candidate.is_file():
                return _load_abi(candidate)
    return []


def _load_abi(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CompileInputError(f"{path}: cannot read ABI: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise CompileInputError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    if isinstance(data, dict) and "abi" in data:  # solc/hardhat/foundry artifacts
        data = data["abi"]
    if not isinstance(data, list) or not all(isinstance(entry, dict) for entry in data):
        raise CompileInputError(f"{path}: an ABI must be a JSON list of objects (or an object with an 'abi' list)")
    return data


def _vyper_version() -> str:
    import vyper

    return str(getattr(vyper, "__version__", "?"))


def _compile_vyper(source: str, *, name: str, path: Path | None, evm_version: str | None) -> CompiledContract:
    # Imported here: vyper takes a while to import and most commands never compile.
    from vyper.compiler import compile_from_file_input
    from vyper.compiler.input_bundle import FilesystemInputBundle
    from vyper.compiler.settings import Settings
    from vyper.evm.opcodes import EVM_VERSIONS
    from vyper.exceptions import VyperException

    pragma = _EVM_PRAGMA.search(source)
    wanted = pragma.group(1) if pragma is not None else evm_version
    if wanted in SUPPORTED_EVM_VERSIONS and wanted not in EVM_VERSIONS:
        raise CompileInputError(
            f"Vyper {_vyper_version()} cannot compile for {wanted!r} (it knows {', '.join(EVM_VERSIONS)}); Missive "
            f"runs what a newer Vyper emits for {wanted} as a .bin/.hex file"
        )
    if pragma is not None:
        pinned = pragma.group(1)
        if pinned not in SUPPORTED_EVM_VERSIONS:
            where = f"{path}" if path else "source"
            raise CompileError(
                f"{where}: '#pragma evm-version {pinned}' is not supported "
                f"(Missive runs {', '.join(SUPPORTED_EVM_VERSIONS)})"
            )
        if evm_version is not None and evm_version != pinned:
            raise CompileInputError(f"requested EVM version {evm_version!r} but the source pins {pinned!r}")
        settings = Settings()  # the pragma decides; passing both would be a conflict for vyper
    else:
        settings = Settings(evm_version=evm_version or DEFAULT_EVM_VERSION)

    contract_path = path if path is not None else Path(f"{name}.vy")
    search_paths = [contract_path.parent.resolve(), Path.cwd()] if path is not None else [Path.cwd()]
    bundle = FilesystemInputBundle(search_paths)
    try:
        if path is not None:
            file_input = bundle.load_file(path)
        else:
            from vyper.compiler.input_bundle import FileInput

            file_input = FileInput(source_id=-1, contents=source, path=contract_path, resolved_path=contract_path)
        output = compile_from_file_input(
            file_input,
            input_bundle=bundle,
            settings=settings,
            output_formats=["bytecode", "bytecode_runtime", "abi", "source_map"],
        )
    except VyperException as exc:
        raise CompileError(f"Vyper {type(exc).__name__}: {str(exc).rstrip()}") from exc
    except Exception as exc:  # vyper's internal errors are not VyperExceptions
        raise CompileError(f"Vyper failed on {contract_path}: {type(exc).__name__}: {exc}") from exc
    return CompiledContract(
        name=name,
        bytecode=bytes.fromhex(output["bytecode"].removeprefix("0x")),
        runtime_bytecode=bytes.fromhex(output["bytecode_runtime"].removeprefix("0x")),
        abi=list(output["abi"]),
        source_path=path,
        language="vyper",
        pc_lines={int(pc): int(pos[0]) for pc, pos in output["source_map"]["pc_pos_map"].items() if pos},
    )
