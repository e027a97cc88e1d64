"""Run public Ethereum test vectors against Missive's VM.

Missive changes what CALL/CREATE mean, but every other instruction must behave
exactly as in Ethereum (Cancun).  The vectors in ``../shared/conformance``
(see its README) were written by people outside this project, so they catch
the mistakes our own tests share with our own code.

Three formats are understood:

* **legacy VMTests** (``{name: {env, exec, pre, post?, out, logs, gas}}``): one
  message runs ``exec.code``; ``post`` absent means an exceptional halt.  Their
  ``gas`` figures follow the Homestead schedule, so gas is *not* checked; the
  outcome, ``out``, the executing account's storage and the logs hash are.
* **state tests** (``{id: {env, pre, transaction, post: {fork: [...]}}}``): a
  whole transaction.  The VM runs one message, so the runner models the rest
  of the transaction around it (validity, intrinsic gas, EIP-3529 refund cap,
  EIP-7623 calldata floor on Prague, fee payment to the coinbase) and checks
  balance, nonce and storage of every account in the expected post state,
  which makes the VM's gas accounting visible to the test.

* **precompile vectors** (a JSON list of ``{Input, Expected, Gas, Name}``, or
  ``{Input, ExpectedError, Name}`` for inputs that must fail), as go-ethereum
  (``core/vm/testdata/precompiles``) and the EIPs (``assets/eip-2537``,
  ``assets/eip-7951``) publish them; the file's name (or folder, for the EIP's
  ``test-vectors.json``) says which precompile (:data:`PRECOMPILE_FILES`).  A
  contract STATICCALLs the precompile with exactly ``Gas``: it must succeed with
  ``Expected``, and fail with one gas less; an ``ExpectedError`` input must fail.

Each case ends as passed, failed, or — for the few vectors whose meaning
changed with a later fork (:data:`KNOWN_XFAILS`) — xfailed, which is reported
with its reason but does not count as a failure.  Failures carry readable
differences ("storage[0x01]: expected 0x02, got 0x00").
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import attrs
from Crypto.Hash import keccak

from missive.errors import MissiveError
from missive.toolchain import rlp
from missive.vm.host import Host
from missive.vm.types import BlockContext, ExecutionResult, Log, Status

LEGACY_FORMAT: Final = "vmtest"
STATE_FORMAT: Final = "state"
PRECOMPILE_FORMAT: Final = "precompile"

#: Precompile vector files by the names go-ethereum (``core/vm/testdata/precompiles``) and the EIPs'
#: assets give them: the precompile each is for.  ``*Mul``/``mul_*`` vectors are one-pair MSMs (EIP-2537
#: dropped the separate multiplications).  Left out on purpose: geth's ``modexp.json`` (priced before
#: EIP-2565), ``modexp_eip7883.json`` (Osaka's repricing, which Missive does not apply) and
#: ``pointEvaluation.json`` (Missive refuses 0x0a: no blobs, no KZG setup).
PRECOMPILE_FILES: Final[Mapping[str, int]] = {
    "ecRecover": 0x01, "modexp_eip2565": 0x05, "bn256Add": 0x06, "bn256ScalarMul": 0x07, "bn256Pairing": 0x08,
    "blake2F": 0x09,
    "blsG1Add": 0x0B, "blsG1Mul": 0x0C, "blsG1MultiExp": 0x0C, "blsG2Add": 0x0D, "blsG2Mul": 0x0E,
    "blsG2MultiExp": 0x0E, "blsPairing": 0x0F, "blsMapG1": 0x10, "blsMapG2": 0x11, "p256Verify": 0x100,
    "add_G1_bls": 0x0B, "mul_G1_bls": 0x0C, "msm_G1_bls": 0x0C, "add_G2_bls": 0x0D, "mul_G2_bls": 0x0E,
    "msm_G2_bls": 0x0E, "pairing_check_bls": 0x0F, "map_fp_to_G1_bls": 0x10, "map_fp2_to_G2_bls": 0x11,
    "eip-7951/test-vectors": 0x100,
}  # fmt: skip
#: Vectors priced under an earlier rule: (precompile, the vector's ``Gas``) -> (what the VM charges, why).
REPRICED: Final[Mapping[tuple[int, int], tuple[int, str]]] = {
    (0x100, 3450): (6900, "written for RIP-7212's 3450 gas; EIP-7951 (Osaka) charges 6900"),
}

#: keccak256(rlp([])): the logs hash of a run that emitted nothing.
EMPTY_LOGS_HASH: Final = bytes.fromhex("1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347")

#: Vectors whose expectations predate a change of meaning in Ethereum itself.
#: They still run (so a crash would show), but a mismatch is reported as
#: "xfail" with this reason instead of a failure.
KNOWN_XFAILS: Final[Mapping[str, str]] = {
    "vmBlockInfoTest/difficulty": (
        "expects the pre-Merge DIFFICULTY value from opcode 0x44; since the Merge (EIP-4399) "
        "0x44 is PREVRANDAO, which Missive implements"
    ),
}

#: The same, for every case whose name starts with the key (a whole parametrized test).
KNOWN_XFAIL_PREFIXES: Final[Mapping[str, str]] = {
    "tests/prague/eip2537_bls_12_381_precompiles/test_bls12_precompiles_before_fork.py::": (
        "checks that the BLS12-381 precompiles are absent before Prague; Missive's VM runs them on every ledger"
    ),
}


def known_xfail(name: str) -> str | None:
    """Why the case ``name`` is expected to fail, if it is."""
    reason = KNOWN_XFAILS.get(name)
    if reason is None:
        reason = next((why for prefix, why in KNOWN_XFAIL_PREFIXES.items() if name.startswith(prefix)), None)
    return reason


#: Forks in order; a state test is run under Cancun, or else under the fork
#: nearest to it (later ones first: their opcode semantics are a superset).
FORK_ORDER: Final = (
    "Frontier", "Homestead", "EIP150", "EIP158", "Byzantium", "Constantinople", "ConstantinopleFix",
    "Petersburg", "Istanbul", "Berlin", "London", "Paris", "Merge", "Shanghai", "Cancun", "Prague", "Osaka",
)  # fmt: skip
TARGET_FORK: Final = "Cancun"

# Transaction-level gas constants (Cancun unless noted).
TX_BASE_GAS: Final = 21_000
TX_DATA_ZERO_GAS: Final = 4
TX_DATA_NONZERO_GAS: Final = 16
ACCESS_LIST_ADDRESS_GAS: Final = 2_400
ACCESS_LIST_STORAGE_KEY_GAS: Final = 1_900
REFUND_QUOTIENT: Final = 5  # EIP-3529
FLOOR_GAS_PER_TOKEN: Final = 10  # EIP-7623 (Prague)
BLOB_BASE_FEE_UPDATE_FRACTION: Final = {"Cancun": 3_338_477, "Prague": 5_007_716}
MIN_BLOB_BASE_FEE: Final = 1


class ConformanceError(MissiveError):
    """The runner was pointed at something it cannot read (missing path...)."""


class ExecuteFn(Protocol):
    """The signature of :func:`missive.vm.execute`, so another VM can be plugged in."""

    def __call__(
        self,
        code: bytes,
        *,
        address: bytes = ...,
        caller: bytes = ...,
        value: int = ...,
        data: bytes = ...,
        gas: int = ...,
        storage: Mapping[int, int] | None = ...,
        balance: int = ...,
        nonce: int = ...,
        block: BlockContext | None = ...,
        host: Host | None = ...,
        is_static: bool = ...,
        message_id: bytes = ...,
    ) -> ExecutionResult: ...


@attrs.frozen
class Account:
    """One account of a pre or post state.  Zero storage values are dropped (absent == 0)."""

    balance: int = 0
    nonce: int = 0
    code: bytes = b""
    storage: Mapping[int, int] = attrs.field(factory=dict, hash=False)


@attrs.frozen(kw_only=True)
class Case:
    """One runnable check: a legacy VMTest, or one post entry of a state test.

    Everything is parsed up front so a malformed vector is reported as that
    case's failure (``problem``) rather than crashing the whole run, and so a
    test can alter an expectation with :func:`attrs.evolve`.
    """

    name: str
    path: Path
    format: str
    fork: str = ""
    #: Set when the vector could not be parsed or asks for something the runner
    #: does not model; the case then fails with this text.
    problem: str | None = None
    xfail: str | None = None

    pre: Mapping[bytes, Account] = attrs.field(factory=dict, hash=False)
    env: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    block: BlockContext = BlockContext()
    sender: bytes = bytes(20)
    to: bytes = bytes(20)
    code: bytes = b""
    data: bytes = b""
    value: int = 0
    #: VMTest: gas given to the code.  State test: the transaction's gas limit.
    gas: int = 0

    # State-test transaction details.
    tx_nonce: int = 0
    gas_price: int | None = None
    max_fee_per_gas: int | None = None
    max_priority_fee_per_gas: int | None = None
    access_list_addresses: int = 0
    access_list_keys: int = 0

    # Expectations.
    #: VMTest without ``post``: the run must end in an exceptional halt.
    expect_halt: bool = False
    #: State test ``expectException``: the transaction must be rejected.
    expect_exception: str | None = None
    #: Precompile vector: its address and price (``Gas``; None when the vector gives none).
    precompile: int = 0
    expected_gas: int | None = None
    expected_out: bytes | None = None
    expected_logs_hash: bytes | None = None
    expected_post: Mapping[bytes, Account] | None = attrs.field(default=None, hash=False)


class Outcome(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    XFAILED = "xfailed"
    #: A known expected failure that passed: harmless, but worth a look.
    XPASSED = "xpassed"


@attrs.frozen
class CaseResult:
    case: Case
    outcome: Outcome
    #: What differed, one readable line each ("storage[0x01]: expected 0x02, got 0x00").
    differences: tuple[str, ...] = ()
    result: ExecutionResult | None = attrs.field(default=None, eq=False)
    duration: float = attrs.field(default=0.0, eq=False)

    @property
    def name(self) -> str:
        return self.case.name

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAILED

    @property
    def explanation(self) -> str:
        """Differences as one string; for an xfail, the known reason first."""
        lines = list(self.differences)
        if self.outcome in (Outcome.XFAILED, Outcome.XPASSED) and self.case.xfail:
            lines.insert(0, f"known: {self.case.xfail}")
        return "; ".join(lines)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.case.name,
            "path": str(self.case.path),
            "format": self.case.format,
            "fork": self.case.fork,
            "outcome": self.outcome.value,
            "differences": list(self.differences),
            "duration": round(self.duration, 6),
        }
        if self.case.xfail:
            data["xfail_reason"] = self.case.xfail
        if self.result is not None:
            data["status"] = self.result.status.value
            data["gas_used"] = self.result.gas_used
        return data


@attrs.frozen
class Summary:
    results: tuple[CaseResult, ...]
    duration: float = 0.0

    def _count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome is outcome)

    @property
    def passed(self) -> int:
        return self._count(Outcome.PASSED)

    @property
    def failed(self) -> int:
        return self._count(Outcome.FAILED)

    @property
    def xfailed(self) -> int:
        return self._count(Outcome.XFAILED)

    @property
    def xpassed(self) -> int:
        return self._count(Outcome.XPASSED)

    @property
    def failures(self) -> tuple[CaseResult, ...]:
        return tuple(r for r in self.results if r.failed)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @property
    def line(self) -> str:
        """The summary line the CLI ends with.  XPASSED counts as passed here."""
        return f"{self.passed + self.xpassed} passed, {self.failed} failed"

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed + self.xpassed,
            "failed": self.failed,
            "xfailed": self.xfailed,
            "xpassed": self.xpassed,
            "total": len(self.results),
            "duration": round(self.duration, 3),
            "results": [r.to_json() for r in self.results],
        }


# --------------------------------------------------------------------------
# Small helpers


def keccak256(data: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=data).digest()


def logs_hash(logs: Iterable[Log]) -> bytes:
    """keccak256 of the RLP list ``[[address, [topic, ...], data], ...]`` (topics 32-byte big-endian)."""
    items: list[rlp.Item] = [[log.address, [t.to_bytes(32, "big") for t in log.topics], log.data] for log in logs]
    return keccak256(rlp.encode(items))


def _int(value: Any, what: str = "number") -> int:
    """Vector numbers: "0x.."-hex (``0x`` alone is 0), decimal strings, or JSON ints."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text[:2] in ("0x", "0X"):
            return int(text[2:] or "0", 16)
        if text.isdigit():
            return int(text)
    raise ValueError(f"{what}: expected a number, got {value!r}")


