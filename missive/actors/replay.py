"""Replay: rebuild state from the ledger alone and check every receipt (SPEC §5).

Replay reads only the ledger proper (the ``ledger`` records in order, the
messages and the receipts), never the node's derived state.  It walks the
records: a genesis creates an account, an accepted external message has its
signature checked again and moves its value out of the sender, and every
receipt's message is handled again from scratch with the same handler the
live runtime used.  The reproduced receipt must equal the recorded one field
by field; the first that does not is reported with expected vs got.  A message
whose stored body no longer hashes to its id is reported too, so editing the
ledger by hand, or changing the VM, is caught at the first message it affects.

Code read from other accounts comes from the recorded code hashes (deployed
code is in the deploy receipts), exactly as the live run saw it.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from missive.actors.handler import ActorState, handle
from missive.mailbox.admission import verify_signature
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
from missive.mailbox.records import Account, Receipt
from missive.mailbox.store import Store
from missive.vm.keccak import keccak256


@attrs.frozen
class Divergence:
    message_id: bytes
    recipient: bytes
    position: int
    differences: tuple[str, ...]

    def describe(self) -> str:
        head = f"message 0x{self.message_id.hex()} (0x{self.recipient.hex()} #{self.position}) diverges:"
        return "\n  ".join([head, *self.differences])


@attrs.frozen
class ReplayReport:
    checked: int
    divergence: Divergence | None
    stopped_at: bytes | None = None

    @property
    def ok(self) -> bool:
        return self.divergence is None


def _envelope(store: Store, message_id: bytes) -> tuple[Envelope, bytes, bytes]:
    found = store.message(message_id)
    if found is None:
        raise EnvelopeError("the message is missing from the ledger")
    envelope, public_key, signature = found
    if envelope.id != message_id:
        raise EnvelopeError(f"the stored message hashes to 0x{envelope.id.hex()}, not to its id")
    return envelope, public_key, signature


def replay(
    store: Store,
    *,
    actor: bytes | None = None,
    until: bytes | None = None,
    trace: Callable[[Envelope, Receipt], None] | None = None,
) -> ReplayReport:
    """Re-execute the ledger; check ``actor``'s receipts only, or everyone's; stop after ``until``."""
    actors: dict[bytes, ActorState] = {}
    code_by_hash: dict[bytes, bytes] = {}
    checked = 0

    def state(address: bytes) -> ActorState:
        found = actors.get(address)
        if found is None:
            found = actors[address] = ActorState(address, Account(), b"")
        return found

    for seq, record in store.ledger():
        tag = record[0]
        if tag == "genesis":
            _, address, public_key, balance = record
            state(address).account = Account(balance=int.from_bytes(balance, "big"), public_key=public_key)
            continue
        message_id = record[1]
        try:
            envelope, public_key, signature = _envelope(store, message_id)
            if tag == "accept":
                verify_signature(envelope, public_key, signature)
        except EnvelopeError as err:
            return ReplayReport(checked, Divergence(message_id, b"", -1, (f"ledger record {seq}: {err}",)))
        if tag == "accept":
            sender = state(envelope.sender)
            sender.account = attrs.evolve(
                sender.account, balance=sender.account.balance - envelope.value, nonce=sender.account.nonce + 1
            )
            continue
        recorded = store.receipt(message_id)
        if recorded is None:
            return ReplayReport(checked, Divergence(message_id, envelope.recipient, -1, ("the receipt is missing",)))
        if envelope.kind is Kind.DEPLOY and recorded.success:
            code_by_hash[keccak256(recorded.output)] = recorded.output
        reads = dict(recorded.code_reads)
        me = state(envelope.recipient)
        if me.account.code_hash and not me.code:
            me.code = code_by_hash.get(me.account.code_hash, b"")

        def read_code(address: bytes, reads: dict[bytes, bytes] = reads) -> tuple[bytes, bytes]:
            code_hash = reads.get(address)
            if code_hash is None:  # the live run did not read it: report what replay sees
                other = actors.get(address)
                code_hash = other.account.code_hash if other else b""
            return (code_by_hash.get(code_hash, b""), code_hash) if code_hash else (b"", b"")

        before_balance = me.account.balance
        outcome = handle(me, envelope, message_id, ("pending", b""), lambda slot: 0, read_code)
        # the merge the store's commit does: the balance moves by the handler's delta
        me.account = attrs.evolve(me.account, balance=before_balance + outcome.balance_delta)
        if actor is None or envelope.recipient == actor:
            checked += 1
            if trace is not None:
                trace(envelope, outcome.receipt)
            differences = recorded.differences(outcome.receipt)
            if differences:
                return ReplayReport(
                    checked, Divergence(message_id, envelope.recipient, recorded.position, tuple(differences))
                )
        if until is not None and message_id == until:
            return ReplayReport(checked, None, stopped_at=message_id)
    return ReplayReport(checked, None)


def snapshot(store: Store) -> dict[bytes, tuple[int, bytes, dict[int, int]]]:
    """Live state as (balance, state root, storage) per account, to compare with a replay's."""
    return {address: (account.balance, account.state_root, store.storage(address)) for address, account in store.accounts()}


__all__ = ["Divergence", "ReplayReport", "replay", "snapshot"]
