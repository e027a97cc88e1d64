"""py-evm as a reference oracle for Missive's VM.

Missive's VM must agree with Ethereum (Cancun) on every instruction SPEC §3 does
not change.  The cheapest independent judge is py-evm, driven here at the
*computation* level rather than through a transaction: a transaction would add
intrinsic gas, nonce and fee bookkeeping, while ``CancunComputation.apply_message``
runs exactly one message frame, which is what :func:`missive.vm.execute` runs.
So ``gas_used`` and ``refund`` from both sides are directly comparable.

What a transaction would have done before the frame and we must do by hand:

* EIP-2929/3651 warm set: the executing address, the caller and the origin are
  marked warm (the transaction executor does this in ``build_computation``);
  the coinbase is warmed by ``ShanghaiComputation.__init__`` and precompiles are
  always warm in py-evm's ``is_address_warm``.
* Storage set up before the run must count as *original* for EIP-2200/3529
  SSTORE pricing, so it is committed with ``lock_changes()`` (which also resets
  the access lists, hence the warm marking comes after it).
* Value: py-evm moves ``value`` from the caller to the callee, so the caller is
  funded with exactly ``value`` first.

Final storage is read back from the slots that were set up or written during the
run; a small ``CancunState`` subclass records written slots because py-evm's
account database cannot enumerate an account's storage cheaply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

import attrs
from eth.abc import ComputationAPI
from eth.constants import BLANK_ROOT_HASH, CREATE_CONTRACT_ADDRESS
from eth.db.atomic import AtomicDB
from eth.exceptions import OutOfGas, Revert, VMError
from eth.vm.execution_context import ExecutionContext
from eth.vm.forks.cancun.computation import CancunComputation
from eth.vm.forks.cancun.state import CancunState
from eth.vm.forks.cancun.transaction_context import CancunTransactionContext
from eth.vm.message import Message
from eth_typing import Address, BlockNumber, Hash32

from missive.vm.types import BlockContext

_DEFAULT_BLOCK = BlockContext()


class _RecordingState(CancunState):
    """A Cancun state that remembers which (address, slot) pairs were written.

    SSTORE goes through ``state.set_storage``; recording the slot lets the oracle
    report the final storage of an account without walking its storage trie.
    Slots written in a frame that later reverted are recorded too, which is
    harmless: their value is read back from the (reverted) state.
    """

    written: set[tuple[bytes, int]]

    def set_storage(self, address: Address, slot: int, value: int) -> None:
        self.written.add((bytes(address), slot))
        super().set_storage(address, slot, value)


@attrs.frozen
class OracleResult:
    """What py-evm made of one message frame.

    ``gas_used`` is execution gas only (no intrinsic cost) before refunds, and
    is the whole gas limit on an exceptional halt, as in Ethereum.  ``refund``
    is the raw, uncapped refund counter (0 unless the frame succeeded).
    ``storage`` is the executing account's final storage, nonzero slots only.
    ``logs`` are (address, topics, data) triples, empty unless the frame succeeded.
    ``error`` names py-evm's exception class for a failed frame, for messages.
    """

    success: bool
    reverted: bool
    output: bytes
    gas_used: int
    refund: int
    storage: dict[int, int]
    logs: tuple[tuple[bytes, tuple[int, ...], bytes], ...] = ()
    error: str = ""

    @property
    def outcome(self) -> str:
        """ "success", "revert" or "halt": the comparable part of the status."""
        if self.success:
            return "success"
        return "revert" if self.reverted else "halt"


def _execution_context(block: BlockContext, block_hashes: Mapping[int, bytes]) -> ExecutionContext:
    """py-evm's block context from Missive's :class:`BlockContext`.

    ``prev_hashes`` is newest first, starting at ``number - 1``; py-evm's
    BLOCKHASH indexes into it, so missing entries are filled with zero hashes.
    """
    prev: list[Hash32] = []
    if block_hashes:
        oldest = max(block.number - 256, min(block_hashes))
        prev = [Hash32(block_hashes.get(n, bytes(32))) for n in range(block.number - 1, oldest - 1, -1)]
    return ExecutionContext(
        coinbase=Address(block.coinbase),
        timestamp=block.timestamp,
        block_number=BlockNumber(block.number),
        difficulty=0,
        mix_hash=Hash32(block.prevrandao.to_bytes(32, "big")),
        gas_limit=block.gas_limit,
        prev_hashes=prev,
        chain_id=block.chain_id,
        base_fee_per_gas=block.base_fee,
        # blob_base_fee is derived from excess_blob_gas; excess 0 gives the
        # minimum, 1, which is BlockContext's default.
        excess_blob_gas=0,
    )


class PyEvmWorld:
    """One py-evm state that can run several message frames in a row.

    The differential tests build one per example (state set-up is cheap next to
    a run, but not free); the benchmark keeps one alive and calls a deployed
    contract repeatedly, the way a chain would.
    """

    def __init__(
        self,
        *,
        block: BlockContext | None = None,
        block_hashes: Mapping[int, bytes] | None = None,
    ) -> None:
        self.block = block or _DEFAULT_BLOCK
        self.state = _RecordingState(
            AtomicDB(),
            _execution_context(self.block, block_hashes or {}),
            BLANK_ROOT_HASH,
        )
        self.state.written = set()

    def install(
        self,
        address: bytes,
        *,
        code: bytes = b"",
        storage: Mapping[int, int] | None = None,
        balance: int = 0,
        nonce: int = 0,
    ) -> None:
        """Give ``address`` code, storage, balance and nonce, committed as original."""
        addr = Address(address)
        if code:
            self.state.set_code(addr, code)
        for slot, value in (storage or {}).items():
            self.state.set_storage(addr, slot, value)
        self.state.set_balance(addr, balance)
        self.state.set_nonce(addr, nonce)
        self.state.lock_changes()

    def storage_of(self, address: bytes, slots: Iterable[int] = ()) -> dict[int, int]:
        """Nonzero storage of ``address`` over ``slots`` and every slot ever written."""
        addr = Address(address)
        candidates = set(slots)
        candidates.update(s for a, s in self.state.written if a == address)
        out = {}
        for slot in candidates:
            value = self.state.get_storage(addr, slot)
            if value:
                out[slot] = value
        return out

    def apply(
        self,
        *,
        code: bytes,
        address: bytes,
        caller: bytes = bytes(20),
        value: int = 0,
        data: bytes = b"",
        gas: int = 10_000_000,
        is_static: bool = False,
        create: bool = False,
    ) -> ComputationAPI:
        """Run one frame of ``code`` as ``address`` and return py-evm's computation.

        The caller receives ``value`` first so the transfer cannot fail.  Warm
        marking is redone per call because ``lock_changes`` (between calls, as
        between transactions) clears the access lists.
        """
        state = self.state
        sender = Address(caller)
        target = Address(address)
        if value:
            state.delta_balance(sender, value)
        origin = Address(self.block.origin) if self.block.origin != bytes(20) else sender
        state.mark_address_warm(sender)
        state.mark_address_warm(origin)
        state.mark_address_warm(target)
        context = CancunTransactionContext(
            gas_price=self.block.gas_price,
            origin=origin,
            blob_versioned_hashes=[Hash32(h) for h in self.block.blob_hashes],
        )
        if create:
            message = Message(
                gas=gas,
                to=CREATE_CONTRACT_ADDRESS,
                sender=sender,
                value=value,
                data=data,
                code=code,
                create_address=target,
                is_static=is_static,
            )
            computation = CancunComputation.apply_create_message(state, message, context)
        else:
            message = Message(
                gas=gas,
                to=target,
                sender=sender,
                value=value,
                data=data,
                code=code,
                is_static=is_static,
            )
            computation = CancunComputation.apply_message(state, message, context)
        state.clear_transient_storage()
        state.lock_changes()
        return computation

    def run(
        self,
        code: bytes,
        *,
        address: bytes,
        caller: bytes = bytes(20),
        value: int = 0,
        data: bytes = b"",
        gas: int = 10_000_000,
        is_static: bool = False,
        watch_slots: Iterable[int] = (),
    ) -> OracleResult:
        """Run one frame and summarise it as an :class:`OracleResult`."""
        computation = self.apply(
            code=code,
            address=address,
            caller=caller,
            value=value,
            data=data,
            gas=gas,
            is_static=is_static,
        )
        success = computation.is_success
        reverted = (not success) and isinstance(computation.error, Revert)
        return OracleResult(
            success=success,
            reverted=reverted,
            output=bytes(computation.output),
            gas_used=gas - computation.get_gas_remaining(),
            refund=computation.get_gas_refund() if success else 0,
            storage=self.storage_of(address, watch_slots),
            logs=tuple((bytes(a), tuple(t), bytes(d)) for a, t, d in computation.get_log_entries()) if success else (),
            error="" if success else type(computation.error).__name__,
        )


def run_pyevm(
    code: bytes,
    *,
    data: bytes = b"",
    gas: int = 10_000_000,
    storage: Mapping[int, int] | None = None,
    value: int = 0,
    caller: bytes = bytes(20),
    address: bytes = bytes(20),
    balance: int = 0,
    nonce: int = 0,
    block: BlockContext | None = None,
    is_static: bool = False,
    **_ignored: Any,
) -> OracleResult:
    """Run ``code`` once in a fresh py-evm Cancun state (see the module docstring).

    The keyword arguments mirror :func:`missive.vm.execute` so a test can pass
    the same dict to both; unknown ones (``host``, ``message_id``) are ignored
    because they have no Ethereum counterpart.
    """
    world = PyEvmWorld(block=block)
    # Like Missive, ``balance`` is the callee's balance *including* the incoming
    # value; py-evm moves the value itself, so the callee starts without it.
    world.install(address, storage=storage, balance=max(0, balance - value), nonce=nonce)
    return world.run(
        code,
        address=address,
        caller=caller,
        value=value,
        data=data,
        gas=gas,
        is_static=is_static,
        watch_slots=cast(Iterable[int], (storage or {}).keys()),
    )


# -- precompiles alone ----------------------------------------------------------------------------


class _PrecompileMessage:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.data_as_bytes = data


class _PrecompileComputation:
    """Just enough of py-evm's ComputationAPI for its precompile functions."""

    def __init__(self, data: bytes, gas: int) -> None:
        self.msg = _PrecompileMessage(data)
        self.gas_remaining = gas
        self.output = b""

    def consume_gas(self, amount: int, reason: str) -> None:
        if amount > self.gas_remaining:
            raise OutOfGas(reason)
        self.gas_remaining -= amount


def precompile_oracle(computation_class: Any) -> Any:
    """``(address, data, gas) -> (success, gas_used, output)`` from the precompiles of a py-evm fork's
    computation class (``CancunComputation``, ``PragueComputation``); a VMError is a failure consuming
    all gas, as in Missive."""
    precompiles = {int.from_bytes(address, "big"): fn for address, fn in computation_class.get_precompiles().items()}

    def run(address: int, data: bytes, gas: int) -> tuple[bool, int, bytes]:
        computation = _PrecompileComputation(data, gas)
        try:
            precompiles[address](computation)
        except VMError:
            return (False, gas, b"")
        return (True, gas - computation.gas_remaining, bytes(computation.output))

    return run
