"""What execute() returns: immutable values, compared by value, in both builds."""

from __future__ import annotations

import pytest

from missive.toolchain.asm import assemble
from missive.vm import ExecutionResult, Log, Status, execute

ME = bytes.fromhex("00000000000000000000000000000000000000aa")
# Store 7 in slot 1, log the word 5 with topic 9, return the word 3.
CODE = assemble(
    "PUSH 7 PUSH 1 SSTORE PUSH 5 PUSH 0 MSTORE PUSH 9 PUSH 32 PUSH 0 LOG1 PUSH 3 PUSH 0 MSTORE PUSH 32 PUSH 0 RETURN"
)


def test_results_and_logs_compare_by_value() -> None:
    r = execute(CODE, address=ME)
    assert r.status is Status.SUCCESS and r.success
    assert r == execute(CODE, address=ME)
    assert r.storage_writes == {1: 7}
    assert r.output == (3).to_bytes(32, "big")
    assert r.logs == (Log(address=ME, topics=(9,), data=(5).to_bytes(32, "big")),)
    assert hash(r.logs[0]) == hash(Log(ME, (9,), (5).to_bytes(32, "big")))
    assert r.logs[0] != Log(ME, (8,), (5).to_bytes(32, "big"))
    assert repr(r.logs[0]).startswith("Log(address=")
    assert repr(r).startswith("ExecutionResult(status=<Status.SUCCESS")


def test_results_and_logs_are_immutable() -> None:
    r = execute(CODE, address=ME)
    with pytest.raises(AttributeError):
        r.gas_used = 0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        r.logs[0].topics = ()  # type: ignore[misc]


def test_replace_changes_only_the_named_fields() -> None:
    r = execute(CODE, address=ME)
    changed = r.replace(gas_used=r.gas_used + 1, error="x")
    assert isinstance(changed, ExecutionResult)
    assert (changed.gas_used, changed.error) == (r.gas_used + 1, "x")
    assert changed.replace(gas_used=r.gas_used, error="") == r
    with pytest.raises(TypeError):
        r.replace(gas=1)