def _bytes(value: Any, what: str = "hex data") -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected a hex string, got {value!r}")
    text = value.strip()
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{what}: not valid hex: {value[:40]!r}") from None


def _address(value: Any, what: str = "address") -> bytes:
    raw = _bytes(value, what)
    if len(raw) > 20:
        raise ValueError(f"{what}: {len(raw)} bytes, an address has 20")
    return raw.rjust(20, b"\0")


def _hex_word(value: int) -> str:
    """Storage keys/values the way the vectors write them: minimal hex, at least one byte."""
    digits = f"{value:x}"
    return "0x" + digits.rjust(len(digits) + len(digits) % 2, "0")


def _addr_hex(address: bytes) -> str:
    return "0x" + address.hex()


def _short_hex(data: bytes, limit: int = 64) -> str:
    text = data.hex()
    if len(text) > 2 * limit:
        return f"0x{text[: 2 * limit]}... ({len(data)} bytes)"
    return "0x" + text


def _parse_account(raw: Any, what: str) -> Account:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{what}: expected an object")
    storage_raw = raw.get("storage", {}) or {}
    storage = {}
    for key, val in storage_raw.items():
        k = _int(key, f"{what} storage key")
        v = _int(val, f"{what} storage[{key}]")
        if v:
            storage[k] = v
    return Account(
        balance=_int(raw.get("balance", "0x0"), f"{what} balance"),
        nonce=_int(raw.get("nonce", "0x0"), f"{what} nonce"),
        code=_bytes(raw.get("code", "0x"), f"{what} code"),
        storage=storage,
    )


