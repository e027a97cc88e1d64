"""``missive check`` and the deploy check without solc: Vyper, bytecode, the examples.

Solidity contracts (OpenZeppelin-style SafeERC20, an ERC4626 vault, a plain ERC20) are in
tests/test_solidity.py, which needs solc-js.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli_node import REPO, fails, missive, ok

from missive.node import AsyncHazard, Node
from missive.toolchain.asm import assemble
from missive.toolchain.check import check_code, check_contract
from missive.toolchain.compiler import compile_source, embedded_runtime, init_and_runtime, wrap_runtime

EXAMPLES = sorted((REPO / "examples").glob("*.vy"))

#: A Vyper contract written for Ethereum: it reads another contract's answer at once.
READS_BALANCE = """
# pragma version ^0.4.0
interface Token:
    def balanceOf(who: address) -> uint256: view

seen: public(uint256)

@external
def look(token: address, who: address):
    self.seen = staticcall Token(token).balanceOf(who)
"""

#: Asks for a reply (max_outsize) with nothing to receive it.
ASKS_WITHOUT_ON_REPLY = """
# pragma version ^0.4.0
@external
def poke(target: address):
    nothing: Bytes[32] = raw_call(target, method_id("f()"), max_outsize=32, gas=100_000)
"""


#: Vyper's factory example, as written for Ethereum: it registers an exchange by asking it for its token.
FACTORY = """
# pragma version ^0.4.0
interface Exchange:
    def token() -> address: view

exchange_codehash: public(bytes32)
exchanges: public(HashMap[address, address])

@deploy
def __init__(codehash: bytes32):
    self.exchange_codehash = codehash

@external
def register():
    assert msg.sender.codehash == self.exchange_codehash
    token: address = staticcall Exchange(msg.sender).token()
    self.exchanges[token] = msg.sender
