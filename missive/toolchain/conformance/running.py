"""Running a :class:`Case` on the VM and comparing what it did with what the vector expects.

Part of :mod:`missive.toolchain.conformance` (which says what the runner checks, and how).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from missive.toolchain.conformance.cases import (
    EMPTY_LOGS_HASH,
    LEGACY_FORMAT,
    PRECOMPILE_FORMAT,
    Account,
    Case,
    ConformanceError,
    ExecuteFn,
    _addr_hex,
    _hex_word,
    _int,
    _short_hex,
    logs_hash,
)
from missive.toolchain.conformance.gas import REFUND_QUOTIENT, transaction_costs
from missive.toolchain.conformance.host import EthereumHost, testeth_block_hash
from missive.toolchain.conformance.reading import iter_cases
from missive.toolchain.conformance.results import CaseResult, Outcome, Summary
from missive.vm.types import ExecutionResult, Status


def _default_execute() -> ExecuteFn:
    try:
        from missive.vm import execute
    except ImportError as exc:
        raise ConformanceError(f"Missive's VM is not available: cannot import missive.vm.execute ({exc})") from exc
    return execute


def run_case(case: Case, *, execute: ExecuteFn | None = None) -> CaseResult:
    """Run one case and compare it with the vector's expectations.

    ``execute`` defaults to :func:`missive.vm.execute`; another function with
    the same signature (a reference EVM, an instrumented VM) can be passed.
    An exception escaping the VM is a failure of that case, not of the run.
    """
    started = time.perf_counter()
    result: ExecutionResult | None = None
    if case.problem is not None:
        differences: list[str] = [case.problem]
    else:
        run = execute or _default_execute()
        try:
            if case.format == LEGACY_FORMAT:
                result, differences = _run_legacy(case, run)
            elif case.format == PRECOMPILE_FORMAT:
                result, differences = _run_precompile(case, run)
            else:
                result, differences = _run_state(case, run)
        except ConformanceError:
            raise
        except Exception as exc:  # the VM crashed: report it, keep going
            differences = [f"VM raised {type(exc).__name__}: {exc}"]
    duration = time.perf_counter() - started
    if case.xfail is not None:
        outcome = Outcome.XFAILED if differences else Outcome.XPASSED
    else:
        outcome = Outcome.FAILED if differences else Outcome.PASSED
    return CaseResult(case=case, outcome=outcome, differences=tuple(differences), result=result, duration=duration)


def run_cases(
    cases: Iterable[Case],
    *,
    execute: ExecuteFn | None = None,
    on_result: Callable[[CaseResult], None] | None = None,
) -> Summary:
    """Run ``cases`` in order; ``on_result`` sees each result as it comes (for progress output)."""
    started = time.perf_counter()
    run = execute or _default_execute()
    results = []
    for case in cases:
        outcome = run_case(case, execute=run)
        results.append(outcome)
        if on_result is not None:
            on_result(outcome)
    return Summary(results=tuple(results), duration=time.perf_counter() - started)


def run_paths(
    paths: str | Path | Iterable[str | Path],
    *,
    execute: ExecuteFn | None = None,
    on_result: Callable[[CaseResult], None] | None = None,
) -> Summary:
    """Run every case under ``paths`` (see :func:`iter_cases`)."""
    return run_cases(iter_cases(paths), execute=execute, on_result=on_result)


def _describe_status(result: ExecutionResult) -> str:
    if result.status is Status.SUCCESS:
        return "success"
    text = result.status.value
    return f"{text} ({result.error})" if result.error and result.error != text else text


def _compare_storage(label: str, expected: Mapping[int, int], got: Mapping[int, int]) -> list[str]:
    out = []
    for key in sorted(set(expected) | set(got)):
        want, have = expected.get(key, 0), got.get(key, 0)
        if want != have:
            out.append(f"{label}storage[{_hex_word(key)}]: expected {_hex_word(want)}, got {_hex_word(have)}")
    return out


def _final_storage(pre: Mapping[int, int], result: ExecutionResult) -> tuple[dict[int, int], list[str]]:
    """Pre-state storage with the run's writes applied; plus breaches of the VM's write contract."""
    storage = dict(pre)
    notes = []
    for key, val in result.storage_writes.items():
        if val == pre.get(key, 0):
            notes.append(
                f"storage_writes[{_hex_word(key)}] = {_hex_word(val)} equals the original value "
                "(the VM must list only slots whose value changed)"
            )
        storage[key] = val
    return {k: v for k, v in storage.items() if v}, notes


def _check_logs(case: Case, result: ExecutionResult) -> list[str]:
    if case.expected_logs_hash is None:
        return []
    got = logs_hash(result.logs if result.success else ())
    if got == case.expected_logs_hash:
        return []
    detail = ", ".join(
        f"LOG{len(log.topics)}(address={_addr_hex(log.address)}, topics=[{', '.join(_hex_word(t) for t in log.topics)}],"
        f" data={_short_hex(log.data, 32)})"
        for log in (result.logs if result.success else ())
    )
    expected = "no logs" if case.expected_logs_hash == EMPTY_LOGS_HASH else "0x" + case.expected_logs_hash.hex()
    return [
        f"logs hash: expected {expected}, got 0x{got.hex()} from {len(result.logs)} log(s){': ' + detail if detail else ''}"
    ]


def _run_legacy(case: Case, execute: ExecuteFn) -> tuple[ExecutionResult, list[str]]:
    account = case.pre.get(case.to, Account(code=case.code))
    host = EthereumHost(case.pre, current_number=case.block.number, block_hashes=testeth_block_hash)
    # Legacy VMTests run the code without transferring exec.value (their post
    # balances equal the pre balances), so the balance passed is the pre one.
    result = execute(
        case.code,
        address=case.to,
        caller=case.sender,
        value=case.value,
        data=case.data,
        gas=case.gas,
        storage=dict(account.storage),
        balance=account.balance,
        nonce=account.nonce,
        block=case.block,
        host=host,
    )
    differences: list[str] = []
    if case.expect_halt:
        if not result.status.is_exceptional_halt:
            differences.append(f"outcome: expected an exceptional halt, got {_describe_status(result)}")
        elif result.storage_writes or result.logs or result.outbox:
            differences.append("state: an exceptional halt must discard storage writes, logs and messages")
        return result, differences
    if not result.success:
        differences.append(f"outcome: expected success, got {_describe_status(result)}")
        return result, differences
    if case.expected_out is not None and result.output != case.expected_out:
        differences.append(f"out: expected {_short_hex(case.expected_out)}, got {_short_hex(result.output)}")
    storage, notes = _final_storage(account.storage, result)
    differences.extend(notes)
    if case.expected_post is not None:
        expected = case.expected_post.get(case.to, Account())
        differences.extend(_compare_storage("", expected.storage, storage))
    differences.extend(_check_logs(case, result))
    return result, differences


def precompile_caller(address: int, gas: int) -> bytes:
    """Code that STATICCALLs ``address`` with its calldata and ``gas``, and returns the success word, then the
    return data: CALLDATACOPY, STATICCALL, MSTORE the flag at 0, RETURNDATACOPY to 32, RETURN."""
    return (
        bytes.fromhex("365f5f37" "5f5f365f") + b"\x61" + address.to_bytes(2, "big") + b"\x67" + gas.to_bytes(8, "big")
        + bytes.fromhex("fa" "5f52" "3d5f60203e" "3d602001" "5ff3")
    )  # fmt: skip


def _call_precompile(case: Case, execute: ExecuteFn, gas: int) -> tuple[ExecutionResult, bool | None, bytes]:
    """Run the caller with ``gas`` for the precompile: (result, whether the call succeeded, its output)."""
    result = execute(precompile_caller(case.precompile, gas), data=case.data, gas=2 * gas + 1_000_000)
    if not result.success or len(result.output) < 32:
        return result, None, b""
    return result, result.output[:32] != bytes(32), result.output[32:]


def _run_precompile(case: Case, execute: ExecuteFn) -> tuple[ExecutionResult, list[str]]:
    gas = case.expected_gas if case.expected_gas is not None else 10_000_000
    result, ok, output = _call_precompile(case, execute, gas)
    if ok is None:
        return result, [f"the calling code itself ended with {_describe_status(result)}"]
    if case.expect_halt:
        if ok:
            return result, [f"outcome: expected the call to fail, it succeeded with output {_short_hex(output)}"]
        return result, []
    if not ok:
        return result, [f"outcome: expected success with {gas} gas, the call failed"]
    differences = []
    if case.expected_out is not None and output != case.expected_out:
        differences.append(f"out: expected {_short_hex(case.expected_out)}, got {_short_hex(output)}")
    if case.expected_gas:
        _, cheaper, _ = _call_precompile(case, execute, gas - 1)
        if cheaper:
            differences.append(f"gas: it succeeded with {gas - 1} gas, but its price is {gas}")
    return result, differences


def _run_state(case: Case, execute: ExecuteFn) -> tuple[ExecutionResult | None, list[str]]:
    costs = transaction_costs(case)
    if case.expect_exception is not None:
        if costs.invalid is not None:
            return None, []
        return None, [
            f"outcome: expected the transaction to be rejected ({case.expect_exception}), "
            "but it is valid as far as the runner can tell"
        ]
    if costs.invalid is not None:
        return None, [f"transaction invalid: {costs.invalid}"]

    state: dict[bytes, Account] = dict(case.pre)

    def adjust(address: bytes, *, balance: int = 0, nonce: int = 0) -> None:
        acc = state.get(address, Account())
        state[address] = attrs.evolve(acc, balance=acc.balance + balance, nonce=acc.nonce + nonce)

    # Buy the gas and bump the nonce, then move the value: the message runs on that state.
    price = costs.effective_gas_price
    adjust(case.sender, balance=-case.gas * price, nonce=1)
    adjust(case.sender, balance=-case.value)
    adjust(case.to, balance=case.value)
    target = state[case.to]
    host = EthereumHost(
        dict(state),
        current_number=case.block.number,
        block_hashes=_previous_hash(case.env, case.block.number),
    )
    result = execute(
        target.code,
        address=case.to,
        caller=case.sender,
        value=case.value,
        data=case.data,
        gas=case.gas - costs.intrinsic,
        storage=dict(target.storage),
        balance=target.balance,
        nonce=target.nonce,
        block=case.block,
        host=host,
    )
    differences: list[str] = []
    gas_used = costs.intrinsic + result.gas_used
    if result.success:
        refund = min(result.gas_refund, gas_used // REFUND_QUOTIENT)
        storage, notes = _final_storage(target.storage, result)
        differences.extend(notes)
        state[case.to] = attrs.evolve(target, balance=result.balance, nonce=result.nonce, storage=storage)
    else:
        refund = 0
        # The value goes back; the gas is spent.
        adjust(case.to, balance=-case.value)
        adjust(case.sender, balance=case.value)
    charged = max(gas_used - refund, costs.floor)
    adjust(case.sender, balance=(case.gas - charged) * price)
    adjust(case.block.coinbase, balance=charged * (price - case.block.base_fee))

    if case.expected_post is not None:
        for address in sorted(case.expected_post):
            want = case.expected_post[address]
            have = state.get(address, Account())
            label = _account_label(case, address)
            if want.balance != have.balance:
                hint = ""
                if address in (case.sender, case.block.coinbase):
                    hint = f" (gas charged {charged} = intrinsic {costs.intrinsic} + run {result.gas_used} - refund {refund}"
                    hint += f", floor {costs.floor})" if costs.floor else ")"
                differences.append(f"{label}balance: expected {want.balance}, got {have.balance}{hint}")
            if want.nonce != have.nonce:
                differences.append(f"{label}nonce: expected {want.nonce}, got {have.nonce}")
            if want.code != have.code:
                differences.append(f"{label}code: expected {_short_hex(want.code)}, got {_short_hex(have.code)}")
            differences.extend(_compare_storage(label, want.storage, have.storage))
    differences.extend(_check_logs(case, result))
    if differences and not result.success:
        differences.insert(0, f"run ended with {_describe_status(result)}")
    return result, differences


def _account_label(case: Case, address: bytes) -> str:
    role = ""
    if address == case.to:
        role = " (to)"
    elif address == case.sender:
        role = " (sender)"
    elif address == case.block.coinbase:
        role = " (coinbase)"
    return f"{_addr_hex(address)}{role} "


def _previous_hash(env: Mapping[str, Any], number: int) -> Callable[[int], int] | None:
    """State tests may give the parent block's hash as ``previousHash``; others are unknown (0)."""
    if "previousHash" not in env:
        return None
    parent = _int(env["previousHash"], "env.previousHash")
    return lambda n: parent if n == number - 1 else 0