def _parse_accounts(raw: Any, what: str) -> dict[bytes, Account]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{what}: expected an object of accounts")
    return {_address(a, f"{what} address"): _parse_account(acc, f"{what}[{a}]") for a, acc in raw.items()}


def fake_exponential(factor: int, numerator: int, denominator: int) -> int:
    """EIP-4844's integer approximation of factor * e**(numerator/denominator)."""
    i, output, accum = 1, 0, factor * denominator
    while accum > 0:
        output += accum
        accum = (accum * numerator) // (denominator * i)
        i += 1
    return output // denominator


# --------------------------------------------------------------------------
# Host


class EthereumHost(Host):
    """A host that behaves like plain Ethereum, backed by the vector's pre-state.

    Missive forbids reading other actors' balances; Ethereum does not, and the
    vectors are Ethereum's, so this host answers from the pre-state.
    ``block_hash`` follows the convention the vector's format was filled with.
    """

    def __init__(
        self,
        accounts: Mapping[bytes, Account],
        *,
        current_number: int = 0,
        block_hashes: Callable[[int], int] | None = None,
    ) -> None:
        self.accounts = accounts
        self.current_number = current_number
        self._block_hashes = block_hashes

    def code_at(self, address: bytes) -> bytes:
        account = self.accounts.get(address)
        return account.code if account is not None else b""

    def balance_of(self, address: bytes) -> int:
        account = self.accounts.get(address)
        return account.balance if account is not None else 0

    def block_hash(self, number: int) -> int:
        if not self.current_number - 256 <= number < self.current_number or self._block_hashes is None:
            return 0
        return self._block_hashes(number)


