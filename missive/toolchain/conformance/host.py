"""The :class:`~missive.vm.host.Host` a conformance case runs on: the case's accounts, Ethereum's
block hashes as the test tools compute them.

Part of :mod:`missive.toolchain.conformance` (which says what the runner checks, and how).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from missive.toolchain.conformance.cases import Account, keccak256
from missive.vm.host import Host


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
