"""Benchmark Missive's VM against py-evm and pyrevm on the same bytecode.

Why these three: py-evm is the pure-Python EVM Missive replaces (the VM must
beat it by two orders of magnitude on plain loops for actors to be cheap to
run and to re-execute), and pyrevm is revm, a Rust EVM, the practical ceiling
for an EVM called from Python (Missive aims to stay within 3x of it).

Every peer runs the same bytecode in one process; times are CPU time, best of
N repeats (``tools/bench/_common.py``).  For the hand-assembled loops the
number of executed EVM instructions is known exactly, so the table shows
nanoseconds per instruction; for contract calls it shows time per call.  Each
workload also checks that the peers agree on the gas used, so a figure can
never come from a run that did something else.

Workloads:
  loop      1,000,000-iteration ADD/LT/JUMPI counter loop
  keccak    100,000 KECCAK256 of 32 bytes in a loop
  sstore    10,000 iterations writing distinct slots (cold SLOAD + new SSTORE)
  sinc      10,000 increments of one slot (warm SLOAD/SSTORE)
  transfer  2,000 calls of a Vyper ERC20 ``transfer(address,uint256)``
  setup     per-call cost of ``execute`` on PUSH0 PUSH0 RETURN (100,000 calls)

Compiled code that runs long inside one call (issue 27), each one call whose
output and gas are checked identical in every peer:
  vy-transfers  Vyper: 5,000 ERC20 transfers inside one call (contracts/Compute.vy)
  vy-keccak     Vyper: keccak chain of 20,000
  vy-sort       Vyper: bubble sort of 200 words in memory
  sol-mandel    Solidity: 48x32 Mandelbrot, 64 steps, int256 fixed point (contracts/Compute.sol)
  sol-sieve     Solidity: sieve of Eratosthenes below 60,000 over a memory array
  sol-fib       Solidity: recursive fib(20), internal calls and returns
  snailtracer   the SnailTracer ray tracer's Benchmark() (solc-compiled), when its
                bytecode is given: ``--snailtracer FILE`` or MISSIVE_SNAILTRACER=FILE,
                a file of hex runtime code or ipsilon/evm-benchmarks'
                benchmarks/main/snailtracer.json.  It is not part of this repository.

Measurement: ``--rounds`` interleaved rounds; in each round every workload runs
once in each peer (the peers' order rotates from round to round), so a noisy
moment on a shared machine hits every peer alike.  The table shows medians;
the JSON keeps every sample and the per-round ours/pyrevm ratios.  py-evm, far
slower, runs only in the first ``--pyevm-repeats`` rounds.

Run: ``PYTHONPATH=. python tools/bench/vm.py [--quick] [--out FILE]``.
py-evm and pyrevm are optional; a missing one is skipped with a message.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    # Run as a script: make `tools` (and an uninstalled `missive`) importable.
    # Appended, not prepended, so an installed (compiled) missive still wins.
    sys.path.append(str(REPO))

import missive.vm as missive_vm  # noqa: E402
from missive.vm import execute  # noqa: E402
from tools.bench._common import RESULTS, machine_info, no_setup, write_json  # noqa: E402

CONTRACTS = REPO / "tools" / "bench" / "contracts"
TOKEN_SOURCE = CONTRACTS / "Token.vy"
COMPUTE_VY = CONTRACTS / "Compute.vy"
#: Runtime code of contracts/Compute.sol (solc 0.8.28, see the source's header).
COMPUTE_SOL_HEX = CONTRACTS / "compute_sol.hex"

TOKEN = bytes.fromhex("00000000000000000000000000000000000070c3")
ALICE = bytes.fromhex("00000000000000000000000000000000000a11ce")
RUNNER = bytes.fromhex("00000000000000000000000000000000000c0de0")
CALLER = bytes.fromhex("00000000000000000000000000000000ca11e400")

#: Gas for the raw loops: far more than any of them needs (sstore uses ~221M).
BIG_GAS = 1_000_000_000
CALL_GAS = 1_000_000

# ---------------------------------------------------------------------------
# Hand-assembled programs
# ---------------------------------------------------------------------------

JUMPDEST, PUSH0, STOP, RETURN = b"\x5b", b"\x5f", b"\x00", b"\xf3"
ADD, LT, JUMPI, POP = b"\x01", b"\x10", b"\x57", b"\x50"
DUP1, DUP2, MSTORE, KECCAK256 = b"\x80", b"\x81", b"\x52", b"\x20"
SLOAD, SSTORE = b"\x54", b"\x55"


def push(value: int, width: int) -> bytes:
    return bytes([0x5F + width]) + value.to_bytes(width, "big")


def counter_loop(body: Sequence[bytes], iterations: int) -> tuple[bytes, int]:
    """A counted loop around ``body``; returns (code, executed instructions).

    Layout (each list item is one instruction, which is what makes the count
    exact)::

        PUSH0                       ; i = 0
      top:
        JUMPDEST  <body>            ; body sees i on top and must leave it
        PUSH1 1  ADD                ; i += 1
        PUSH4 n  DUP2  LT           ; i < n ?
        PUSH1 top  JUMPI
        STOP
    """
    assert iterations >= 1
    head = [PUSH0]
    step = [JUMPDEST, *body, push(1, 1), ADD, push(iterations, 4), DUP2, LT, push(1, 1), JUMPI]
    tail = [STOP]
    code = b"".join(head + step + tail)
    return code, len(head) + iterations * len(step) + len(tail)


def loop_add(n: int) -> tuple[bytes, int]:
    """The bare counter loop: ADD, LT, JUMPI and stack traffic, nothing else."""
    return counter_loop([], n)


def loop_keccak(n: int) -> tuple[bytes, int]:
    """mem[0:32] = i; keccak256(mem[0:32]) each iteration (a different input every time)."""
    return counter_loop([DUP1, PUSH0, MSTORE, push(32, 1), PUSH0, KECCAK256, POP], n)


def loop_sstore(n: int) -> tuple[bytes, int]:
    """storage[i] = storage[i] + i: a cold SLOAD and a fresh slot every iteration."""
    return counter_loop([DUP1, SLOAD, DUP2, ADD, DUP2, SSTORE], n)


def loop_increment(n: int) -> tuple[bytes, int]:
    """storage[0] += 1: the warm, dirty-slot SSTORE path (EIP-2200 100-gas case)."""
    return counter_loop([PUSH0, SLOAD, push(1, 1), ADD, PUSH0, SSTORE], n)


TINY = PUSH0 + PUSH0 + RETURN  # return empty data: the least a call can do


# ---------------------------------------------------------------------------
# The peers
# ---------------------------------------------------------------------------


def _load_pyevm() -> Any:
    try:
        from tests import evm_oracle
    except ImportError as exc:
        print(f"py-evm not available, skipped: {exc}")
        return None
    return evm_oracle


def _load_pyrevm() -> Any:
    try:
        import pyrevm
    except ImportError as exc:
        print(f"pyrevm not available, skipped: {exc}")
        return None
    return pyrevm


def _hex(address: bytes) -> str:
    return "0x" + address.hex()


def _intrinsic(data: bytes) -> int:
    """Intrinsic gas of a call transaction (pyrevm charges it; the others do not)."""
    return 21_000 + sum(16 if b else 4 for b in data)


@dataclass
class Peer:
    """How one VM runs a workload: an untimed setup and a timed run.

    ``run`` returns the execution gas of its last call (intrinsic gas and
    refunds taken out where the peer includes them), for the agreement check.
    """

    setup: Callable[[], Any]
    run: Callable[[Any], int]
    repeats: int


@dataclass
class Workload:
    name: str
    title: str
    size: int
    unit: str  # what ``size`` counts: "iterations" or "calls"
    instructions: int | None  # executed EVM instructions per run, when known
    peers: dict[str, Peer] = field(default_factory=dict)
    #: Targets: minimum py-evm/ours, maximum ours/pyrevm, maximum µs per call.
    min_vs_pyevm: float | None = None
    max_vs_pyrevm: float | None = None
    max_us_per_call: float | None = None
    #: Calls each peer makes when they differ from ``size`` (py-evm is too slow
    #: for 100,000 calls); ratios are then taken per call.
    calls_per_peer: dict[str, int] = field(default_factory=dict)
    #: False where pyrevm's gas cannot match: pyrevm never finalizes its
    #: journal between ``message_call``s (its README: it "does not
    #: automatically commit"), so slots stay warm and dirty from one call to
    #: the next and later transfers are charged as in one long transaction.
    pyrevm_gas_comparable: bool = True
    #: A compiled workload of one long call: outputs are compared too.
    compiled: bool = False
    outputs: dict[str, bytes] = field(default_factory=dict)
    expect: bytes | None = None


def raw_workload(
    name: str,
    title: str,
    program: tuple[bytes, int],
    iterations: int,
    repeats: int,
    pyevm_repeats: int,
    pyevm: Any,
    pyrevm: Any,
    min_vs_pyevm: float | None = None,
    max_vs_pyrevm: float | None = None,
) -> Workload:
    """One run of a hand-assembled program per repeat, in each VM."""
    code, count = program
    w = Workload(name, title, iterations, "iterations", count)
    w.min_vs_pyevm, w.max_vs_pyrevm = min_vs_pyevm, max_vs_pyrevm

    def ours(_: None) -> int:
        r = execute(code, address=RUNNER, caller=CALLER, gas=BIG_GAS)
        assert r.success, r
        return r.gas_used

    w.peers["ours"] = Peer(no_setup, ours, repeats)

    if pyevm is not None:

        def pe_setup() -> Any:
            world = pyevm.PyEvmWorld()
            world.install(RUNNER, code=code)
            return world

        def pe_run(world: Any) -> int:
            c = world.apply(code=code, address=RUNNER, caller=CALLER, gas=BIG_GAS)
            assert c.is_success, c.error
            return int(BIG_GAS - c.get_gas_remaining())

        w.peers["py-evm"] = Peer(pe_setup, pe_run, pyevm_repeats)

    if pyrevm is not None:

        def rv_setup() -> Any:
            evm = pyrevm.EVM(spec_id="CANCUN")
            evm.insert_account_info(_hex(RUNNER), pyrevm.AccountInfo(code=code))
            return evm

        def rv_run(evm: Any) -> int:
            evm.message_call(_hex(CALLER), _hex(RUNNER), b"", gas=BIG_GAS)
            res = evm.result
            assert res.is_success, res.reason
            return int(res.gas_used + res.gas_refunded - _intrinsic(b""))

        w.peers["pyrevm"] = Peer(rv_setup, rv_run, repeats)
    return w


def _compile_token() -> tuple[bytes, bytes]:
    """(init code, runtime code) of the benchmark ERC20, compiled for Cancun."""
    import vyper
    from vyper.compiler.settings import Settings

    out = vyper.compile_code(
        TOKEN_SOURCE.read_text(),
        output_formats=["bytecode", "bytecode_runtime"],
        settings=Settings(evm_version="cancun"),
    )
    return bytes.fromhex(out["bytecode"][2:]), bytes.fromhex(out["bytecode_runtime"][2:])


def transfer_workload(calls: int, repeats: int, pyevm_repeats: int, pyevm: Any, pyrevm: Any) -> Workload:
    """``calls`` ERC20 transfers from one holder to 64 rotating receivers.

    Ours runs the init code once through ``execute`` (its output is the
    runtime code, its storage writes the initial storage), then executes each
    transfer as a fresh run against the current storage, merging each run's
    writes into it, which is what the actor runtime does per message.  py-evm
    deploys with a create message and calls through ``apply_message``;
    pyrevm deploys and calls through its transaction API.
    """
    init, runtime = _compile_token()
    supply = 10**30
    init_with_args = init + supply.to_bytes(32, "big")
    selector = bytes.fromhex("a9059cbb")  # transfer(address,uint256)
    receivers = [(0xBEEF0000 + i).to_bytes(20, "big") for i in range(64)]
    calldatas = [selector + bytes(12) + receivers[i % 64] + (1 + i % 7).to_bytes(32, "big") for i in range(calls)]
    true = (1).to_bytes(32, "big")

    w = Workload("transfer", "Vyper ERC20 transfer()", calls, "calls", None, min_vs_pyevm=30.0)
    w.pyrevm_gas_comparable = False

    deployed = execute(init_with_args, address=TOKEN, caller=ALICE, gas=10_000_000)
    assert deployed.success, deployed
    assert deployed.output == runtime, "init code did not return the compiled runtime code"
    initial_storage = {k: v for k, v in deployed.storage_writes.items() if v}

    def ours_setup() -> dict[int, int]:
        return dict(initial_storage)

    def ours_run(storage: dict[int, int]) -> int:
        r = None
        for data in calldatas:
            r = execute(runtime, address=TOKEN, caller=ALICE, data=data, storage=storage, gas=CALL_GAS)
            storage.update(r.storage_writes)
        assert r is not None and r.success and r.output == true, r
        return r.gas_used

    w.peers["ours"] = Peer(ours_setup, ours_run, repeats)

    if pyevm is not None:

        def pe_setup() -> Any:
            world = pyevm.PyEvmWorld()
            c = world.apply(code=init_with_args, address=TOKEN, caller=ALICE, gas=10_000_000, create=True)
            assert c.is_success, c.error
            return world

        def pe_run(world: Any) -> int:
            c = None
            for data in calldatas:
                c = world.apply(code=runtime, address=TOKEN, caller=ALICE, data=data, gas=CALL_GAS)
            assert c is not None and c.is_success and c.output == true, c
            return int(CALL_GAS - c.get_gas_remaining())

        w.peers["py-evm"] = Peer(pe_setup, pe_run, pyevm_repeats)

    if pyrevm is not None:

        def rv_setup() -> tuple[Any, str]:
            evm = pyrevm.EVM(spec_id="CANCUN")
            evm.set_balance(_hex(ALICE), 10**20)
            address = evm.deploy(_hex(ALICE), init_with_args, gas=10_000_000)
            return evm, address

        def rv_run(prepared: tuple[Any, str]) -> int:
            evm, address = prepared
            out = b""
            for data in calldatas:
                out = evm.message_call(_hex(ALICE), address, data, gas=CALL_GAS)
            res = evm.result
            assert res.is_success and bytes(out) == true, res.reason
            return int(res.gas_used + res.gas_refunded - _intrinsic(calldatas[-1]))

        w.peers["pyrevm"] = Peer(rv_setup, rv_run, repeats)
    return w


def setup_workload(calls: int, pyevm_calls: int, repeats: int, pyevm: Any, pyrevm: Any) -> Workload:
    """Per-call overhead: the whole cost of running a 3-instruction program.

    This is what every message pays before its first instruction (argument
    checks, warm set, translation cache lookup, result object), so it bounds
    how many small messages per second a node can handle.  py-evm runs fewer
    calls (it is far slower); the figure compared is time per call.
    """
    w = Workload("setup", "execute() per-call cost (PUSH0 PUSH0 RETURN)", calls, "calls", None)
    w.max_us_per_call = 10.0

    def ours_run(_: None) -> int:
        r = None
        for _i in range(calls):
            r = execute(TINY, address=RUNNER, caller=CALLER, gas=100_000)
        assert r is not None and r.success
        return r.gas_used

    w.peers["ours"] = Peer(no_setup, ours_run, repeats)

    if pyevm is not None:

        def pe_setup() -> Any:
            world = pyevm.PyEvmWorld()
            world.install(RUNNER, code=TINY)
            return world

        def pe_run(world: Any) -> int:
            c = None
            for _i in range(pyevm_calls):
                c = world.apply(code=TINY, address=RUNNER, caller=CALLER, gas=100_000)
            assert c is not None and c.is_success
            return int(100_000 - c.get_gas_remaining())

        w.peers["py-evm"] = Peer(pe_setup, pe_run, 1)

    if pyrevm is not None:

        def rv_setup() -> Any:
            evm = pyrevm.EVM(spec_id="CANCUN")
            evm.insert_account_info(_hex(RUNNER), pyrevm.AccountInfo(code=TINY))
            return evm

        def rv_run(evm: Any) -> int:
            for _i in range(calls):
                evm.message_call(_hex(CALLER), _hex(RUNNER), b"", gas=100_000)
            res = evm.result
            return int(res.gas_used + res.gas_refunded - _intrinsic(b""))

        w.peers["pyrevm"] = Peer(rv_setup, rv_run, repeats)
    w.calls_per_peer = {"py-evm": pyevm_calls}
    return w


# ---------------------------------------------------------------------------
# Compiled code that runs long inside one call
# ---------------------------------------------------------------------------


def _compile_vyper_runtime(path: Path) -> bytes:
    import vyper
    from vyper.compiler.settings import Settings

    out = vyper.compile_code(
        path.read_text(), output_formats=["bytecode_runtime"], settings=Settings(evm_version="cancun")
    )
    return bytes.fromhex(out["bytecode_runtime"][2:])


def _selector(signature: str) -> bytes:
    from missive.vm.keccak import keccak256

    return keccak256(signature.encode())[:4]


def _call(signature: str, *args: int) -> bytes:
    return _selector(signature) + b"".join(a.to_bytes(32, "big") for a in args)


def load_snailtracer(path: Path) -> bytes:
    """SnailTracer's runtime code from a hex file or evm-benchmarks' snailtracer.json."""
    import json

    text = path.read_text().strip()
    if text.startswith("{"):
        test = next(iter(json.loads(text).values()))
        code = test["pre"][test["transaction"]["to"]]["code"]
    else:
        code = text
    return bytes.fromhex(code.removeprefix("0x"))


def call_workload(
    name: str, title: str, code: bytes, data: bytes, pyevm: Any, pyrevm: Any, expect: bytes | None = None
) -> Workload:
    """One call of ``data`` into ``code`` (fresh, empty storage), in every peer.

    Each peer's output is recorded so that ``Measured`` can check they agree.
    """
    w = Workload(name, title, 1, "calls", None, max_vs_pyrevm=3.0)
    w.compiled = True
    outputs = w.outputs

    def ours(_: None) -> int:
        r = execute(code, address=RUNNER, caller=CALLER, data=data, gas=BIG_GAS)
        assert r.success, r
        outputs["ours"] = r.output
        return r.gas_used

    w.peers["ours"] = Peer(no_setup, ours, 1)

    if pyevm is not None:

        def pe_setup() -> Any:
            world = pyevm.PyEvmWorld()
            world.install(RUNNER, code=code)
            return world

        def pe_run(world: Any) -> int:
            c = world.apply(code=code, address=RUNNER, caller=CALLER, data=data, gas=BIG_GAS)
            assert c.is_success, c.error
            outputs["py-evm"] = bytes(c.output)
            return int(BIG_GAS - c.get_gas_remaining())

        w.peers["py-evm"] = Peer(pe_setup, pe_run, 1)

    if pyrevm is not None:

        def rv_setup() -> Any:
            evm = pyrevm.EVM(spec_id="CANCUN", gas_limit=BIG_GAS + 1_000_000)
            evm.insert_account_info(_hex(RUNNER), pyrevm.AccountInfo(code=code))
            return evm

        def rv_run(evm: Any) -> int:
            out = evm.message_call(_hex(CALLER), _hex(RUNNER), data, gas=BIG_GAS)
            res = evm.result
            assert res.is_success, res.reason
            outputs["pyrevm"] = bytes(out)
            return int(res.gas_used + res.gas_refunded - _intrinsic(data))

        w.peers["pyrevm"] = Peer(rv_setup, rv_run, 1)
    w.expect = expect
    return w


def compiled_workloads(args: argparse.Namespace, pyevm: Any, pyrevm: Any) -> dict[str, Callable[[], Workload]]:
    q = args.quick
    makers: dict[str, Callable[[], Workload]] = {}
    vy: list[bytes] = []

    def vyper_code() -> bytes:
        if not vy:
            vy.append(_compile_vyper_runtime(COMPUTE_VY))
        return vy[0]

    n_transfers, n_keccak, n_sort = (500, 2_000, 60) if q else (5_000, 20_000, 200)
    makers["vy-transfers"] = lambda: call_workload(
        "vy-transfers",
        f"Vyper: {n_transfers:,} ERC20 transfers in one call",
        vyper_code(),
        _call("transfers(uint256)", n_transfers),
        pyevm,
        pyrevm,
    )
    makers["vy-keccak"] = lambda: call_workload(
        "vy-keccak",
        f"Vyper: keccak chain of {n_keccak:,}",
        vyper_code(),
        _call("keccak_chain(bytes32,uint256)", 0x5EED, n_keccak),
        pyevm,
        pyrevm,
    )
    makers["vy-sort"] = lambda: call_workload(
        "vy-sort",
        f"Vyper: bubble sort of {n_sort}",
        vyper_code(),
        _call("bubble_sort(uint256,uint256)", n_sort, 42),
        pyevm,
        pyrevm,
    )
    sol = bytes.fromhex(COMPUTE_SOL_HEX.read_text().strip())
    mw, mh, mi = (16, 12, 32) if q else (48, 32, 64)
    n_sieve, n_fib = (6_000, 14) if q else (60_000, 20)
    makers["sol-mandel"] = lambda: call_workload(
        "sol-mandel",
        f"Solidity: {mw}x{mh} Mandelbrot, {mi} steps, int256 fixed point",
        sol,
        _call("mandelbrot(uint256,uint256,uint256)", mw, mh, mi),
        pyevm,
        pyrevm,
    )
    makers["sol-sieve"] = lambda: call_workload(
        "sol-sieve",
        f"Solidity: sieve below {n_sieve:,} in memory",
        sol,
        _call("sieve(uint256)", n_sieve),
        pyevm,
        pyrevm,
    )
    makers["sol-fib"] = lambda: call_workload(
        "sol-fib",
        f"Solidity: recursive fib({n_fib})",
        sol,
        _call("fib(uint256)", n_fib),
        pyevm,
        pyrevm,
    )
    snail = args.snailtracer or os.environ.get("MISSIVE_SNAILTRACER")
    if snail:
        makers["snailtracer"] = lambda: call_workload(
            "snailtracer",
            "SnailTracer Benchmark() (solc, held back)",
            load_snailtracer(Path(snail)),
            bytes.fromhex("30627b7c"),
            pyevm,
            pyrevm,
        )
    return makers  # fmt: skip


# ---------------------------------------------------------------------------
# Running and reporting
# ---------------------------------------------------------------------------


@dataclass
class Measured:
    workload: Workload
    #: median CPU seconds per run, per peer
    seconds: dict[str, float]
    gas: dict[str, int]
    #: every timed run, in round order
    samples: dict[str, list[float]] = field(default_factory=dict)
    #: ours/pyrevm per unit, for each round both ran in
    round_ratios: list[float] = field(default_factory=list)

    def per_unit(self, peer: str) -> float:
        """Seconds per call / iteration for ``peer`` (peers may run different counts)."""
        calls = self.workload.calls_per_peer.get(peer, self.workload.size)
        return self.seconds[peer] / calls

    def ratio_pyevm(self) -> float | None:
        if "py-evm" not in self.seconds:
            return None
        return self.per_unit("py-evm") / self.per_unit("ours")

    def ratio_pyrevm(self) -> float | None:
        if "pyrevm" not in self.seconds:
            return None
        return self.per_unit("ours") / self.per_unit("pyrevm")

    def ns_per_instruction(self, peer: str) -> float | None:
        if self.workload.instructions is None or peer not in self.seconds:
            return None
        return self.seconds[peer] / self.workload.instructions * 1e9

    def gas_agrees(self) -> bool:
        """Execution gas (and, for one-call workloads, the output) is the same in every comparable peer."""
        compared = {p: g for p, g in self.gas.items() if p != "pyrevm" or self.workload.pyrevm_gas_comparable}
        outputs = set(self.workload.outputs.values())
        return len(set(compared.values())) == 1 and len(outputs) <= 1

    def targets(self) -> list[tuple[str, bool]]:
        """(description, met) for each target of this workload we could check."""
        w, out = self.workload, []
        r = self.ratio_pyevm()
        if w.min_vs_pyevm is not None and r is not None:
            out.append((f">={w.min_vs_pyevm:g}x py-evm", r >= w.min_vs_pyevm))
        r = self.ratio_pyrevm()
        if w.max_vs_pyrevm is not None and r is not None:
            out.append((f"<={w.max_vs_pyrevm:g}x pyrevm", r <= w.max_vs_pyrevm))
        if w.max_us_per_call is not None:
            us = self.per_unit("ours") * 1e6
            out.append((f"<{w.max_us_per_call:g} us/call", us < w.max_us_per_call))
        return out

    def to_json(self) -> dict[str, Any]:
        w = self.workload
        return {
            "name": w.name,
            "title": w.title,
            "size": w.size,
            "unit": w.unit,
            "instructions": w.instructions,
            "seconds": self.seconds,
            "seconds_per_unit": {p: self.per_unit(p) for p in self.seconds},
            "ns_per_instruction": {p: v for p in self.seconds if (v := self.ns_per_instruction(p)) is not None},
            "pyevm_over_ours": self.ratio_pyevm(),
            "ours_over_pyrevm": self.ratio_pyrevm(),
            "samples": self.samples,
            "ours_over_pyrevm_per_round": self.round_ratios,
            "gas": self.gas,
            "gas_agrees": self.gas_agrees(),
            "output": next(iter(w.outputs.values())).hex() if w.outputs else None,
            "targets": [{"target": t, "met": ok} for t, ok in self.targets()],
        }


def _time_once(peer: Peer) -> tuple[float, int]:
    """(CPU seconds, gas) of one run of ``peer``; its setup is not timed.

    The garbage collector runs before and is paused during the run, so that a
    collection of earlier garbage is not billed to it.
    """
    prepared = peer.setup()
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        gas = peer.run(prepared)
        elapsed = time.process_time() - start
    finally:
        gc.enable()
    return elapsed, gas


def measure_rounds(
    workloads: list[Workload], rounds: int, pyevm_rounds: int, log: Callable[[str], None]
) -> list[Measured]:
    """Interleaved rounds: each round runs every workload once in each peer.

    The order of the peers rotates from round to round.  py-evm runs only in
    the first ``pyevm_rounds`` rounds.  A warm-up run of ours (untimed)
    translates the code first, as a node that has seen the contract would.
    """
    samples: dict[str, dict[str, list[float]]] = {w.name: {p: [] for p in w.peers} for w in workloads}
    gas: dict[str, dict[str, int]] = {w.name: {} for w in workloads}
    for w in workloads:
        if "ours" in w.peers:
            _time_once(w.peers["ours"])
    for r in range(rounds):
        log(f"round {r + 1}/{rounds}")
        for w in workloads:
            names = list(w.peers)
            names = names[r % len(names) :] + names[: r % len(names)]
            for name in names:
                if name == "py-evm" and r >= pyevm_rounds:
                    continue
                elapsed, g = _time_once(w.peers[name])
                samples[w.name][name].append(elapsed)
                gas[w.name][name] = g
    results = []
    for w in workloads:
        s = {p: v for p, v in samples[w.name].items() if v}
        m = Measured(w, {p: statistics.median(v) for p, v in s.items()}, gas[w.name], s)
        if "pyrevm" in s and "ours" in s:
            m.round_ratios = [a / b for a, b in zip(s["ours"], s["pyrevm"], strict=False)]
        results.append(m)
    return results


def _fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} us"


def _fmt_unit(m: Measured, peer: str) -> str:
    if peer not in m.seconds:
        return "-"
    ns = m.ns_per_instruction(peer)
    if ns is not None:
        return f"{_fmt_time(m.seconds[peer])}\n{ns:.1f} ns/instr"
    return f"{_fmt_time(m.seconds[peer])}\n{m.per_unit(peer) * 1e6:.2f} us/call"


def _ratio_range(m: Measured) -> str:
    if len(m.round_ratios) < 2:
        return ""
    return f"\n{min(m.round_ratios):.2f}-{max(m.round_ratios):.2f}"


def print_table(results: list[Measured], compiled: bool) -> None:
    """A rich table: time per run, per instruction or call, ratios, targets."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if console.width < 140:  # piped output (CI logs) defaults to 80 columns
        console = Console(width=140)
    table = Table(title=f"Missive VM benchmark (mypyc-compiled: {compiled})", show_lines=True)
    for col in ("workload", "size", "ours", "py-evm", "py-evm/ours", "pyrevm", "ours/pyrevm", "gas", "targets"):
        left = col in ("workload", "targets", "gas")
        table.add_column(col, justify="left" if left else "right", no_wrap=not left)
    for m in results:
        w = m.workload
        rp, rr = m.ratio_pyevm(), m.ratio_pyrevm()
        targets = "\n".join(f"[{'green' if ok else 'red'}]{'ok' if ok else 'MISS'} {t}[/]" for t, ok in m.targets())
        gas = "agrees" if m.gas_agrees() else "[red]DIFFERS[/]"
        if not w.pyrevm_gas_comparable and "pyrevm" in m.gas:
            gas += "\n(pyrevm n/a)"
        table.add_row(
            w.name,
            f"{w.size:,}\n{w.unit}",
            _fmt_unit(m, "ours"),
            _fmt_unit(m, "py-evm"),
            f"{rp:.1f}x" if rp is not None else "-",
            _fmt_unit(m, "pyrevm"),
            (f"{rr:.2f}x" if rr is not None else "-") + _ratio_range(m),
            gas,
            targets or "-",
        )
    console.print(table)
    for m in results:
        console.print(f"  {m.workload.name:9} {m.workload.title}; gas per run {m.gas}")
    console.print(
        "  pyrevm gas is shown without its intrinsic (transaction) gas.  pyrevm keeps one journal"
        " across calls, so its transfer gas (warm, dirty slots) is not comparable."
    )


