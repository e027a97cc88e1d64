"""What one handler run can change, and how to take a change back.

A handler run is one message handled by one actor.  Its frames (the top one
plus any DELEGATECALL/CALLCODE frames, which run other code on this same
state) share one :class:`RunState`.  Every change goes through a method here
that records the old value in a journal, so a failed sub-frame rolls back to
its checkpoint exactly; the top frame's failure simply drops the whole state.

Gas rules for storage live here too (EIP-2929 access lists, EIP-2200/3529
SSTORE net metering and refunds) because they depend on the original and
current values that only this object knows.
"""

from __future__ import annotations

from typing import Final, Protocol, final

from missive.vm.arith import int_from_bytes
from missive.vm.host import Host
from missive.vm.types import SYSTEM_CONTRACT, BlockContext, Log, OutgoingMessage

COLD_SLOAD: Final = 2100
WARM_ACCESS: Final = 100
COLD_ACCOUNT_ACCESS: Final = 2600
SSTORE_SET: Final = 20000
SSTORE_RESET: Final = 2900  # 5000 - COLD_SLOAD
SSTORE_CLEAR_REFUND: Final = 4800
SSTORE_STIPEND: Final = 2300
#: Warm at the start of every run (EIP-2929): the precompiles (0x01..0x11 and 0x100, as
#: :data:`missive.vm.precompiles.PRECOMPILES`) and the system contract.
ALWAYS_WARM: Final = frozenset([*range(1, 0x12), 0x100, int.from_bytes(SYSTEM_CONTRACT, "big")])

_STORAGE: Final = 0
_TRANSIENT: Final = 1
_SLOT_WARMED: Final = 2
_ADDRESS_WARMED: Final = 3
_ABSENT: Final = -1


class StorageSource(Protocol):
    """Where a run reads the actor's committed storage: a dict, or a lazy view of the store."""

    def get(self, key: int, default: int, /) -> int: ...


@final
class Slot:
    """What a run knows about one storage slot it has touched.

    One record per slot, found with one dict lookup, holds everything SLOAD
    and SSTORE need (EIP-2200 compares the new value with both the original
    and the current one; EIP-2929 asks whether the slot is warm).  Keeping
    them in three containers cost each SLOAD or SSTORE four to seven hashes
    of a 256-bit key.
    """

    def __init__(self, original: int) -> None:
        #: the committed value, before the run
        self.original = original
        #: the value now
        self.current = original
        #: accessed in this run (EIP-2929)
        self.warm = False


