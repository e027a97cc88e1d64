"""The VM's window on the world outside the running actor.

The VM is synchronous and free of I/O, so anything it needs that is not the
running actor's own state comes through a :class:`Host`.  The actor runtime
provides one that records what was read (so a replay sees the same thing) and
refuses what SPEC §3 forbids; :class:`Host` itself is the strict default, and
tests or the conformance runner subclass it to emulate plain Ethereum.
"""

from __future__ import annotations

import hashlib

from mypy_extensions import mypyc_attr

from missive.vm.types import OutgoingMessage


class ForbiddenRead(Exception):
    """A handler tried to read another actor's mutable state synchronously.

    The VM turns this into a FORBIDDEN_READ halt naming the opcode.
    """


@mypyc_attr(allow_interpreted_subclasses=True)
class Host:
    """Default host: code is empty, other actors' balances are off limits.

    Subclass it (from plain Python too: the compiled class allows it) to give
    the VM other accounts' code, block hashes, or the ledger's message ids.
    """

    def code_at(self, address: bytes) -> bytes:
        """Immutable code deployed at ``address`` (b"" when none)."""
        return b""

    def balance_of(self, address: bytes) -> int:
        """Balance of another account.  Missive forbids this (SPEC §3)."""
        raise ForbiddenRead("BALANCE of another account")

    def block_hash(self, number: int) -> int:
        """BLOCKHASH for ``number``; 0 when unknown (as for blocks out of range)."""
        return 0

    def message_id(self, message: OutgoingMessage, parent_id: bytes) -> bytes:
        """The id the ledger will give ``message``.

        The mailbox layer overrides this with the hash of the canonical
        envelope.  The default derives a deterministic id from the id of the
        message being handled and the message's position in the outbox, which
        is unique within a ledger because message ids are.
        """
        return hashlib.sha256(parent_id + message.index.to_bytes(4, "big")).digest()
