"""Every command answers errors with one line and the documented exit code, never a traceback.

The commands are read from the parser itself, so a command added later is covered
without editing this file.  Exit codes (README): 0 done, 1 failed, 2 usage or refused
input, 3 not found, 4 damaged data, 74 disk, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from missive.cli.common import EXIT_NOT_FOUND, EXIT_USAGE
from missive.cli.main import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield prefix
        return
    for group in groups:
        for name, sub in group.choices.items():
            yield from leaf_commands(sub, (*prefix, name))


COMMANDS = sorted(leaf_commands(build_parser()))
#: commands that act on an existing node directory given by --dir
NODE_COMMANDS = [c for c in COMMANDS if c[0] in {"account", "deploy", "send", "query", "inbox", "ledger", "receipt",
                                                   "serve", "replay", "trace", "rpc", "tickets"}]
#: the arguments each needs besides --dir, so that only the missing node is wrong
NEEDS = {"deploy": [str(REPO / "examples" / "Token.vy"), "T", "T", "1"], "send": ["0x" + "11" * 20, "f()"],
         "query": ["0x" + "11" * 20, "f()(uint256)"], "inbox": ["0x" + "11" * 20], "receipt": ["0x1234"],
         "trace": ["0x12345678"],
         "new": ["someone"], "import": ["--key-file", "/nonexistent/key"],
         "commitment": ["0x" + "11" * 20], "check": ["00"],
         "issue": ["--to", "0x" + "11" * 20, "--commitment", "00" * 32, "--face-value", "1", "--win-prob", "1/2"]}


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_the_walk_finds_the_commands() -> None:
    assert ("send",) in COMMANDS and ("cluster", "up") in COMMANDS and ("account", "new") in COMMANDS
    assert ("serve",) in COMMANDS and len(COMMANDS) >= 20


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_and_an_unknown_option(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--help"]) == 0
    assert "usage: missive " + " ".join(command) in capsys.readouterr().out
    assert main([*command, "--no-such-option"]) == EXIT_USAGE
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"missive {' '.join(command)}: error:") and f"`missive {' '.join(command)} --help`" in line


@pytest.mark.parametrize("command", NODE_COMMANDS, ids=" ".join)
def test_no_node_there_is_not_found(command: tuple[str, ...], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "nothing"
    empty.mkdir()
    assert main([*command, *NEEDS.get(command[-1], []), "--dir", str(empty)]) == EXIT_NOT_FOUND
    assert "no Missive node at" in one_error_line(capsys.readouterr().err)
    assert list(empty.iterdir()) == []  # nothing was created there


def test_not_found_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = str(tmp_path / "n")
    assert main(["init", "--dir", node]) == 0
    capsys.readouterr()
    for argv, words in ((["receipt", "0x" + "ab" * 8, "--dir", node], "no message"),
                        (["send", "0x" + "11" * 20, "f", "--dir", node], "no ABI known"),
                        (["account", "list", "--dir", node, "--cluster", str(tmp_path / "none")], "no cluster at"),
                        (["cluster", "status", "--dir", str(tmp_path / "none")], "no cluster at"),
                        (["send", "0x" + "11" * 20, "f()", "--from", "nobody", "--dir", node], "no key 'nobody'")):
        assert main(argv) == EXIT_NOT_FOUND, argv
        assert words in one_error_line(capsys.readouterr().err)


def test_the_real_entry_point_too(tmp_path: Path) -> None:
    """The same through `python -m missive` (what a shell sees): one line, exit 2."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = subprocess.run([sys.executable, "-m", "missive", "send", "--timeout", "soon"], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)
    assert run.returncode == EXIT_USAGE
    assert "argument --timeout" in one_error_line(run.stderr)