@final
class RunState:
    def __init__(
        self,
        address: bytes,
        own_code: bytes,
        storage: StorageSource | None,
        balance: int,
        nonce: int,
        block: BlockContext,
        host: Host,
        message_id: bytes,
        warm_accounts: tuple[bytes, ...] = (),
    ) -> None:
        self.address_bytes = address
        self.address = int_from_bytes(address, "big")
        #: the actor's own code (EXTCODE* of ADDRESS sees it even inside DELEGATECALL)
        self.own_code = own_code
        self.source = storage
        #: every storage slot the run has touched, in the order it first did
        self.slots: dict[int, Slot] = {}
        self.transient: dict[int, int] = {}
        #: addresses accessed so far (EIP-2929); see :meth:`warm_address` for those warm from the start
        self.accessed_addresses: set[int] = set()
        self.warm_accounts = warm_accounts
        self._warm_at_start: frozenset[int] | None = None
        self.journal: list[tuple[int, int, int]] = []
        #: Checkpoints taken and not yet rolled back or committed.  Changes are
        #: journaled only while one is open: only a rollback to a checkpoint
        #: reads the journal, and only entries made after it.  A run without
        #: DELEGATECALL/CALLCODE never opens one, so it journals nothing.
        self.open_checkpoints = 0
        self.logs: list[Log] = []
        self.outbox: list[OutgoingMessage] = []
        self.refund = 0
        self.balance = balance
        self.nonce = nonce
        self.block = block
        self.host = host
        self.message_id = message_id
        self.code_reads: list[bytes] = []

    # -- storage ---------------------------------------------------------

    def slot(self, key: int) -> Slot:
        """The record of ``key``, reading the committed value on first touch."""
        slot = self.slots.get(key)
        if slot is None:
            source = self.source
            slot = Slot(source.get(key, 0) if source is not None else 0)
            self.slots[key] = slot
        return slot

    def load(self, key: int) -> int:
        return self.slot(key).current

    def warm_slot(self, key: int, slot: Slot) -> int:
        """Mark ``slot`` (at ``key``) accessed; return the access cost (cold 2100, warm 0 extra)."""
        if slot.warm:
            return 0
        slot.warm = True
        if self.open_checkpoints:
            self.journal.append((_SLOT_WARMED, key, 0))
        return COLD_SLOAD

    def sload(self, key: int) -> tuple[int, int]:
        """SLOAD: (gas cost, value)."""
        slot = self.slot(key)
        if slot.warm:
            return WARM_ACCESS, slot.current
        return self.warm_slot(key, slot), slot.current

    def sstore(self, key: int, new: int) -> int:
        """Write ``new`` to ``key``; return the gas cost and adjust the refund."""
        slot = self.slot(key)
        cost = self.warm_slot(key, slot)
        current = slot.current
        original = slot.original
        if new == current:
            cost += WARM_ACCESS
        elif current == original:
            if original == 0:
                cost += SSTORE_SET
            else:
                cost += SSTORE_RESET
                if new == 0:
                    self.refund += SSTORE_CLEAR_REFUND
        else:
            cost += WARM_ACCESS
            if original != 0:
                if current == 0:
                    self.refund -= SSTORE_CLEAR_REFUND
                elif new == 0:
                    self.refund += SSTORE_CLEAR_REFUND
            if new == original:
                self.refund += (SSTORE_SET - WARM_ACCESS) if original == 0 else (SSTORE_RESET - WARM_ACCESS)
        if new != current:
            if self.open_checkpoints:
                self.journal.append((_STORAGE, key, current))
            slot.current = new
        return cost

    def storage_writes(self) -> dict[int, int]:
        """Slots whose final value differs from the value before the run: the state diff."""
        return {k: slot.current for k, slot in self.slots.items() if slot.current != slot.original}

    # -- transient storage (EIP-1153) ------------------------------------

    def tload(self, key: int) -> int:
        return self.transient.get(key, 0)

    def tstore(self, key: int, value: int) -> None:
        old = self.transient.get(key)
        if self.open_checkpoints:
            self.journal.append((_TRANSIENT, key, _ABSENT if old is None else old))
        self.transient[key] = value

    # -- accounts ----------------------------------------------------------

    def warm_address(self, address: int) -> int:
        """Mark ``address`` accessed; return the EIP-2929 access cost.

        Some addresses are warm from the start (EIP-2929/3651: precompiles,
        the system contract, and the run's ``warm_accounts``).  They are not
        put in ``accessed_addresses`` up front, which would cost every run a
        set of a dozen entries that most runs never look at; they are found
        warm here instead, the first time they are accessed.
        """
        if address in self.accessed_addresses:
            return WARM_ACCESS
        self.accessed_addresses.add(address)
        if self.open_checkpoints:
            self.journal.append((_ADDRESS_WARMED, address, 0))
        warm = self._warm_at_start
        if warm is None:
            warm = self._warm_at_start = ALWAYS_WARM | {int.from_bytes(a, "big") for a in self.warm_accounts}
        return WARM_ACCESS if address in warm else COLD_ACCOUNT_ACCESS

    # -- checkpoints -------------------------------------------------------

    def checkpoint(self) -> tuple[int, int, int, int, int, int]:
        """Open a checkpoint; end it with :meth:`rollback` or :meth:`commit`."""
        self.open_checkpoints += 1
        return (len(self.journal), len(self.logs), len(self.outbox), self.refund, self.balance, self.nonce)

    def commit(self, mark: tuple[int, int, int, int, int, int]) -> None:
        """Keep everything since ``mark`` (its journal entries stay for an enclosing checkpoint)."""
        self.open_checkpoints -= 1

    def rollback(self, mark: tuple[int, int, int, int, int, int]) -> None:
        """Undo everything since ``mark`` except code reads: a replay must read that code too."""
        journal_len, logs_len, outbox_len, refund, balance, nonce = mark
        journal = self.journal
        while len(journal) > journal_len:
            kind, key, old = journal.pop()
            if kind == _STORAGE:
                self.slots[key].current = old
            elif kind == _TRANSIENT:
                if old == _ABSENT:
                    del self.transient[key]
                else:
                    self.transient[key] = old
            elif kind == _SLOT_WARMED:
                self.slots[key].warm = False
            else:
                self.accessed_addresses.discard(key)
        del self.logs[logs_len:]
        del self.outbox[outbox_len:]
        self.refund = refund
        self.balance = balance
        self.nonce = nonce
        self.open_checkpoints -= 1
