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

The runner is one way in (this package: import from ``missive.toolchain.conformance``), in
modules by job: :mod:`.cases` (what a case is), :mod:`.reading` (the three formats),
:mod:`.host`, :mod:`.gas` (the transaction around a state test's message), :mod:`.running`
(running and comparing) and :mod:`.results`.
"""

from __future__ import annotations

from missive.toolchain.conformance.cases import (
    EMPTY_LOGS_HASH,
    FORK_ORDER,
    LEGACY_FORMAT,
    PRECOMPILE_FILES,
    PRECOMPILE_FORMAT,
    REPRICED,
    STATE_FORMAT,
    TARGET_FORK,
    Account,
    Case,
    ConformanceError,
    ExecuteFn,
    keccak256,
    logs_hash,
)
from missive.toolchain.conformance.gas import TxCosts, fake_exponential, floor_gas, intrinsic_gas, transaction_costs
from missive.toolchain.conformance.host import EthereumHost, testeth_block_hash
from missive.toolchain.conformance.reading import default_vectors_dir, iter_cases, pick_fork, precompile_of
from missive.toolchain.conformance.results import (
    KNOWN_XFAIL_PREFIXES,
    KNOWN_XFAILS,
    CaseResult,
    Outcome,
    Summary,
    known_xfail,
)
from missive.toolchain.conformance.running import precompile_caller, run_case, run_cases, run_paths

__all__ = [
    "Account",
    "Case",
    "CaseResult",
    "ConformanceError",
    "EMPTY_LOGS_HASH",
    "EthereumHost",
    "ExecuteFn",
    "FORK_ORDER",
    "KNOWN_XFAILS",
    "KNOWN_XFAIL_PREFIXES",
    "LEGACY_FORMAT",
    "Outcome",
    "PRECOMPILE_FILES",
    "PRECOMPILE_FORMAT",
    "REPRICED",
    "STATE_FORMAT",
    "Summary",
    "TARGET_FORK",
    "TxCosts",
    "default_vectors_dir",
    "fake_exponential",
    "floor_gas",
    "intrinsic_gas",
    "iter_cases",
    "keccak256",
    "known_xfail",
    "logs_hash",
    "pick_fork",
    "precompile_caller",
    "precompile_of",
    "run_case",
    "run_cases",
    "run_paths",
    "testeth_block_hash",
    "transaction_costs",
]
