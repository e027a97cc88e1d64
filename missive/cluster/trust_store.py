"""``<node dir>/trust``: the durable state of a cluster node's trust layer (:mod:`missive.cluster.trust`).

Its step, its attestation histories, its kernel and the evidence it gathered,
in an LMDB environment of its own, so a restart continues where it stopped and
the ledger's store is not touched.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs
import lmdb
import msgpack

from missive.consensus.actors import Evidence
from missive.consensus.direct_trust import TrustHistory

#: Evidence kept per subject (the newest); one piece already proves a lie.
EVIDENCE_KEPT = 16
STORE_FORMAT = 1


def pack_evidence(e: Evidence) -> bytes:
    data: bytes = msgpack.packb([e.attester, e.subject, e.step, e.nonce, e.receipt, e.answer, e.signature])
    return data


def unpack_evidence(raw: bytes) -> Evidence:
    attester, subject, step, nonce, receipt, answer, signature = msgpack.unpackb(raw)
    return Evidence(bytes(attester), bytes(subject), int(step), bytes(nonce), bytes(receipt), bytes(answer),
                    bytes(signature))


@attrs.frozen
class Saved:
    """What :meth:`TrustStore.load` returns: the state as of the last step saved."""

    step: int = 0
    saved_at: float = 0.0
    histories: dict[bytes, TrustHistory] = attrs.Factory(dict)
    statements: list[bytes] = attrs.Factory(list)
    evidence: list[Evidence] = attrs.Factory(list)


class TrustStore:
    """``<node dir>/trust``: the trust layer's own LMDB environment.

    ======== ===================== =============================================
    table    key                   value
    ======== ===================== =============================================
    meta     b"format", b"step"    format version; [step, wall time saved]
    history  subject id            [k, step, successes, failures]
    kernel   attester id           the statement's signed wire bytes
    evidence subject id + step     [attester, subject, step, nonce, receipt,
                                   answer, signature] (newest EVIDENCE_KEPT)
    wrong_diffs executor id        evidence of a wrong state diff (the first:
                                   :class:`missive.replicas.execution.WrongDiff`)
    ======== ===================== =============================================

    Separate from the ledger's store because it is not ledger: losing it costs
    a node its recent attestation record, nothing anyone else relies on.
    """

    TABLES = ("meta", "history", "kernel", "evidence", "wrong_diffs")

    def __init__(self, path: Path) -> None:
        from missive.mailbox.disk import StoreDamaged
        from missive.mailbox.integrity import Damaged, check_lmdb

        if (path / "data.mdb").exists():
            try:
                check_lmdb(path, "the node's trust store")  # refused whole, not crashed on (see integrity)
            except Damaged as exc:
                raise StoreDamaged(str(exc)) from None
        path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(path), map_size=1 << 30, max_dbs=len(self.TABLES), sync=True, metasync=True)
        self.env.reader_check()  # slots of processes killed while reading (see Store.clear_stale_readers)
        self.db = {name: self.env.open_db(name.encode()) for name in self.TABLES}
        with self.env.begin(write=True) as txn:
            version = txn.get(b"format", db=self.db["meta"])
            if version is None:
                txn.put(b"format", msgpack.packb(STORE_FORMAT), db=self.db["meta"])
            elif msgpack.unpackb(version) != STORE_FORMAT:
                raise ValueError(f"{path} has trust format {msgpack.unpackb(version)}, this Missive reads {STORE_FORMAT}")

    def close(self) -> None:
        self.env.close()

    def load(self) -> Saved:
        with self.env.begin() as txn:
            raw = txn.get(b"step", db=self.db["meta"])
            step, saved_at = msgpack.unpackb(raw) if raw is not None else (0, 0.0)
            histories = {bytes(k): TrustHistory(*msgpack.unpackb(v)) for k, v in txn.cursor(db=self.db["history"])}
            statements = [bytes(v) for _, v in txn.cursor(db=self.db["kernel"])]
            evidence = [unpack_evidence(bytes(v)) for _, v in txn.cursor(db=self.db["evidence"])]
        return Saved(int(step), float(saved_at), histories, statements, evidence)

    def save(self, step: int, histories: Mapping[bytes, TrustHistory], statements: Mapping[bytes, bytes],
             evidence: Sequence[Evidence]) -> None:
        """One step's changes in one transaction (blocking: run it on a worker thread)."""
        with self.env.begin(write=True) as txn:
            txn.put(b"step", msgpack.packb([step, time.time()]), db=self.db["meta"])
            for subject, h in histories.items():
                txn.put(subject, msgpack.packb([h.k, h.step, h.successes, h.failures]), db=self.db["history"])
            for attester, wire in statements.items():
                txn.put(attester, wire, db=self.db["kernel"])
            for e in evidence:
                txn.put(e.subject + e.step.to_bytes(8, "big"), pack_evidence(e), db=self.db["evidence"])
            for subject in {e.subject for e in evidence}:
                self._trim(txn, subject)

    def wrong_diffs(self) -> list[bytes]:
        with self.env.begin() as txn:
            return [bytes(v) for _, v in txn.cursor(db=self.db["wrong_diffs"])]

    def keep_wrong_diff(self, executor: bytes, raw: bytes) -> None:
        """Keep the first evidence against ``executor`` (one proves it; the slashing issue reads it)."""
        with self.env.begin(write=True) as txn:
            txn.put(executor, raw, db=self.db["wrong_diffs"], overwrite=False)

    def _trim(self, txn: lmdb.Transaction, subject: bytes) -> None:
        cursor = txn.cursor(db=self.db["evidence"])
        keys: list[bytes] = []
        if cursor.set_range(subject):
            for key in cursor.iternext(keys=True, values=False):
                if not bytes(key).startswith(subject):
                    break
                keys.append(bytes(key))
        for key in keys[:-EVIDENCE_KEPT]:
            txn.delete(key, db=self.db["evidence"])
