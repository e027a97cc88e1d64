"""The spot check behind an attestation on a cluster node (see :mod:`missive.cluster.trust`).

:class:`ReplicaProver`: the attester picks a receipt it holds as a *replica*
of an actor the subject executes (state diffs brought it here, byte for byte
as the subject committed it); the subject must answer with its own receipt
bytes for that message id; the expected answer is the attester's copy.  When
the attester replicates nothing of the subject's, the challenge carries no
receipt and the attestation is only a challenge-response.
:class:`MemberVerifier`: only members' statements enter the kernel.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

import lmdb
import msgpack

from missive.consensus.kernel import Statement, Verifier
from missive.replicas.records import open_tables

if TYPE_CHECKING:
    from missive.mailbox.store import Store

#: The injected fault (tests and simulation only) of answering every spot check wrongly (signed).
WRONG_ATTESTATIONS = "wrong-attestations"
#: Random seeks into the ``replica`` table per step, and entries walked from each.
PROBES, WALK = 4, 64
#: Receipts remembered per subject per step to spot-check from.
CANDIDATES = 8


def _corrupt(answer: bytes) -> bytes:
    """The injected wrong answer: never equal to the right one."""
    return hashlib.blake2b(answer, digest_size=32, person=b"missive-fault").digest()


class ReplicaProver:
    """Spot checks against the receipts this node holds as a replica (see the module docstring).

    ``sample`` (run on a worker thread before each step) finds, per subject,
    a few message ids whose receipt this node holds as a replica of an actor
    the subject executes; ``pick`` draws one of them, or ``b""`` for a plain
    challenge-response.  The scan is bounded (:data:`PROBES` random seeks of
    :data:`WALK` entries each), so a node replicating many actors pays the same
    per step; a subject with few replicated actors may then be missed in a
    step and get a plain challenge instead.
    """

    def __init__(self, store: Store, rng: random.Random, fault: str | None = None) -> None:
        self.store = store
        #: which executor's diffs made each actor's copy here (missive.replicas.records)
        self.replica_table = open_tables(store)["replica"]
        self.rng = rng
        self.fault = fault
        self.candidates: dict[bytes, list[bytes]] = {}
        #: per subject: how many challenges carried a receipt, and how many did not
        self.checks: dict[bytes, Counter[str]] = {}

    def sample(self, subjects: Iterable[bytes]) -> dict[bytes, list[bytes]]:
        """Message ids to spot-check each subject on (blocking: LMDB reads)."""
        wanted = set(subjects)
        found: dict[bytes, set[bytes]] = {}
        with self.store.read() as txn:
            cursor = txn.cursor(db=self.replica_table)
            if not cursor.first():
                return {}
            for _ in range(PROBES):
                if not cursor.set_range(self.rng.randbytes(20)):
                    cursor.first()
                for _ in range(WALK):
                    address, value = bytes(cursor.key()), cursor.value()
                    executor_id = bytes(msgpack.unpackb(value)[0])
                    ids = found.setdefault(executor_id, set()) if executor_id in wanted else None
                    if ids is not None and len(ids) < CANDIDATES:
                        message_id = self._receipt_of(txn, address)
                        if message_id is not None:
                            ids.add(message_id)
                    if not cursor.next():
                        cursor.first()
        return {subject: sorted(ids) for subject, ids in found.items() if ids}

    def _receipt_of(self, txn: lmdb.Transaction, address: bytes) -> bytes | None:
        """A random handled message of ``address`` whose receipt is here, or None."""
        mailbox = txn.cursor(db=self.store.db["mailbox"])
        positioned = mailbox.set_range(address + b"\xff" * 8)
        positioned = mailbox.prev() if positioned else mailbox.last()
        if not positioned or mailbox.key()[:20] != address:
            return None
        last = int.from_bytes(mailbox.key()[20:28], "big")
        message_id = txn.get(address + self.rng.randint(0, last).to_bytes(8, "big"), db=self.store.db["mailbox"])
        if message_id is None or txn.get(message_id, db=self.store.db["receipts"]) is None:
            return None
        return bytes(message_id)

    def pick(self, subject: bytes) -> bytes:
        ids = self.candidates.get(subject)
        kind = "receipt" if ids else "challenge"
        self.checks.setdefault(subject, Counter())[kind] += 1
        return self.rng.choice(ids) if ids else b""

    def _receipt(self, message_id: bytes) -> bytes:
        if len(message_id) != 32:
            return b""
        with self.store.read() as txn:
            raw = txn.get(message_id, db=self.store.db["receipts"])
        return bytes(raw) if raw is not None else b""

    def answer(self, receipt: bytes) -> bytes:
        """Our own receipt bytes for the message id (``b""`` if we have none, or none was asked)."""
        right = self._receipt(receipt) if receipt else b""
        return _corrupt(right) if self.fault == WRONG_ATTESTATIONS else right

    def expected(self, subject: bytes, receipt: bytes) -> bytes:
        """Our copy, as a replica, of the receipt the subject committed and sent us."""
        return self._receipt(receipt) if receipt else b""


class MemberVerifier(Verifier):
    """Admits into the kernel only statements signed by a cluster member.

    The consensus kernel takes any correctly signed statement; on a cluster
    the members are known, and a member gossiping statements of keys it made
    up could otherwise fill every kernel (and trust store) for free.  The
    scores would ignore them anyway (no overlay edge is theirs).
    """

    def __init__(self, members: Iterable[bytes]) -> None:
        super().__init__()
        self.members = frozenset(members)

    def ok(self, statement: Statement) -> bool:
        return statement.attester in self.members and super().ok(statement)
