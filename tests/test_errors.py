"""One error root: every exception Missive raises is a MissiveError (the VM's excepted: it imports
nothing of Missive), the kinds give the CLI's exit codes, and the builtin bases callers rely on stay."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import missive
from missive.cli.common import EXIT_DAMAGED, EXIT_DISK, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_USAGE, exit_code
from missive.errors import BadInput, Damaged, DiskFailure, Failed, MissiveError, NotFound


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(missive.__path__, "missive."):
        if info.name.startswith("missive.vm") or info.name == "missive.__main__":
            continue
        module = importlib.import_module(info.name)
        found += [obj for obj in vars(module).values() if inspect.isclass(obj) and issubclass(obj, BaseException)
                  and obj.__module__ == info.name]
    return found


def test_every_missive_exception_has_the_root() -> None:
    classes = _exception_classes()
    assert len(classes) > 60
    assert [c.__qualname__ for c in classes if not issubclass(c, MissiveError)] == []


def test_the_vm_imports_nothing_of_missive_for_its_errors() -> None:
    from missive.vm.errors import Halt
    from missive.vm.host import ForbiddenRead

    assert not issubclass(Halt, MissiveError) and not issubclass(ForbiddenRead, MissiveError)


def test_builtin_bases_that_callers_catch_are_kept() -> None:
    from missive.cluster.door import BadRequest, NotAllowed
    from missive.mailbox.diffs import DiffError
    from missive.mailbox.envelope import EnvelopeError
    from missive.mailbox.records import RecordError
    from missive.node import ArgumentError, NodeTimeout

    assert issubclass(ArgumentError, TypeError) and issubclass(NodeTimeout, TimeoutError)
    for cls in (EnvelopeError, RecordError, DiffError, BadRequest):
        assert issubclass(cls, ValueError), cls
    assert issubclass(NotAllowed, PermissionError)


@pytest.mark.parametrize(("kind", "code"), [(NotFound, EXIT_NOT_FOUND), (Damaged, EXIT_DAMAGED),
                                            (DiskFailure, EXIT_DISK), (BadInput, EXIT_USAGE), (Failed, EXIT_FAILED)])
def test_each_kind_has_one_exit_code(kind: type[MissiveError], code: int) -> None:
    assert exit_code(kind("x"), default=99) == code


def test_exit_codes_of_the_families_are_as_before() -> None:
    from missive.keys import KeystoreError, UnknownKey, WrongPassphrase
    from missive.mailbox.disk import DiskFull, NoStore, StoreDamaged, StoreError
    from missive.node import ArgumentError, NodeError, NodeTimeout, NotHandled, Reverted, UnknownMessage
    from missive.toolchain.compiler import CompileError, CompileInputError

    reverted = Reverted("f()", reason=None, data=b"", status="revert")
    expected = {NodeError("x"): EXIT_USAGE, ArgumentError("x"): EXIT_USAGE, UnknownMessage("x"): EXIT_NOT_FOUND,
                NodeTimeout("x"): EXIT_FAILED, NotHandled("x"): EXIT_FAILED, reverted: EXIT_FAILED,
                CompileError("x"): EXIT_FAILED, CompileInputError("x"): EXIT_USAGE,
                KeystoreError("x"): EXIT_USAGE, UnknownKey("x"): EXIT_NOT_FOUND, WrongPassphrase("x"): EXIT_FAILED,
                StoreError("x"): EXIT_USAGE, NoStore("x"): EXIT_NOT_FOUND, StoreDamaged("x"): EXIT_DAMAGED,
                DiskFull("x"): EXIT_DISK}
    assert {type(e).__name__: exit_code(e) for e in expected} == {type(e).__name__: c for e, c in expected.items()}


def test_a_refusal_to_a_non_member_carries_its_reason() -> None:
    from missive.cluster.door import NotAllowed
    from missive.replicas.refusals import NotAMember, require_member

    me, other, stranger = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    names = {me: "n1", other: "n2"}
    assert require_member(names, me, other, "trust") == "n2"
    for peer in (stranger, me):
        with pytest.raises(NotAMember) as refused:
            require_member(names, me, peer, "trust")
        assert isinstance(refused.value, NotAllowed) and isinstance(refused.value, PermissionError)
        assert (refused.value.method, refused.value.peer) == ("trust", peer)
        assert str(refused.value).startswith("trust is for cluster members; ")


def test_an_unreachable_node_exits_1_as_the_readme_says(tmp_path: pytest.TempPathFactory) -> None:
    """A node that does not answer is a failure (exit 1, the README's table), for every command that
    asks one: `missive query --node` said 2 (usage or refused input) while `missive trust --node` said 1."""
    import os
    import subprocess
    import sys

    directory = str(tmp_path) + "/.missive"  # type: ignore[operator]
    env = {**os.environ, "MISSIVE_UNENCRYPTED_KEYS": "1"}
    subprocess.run([sys.executable, "-m", "missive", "init", "--dir", directory], check=True, capture_output=True,
                   env=env)
    for command in (["query", "0x" + "ab" * 20, "balanceOf(address)(uint256)", "default", "--node", "127.0.0.1:1",
                     "--dir", directory], ["trust", "--node", "127.0.0.1:1"]):
        run = subprocess.run([sys.executable, "-m", "missive", *command], capture_output=True, text=True, env=env)
        assert run.returncode == EXIT_FAILED, (command, run.returncode, run.stderr)
        assert "cannot reach node 127.0.0.1:1" in run.stderr and "Traceback" not in run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
