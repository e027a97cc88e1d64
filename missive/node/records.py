"""What the API hands back about accounts and ledgers: :class:`Wallet` (a key that signs) and
:class:`LedgerRecord` (one entry of a node's ledger, in words)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from missive.keys import Key
from missive.mailbox.diffs import DiffError
from missive.mailbox.envelope import Envelope
from missive.mailbox.ledger_records import (
    DISCARDED,
    MESSAGE_RECORDS,
    DiffRecord,
    GenesisRecord,
    JobRecord,
    ReceiptRecord,
    Record,
    RollbackRecord,
    TicketsRecord,
    UnreadableRecord,
    WorkerRecord,
    from_fields,
)
from missive.mailbox.records import Receipt
from missive.node.values import hexstr
from missive.vm.keccak import keccak256

if TYPE_CHECKING:
    from missive.node.api import NodeAPI


class Wallet:
    """An external account whose key is in the node's keystore: it signs what it sends."""

    def __init__(self, node: NodeAPI, key: Key) -> None:
        self.node = node
        self.key = key
        self.name = key.name
        self.address = key.address

    @property
    def hex(self) -> str:
        return hexstr(self.address)

    @property
    def balance(self) -> int:
        return self.node.balance(self.address)

    @property
    def nonce(self) -> int:
        account = self.node.account(self.address)
        return account.nonce if account is not None else 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Wallet) and other.address == self.address

    def __hash__(self) -> int:
        return hash(self.address)

    def __repr__(self) -> str:
        return f"<Wallet {self.name or '(unnamed)'} {self.hex}>"


@attrs.frozen
class LedgerRecord:
    """One ledger entry as the API shows it (decoded by :mod:`missive.mailbox.ledger_records`): a
    genesis account, an accepted message, a receipt (``discarded`` if a rollback gave it up), a
    raise, or one of the records that name no message, in words in :attr:`detail`."""

    seq: int
    type: str
    #: genesis: the account; accept/receipt: the message's recipient
    address: bytes = b""
    message_id: bytes = b""
    balance: int = 0
    envelope: Envelope | None = None
    receipt: Receipt | None = None
    #: in a cluster, the node whose ledger holds the record (each node keeps its own)
    node: str = ""
    #: diff/rollback records (a cluster's): what they did, in words (they carry no message)
    detail: str = ""


def special_record(seq: int, record: Record | list[Any], node: str = "") -> LedgerRecord | None:
    """A ledger record that names no message (genesis, diff, rollback, worker, or one that could
    not be read) as a :class:`LedgerRecord`, with its :attr:`~LedgerRecord.detail` in words; None
    for the kinds that name a message (see :func:`ledger_record`).  ``record`` may also be its
    fields, as stored or sent (decoded by :func:`missive.mailbox.ledger_records.from_fields`)."""
    if isinstance(record, list):
        record = from_fields(record, wire=True)
    if isinstance(record, MESSAGE_RECORDS):
        return None
    kind = record.kind
    if isinstance(record, GenesisRecord):
        return LedgerRecord(seq, kind, address=record.address, balance=record.balance, node=node)
    if isinstance(record, DiffRecord):
        executor = record.executor
        try:
            diff = record.state_diff()
        except DiffError as exc:
            return LedgerRecord(seq, kind, detail=f"state diff from executor 0x{executor.hex()[:16]}.. ({exc})", node=node)
        version = f" version {diff.version}" if diff.version else ""
        epoch = f" (epoch {diff.epoch})" if diff.epoch else ""
        return LedgerRecord(seq, kind, address=diff.address, node=node,
                            detail=f"state diff of 0x{diff.address.hex()}{version}{epoch} from executor "
                                   f"0x{executor.hex()[:16]}..: {len(diff.receipts)} receipt(s), "
                                   f"{len(diff.messages)} message(s), {len(diff.storage)} slot(s) written")
    if isinstance(record, WorkerRecord) and record.op == "accuse":  # slashing: the evidence is in the record
        evidence = bytes(record.args[0]) if record.args and isinstance(record.args[0], bytes) else b""
        return LedgerRecord(seq, kind, address=record.address, node=node,
                            detail=f"0x{record.address.hex()} accuses a worker of a wrong state diff: evidence "
                                   f"0x{keccak256(evidence).hex()[:16]}.. ({len(evidence)} bytes)")
    if isinstance(record, WorkerRecord):  # the worker registry (missive.market.workers)
        return LedgerRecord(seq, kind, address=record.address, node=node,
                            detail=f"worker {record.op} of 0x{record.address.hex()}: {_worker_args(record)}")
    if isinstance(record, TicketsRecord):  # the ticket broker (missive.market.tickets)
        from missive.market.tickets.broker import describe

        return LedgerRecord(seq, kind, address=record.address, node=node, detail=describe(record.fields()))
    if isinstance(record, JobRecord):  # the job board (missive.market.jobs)
        return LedgerRecord(seq, kind, address=record.signer, node=node,
                            detail=f"job {record.op} by 0x{record.signer.hex()}: {_job_args(record)}")
    if isinstance(record, RollbackRecord):
        return LedgerRecord(seq, kind, address=record.address, node=node,
                            detail=f"rollback of 0x{record.address.hex()} to mailbox position {record.position}: "
                                   f"gives up {len(record.discarded)} record(s) another holder's copy replaced")
    if isinstance(record, UnreadableRecord):
        return LedgerRecord(seq, kind, node=node, detail=record.problem)
    return LedgerRecord(seq, kind, node=node, detail=f"a record of kind {kind!r}, unknown to this version")


def _worker_args(record: WorkerRecord) -> str:
    """A registry operation's arguments in words (as signed: see :func:`missive.market.workers.apply`)."""
    args = record.args
    try:
        if record.op == "register":
            return (f"stake {int.from_bytes(args[0], 'big')}, coinbase 0x{bytes(args[1]).hex()}, minimum bid "
                    f"{int.from_bytes(args[2], 'big')}")
        return f"at logical time {args[0]}"
    except (IndexError, TypeError, ValueError):
        return f"arguments {list(args)!r}"


def ledger_record(seq: int, record: Record, envelope: Envelope | None = None, receipt: Receipt | None = None,
                  node: str = "") -> LedgerRecord:
    """``record`` (at ledger ``seq``) as the API shows it: for a record naming a message, with the
    ``envelope`` and ``receipt`` its node found for it; ``discarded`` for a receipt record a
    rollback gave up."""
    special = special_record(seq, record, node)
    if special is not None:
        return special
    assert isinstance(record, MESSAGE_RECORDS)
    kind = DISCARDED if isinstance(record, ReceiptRecord) and record.discarded else record.kind
    return LedgerRecord(seq, kind, address=envelope.recipient if envelope else b"", message_id=record.message_id,
                        envelope=envelope, receipt=receipt, node=node)


def _job_args(record: JobRecord) -> str:
    """A job board operation in words: what a post offers, else which job it is about."""
    args = record.args
    try:
        if record.op == "post" and len(args) > 8:
            return (f"{'an' if args[1] == 'evm' else 'a'} {args[1]} job, program {len(args[2])} bytes, bid "
                    f"{int.from_bytes(args[5], 'big')} × {args[8]}, verified by {args[7]}"
                    + (f", paid by lottery tickets at 1/{args[12]}" if len(args) > 12 else ""))
        return f"job 0x{bytes(args[0]).hex()[:16]}.."
    except (IndexError, TypeError, ValueError):
        return f"arguments {list(args)!r}"
