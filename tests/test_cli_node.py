"""The node commands as a user runs them: ``python -m missive ...`` in subprocesses on one node dir.

Exit statuses: 0 ok, 1 the handler failed (revert reason printed), 2 bad input (one line, no traceback).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOKEN = REPO / "examples" / "Token.vy"
ADDRESS = re.compile(r"0x[0-9a-f]{40}\b")
MESSAGE_ID = re.compile(r"0x[0-9a-f]{64}\b")


def missive(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["COLUMNS"] = "80"
    env.pop("MISSIVE_DIR", None)
    return subprocess.run([sys.executable, "-m", "missive", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


def fails(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.startswith("missive")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-node")


def test_without_a_node(work: Path) -> None:
    fails(missive("ledger", cwd=work), 3, "no Missive node at .missive", "missive init")
    fails(missive("account", "list", "--dir", str(work / "nowhere"), cwd=work), 3, "no Missive node")


def test_token_flow(work: Path) -> None:
    out = ok(missive("init", cwd=work))
    default = ADDRESS.search(out)
    assert default is not None and "default account" in out
    fails(missive("init", cwd=work), 2, "already exists")

    bob = ADDRESS.findall(ok(missive("account", "new", "bob", "--fund", "1e18", cwd=work)))[0]
    listing = ok(missive("account", "list", cwd=work))
    assert re.search(rf"default\s+{default.group(0)}\s+1000000000000000000000000\b", listing)
    assert re.search(rf"bob\s+{bob}\s+1000000000000000000\b", listing)
    fails(missive("account", "new", "bob", cwd=work), 2, "already exists")

    out = ok(missive("deploy", str(TOKEN), "Tok", "TOK", "1_000_000", cwd=work))
    assert "deployed  Token at" in out
    token = ADDRESS.findall(out)[-1]

    # by name (ABI registered at deploy), addresses by account name or 0x
    out = ok(missive("send", token, "transfer", "bob", "10", cwd=work))
    assert MESSAGE_ID.search(out) and "status:    success" in out and "result:    true" in out
    assert f"event:     Transfer(sender={default.group(0)}, receiver={bob}, value=10)" in out
    # by signature, without waiting: the message waits in the token's inbox
    out = ok(missive("send", token, "transfer(address,uint256)", bob, "0x5", "--no-wait", cwd=work))
    message = MESSAGE_ID.search(out)
    assert message is not None and "status" not in out
    inbox = ok(missive("inbox", token, cwd=work))
    assert "1 message(s) waiting" in inbox and f"transfer({bob}, 5)" in inbox
    assert "pending" in ok(missive("receipt", message.group(0)[:20], cwd=work))

    # a query runs the node (handling the waiting transfer first) and prints the answer
    assert ok(missive("query", token, "balanceOf", "bob", cwd=work)).strip() == "15"
    assert ok(missive("query", token, "balanceOf(address)", bob, "--returns", "uint256", "--from", "bob",
                      cwd=work)).strip() == "15"
    assert ok(missive("query", token, "name", cwd=work)).strip() == "Tok"
    assert "0 message(s) waiting" in ok(missive("inbox", token, cwd=work))
    receipt = ok(missive("receipt", message.group(0), cwd=work))
    assert "status:    success" in receipt and f"payload:   transfer({bob}, 5)" in receipt

    # a revert: exit 1 with the reason
    proc = missive("send", token, "transfer", bob, "10**30", cwd=work)
    fails(proc, 2, "is not an integer")
    proc = missive("send", token, "transfer", bob, "1e30", cwd=work)
    fails(proc, 1, "transfer(address,uint256) reverted: balance too low")
    assert "reason:    balance too low" in proc.stdout

    ledger = ok(missive("ledger", cwd=work))
    assert "genesis  account" in ledger and "deploy" in ledger and "-> revert" in ledger
    assert f"transfer({bob}, 5)" in ledger and "answers" in ledger
    last = ok(missive("ledger", "--limit", "2", cwd=work)).splitlines()
    assert len(last) == 3 and "receipt" in last[1] and last[2].startswith("(2 of ")
    handled = ok(missive("inbox", "default", "--handled", cwd=work))
    assert "reply" in handled and "answers" in handled

    # bad input: exit 2, one line naming the problem, nothing sent
    fails(missive("send", token, "transfer", "carol", "1", cwd=work), 2, "'carol': not an address")
    fails(missive("send", token, "transfer", "0x1234", "1", cwd=work), 2, "'0x1234' is not an address")
    fails(missive("send", token, "transfer", "bob", cwd=work), 2, "expected 2 arguments (address, uint256), got 1")
    fails(missive("send", token, "transfre", "bob", "1", cwd=work), 2, "has no function 'transfre'", "transfer")
    fails(missive("send", token, "transfer", "bob", "1", "--from", "carol", cwd=work), 2, "no key 'carol'")
    fails(missive("send", token, "transfer", "bob", "1", "--value", "5", cwd=work), 2, "cannot receive value")
    fails(missive("send", bob, "f(uint256)", "1", cwd=work), 2, "unknown contract")
    fails(missive("query", token, "balanceOf(uint7)", "1", cwd=work), 2, "'uint7' is not an ABI type")
    fails(missive("receipt", "0xzz", cwd=work), 2, "not a message id")
    fails(missive("deploy", str(TOKEN), "Tok", cwd=work), 2, "expected 3 arguments")
    fails(missive("deploy", str(work / "Missing.vy"), cwd=work), 2, "no such file")
    listing = ok(missive("account", "list", "--contracts", cwd=work))
    assert re.search(rf"\[Token\]\s+{token}", listing)


def test_unknown_abi_and_quiet_deploy(work: Path) -> None:
    source = work / "Adder.vy"
    source.write_text(
        "# pragma version ^0.4.0\n"
        "total: public(uint256)\n\n"
        "@external\n"
        "def add(xs: DynArray[uint256, 4], flag: bool) -> uint256:\n"
        "    for x: uint256 in xs:\n"
        "        self.total += x\n"
        "    assert not flag, \"flagged\"\n"
        "    return self.total\n"
    )
    node = work / "second"
    ok(missive("init", "--dir", str(node), cwd=work))
    adder = ok(missive("deploy", "-q", str(source), "--dir", str(node), cwd=work)).strip()
    assert ADDRESS.fullmatch(adder)
    (node / "abis.msgpack").unlink()  # forget the ABI: only signatures work now
    fails(missive("send", adder, "add", "[1]", "false", "--dir", str(node), cwd=work), 2, "no ABI known")
    out = ok(missive("send", adder, "add(uint256[],bool)", "[1, 2,3]", "false", "--dir", str(node), cwd=work))
    assert "status:    success" in out and "result:    0x" in out
    fails(missive("send", adder, "add(uint256[],bool)", "[1]", "true", "--dir", str(node), cwd=work), 1, "flagged")
    raw = ok(missive("query", adder, "total()", "--dir", str(node), cwd=work)).strip()
    assert raw == "0x" + (6).to_bytes(32, "big").hex()
    assert ok(missive("query", adder, "total()(uint256)", "--dir", str(node), cwd=work)).strip() == "6"
