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

Run: ``PYTHONPATH=. python tools/bench/vm.py [--quick] [--out FILE]``.
py-evm and pyrevm are optional; a missing one is skipped with a message.
"""

from __future__ import annotations

import argparse
import sys
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
from tools.bench._common import RESULTS, cpu_best_of, machine_info, no_setup, write_json  # noqa: E402

TOKEN_SOURCE = REPO / "tools" / "bench" / "contracts" / "Token.vy"

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
# Running and reporting
# ---------------------------------------------------------------------------


@dataclass
class Measured:
    workload: Workload
    seconds: dict[str, float]
    gas: dict[str, int]

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
        """Execution gas is the same in every peer whose gas is comparable."""
        compared = {p: g for p, g in self.gas.items() if p != "pyrevm" or self.workload.pyrevm_gas_comparable}
        return len(set(compared.values())) == 1

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
            "gas": self.gas,
            "gas_agrees": self.gas_agrees(),
            "targets": [{"target": t, "met": ok} for t, ok in self.targets()],
        }


def _time_peer(peer: Peer) -> tuple[float, int]:
    """(best CPU seconds, gas of the last run) for one peer."""
    gas: list[int] = []

    def run(prepared: Any) -> None:
        gas.append(peer.run(prepared))

    return cpu_best_of(run, peer.repeats, peer.setup), gas[-1]


def measure(w: Workload, log: Callable[[str], None]) -> Measured:
    seconds: dict[str, float] = {}
    gas: dict[str, int] = {}
    for name, peer in w.peers.items():
        log(f"  {w.name}: {name} ({peer.repeats} repeat{'s' if peer.repeats > 1 else ''})")
        seconds[name], gas[name] = _time_peer(peer)
    return Measured(w, seconds, gas)


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
            f"{rr:.2f}x" if rr is not None else "-",
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
    chosen = args.only or list(makers)
    return [makers[name]() for name in chosen]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="scaled-down sizes for a CI smoke run (< ~20 s)")
    parser.add_argument("--out", type=Path, default=RESULTS / "vm.json", help="JSON output file")
    parser.add_argument("--repeats", type=int, default=None, help="repeats for ours and pyrevm (best is kept)")
    parser.add_argument("--pyevm-repeats", type=int, default=1, help="repeats for py-evm (slow)")
    parser.add_argument(
        "--only", nargs="+", choices=["loop", "keccak", "sstore", "sinc", "transfer", "setup"], help="workloads to run"
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

    results = [measure(w, log) for w in build_workloads(args, pyevm, pyrevm)]
    print_table(results, compiled)
    data = {
        "benchmark": "vm",
        "quick": args.quick,
        "build_info": info,
        "machine": machine_info(),
        "peers": {"py-evm": pyevm is not None, "pyrevm": pyrevm is not None},
        "workloads": [m.to_json() for m in results],
    }
    path = write_json(args.out, data)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
