"""The job board's state in the store (issue 25; rules in :mod:`missive.market.jobs`): the
:class:`~missive.market.jobs.Board` the rules read and write, over one write transaction, and the
reads ``missive job status`` and ``missive worker run`` need.

Keys in the meta table: ``job:`` + id (the job, rewritten as it moves), ``jobcode:`` + id (its
program and input, written once), ``jobrep:`` + worker (accepted and rejected results).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import lmdb
import msgpack

from missive.mailbox.records import Account
from missive.market.jobs import JOB, JOBCODE, REPUTATION, Job
from missive.market.tickets.broker import Payer
from missive.market.workers import WORKER, Worker

if TYPE_CHECKING:
    from missive.mailbox.store import Store

#: how far a take's or an expire's time may be from the node's clock
MAX_SKEW = 15


class StoreBoard:
    """The board inside one of the store's transactions (a write transaction for :meth:`set_*`)."""

    def __init__(self, store: Store, txn: lmdb.Transaction) -> None:
        self.store, self.txn, self.meta = store, txn, store.db["meta"]

    def account(self, address: bytes) -> Account | None:
        return self.store.account(address, self.txn)

    def set_account(self, address: bytes, account: Account) -> None:
        self.txn.put(address, account.encode(), db=self.store.db["accounts"])

    def worker(self, address: bytes) -> Worker | None:
        return self.store.worker(address, self.txn)

    def set_worker(self, address: bytes, worker: Worker) -> None:
        self.txn.put(WORKER + address, worker.encode(), db=self.meta)

    def job(self, job_id: bytes) -> Job | None:
        raw = self.txn.get(JOB + job_id, db=self.meta)
        return Job.decode(bytes(raw)) if raw is not None else None

    def set_job(self, job_id: bytes, job: Job) -> None:
        self.txn.put(JOB + job_id, job.encode(), db=self.meta)

    def code(self, job_id: bytes) -> tuple[bytes, bytes]:
        raw = self.txn.get(JOBCODE + job_id, db=self.meta)
        program, data = msgpack.unpackb(bytes(raw)) if raw is not None else (b"", b"")
        return bytes(program), bytes(data)

    def set_code(self, job_id: bytes, program: bytes, data: bytes) -> None:
        self.txn.put(JOBCODE + job_id, msgpack.packb([program, data], use_bin_type=True), db=self.meta)

    def reputation(self, worker: bytes) -> tuple[int, int]:
        raw = self.txn.get(REPUTATION + worker, db=self.meta)
        good, bad = msgpack.unpackb(bytes(raw)) if raw is not None else (0, 0)
        return int(good), int(bad)

    def set_reputation(self, worker: bytes, good: int, bad: int) -> None:
        self.txn.put(REPUTATION + worker, msgpack.packb([good, bad]), db=self.meta)

    def payer(self, address: bytes) -> Payer | None:
        """The poster's holdings at the ticket broker (a ticket-paid job needs them)."""
        from missive.mailbox.broker import payer

        return payer(self.store, address, self.txn)


def jobs(store: Store) -> list[tuple[bytes, Job]]:
    """Every job on the board, by id."""
    return [(key[len(JOB):], Job.decode(value)) for key, value in store.scan("meta", JOB)]


def job(store: Store, job_id: bytes) -> tuple[Job, bytes, bytes] | None:
    """A job with its program and input."""
    with store.read() as txn:
        board = StoreBoard(store, txn)
        found = board.job(job_id)
        return (found, *board.code(job_id)) if found is not None else None


def reputations(store: Store) -> dict[bytes, tuple[int, int]]:
    return {key[len(REPUTATION):]: tuple(msgpack.unpackb(value)) for key, value in store.scan("meta", REPUTATION)}


def escrowed(store: Store) -> int:
    """Coin the board holds: bids not paid yet and takers' pledges (the conservation property counts it)."""
    return sum(entry.escrow for _, entry in jobs(store))


def apply_op(store: Store, op: str, signer: bytes, args: list[Any], public_key: bytes, signature: bytes) -> bytes:
    """Check and apply one signed board operation and append its record, in one transaction."""
    from missive.mailbox.envelope import EnvelopeError
    from missive.market.jobs import apply

    if store.replication is not None or store.credits_by_message():
        raise EnvelopeError("the job board works on a node alone for now: not on a cluster node")
    if op in ("take", "expire") and len(args) >= 2 and isinstance(args[1], int):
        skew = args[1] - int(time.time())
        if abs(skew) > MAX_SKEW:  # replay takes the recorded time; the node checks it once, here
            raise EnvelopeError(f"the {op}'s time is {skew:+d} s from this node's clock (at most {MAX_SKEW} s)")
    with store.writing() as txn:
        job_id = apply(op, signer, args, public_key, signature, store.chain_id, StoreBoard(store, txn))
        store.append(txn, ["job", op, signer, *args, public_key, signature])
    return job_id