SIMPLE = ("loop", "keccak", "sstore", "sinc", "transfer", "setup")
COMPILED = ("vy-transfers", "vy-keccak", "vy-sort", "sol-mandel", "sol-sieve", "sol-fib", "snailtracer")


def build_workloads(args: argparse.Namespace, pyevm: Any, pyrevm: Any) -> list[Workload]:
    q = args.quick
    reps, pe_reps = args.repeats, args.pyevm_repeats
    sizes = {
        "loop": 100_000 if q else 1_000_000,
        "keccak": 10_000 if q else 100_000,
        "sstore": 1_000 if q else 10_000,
        "sinc": 2_000 if q else 10_000,
        "transfer": 200 if q else 2_000,
        "setup": 10_000 if q else 100_000,
        "setup-pyevm": 300 if q else 2_000,
    }
    makers: dict[str, Callable[[], Workload]] = {
        "loop": lambda: raw_workload(
            "loop", "ADD/LT/JUMPI counter loop", loop_add(sizes["loop"]), sizes["loop"],
            reps, pe_reps, pyevm, pyrevm, min_vs_pyevm=100.0, max_vs_pyrevm=3.0,
        ),
        "keccak": lambda: raw_workload(
            "keccak", "KECCAK256 of 32 bytes in a loop", loop_keccak(sizes["keccak"]), sizes["keccak"],
            reps, pe_reps, pyevm, pyrevm,
        ),
        "sstore": lambda: raw_workload(
            "sstore", "SLOAD+SSTORE of a new slot per iteration", loop_sstore(sizes["sstore"]),
            sizes["sstore"], reps, pe_reps, pyevm, pyrevm,
        ),
        "sinc": lambda: raw_workload(
            "sinc", "increment one slot (warm SLOAD/SSTORE)", loop_increment(sizes["sinc"]),
            sizes["sinc"], reps, pe_reps, pyevm, pyrevm,
        ),
        "transfer": lambda: transfer_workload(sizes["transfer"], reps, pe_reps, pyevm, pyrevm),
        "setup": lambda: setup_workload(sizes["setup"], sizes["setup-pyevm"], reps, pyevm, pyrevm),
    }  # fmt: skip
    makers.update(compiled_workloads(args, pyevm, pyrevm))
    if args.only and "snailtracer" in args.only and "snailtracer" not in makers:
        raise SystemExit("snailtracer: give its bytecode with --snailtracer FILE or MISSIVE_SNAILTRACER=FILE")
    chosen = args.only or [n for n in makers if not (args.compiled_only and n in SIMPLE)]
    return [makers[name]() for name in chosen]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="scaled-down sizes for a CI smoke run (< ~20 s)")
    parser.add_argument("--out", type=Path, default=RESULTS / "vm.json", help="JSON output file")
    parser.add_argument(
        "--rounds",
        "--repeats",
        dest="repeats",
        type=int,
        default=None,
        help="interleaved rounds for ours and pyrevm (medians are shown)",
    )
    parser.add_argument("--pyevm-repeats", type=int, default=1, help="rounds py-evm runs in (slow)")
    parser.add_argument("--only", nargs="+", choices=[*SIMPLE, *COMPILED], help="workloads to run")
    parser.add_argument("--compiled-only", action="store_true", help="only the compiled one-call workloads")
    parser.add_argument(
        "--snailtracer",
        type=Path,
        default=None,
        help="SnailTracer runtime code (hex file or evm-benchmarks snailtracer.json)",
    )
    parser.add_argument("--no-pyevm", action="store_true", help="skip py-evm")
    parser.add_argument("--no-pyrevm", action="store_true", help="skip pyrevm")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5

    pyevm = None if args.no_pyevm else _load_pyevm()
    pyrevm = None if args.no_pyrevm else _load_pyrevm()
    info = missive_vm.build_info() if hasattr(missive_vm, "build_info") else {"compiled": None}
    compiled = bool(info.get("compiled"))
    if not compiled:
        print("note: the VM is NOT mypyc-compiled here; figures are for the pure-Python build")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results = measure_rounds(build_workloads(args, pyevm, pyrevm), args.repeats, args.pyevm_repeats, log)
    print_table(results, compiled)
    data = {
        "benchmark": "vm",
        "quick": args.quick,
        "build_info": info,
        "machine": machine_info(),
        "peers": {"py-evm": pyevm is not None, "pyrevm": pyrevm is not None},
        "rounds": args.repeats,
        "workloads": [m.to_json() for m in results],
    }
    path = write_json(args.out, data)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
