"""The VM against Ethereum's public test vectors, and the runner that judges it.

Every vector file in ``../shared/conformance`` is one test, so a failure names
the file and says what differed.  The runner itself is tested too: a runner
that passes everything would make the vectors worthless, so altered
expectations and a perturbed VM must be reported as failures, clearly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import attrs
import pytest

from missive.toolchain import rlp
from missive.toolchain.conformance import (
    EMPTY_LOGS_HASH,
    KNOWN_XFAILS,
    Account,
    Case,
    ConformanceError,
    Outcome,
    floor_gas,
    intrinsic_gas,
    iter_cases,
    logs_hash,
    pick_fork,
    precompile_of,
    run_case,
    run_paths,
)
from missive.vm import execute
from missive.vm.types import ExecutionResult, Log

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "conformance"
LEGACY = VECTORS / "legacy_constantinople"
STATE = VECTORS / "eest_state_tests"
#: More vector directories, for vectors not (yet) in ../shared: ``tools/prague_osaka_vectors.py --out DIR``
#: gathers the public Prague/Osaka ones; ``MISSIVE_EXTRA_VECTORS=DIR`` runs them here too.
EXTRA = [Path(p) for p in os.environ.get("MISSIVE_EXTRA_VECTORS", "").split(os.pathsep) if p]


def _vector_files() -> list[Path]:
    roots = ([VECTORS] if VECTORS.is_dir() else []) + [p for p in EXTRA if p.is_dir()]
    return sorted(path for root in roots for path in root.rglob("*.json"))


def _require_vectors() -> None:
    if not VECTORS.is_dir():
        pytest.fail(f"conformance vectors not found at {VECTORS} (expected ../shared/conformance next to the repo)")


# --------------------------------------------------------------------------
# The vectors


def test_vectors_present() -> None:
    _require_vectors()
    files = _vector_files()
    assert len(files) > 400, f"only {len(files)} vector files under {VECTORS}"
    assert (LEGACY / "vmBlockInfoTest" / "difficulty.json").is_file()


@pytest.mark.parametrize(
    "path",
    _vector_files() or [VECTORS / "MISSING"],
    ids=lambda p: str(p.relative_to(VECTORS)) if p.is_relative_to(VECTORS) else str(p),
)
def test_vector_file(path: Path) -> None:
    _require_vectors()
    summary = run_paths([path])
    assert summary.results, f"{path}: no cases found"
    report = "\n".join(f"{r.name}: {r.explanation}" for r in summary.failures)
    assert summary.failed == 0, f"{summary.line}\n{report}"
    for result in summary.results:
        assert result.result is not None or result.case.expect_exception, f"{result.name} did not run"


def test_difficulty_is_a_known_expected_failure_that_still_runs() -> None:
    _require_vectors()
    summary = run_paths([LEGACY / "vmBlockInfoTest"])
    (difficulty,) = [r for r in summary.results if r.name == "vmBlockInfoTest/difficulty"]
    assert difficulty.outcome is Outcome.XFAILED
    assert difficulty.result is not None and difficulty.result.success  # it ran, to completion
    assert "PREVRANDAO" in difficulty.explanation
    assert "storage[0x00]: expected 0x020000, got 0x00" in difficulty.explanation
    assert summary.failed == 0 and summary.xfailed == 1 and summary.passed == 3
    assert summary.line == "3 passed, 0 failed"


# --------------------------------------------------------------------------
# The runner reports what differs


def _legacy_case(name: str = "vmArithmeticTest/add0.json") -> Case:
    _require_vectors()
    (case,) = iter_cases(LEGACY / name)
    return case


def _state_case() -> Case:
    _require_vectors()
    (case,) = iter_cases(STATE / "cancun" / "eip1153_tstore" / "basic_tload" / "basic_tload_works.json")
    return case


def test_unaltered_cases_pass() -> None:
    assert run_case(_legacy_case()).outcome is Outcome.PASSED
    assert run_case(_state_case()).outcome is Outcome.PASSED


def test_altered_expected_storage_fails_with_a_clear_message() -> None:
    case = _legacy_case()
    assert case.expected_post is not None
    post = dict(case.expected_post)
    post[case.to] = attrs.evolve(post[case.to], storage={0: 2, 5: 1})
    result = run_case(attrs.evolve(case, expected_post=post))
    assert result.outcome is Outcome.FAILED
    got = "0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffe"
    assert result.differences == (
        f"storage[0x00]: expected 0x02, got {got}",
        "storage[0x05]: expected 0x01, got 0x00",
    )


def test_altered_out_and_logs_fail() -> None:
    case = _legacy_case("vmLogTest/log1_Caller.json")
    assert run_case(case).outcome is Outcome.PASSED
    result = run_case(attrs.evolve(case, expected_out=b"\x01", expected_logs_hash=EMPTY_LOGS_HASH))
    assert result.failed
    assert result.differences[0] == "out: expected 0x01, got 0x"
    assert result.differences[1].startswith("logs hash: expected no logs, got 0x")
    assert "LOG1(address=0x0f572e5295c57f15886f9b263e2f6d2d6c7b5ec6" in result.differences[1]


def test_outcome_mismatch_is_named() -> None:
    case = _legacy_case()
    result = run_case(attrs.evolve(case, expect_halt=True))
    assert result.differences == ("outcome: expected an exceptional halt, got success",)
    halting = _legacy_case("vmIOandFlowOperations/jump0_outOfBoundary.json")
    assert halting.expect_halt and run_case(halting).outcome is Outcome.PASSED
    result = run_case(attrs.evolve(halting, expect_halt=False, expected_post={}))
    assert result.failed
    assert result.differences[0].startswith("outcome: expected success, got bad jump destination")


def test_state_test_checks_balances_nonces_and_storage() -> None:
    case = _state_case()
    assert case.expected_post is not None
    sender = case.expected_post[case.sender]
    post = dict(case.expected_post)
    post[case.sender] = attrs.evolve(sender, balance=sender.balance + 10, nonce=5)
    post[case.to] = attrs.evolve(post[case.to], storage={**post[case.to].storage, 2: 7})
    result = run_case(attrs.evolve(case, expected_post=post))
    assert result.failed
    text = "\n".join(result.differences)
    assert f"(sender) balance: expected {sender.balance + 10}, got {sender.balance}" in text
    assert "gas charged 53425 = intrinsic 21000 + run 32425 - refund 0" in text
    assert "(sender) nonce: expected 5, got 1" in text
    assert "(to) storage[0x02]: expected 0x07, got 0x01" in text


def test_gas_accounting_is_checked_through_balances() -> None:
    """One unit of gas too many must show in state tests (legacy ones do not check gas)."""

    def greedy(code: bytes, **kwargs: object) -> ExecutionResult:
        result = execute(code, **kwargs)  # type: ignore[arg-type]
        return result.replace(gas_used=result.gas_used + 1)

    result = run_case(_state_case(), execute=greedy)
    assert result.failed
    assert any("(coinbase) balance: expected 160275, got 160278" in d for d in result.differences)
    assert run_case(_legacy_case(), execute=greedy).outcome is Outcome.PASSED


def test_refund_cap_and_refund_are_modelled() -> None:
    _require_vectors()
    (case,) = iter_cases(STATE / "cancun" / "eip1153_tstore" / "tstorage" / "tload_after_tstore.json")
    assert run_case(case).outcome is Outcome.PASSED

    def no_refund(code: bytes, **kwargs: object) -> ExecutionResult:
        return execute(code, **kwargs).replace(gas_refund=0)  # type: ignore[arg-type]

    assert run_case(case, execute=no_refund).failed


def test_vm_exception_is_a_failure_not_a_crash() -> None:
    def broken(code: bytes, **kwargs: object) -> ExecutionResult:
        raise RuntimeError("boom")

    result = run_case(_legacy_case(), execute=broken)
    assert result.failed and result.differences == ("VM raised RuntimeError: boom",)


def test_vm_contract_on_storage_writes_is_checked() -> None:
    def noisy(code: bytes, **kwargs: object) -> ExecutionResult:
        result = execute(code, **kwargs)  # type: ignore[arg-type]
        return result.replace(storage_writes={**result.storage_writes, 9: 0})

    result = run_case(_legacy_case(), execute=noisy)
    assert result.failed and "storage_writes[0x09] = 0x00 equals the original value" in result.differences[0]


def test_xfail_that_passes_is_xpassed_not_failed() -> None:
    case = attrs.evolve(_legacy_case(), xfail="pretend")
    assert run_case(case).outcome is Outcome.XPASSED
    summary = run_paths([LEGACY / "vmBlockInfoTest"])
    assert summary.ok


def test_malformed_files_are_failures(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"x": ')
    (tmp_path / "other.json").write_text(json.dumps({"t": {"hello": 1}}))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "partial.json").write_text(json.dumps({"t": {"exec": {"address": "0x01"}}}))
    summary = run_paths([tmp_path])
    assert summary.failed == 3 and summary.line == "0 passed, 3 failed"
    texts = {r.name: r.explanation for r in summary.results}
    assert texts["broken.json"].startswith("invalid JSON at line 1")
    assert "not a recognised test vector" in texts["other.json::t"]
    assert texts["sub/t"] == "malformed vector: missing field 'caller'"


def test_missing_path_raises() -> None:
    with pytest.raises(ConformanceError, match="no such file or directory"):
        list(iter_cases(["/nonexistent/vectors"]))


def test_known_xfails_are_named() -> None:
    assert set(KNOWN_XFAILS) == {"vmBlockInfoTest/difficulty"}


# --------------------------------------------------------------------------
# Pieces


def test_rlp_known_encodings() -> None:
    assert rlp.encode(b"dog") == bytes.fromhex("83646f67")
    assert rlp.encode([b"cat", b"dog"]) == bytes.fromhex("c88363617483646f67")
    assert rlp.encode(b"") == b"\x80"
    assert rlp.encode([]) == b"\xc0"
    assert rlp.encode(0) == b"\x80"
    assert rlp.encode(15) == b"\x0f"
    assert rlp.encode(1024) == bytes.fromhex("820400")
    assert rlp.encode([[], [[]], [[], [[]]]]) == bytes.fromhex("c7c0c1c0c3c0c1c0")
    long = b"Lorem ipsum dolor sit amet, consectetur adipisicing elit"
    assert rlp.encode(long) == b"\xb8\x38" + long
    with pytest.raises(TypeError):
        rlp.encode("text")


def test_logs_hash() -> None:
    assert logs_hash([]) == EMPTY_LOGS_HASH
    log = Log(address=bytes(19) + b"\x01", topics=(1,), data=b"\xff")
    assert logs_hash([log]) != EMPTY_LOGS_HASH


def test_intrinsic_and_floor_gas() -> None:
    assert intrinsic_gas(b"") == 21_000
    assert intrinsic_gas(b"\x00\x01") == 21_000 + 4 + 16
    assert intrinsic_gas(b"", access_list_addresses=1, access_list_keys=2) == 21_000 + 2_400 + 2 * 1_900
    assert floor_gas(b"\x00\x01") == 21_000 + 10 * (1 + 4)


def test_pick_fork() -> None:
    assert pick_fork(["Shanghai", "Cancun", "Prague"]) == "Cancun"
    assert pick_fork(["Prague"]) == "Prague"
    assert pick_fork(["Prague", "Osaka"]) == "Prague"
    assert pick_fork(["London", "Shanghai"]) == "Shanghai"
    assert pick_fork([]) is None


def test_account_storage_drops_zeros(tmp_path: Path) -> None:
    case = _legacy_case()
    assert isinstance(case.pre[case.to], Account)
    assert all(v for acc in case.pre.values() for v in acc.storage.values())


# --------------------------------------------------------------------------
# Precompile vector files (go-ethereum's and the EIPs' format)


def _g1_double_vectors() -> list[dict[str, object]]:
    """EIP-2537 G1ADD: G + G = 2G (the generator and its double, computed with py_ecc), and a bad length."""
    from py_ecc.optimized_bls12_381 import G1, multiply, normalize

    def enc(point: object) -> str:
        x, y = normalize(point)  # type: ignore[arg-type]
        return int(x).to_bytes(64, "big").hex() + int(y).to_bytes(64, "big").hex()

    return [
        {"Input": enc(G1) * 2, "Expected": enc(multiply(G1, 2)), "Name": "g+g", "Gas": 375},
        {"Input": enc(G1) + enc(G1)[:-2], "ExpectedError": "invalid input length", "Name": "short"},
    ]


def test_precompile_vector_files_are_named_by_precompile(tmp_path: Path) -> None:
    path = tmp_path / "blsG1Add.json"
    path.write_text(json.dumps(_g1_double_vectors()))
    assert precompile_of(path) == 0x0B and precompile_of(tmp_path / "fail-blsPairing.json") == 0x0F
    assert precompile_of(tmp_path / "eip-7951" / "test-vectors.json") == 0x100
    summary = run_paths([path])
    assert [r.outcome for r in summary.results] == [Outcome.PASSED, Outcome.PASSED], summary.failures
    unnamed = tmp_path / "vectors.json"
    unnamed.write_text(path.read_text())
    (result,) = run_paths([unnamed]).results
    assert result.failed and "does not say which precompile" in result.explanation


def test_precompile_vectors_check_output_and_price(tmp_path: Path) -> None:
    good, bad = _g1_double_vectors()
    wrong = dict(good, Expected="00" * 128)
    cheap = dict(good, Gas=374)  # too little: the call fails
    dear = dict(good, Gas=376)  # too much: it would also succeed with 375
    fails = dict(good, ExpectedError="x")  # a valid input said to fail
    path = tmp_path / "blsG1Add.json"
    path.write_text(json.dumps([wrong, cheap, dear, fails]))
    results = run_paths([path]).results
    assert [r.failed for r in results] == [True] * 4
    assert results[0].differences[0].startswith("out: expected 0x0000")
    assert results[1].differences == ("outcome: expected success with 374 gas, the call failed",)
    assert results[2].differences == ("gas: it succeeded with 375 gas, but its price is 376",)
    assert results[3].differences[0].startswith("outcome: expected the call to fail, it succeeded")


def test_p256_vectors_priced_for_rip_7212_are_checked_at_eip_7951_s_price(tmp_path: Path) -> None:
    (tmp_path / "eip-7951").mkdir()
    path = tmp_path / "eip-7951" / "test-vectors.json"
    path.write_text(json.dumps([{"Input": "00" * 160, "Expected": "", "Gas": 3450, "Name": "zeros"}]))
    (case,) = iter_cases(path)
    assert case.expected_gas == 6900
    assert run_case(case).outcome is Outcome.PASSED
