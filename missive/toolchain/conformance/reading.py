r"""Reading vectors: legacy VMTests, state tests and precompile vectors, into :class:`Case`\ s.

Part of :mod:`missive.toolchain.conformance` (which says what the runner checks, and how).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from missive.toolchain.conformance.cases import (
    FORK_ORDER,
    LEGACY_FORMAT,
    PRECOMPILE_FILES,
    PRECOMPILE_FORMAT,
    REPRICED,
    STATE_FORMAT,
    TARGET_FORK,
    Case,
    ConformanceError,
    _address,
    _bytes,
    _int,
    _parse_accounts,
)
from missive.toolchain.conformance.gas import (
    BLOB_BASE_FEE_UPDATE_FRACTION,
    MIN_BLOB_BASE_FEE,
    _effective_gas_price,
    fake_exponential,
)
from missive.toolchain.conformance.results import known_xfail
from missive.vm.types import BlockContext


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


def default_vectors_dir(repo_root: Path | None = None) -> Path:
    """Where the project keeps the vectors: ``../shared/conformance`` from the repository root."""
    root = repo_root or Path(__file__).resolve().parents[3]
    return root.parent / "shared" / "conformance"
