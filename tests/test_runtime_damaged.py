"""A queued message whose body is gone from the ledger: the store is damaged, and says so in one line.

The store writes a message and its place in the queue in one transaction, so only a damaged or
hand-edited store has a queued message it cannot read.  The runtime then stops before the round
runs anything: the Python API raises QueuedMessageMissing (a StoreDamaged, so a MissiveError), and
the CLI prints one line with the damaged-data exit code (4), with nothing handled.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import missive.node as mn
from missive.actors.runtime import QueuedMessageMissing
from missive.cli.common import EXIT_DAMAGED
from missive.cli.main import main
from missive.errors import Damaged, MissiveError

REPO = Path(__file__).resolve().parents[1]
TOKEN_PATH = REPO / "examples" / "Token.vy"


def _queued_then_lost(path: Path) -> tuple[bytes, bytes, bytes]:
    """A node with a token and a transfer queued whose body was removed from the ``messages`` table:
    (token address, bob's address, the lost message id)."""
    with mn.Node.init(path, default_balance=10**20) as node:
        bob = node.new_account("bob")
        token = node.deploy(TOKEN_PATH, "Tok", "TOK", 10**6)
        sent = token.transfer(bob.address, 7)  # durable and queued; the node runs only when asked
        with node.store.env.begin(write=True) as txn:
            assert txn.delete(sent.id, db=node.store.db["messages"])
        return token.address, bob.address, sent.id


def test_the_api_raises_one_damaged_store_error(tmp_path: Path) -> None:
    _token, _bob, lost = _queued_then_lost(tmp_path / "node")
    with mn.Node.open(tmp_path / "node") as node:
        length = node.ledger_length()
        with pytest.raises(QueuedMessageMissing) as caught:
            node.run_until_idle(timeout=30)
        assert isinstance(caught.value, Damaged) and isinstance(caught.value, MissiveError)
        assert caught.value.message_id == lost
        assert str(caught.value) == (f"the store at {tmp_path / 'node'} is damaged: queued message 0x{lost.hex()} "
                                     "is missing from its ledger (nothing was run)")
        assert node.ledger_length() == length and not node.is_idle()  # nothing was handled or written
        assert node.receipt(lost) is None


def test_the_cli_prints_one_line_and_exits_damaged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token, bob, lost = _queued_then_lost(tmp_path / "node")
    capsys.readouterr()
    code = main(["send", "--dir", str(tmp_path / "node"), "0x" + token.hex(), "transfer(address,uint256)",
                 "0x" + bob.hex(), "1", "--timeout", "30"])
    err = capsys.readouterr().err
    assert code == EXIT_DAMAGED
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("missive: error: the store at ") and f"0x{lost.hex()} is missing" in lines[0]
    with mn.Node.open(tmp_path / "node") as node:
        assert node.receipt(lost) is None and not node.is_idle()  # the transfer sent here waits too
