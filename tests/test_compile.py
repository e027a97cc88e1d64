"""Compiling contracts: Vyper through its Python API, Solidity as hex, and the errors a user meets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from missive.toolchain.compiler import (
    CompiledContract,
    CompileError,
    CompileInputError,
    compile_source,
    parse_hex,
    wrap_runtime,
)
from missive.vm import execute

COUNTER = """\
# pragma version ^0.4.0
count: public(uint256)

@external
def bump(by: uint256) -> uint256:
    self.count += by
    return self.count
"""

SELECTOR_COUNT = bytes.fromhex("06661abd")  # count()
SELECTOR_BUMP = bytes.fromhex("b20eb4c4")  # bump(uint256)


@pytest.fixture
def counter(tmp_path: Path) -> Path:
    path = tmp_path / "Counter.vy"
    path.write_text(COUNTER)
    return path


def test_compile_vyper_file(counter: Path) -> None:
    contract = compile_source(counter)
    assert isinstance(contract, CompiledContract)
    assert contract.name == "Counter"
    assert contract.source_path == counter
    assert contract.language == "vyper"
    assert contract.runtime_bytecode and contract.runtime_bytecode in contract.bytecode
    assert {entry["name"] for entry in contract.abi} == {"count", "bump"}
    # Cancun output: Vyper uses PUSH0 (0x5f), which pre-Shanghai targets lack.
    assert 0x5F in contract.runtime_bytecode


def test_compiled_runtime_runs_on_the_vm(counter: Path) -> None:
    contract = compile_source(str(counter))
    bumped = execute(
        contract.runtime_bytecode,
        data=SELECTOR_BUMP + (5).to_bytes(32, "big"),
        storage={0: 10},
    )
    assert bumped.success, bumped.error
    assert int.from_bytes(bumped.output, "big") == 15
    assert bumped.storage_writes == {0: 15}
    read = execute(contract.runtime_bytecode, data=SELECTOR_COUNT, storage={0: 15}, is_static=True)
    assert read.success and int.from_bytes(read.output, "big") == 15


def test_compile_vyper_source_text() -> None:
    contract = compile_source(COUNTER, name="Inline")
    assert contract.name == "Inline" and contract.source_path is None and contract.abi


def test_evm_version_pragma_and_option(tmp_path: Path) -> None:
    path = tmp_path / "Old.vy"
    path.write_text("# pragma evm-version shanghai\n" + COUNTER)
    assert compile_source(path).runtime_bytecode
    with pytest.raises(CompileError, match="pins 'shanghai'"):
        compile_source(path, evm_version="cancun")
    with pytest.raises(CompileInputError, match="not supported"):
        compile_source(COUNTER, evm_version="byzantium")
    path.write_text("# pragma evm-version istanbul\n" + COUNTER)
    with pytest.raises(CompileError, match="istanbul"):
        compile_source(path)


def test_prague_compiles_and_osaka_is_refused_naming_the_compiler(tmp_path: Path) -> None:
    """The VM runs Osaka's additions, but Vyper 0.4.3 cannot target osaka: say so, and what to do instead."""
    assert compile_source(COUNTER, evm_version="prague").runtime_bytecode
    with pytest.raises(CompileInputError, match=r"Vyper .* cannot compile for 'osaka' .*\.bin/\.hex"):
        compile_source(COUNTER, evm_version="osaka")
    path = tmp_path / "New.vy"
    path.write_text("# pragma evm-version osaka\n" + COUNTER)
    with pytest.raises(CompileInputError, match="cannot compile for 'osaka'"):
        compile_source(path)


def test_hex_file_with_prefix_whitespace_and_sibling_abi(tmp_path: Path) -> None:
    abi = [{"type": "function", "name": "f", "inputs": [], "outputs": [], "stateMutability": "view"}]
    (tmp_path / "Token.bin").write_text("0x6001\n  6000 55\n00\n")
    (tmp_path / "Token.abi").write_text(json.dumps(abi))
    contract = compile_source(tmp_path / "Token.bin")
    # Runtime code by content (it does not copy and return code of its own): deployed through a minimal init code.
    assert contract.runtime_bytecode == bytes.fromhex("600160005500")
    assert contract.bytecode == wrap_runtime(contract.runtime_bytecode)
    assert contract.abi == abi and contract.name == "Token" and contract.language == "hex"


def test_hex_file_without_abi_and_artifact_abi(tmp_path: Path) -> None:
    (tmp_path / "Plain.hex").write_text("6001")
    assert compile_source(tmp_path / "Plain.hex").abi == []
    # What `missive compile --out` writes is accepted back; a solc-style artifact too.
    (tmp_path / "Tok.runtime.bin").write_text("0x00")
    (tmp_path / "Tok.abi.json").write_text("[]")
    assert compile_source(tmp_path / "Tok.runtime.bin").name == "Tok"
    (tmp_path / "Art.bin").write_text("0x00")
    (tmp_path / "Art.json").write_text(json.dumps({"abi": [{"type": "fallback"}]}))
    assert compile_source(tmp_path / "Art.bin").abi == [{"type": "fallback"}]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CompileInputError, match="no such file"):
        compile_source(tmp_path / "Nope.vy")
    with pytest.raises(CompileInputError, match="no such file"):
        compile_source(str(tmp_path / "Nope.bin"))


def test_vyper_syntax_error_shows_message_and_line(tmp_path: Path) -> None:
    path = tmp_path / "Broken.vy"
    path.write_text("count: uint256\n\n@external\ndef f()\n    pass\n")
    with pytest.raises(CompileError) as info:
        compile_source(path)
    assert not isinstance(info.value, CompileInputError)
    message = str(info.value)
    assert "SyntaxException: expected ':'" in message and "line 4" in message and "Broken.vy" in message


def test_vyper_semantic_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "Undeclared.vy"
    path.write_text("@external\ndef f() -> uint256:\n    return self.missing\n")
    with pytest.raises(CompileError, match=r"(?s)'missing' has not been declared.*line 3"):
        compile_source(path)


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "Token.rs"
    path.write_text("contract Token {}")
    with pytest.raises(CompileInputError, match=r"unknown extension '\.rs'"):
        compile_source(path)


def test_bad_hex_names_the_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.hex"
    path.write_text("0x6001\n60zz\n")
    with pytest.raises(CompileInputError, match=r"invalid hex character 'z' at offset 9 \(line 2, column 3\)"):
        compile_source(path)
    (tmp_path / "odd.bin").write_text("0x600")
    with pytest.raises(CompileInputError, match="odd number of hex digits"):
        compile_source(tmp_path / "odd.bin")
    (tmp_path / "empty.bin").write_text("0x\n")
    with pytest.raises(CompileInputError, match="no bytecode"):
        compile_source(tmp_path / "empty.bin")


def test_bad_sibling_abi(tmp_path: Path) -> None:
    (tmp_path / "X.bin").write_text("00")
    (tmp_path / "X.abi").write_text("{not json")
    with pytest.raises(CompileInputError, match="invalid JSON at line 1"):
        compile_source(tmp_path / "X.bin")
    (tmp_path / "X.abi").write_text('{"a": 1}')
    with pytest.raises(CompileInputError, match="an ABI must be a JSON list"):
        compile_source(tmp_path / "X.bin")


def test_parse_hex() -> None:
    assert parse_hex("0X  aB cd\n") == b"\xab\xcd"
    assert parse_hex("") == b""
    with pytest.raises(CompileInputError, match=r"--code: invalid hex character 'g' at offset 4$"):
        parse_hex("0x12g4", what="--code")
