"""What a conformance case is (:class:`Case`, its accounts, the function that runs it) and the
small parsers of the vectors' JSON values every reader shares.

Part of :mod:`missive.toolchain.conformance` (which says what the runner checks, and how).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol

import attrs
from Crypto.Hash import keccak

from missive.errors import MissiveError
from missive.toolchain import rlp
from missive.vm.host import Host
from missive.vm.types import BlockContext, ExecutionResult, Log

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


#: Forks in order; a state test is run under Cancun, or else under the fork
#: nearest to it (later ones first: their opcode semantics are a superset).
FORK_ORDER: Final = (
    "Frontier", "Homestead", "EIP150", "EIP158", "Byzantium", "Constantinople", "ConstantinopleFix",
    "Petersburg", "Istanbul", "Berlin", "London", "Paris", "Merge", "Shanghai", "Cancun", "Prague", "Osaka",
)  # fmt: skip
TARGET_FORK: Final = "Cancun"


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