def testeth_block_hash(number: int) -> int:
    """The legacy VMTest convention (testeth's FakeExtVM): keccak256 of the decimal number."""
    return int.from_bytes(keccak256(str(number).encode()), "big")


# --------------------------------------------------------------------------
# Reading vectors


def iter_cases(paths: str | Path | Iterable[str | Path]) -> Iterator[Case]:
    """Yield every case in ``paths`` (files, or directories walked recursively for ``*.json``).

    A file or test that cannot be parsed still yields a case (with ``problem``
    set), so it is counted as a failure instead of vanishing.  A path that
    does not exist raises :class:`ConformanceError` before anything is yielded.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*.json") if p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise ConformanceError(f"{path}: no such file or directory")
    for file in files:
        yield from _cases_in_file(file)


def _cases_in_file(path: Path) -> Iterator[Case]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        yield Case(name=path.name, path=path, format="?", problem=f"cannot read file: {exc}")
        return
    except json.JSONDecodeError as exc:
        yield Case(name=path.name, path=path, format="?", problem=f"invalid JSON at line {exc.lineno}: {exc.msg}")
        return
    if isinstance(document, list) and document and all(isinstance(e, dict) and "Input" in e for e in document):
        yield from _precompile_cases(path, document)
        return
    if not isinstance(document, dict) or not document:
        yield Case(
            name=path.name, path=path, format="?", problem="not a test vector file (expected a JSON object of tests)"
        )
        return
    for test_name, test in document.items():
        if isinstance(test, dict) and "exec" in test:
            yield _legacy_case(path, test_name, test)
        elif isinstance(test, dict) and "transaction" in test:
            yield from _state_cases(path, test_name, test)
        else:
            yield Case(
                name=f"{path.name}::{test_name}",
                path=path,
                format="?",
                problem="not a recognised test vector (neither a VMTest with 'exec' nor a state test with 'transaction')",
            )


def precompile_of(path: Path) -> int | None:
    """Which precompile a vector file is for, by its name (``fail-`` prefix aside) or folder and name."""
    stem = path.stem.removeprefix("fail-")
    return PRECOMPILE_FILES.get(stem, PRECOMPILE_FILES.get(f"{path.parent.name}/{stem}"))


def _precompile_cases(path: Path, entries: list[dict[str, Any]]) -> Iterator[Case]:
    address = precompile_of(path)
    for index, entry in enumerate(entries):
        name = f"{path.parent.name}/{path.name}::{entry.get('Name', index)}"
        if address is None:
            yield Case(name=name, path=path, format=PRECOMPILE_FORMAT, problem="precompile vectors, but the file's "
                       f"name does not say which precompile (known: {', '.join(sorted(PRECOMPILE_FILES))})")
            return
        try:
            gas = _int(entry["Gas"], "Gas") if "Gas" in entry else None
            if gas is not None and (address, gas) in REPRICED:
                gas = REPRICED[(address, gas)][0]
            yield Case(
                name=name,
                path=path,
                format=PRECOMPILE_FORMAT,
                to=address.to_bytes(20, "big"),
                data=_bytes(entry["Input"], "Input"),
                precompile=address,
                expected_gas=gas,
                expect_halt="ExpectedError" in entry,
                expected_out=_bytes(entry["Expected"], "Expected") if "Expected" in entry else None,
            )
        except (KeyError, ValueError, TypeError) as exc:
            yield Case(name=name, path=path, format=PRECOMPILE_FORMAT,
                       problem=f"malformed vector: {_describe_parse_error(exc)}")


def _legacy_case(path: Path, test_name: str, test: dict[str, Any]) -> Case:
    name = f"{path.parent.name}/{test_name}"
    try:
        env = test.get("env", {})
        exe = test["exec"]
        pre = _parse_accounts(test.get("pre", {}), "pre")
        address = _address(exe["address"], "exec.address")
        origin = _address(exe.get("origin", exe["caller"]), "exec.origin")
        block = BlockContext(
            coinbase=_address(env.get("currentCoinbase", "0x"), "env.currentCoinbase"),
            timestamp=_int(env.get("currentTimestamp", 0), "env.currentTimestamp"),
            number=_int(env.get("currentNumber", 0), "env.currentNumber"),
            # Post-Merge, 0x44 reads the beacon chain's randomness, not the
            # difficulty; legacy vectors have none, so it is 0.
            prevrandao=_int(env.get("currentRandom", 0), "env.currentRandom"),
            gas_limit=_int(env.get("currentGasLimit", 30_000_000), "env.currentGasLimit"),
            base_fee=_int(env.get("currentBaseFee", 0), "env.currentBaseFee"),
            gas_price=_int(exe.get("gasPrice", 0), "exec.gasPrice"),
            origin=origin,
        )
        post = test.get("post")
        return Case(
            name=name,
            path=path,
            format=LEGACY_FORMAT,
            fork="Constantinople",
            xfail=known_xfail(name),
            pre=pre,
            env=env,
            block=block,
            sender=_address(exe["caller"], "exec.caller"),
            to=address,
            code=_bytes(exe["code"], "exec.code"),
            data=_bytes(exe.get("data", "0x"), "exec.data"),
            value=_int(exe.get("value", 0), "exec.value"),
            gas=_int(exe["gas"], "exec.gas"),
            expect_halt=post is None,
            expected_out=_bytes(test["out"], "out") if "out" in test and post is not None else None,
            expected_logs_hash=_bytes(test["logs"], "logs") if "logs" in test else None,
            expected_post=_parse_accounts(post, "post") if post is not None else None,
        )
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        return Case(
            name=name, path=path, format=LEGACY_FORMAT, problem=f"malformed vector: {_describe_parse_error(exc)}"
        )


def _describe_parse_error(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    return str(exc)


def pick_fork(forks: Iterable[str]) -> str | None:
    """Cancun if present, else the nearest fork (later ones first), else any."""
    present = list(forks)
    if not present:
        return None
    if TARGET_FORK in present:
        return TARGET_FORK
    target = FORK_ORDER.index(TARGET_FORK)
    known = [f for f in present if f in FORK_ORDER]
    if not known:
        return sorted(present)[0]
    later = sorted((FORK_ORDER.index(f), f) for f in known if FORK_ORDER.index(f) > target)
    if later:
        return later[0][1]
    return max((FORK_ORDER.index(f), f) for f in known)[1]


def _state_cases(path: Path, test_name: str, test: dict[str, Any]) -> Iterator[Case]:
    post_by_fork = test.get("post")
    if not isinstance(post_by_fork, dict) or not post_by_fork:
        yield Case(name=test_name, path=path, format=STATE_FORMAT, problem="state test without 'post'")
        return
    fork = pick_fork(post_by_fork)
    assert fork is not None
    entries = post_by_fork[fork]
    if not isinstance(entries, list):
        yield Case(name=test_name, path=path, format=STATE_FORMAT, fork=fork, problem=f"post[{fork}] is not a list")
        return
    for index, entry in enumerate(entries):
        name = test_name if len(entries) == 1 else f"{test_name} [{fork} #{index}]"
        try:
            yield _state_case(path, name, test, fork, entry)
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            yield Case(
                name=name,
                path=path,
                format=STATE_FORMAT,
                fork=fork,
                problem=f"malformed vector: {_describe_parse_error(exc)}",
            )


def _sender_of(tx: Mapping[str, Any]) -> bytes:
    if "sender" in tx:
        return _address(tx["sender"], "transaction.sender")
    if "secretKey" not in tx:
        raise ValueError("transaction has neither 'sender' nor 'secretKey'")
    try:
        from eth_keys.datatypes import PrivateKey
    except ImportError:  # pragma: no cover - eth-keys comes with py-evm
        raise ValueError("transaction has no 'sender' and eth-keys is not installed to derive it") from None
    key = PrivateKey(_bytes(tx["secretKey"], "transaction.secretKey"))
    return key.public_key.to_canonical_address()


def _state_case(path: Path, name: str, test: dict[str, Any], fork: str, entry: dict[str, Any]) -> Case:
    env = test.get("env", {})
    tx = test["transaction"]
    indexes = entry.get("indexes", {})
    data_i, gas_i, value_i = (_int(indexes.get(k, 0), f"indexes.{k}") for k in ("data", "gas", "value"))
    data = _bytes(tx["data"][data_i], f"transaction.data[{data_i}]")
    gas = _int(tx["gasLimit"][gas_i], f"transaction.gasLimit[{gas_i}]")
    value = _int(tx["value"][value_i], f"transaction.value[{value_i}]")
    to_raw = tx.get("to", "")
    problem = None
    if not to_raw:
        problem = "contract-creation transactions are not modelled by this runner"
    elif tx.get("blobVersionedHashes") or "maxFeePerBlobGas" in tx:
        problem = "blob transactions are not modelled by this runner"
    elif tx.get("authorizationList"):
        problem = "EIP-7702 set-code transactions are not modelled by this runner"
    access_lists = tx.get("accessLists")
    addresses = keys_ = 0
    blob_hashes: tuple[bytes, ...] = ()
    if access_lists:
        access_list = access_lists[data_i] or []
        addresses = len(access_list)
        keys_ = sum(len(item.get("storageKeys", [])) for item in access_list)
    to = _address(to_raw, "transaction.to") if to_raw else bytes(20)
    pre = _parse_accounts(test["pre"], "pre")
    sender = _sender_of(tx)
    gas_price = _int(tx["gasPrice"], "transaction.gasPrice") if "gasPrice" in tx else None
    max_fee = _int(tx["maxFeePerGas"], "transaction.maxFeePerGas") if "maxFeePerGas" in tx else None
    max_prio = (
        _int(tx["maxPriorityFeePerGas"], "transaction.maxPriorityFeePerGas") if "maxPriorityFeePerGas" in tx else None
    )
    base_fee = _int(env.get("currentBaseFee", 0), "env.currentBaseFee")
    effective = _effective_gas_price(gas_price, max_fee, max_prio, base_fee)
    excess_blob_gas = _int(env.get("currentExcessBlobGas", 0), "env.currentExcessBlobGas")
    schedule = ((test.get("config") or {}).get("blobSchedule") or {}).get(fork) or {}
    fraction = _int(
        schedule.get("baseFeeUpdateFraction", BLOB_BASE_FEE_UPDATE_FRACTION.get(fork, 3_338_477)),
        "config.blobSchedule.baseFeeUpdateFraction",
    )
    chain_id = _int((test.get("config") or {}).get("chainid", 1), "config.chainid")
    random = env.get("currentRandom")
    block = BlockContext(
        coinbase=_address(env.get("currentCoinbase", "0x"), "env.currentCoinbase"),
        timestamp=_int(env.get("currentTimestamp", 0), "env.currentTimestamp"),
        number=_int(env.get("currentNumber", 0), "env.currentNumber"),
        prevrandao=_int(random if random is not None else env.get("currentDifficulty", 0), "env.currentRandom"),
        gas_limit=_int(env.get("currentGasLimit", 30_000_000), "env.currentGasLimit"),
        base_fee=base_fee,
        chain_id=chain_id,
        blob_base_fee=fake_exponential(MIN_BLOB_BASE_FEE, excess_blob_gas, fraction),
        blob_hashes=blob_hashes,
        gas_price=effective if effective is not None else 0,
        origin=sender,
    )
    logs = entry.get("logs")
    return Case(
        name=name,
        path=path,
        format=STATE_FORMAT,
        fork=fork,
        problem=problem,
        xfail=known_xfail(name),
        pre=pre,
        env=env,
        block=block,
        sender=sender,
        to=to,
        code=pre[to].code if to in pre else b"",
        data=data,
        value=value,
        gas=gas,
        tx_nonce=_int(tx.get("nonce", 0), "transaction.nonce"),
        gas_price=gas_price,
        max_fee_per_gas=max_fee,
        max_priority_fee_per_gas=max_prio,
        access_list_addresses=addresses,
        access_list_keys=keys_,
        expect_exception=entry.get("expectException") or None,
        expected_logs_hash=_bytes(logs, "logs") if logs is not None else None,
        expected_post=_parse_accounts(entry["state"], "post state") if "state" in entry else None,
    )


def _effective_gas_price(gas_price: int | None, max_fee: int | None, max_prio: int | None, base_fee: int) -> int | None:
    """Legacy: gasPrice.  EIP-1559: min(maxFeePerGas, baseFee + maxPriorityFeePerGas)."""
    if max_fee is not None:
        return min(max_fee, base_fee + (max_prio or 0))
    return gas_price


# --------------------------------------------------------------------------
# Running


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


@attrs.frozen
class TxCosts:
    """What the runner charges around the VM run for a state-test transaction."""

    intrinsic: int
    floor: int
    effective_gas_price: int
    invalid: str | None


def intrinsic_gas(data: bytes, access_list_addresses: int = 0, access_list_keys: int = 0) -> int:
    """21000 + 4 per zero / 16 per non-zero calldata byte + EIP-2930 access-list costs."""
    zeros = data.count(0)
    return (
        TX_BASE_GAS
        + TX_DATA_ZERO_GAS * zeros
        + TX_DATA_NONZERO_GAS * (len(data) - zeros)
        + ACCESS_LIST_ADDRESS_GAS * access_list_addresses
        + ACCESS_LIST_STORAGE_KEY_GAS * access_list_keys
    )


def floor_gas(data: bytes) -> int:
    """EIP-7623 (Prague): a transaction pays at least 21000 + 10 per calldata token."""
    zeros = data.count(0)
    tokens = zeros + 4 * (len(data) - zeros)
    return TX_BASE_GAS + FLOOR_GAS_PER_TOKEN * tokens


def _fork_at_least(fork: str, other: str) -> bool:
    return fork in FORK_ORDER and FORK_ORDER.index(fork) >= FORK_ORDER.index(other)


def transaction_costs(case: Case) -> TxCosts:
    """Intrinsic gas, floor, effective gas price and why the transaction is invalid (if it is)."""
    intrinsic = intrinsic_gas(case.data, case.access_list_addresses, case.access_list_keys)
    floor = floor_gas(case.data) if _fork_at_least(case.fork, "Prague") else 0
    base_fee = case.block.base_fee
    price = _effective_gas_price(case.gas_price, case.max_fee_per_gas, case.max_priority_fee_per_gas, base_fee)
    sender = case.pre.get(case.sender, Account())
    invalid = None
    if price is None:
        invalid = "transaction has neither gasPrice nor maxFeePerGas"
        price = 0
    elif case.max_fee_per_gas is not None and (case.max_priority_fee_per_gas or 0) > case.max_fee_per_gas:
        invalid = "maxPriorityFeePerGas exceeds maxFeePerGas"
    elif (case.max_fee_per_gas if case.max_fee_per_gas is not None else price) < base_fee:
        invalid = f"fee per gas below the base fee {base_fee}"
    elif case.gas < max(intrinsic, floor):
        invalid = f"gas limit {case.gas} below the intrinsic gas {max(intrinsic, floor)}"
    elif case.gas > case.block.gas_limit:
        invalid = f"gas limit {case.gas} above the block gas limit {case.block.gas_limit}"
    elif case.tx_nonce != sender.nonce:
        invalid = f"nonce {case.tx_nonce} but the sender's nonce is {sender.nonce}"
    elif sender.code:
        invalid = "sender has code (EIP-3607)"
    else:
        max_price = case.max_fee_per_gas if case.max_fee_per_gas is not None else price
        upfront = case.gas * max_price + case.value
        if sender.balance < upfront:
            invalid = f"sender balance {sender.balance} below the upfront cost {upfront}"
    return TxCosts(intrinsic=intrinsic, floor=floor, effective_gas_price=price, invalid=invalid)


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


def default_vectors_dir(repo_root: Path | None = None) -> Path:
    """Where the project keeps the vectors: ``../shared/conformance`` from the repository root."""
    root = repo_root or Path(__file__).resolve().parents[2]
    return root.parent / "shared" / "conformance"


__all__: Sequence[str] = (
    "Account",
    "Case",
    "CaseResult",
    "ConformanceError",
    "EthereumHost",
    "KNOWN_XFAILS",
    "KNOWN_XFAIL_PREFIXES",
    "PRECOMPILE_FILES",
    "Outcome",
    "Summary",
    "default_vectors_dir",
    "iter_cases",
    "logs_hash",
    "run_case",
    "run_cases",
    "run_paths",
)