"""


def test_the_factory_example_is_refused_at_deploy(tmp_path: Path) -> None:
    """Before: it deployed, and every register() reverted (the token() answer is empty): it registered nothing."""
    source = tmp_path / "Factory.vy"
    source.write_text(FACTORY)
    with Node.init(tmp_path / "node", default_balance=10**24) as node:
        with pytest.raises(AsyncHazard, match=r"return-data-read@\d+: Factory\.vy:\d+, in register"):
            node.deploy(source, bytes(32))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_passes_the_deploy_check(path: Path) -> None:
    report = check_contract(compile_source(path))
    assert report.refused == (), [f.line() for f in report.findings]
    if path.name in ("Pinger.vy", "Escrow.vy"):  # written for messages: they read the empty answer knowingly
        assert report.has_on_reply and all(f.kind == "return-data-read" for f in report.findings)
        assert all(f.source and f.source.startswith(path.name + ":") for f in report.findings)
    if path.name in ("Token.vy", "Counter.vy", "Ponger.vy", "Ticker.vy"):
        assert report.findings == ()


def test_a_synchronous_read_is_found_with_its_line_and_function(tmp_path: Path) -> None:
    source = tmp_path / "Reads.vy"
    source.write_text(READS_BALANCE)
    (finding,) = check_contract(compile_source(source)).findings
    assert finding.kind == "return-data-read" and finding.refused
    assert finding.function == "look" and finding.source is not None and finding.source.startswith("Reads.vy:")
    other = tmp_path / "Asks.vy"
    other.write_text(ASKS_WITHOUT_ON_REPLY)
    kinds = {f.kind for f in check_contract(compile_source(other)).refused}
    assert kinds and kinds <= {"return-data-read", "reply-without-onreply"}


def test_system_contract_and_precompile_calls_are_not_findings() -> None:
    ticker = check_contract(compile_source(REPO / "examples" / "Ticker.vy"))  # schedule(), now(), currentMessageId()
    assert ticker.findings == ()
    # STATICCALL to the sha256 precompile, then RETURNDATASIZE: synchronous, fine.
    code = bytes.fromhex("5f5f5f5f6002" "5afa" "3d" "00")
    assert check_code(code).findings == ()
    # The same to an address from calldata is a query read at once.
    code = bytes.fromhex("5f5f5f5f5f35" "5afa" "3d" "00")
    assert [f.kind for f in check_code(code).findings] == ["return-data-read"]


def test_a_read_after_a_helpers_return_is_found() -> None:
    """solc's internal functions: the code after a call jumps into a helper, which returns to an address its
    caller pushed before; the return data is read there.  The stack goes along the jumps, so it is found."""
    code = assemble(
        """
        PUSH0 PUSH0 PUSH0 PUSH0 PUSH0 PUSH0 CALLDATALOAD GAS CALL POP
        PUSH @back PUSH @helper JUMP
        helper: PUSH 1 POP JUMP
        back: RETURNDATASIZE PUSH0 MSTORE STOP
        """
    )
    assert [f.kind for f in check_code(code).findings] == ["return-data-read"]


def test_findings_in_bare_bytecode_name_their_function(tmp_path: Path) -> None:
    """Without a source map, a finding names the external function it is in: by selector, or by name
    when an ABI sits beside the bytecode."""
    contract = compile_source(READS_BALANCE, name="Reader")
    runtime = tmp_path / "Reader.runtime.bin"
    runtime.write_text(contract.runtime_bytecode.hex())
    (finding,) = check_contract(compile_source(runtime)).findings
    assert finding.source is None and finding.function == "0x1554ad5d"  # look(address,address)
    (tmp_path / "Reader.abi").write_text(json.dumps(contract.abi))
    (finding,) = check_contract(compile_source(runtime)).findings
    assert finding.function == "look(address,address)"
    assert finding.line().startswith("return-data-read@")
    assert "offset " in finding.where and "in look(address,address)" in finding.where


def test_init_and_runtime_code_are_told_apart_by_content() -> None:
    counter = compile_source(REPO / "examples" / "Counter.vy")
    assert embedded_runtime(counter.bytecode) == counter.runtime_bytecode
    assert embedded_runtime(counter.runtime_bytecode) is None
    assert init_and_runtime(counter.bytecode) == (counter.bytecode, counter.runtime_bytecode)
    assert init_and_runtime(counter.runtime_bytecode) == (wrap_runtime(counter.runtime_bytecode),
                                                          counter.runtime_bytecode)


def test_runtime_bytecode_in_a_bin_file_deploys_with_its_code(tmp_path: Path) -> None:
    """Before: a .bin of runtime code was sent as init code; the deploy "succeeded" with no code."""
    counter = compile_source(REPO / "examples" / "Counter.vy")
    (tmp_path / "Counter.bin").write_text("0x" + counter.runtime_bytecode.hex())
    (tmp_path / "Counter.abi").write_text(json.dumps(counter.abi))
    (tmp_path / "Init.bin").write_text("0x" + counter.bytecode.hex())
    (tmp_path / "Init.abi").write_text(json.dumps(counter.abi))
    with Node.init(tmp_path / "node", default_balance=10**24) as node:
        for name in ("Counter.bin", "Init.bin"):
            contract = node.deploy(tmp_path / name, node.default.address)
            assert node.account(contract.address).code_hash  # type: ignore[union-attr]
            assert contract.count() == 0


def test_python_deploy_refuses_until_the_finding_is_named(tmp_path: Path) -> None:
    source = tmp_path / "Reads.vy"
    source.write_text(READS_BALANCE)
    with Node.init(tmp_path / "node", default_balance=10**24) as node:
        with pytest.raises(AsyncHazard, match=r"return-data-read@\d+: Reads\.vy:\d+, in look") as caught:
            node.deploy(source)
        assert "--accept-async return-data-read" in str(caught.value) and "SOLIDITY.md" in str(caught.value)
        assert node.deploy(source, accept_async=["return-data-read"]).seen() == 0


def test_cli_check_and_deploy(tmp_path: Path) -> None:
    source = tmp_path / "Reads.vy"
    source.write_text(READS_BALANCE)
    out = ok(missive("check", str(REPO / "examples" / "Token.vy"), cwd=tmp_path))
    assert "no findings" in out
    proc = missive("check", str(source), cwd=tmp_path)
    assert proc.returncode == 1 and "refused  return-data-read@" in proc.stdout and "in look" in proc.stdout
    assert "--accept-async return-data-read" in proc.stdout
    data = json.loads(missive("check", str(source), "--json", cwd=tmp_path).stdout)
    assert data["refused"] == 1 and data["findings"][0]["kind"] == "return-data-read"
    fails(missive("check", str(tmp_path / "none.vy"), cwd=tmp_path), 2, "no such file")
    fails(missive("check", str(REPO / "README.md"), cwd=tmp_path), 2, "unknown extension")
    ok(missive("init", cwd=tmp_path))
    fails(missive("deploy", str(source), cwd=tmp_path), 2, "would change meaning silently", "return-data-read@",
          "--accept-async return-data-read", "SOLIDITY.md")
    proc = missive("deploy", str(source), "--accept-async", "return-data-read", cwd=tmp_path)
    assert proc.returncode == 0 and "deployed  Reads at" in proc.stdout and "accepted:  return-data-read@" in proc.stderr
