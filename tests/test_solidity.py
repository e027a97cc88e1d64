"""Solidity through solc-js (``missive toolchain install``), artifacts, and the issue-26 scenarios.

OpenZeppelin-style contracts in tests/solidity/: staking on SafeERC20 (refused at deploy: the
token's empty return data would count as success), the start of an ERC4626 vault (its decimals
read in the constructor: refused), a multisig that marks a call executed when it is only queued
(refused), a view call (refused); examples/solidity/: a plain ERC20 (no finding) and staking
written for messages, which works.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_cli_node import ADDRESS, REPO, fails, missive, ok

from missive.node import AsyncHazard, Node
from missive.toolchain import solidity
from missive.toolchain.check import check_contract
from missive.toolchain.compiler import CompileError, compile_source

pytestmark = pytest.mark.skipif(solidity.missing_reason() is not None,
                                reason=f"{solidity.missing_reason()} (.ci/run does)")

SOL = REPO / "examples" / "solidity"
OZ = REPO / "tests" / "solidity"
MESSAGE = re.compile(r"message   (0x[0-9a-f]{64})")


@pytest.fixture(scope="module")
def compiled() -> dict[str, object]:
    return {p.name: compile_source(p) for p in [*SOL.glob("*.sol"), *OZ.glob("*.sol")]}


def test_check_on_solidity_contracts(compiled: dict[str, object]) -> None:
    reports = {name: check_contract(c) for name, c in compiled.items()}  # type: ignore[arg-type]
    for name in ("Token.sol", "Staking.sol", "Pinger.sol"):  # a plain ERC20, and two written for messages
        assert reports[name].findings == (), (name, [f.line() for f in reports[name].findings])
    (safe,) = reports["SafeStaking.sol"].findings
    assert safe.kind == "empty-return-as-success" and safe.refused
    assert safe.source is not None and safe.source.startswith("SafeStaking.sol:") and \
        safe.function == "_callOptionalReturn"
    (vault,) = reports["Vault.sol"].findings
    assert vault.kind == "return-data-read" and vault.in_constructor and vault.refused
    assert [f.kind for f in reports["Reader.sol"].refused] == ["return-data-read"]
    (multisig,) = reports["Multisig.sol"].refused  # marks a transaction executed on a call that was only queued
    assert multisig.kind == "return-data-read" and multisig.function == "execute"


def test_safeerc20_staking_is_refused_at_deploy_and_the_message_staking_works(tmp_path: Path) -> None:
    with Node.init(tmp_path / "node", default_balance=10**24) as node:
        token = node.deploy(SOL / "Token.sol", "Tok", "TOK", 1000)
        with pytest.raises(AsyncHazard, match="empty-return-as-success@.*SafeStaking.sol:.*_callOptionalReturn"):
            node.deploy(OZ / "SafeStaking.sol", token.address)
        with pytest.raises(AsyncHazard, match="return-data-read@init:"):
            node.deploy(OZ / "Vault.sol", token.address)
        staking = node.deploy(SOL / "Staking.sol", token.address)
        # Without an allowance the token refuses: nothing is credited, and the chain says so.
        chain = staking.stake.send(100).follow()
        assert len(chain.failed) == 1 and not chain.ok
        assert node.explain(chain.failed[0][1].output, token.address) == \
            f"InsufficientAllowance(spender={staking.hex}, allowance=0, needed=100)"
        assert staking.staked(node.default.address) == 0
        token.approve.send(staking.address, 100).follow()
        assert staking.stake.send(100).follow().ok
        assert staking.staked(node.default.address) == 100 and token.balanceOf(staking.address) == 100
        bob = node.new_account("bob", balance=10**20)
        with pytest.raises(Exception, match=r"NotEnoughStaked\(staked=0, wanted=1\)"):
            staking.withdraw.send(1, sender=bob).reply()
        assert staking.withdraw.send(40).follow().ok
        assert staking.staked(node.default.address) == 60 and token.balanceOf(node.default.address) == 940
        sent = staking.withdraw.send(10)
        sent.follow()
        tree = node.trace(sent.id)
        assert [t.envelope.kind.name for t in tree.walk()] == ["CALL", "CALL", "REPLY"] and tree.failed == []


def test_solidity_pinger_asks_and_receives_its_reply(tmp_path: Path) -> None:
    with Node.init(tmp_path / "node", default_balance=10**24) as node:
        ponger = node.deploy(REPO / "examples" / "Ponger.vy", 42)
        pinger = node.deploy(SOL / "Pinger.sol")
        assert pinger.ping.send(ponger.address).follow().ok
        assert pinger.answers() == 1 and pinger.lastAnswer() == ponger.value()


def test_foundry_and_hardhat_artifacts(tmp_path: Path, compiled: dict[str, object]) -> None:
    token = compiled["Token.sol"]
    foundry = {"abi": token.abi, "bytecode": {"object": "0x" + token.bytecode.hex(), "sourceMap": ""},  # type: ignore[attr-defined]
               "deployedBytecode": {"object": "0x" + token.runtime_bytecode.hex()}}  # type: ignore[attr-defined]
    hardhat = {"_format": "hh-sol-artifact-1", "contractName": "Token", "abi": token.abi,  # type: ignore[attr-defined]
               "bytecode": "0x" + token.bytecode.hex(), "deployedBytecode": "0x" + token.runtime_bytecode.hex()}  # type: ignore[attr-defined]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "Token.json").write_text(json.dumps(foundry))
    (tmp_path / "Hard.json").write_text(json.dumps(hardhat))
    for path in (tmp_path / "out" / "Token.json", tmp_path / "Hard.json"):
        loaded = compile_source(path)
        assert loaded.language == "artifact" and loaded.name == "Token" and loaded.bytecode == token.bytecode  # type: ignore[attr-defined]
        assert loaded.runtime_bytecode == token.runtime_bytecode  # type: ignore[attr-defined]
    with Node.init(tmp_path / "node", default_balance=10**24) as node:
        deployed = node.deploy(tmp_path / "Hard.json", "A", "B", 7)
        assert deployed.totalSupply() == 7
        # solc --bin output (init code that patches an immutable before it returns) is told from runtime code.
        staking = compiled["Staking.sol"]
        (tmp_path / "Staking.bin").write_text(staking.bytecode.hex())  # type: ignore[attr-defined]
        (tmp_path / "Staking.abi").write_text(json.dumps(staking.abi))  # type: ignore[attr-defined]
        loaded = compile_source(tmp_path / "Staking.bin")
        assert loaded.bytecode == staking.bytecode and loaded.runtime_bytecode == staking.runtime_bytecode  # type: ignore[attr-defined]
        assert node.deploy(tmp_path / "Staking.bin", deployed.address).token() == deployed.hex
    (tmp_path / "Linked.json").write_text(json.dumps({"abi": [], "bytecode": "0x6000__$abc$__", "deployedBytecode": ""}))
    fails(missive("compile", str(tmp_path / "Linked.json"), cwd=tmp_path), 2, "unlinked library")
    (tmp_path / "Abi.json").write_text(json.dumps([]))
    fails(missive("compile", str(tmp_path / "Abi.json"), cwd=tmp_path), 2, "not a Foundry or Hardhat artifact")


def test_cli_compile_deploy_send_trace(tmp_path: Path) -> None:
    out = ok(missive("compile", str(SOL / "Token.sol"), cwd=tmp_path))
    assert "name:            Token (solidity)" in out and "error InsufficientBalance" in out
    ok(missive("check", str(SOL / "Token.sol"), cwd=tmp_path))
    proc = missive("check", str(OZ / "SafeStaking.sol"), cwd=tmp_path)
    assert proc.returncode == 1 and "empty-return-as-success@" in proc.stdout and "SafeStaking.sol:" in proc.stdout
    ok(missive("init", cwd=tmp_path))
    token = ok(missive("deploy", "-q", str(SOL / "Token.sol"), "T", "T", "1000", cwd=tmp_path)).strip()
    fails(missive("deploy", str(OZ / "SafeStaking.sol"), token, cwd=tmp_path), 2, "empty-return-as-success@",
          "--accept-async empty-return-as-success")
    staking = ok(missive("deploy", "-q", str(SOL / "Staking.sol"), token, cwd=tmp_path)).strip()
    assert ADDRESS.fullmatch(staking)
    out = ok(missive("send", staking, "stake", "5", cwd=tmp_path))  # no allowance: the token's run fails
    assert "1 failed" in out and f"InsufficientAllowance(spender={staking}, allowance=0, needed=5)" in out
    assert "missive trace" in out
    root = MESSAGE.search(out)
    assert root is not None
    proc = missive("trace", root.group(1)[:18], cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("call ") and "stake(5)" in lines[0]
    assert lines[1].startswith("└── call ") and "transferFrom(" in lines[1] and "InsufficientAllowance(" in lines[1]
    assert lines[2].startswith("    └── reply ") and lines[-1] == "3 message(s): 2 succeeded, 1 failed, 0 pending"
    data = json.loads(missive("trace", root.group(1), "--json", cwd=tmp_path).stdout)
    assert data["failed"] == 1 and data["root"]["children"][0]["reason"].startswith("InsufficientAllowance(")
    reply = data["root"]["children"][0]["children"][0]
    assert reply["kind"] == "reply" and reply["status"] == "success"
    out = ok(missive("receipt", reply["id"], cwd=tmp_path))  # the failure it carries, decoded
    assert "answer:    the request failed: InsufficientAllowance(" in out
    fails(missive("send", token, "transfer", staking, "5000", cwd=tmp_path), 1,
          "InsufficientBalance(from=")


def test_toolchain_status_names_the_pinned_version(tmp_path: Path) -> None:
    out = ok(missive("toolchain", "status", cwd=tmp_path))
    assert f"solc-js {solidity.SOLC_VERSION} in " in out


def test_solidity_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "Bad.sol"
    bad.write_text("// SPDX-License-Identifier: MIT\npragma solidity ^0.8.20;\ncontract Bad {\n  uint x = ;\n}\n")
    with pytest.raises(CompileError, match=r"Bad\.sol:4: ParserError"):
        compile_source(bad)
    fails(missive("compile", str(bad), cwd=tmp_path), 1, "Bad.sol:4: ParserError")
    two = tmp_path / "Two.sol"
    two.write_text("// SPDX-License-Identifier: MIT\npragma solidity ^0.8.20;\ncontract A {}\ncontract B {}\n")
    fails(missive("compile", str(two), cwd=tmp_path), 2, "2 deployable contracts (A, B)", "--name")
    assert ok(missive("compile", str(two), "--name", "B", "--json", cwd=tmp_path))
    monkeypatch.setenv("MISSIVE_SOLC_DIR", str(tmp_path / "nowhere"))  # the subprocess helper copies os.environ
    fails(missive("compile", str(SOL / "Token.sol"), cwd=tmp_path), 2, "solc-js is not installed",
          "missive toolchain install")


def test_solidity_for_prague_and_a_clear_refusal_for_osaka(tmp_path: Path) -> None:
    """solc-js 0.8.28 targets prague; osaka it does not know: the error names the version and the way round."""
    path = tmp_path / "Plus.sol"
    path.write_text("// SPDX-License-Identifier: MIT\npragma solidity ^0.8.20;\n"
                    "contract Plus { function f(uint x) external pure returns (uint) { return x + 1; } }\n")
    assert compile_source(path, evm_version="prague").runtime_bytecode
    with pytest.raises(CompileError, match=r"solc-js 0\.8\.28 cannot compile for 'osaka'.*artifact"):
        compile_source(path, evm_version="osaka")
    ok(missive("check", str(path), "--evm-version", "prague", cwd=tmp_path))
    fails(missive("compile", str(path), "--evm-version", "osaka", cwd=tmp_path), 2, "cannot compile for 'osaka'")
