"""What a cluster node tells clients about its own store, as plain msgpack-able values.

These are the node-local halves of the read RPCs (``ledger``, ``message``,
``resolve``, ``mailbox``, ``pending``, ``scheduled``, ``storage``, ``accounts``,
``progress``, ``replay``).
They live apart from :mod:`missive.cluster.node` because they only read a
:class:`~missive.mailbox.store.Store`: no networking, so they are easy to test
and the node module stays about the node process.

Wire shapes are lists and bytes, never objects: a client rebuilds
:class:`~missive.mailbox.envelope.Envelope` and
:class:`~missive.mailbox.records.Receipt` with their own ``decode``, so a node
never trusts a client's pickles and a client never needs the node's classes'
private state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from missive.actors.replay import replay
from missive.mailbox import ledger_records
from missive.mailbox.ledger_records import MESSAGE_RECORDS, ReceiptRecord, wire_fields
from missive.mailbox.signed import record_canonical
from missive.mailbox.store import Store, u64
from missive.replicas.copies import Copies

#: At most this many ledger records per ``ledger`` call (keeps a reply far below the frame limit).
LEDGER_PAGE = 400
#: At most this many storage slots per ``storage`` call (about 70 bytes each on the wire).
STORAGE_PAGE = 1000


def ledger_page(store: Store, start: int = 0, limit: int | None = None, last: int | None = None) -> dict[str, Any]:
    """Ledger records from ``start`` (or the ``last`` N), each with its message and receipt.

    Each record is ``[seq, record, canonical message or None, encoded receipt or None]``;
    ``total`` is how many records the ledger holds, ``next`` where to continue.
    """
    limit = LEDGER_PAGE if limit is None else max(0, min(limit, LEDGER_PAGE))
    out: list[list[Any]] = []
    with store.read() as txn:
        total = int(txn.stat(store.db["ledger"])["entries"])
        for seq, record in ledger_records.page(txn, store.db["ledger"], start, limit, last):
            message = receipt = None
            if isinstance(record, MESSAGE_RECORDS):  # (the other kinds name no message)
                if isinstance(record, ReceiptRecord) and txn.get(u64(seq), db=store.db["discarded"]) is not None:
                    record = attrs.evolve(record, discarded=True)  # a receipt a rollback gave up
                stored = txn.get(record.message_id, db=store.db["messages"])
                message = record_canonical(stored) if stored is not None else None
                if isinstance(record, ReceiptRecord) and not record.discarded:
                    receipt = txn.get(record.message_id, db=store.db["receipts"])
            out.append([seq, wire_fields(record), message, receipt])
    return {"records": out, "total": total, "next": out[-1][0] + 1 if out else start}


def message(store: Store, message_id: bytes) -> bytes | None:
    """A stored message's canonical bytes, if this node has it."""
    found = store.message(message_id)
    return found[0].canonical() if found is not None else None


def mailbox(store: Store, address: bytes) -> list[list[Any]]:
    """``address``'s handled messages in order: ``[canonical, encoded receipt or None]``."""
    out: list[list[Any]] = []
    for message_id in store.mailbox(address):
        found = store.message(message_id)
        if found is not None:
            receipt = store.receipt(message_id)
            out.append([found[0].canonical(), receipt.encode() if receipt is not None else None])
    return out


def pending(store: Store, address: bytes | None = None) -> list[bytes]:
    """Canonical bytes of the messages waiting here (for one actor, or all), in queue order."""
    out: list[bytes] = []
    for _, message_id in store.pending(address):
        found = store.message(message_id)
        if found is not None:
            out.append(found[0].canonical())
    return out


def scheduled(store: Store, executes: Callable[[bytes], bool]) -> list[list[Any]]:
    """``[due logical time, canonical message]`` of the scheduled messages not yet due whose recipient
    this node executes, soonest first.  Every holder of an actor keeps its scheduled messages, but
    only the executor releases them (a copy's entry goes when the executor's diff says it ran), so
    the executor's list is the one that is current."""
    out: list[list[Any]] = []
    for due, message_id in store.scheduled():
        found = store.message(message_id)
        if found is not None and executes(found[0].recipient):
            out.append([due, found[0].canonical()])
    return out


def storage_page(store: Store, address: bytes, after: bytes | None = None,
                 limit: int = STORAGE_PAGE) -> dict[str, Any]:
    """``address``'s non-zero storage slots after slot ``after`` (32 bytes; None: from the first),
    at most ``limit``, in slot order: ``{"slots": [[slot, value]...], "next": the last slot, or None
    if there are no more}`` (a value as stored: big-endian, without leading zeros)."""
    found = store.scan("storage", address, limit + 1, after=address + after if after is not None else None)
    more = len(found) > limit
    slots = [[key[20:], value] for key, value in found[:limit]]
    return {"slots": slots, "next": slots[-1][0] if more else None}


def accounts(store: Store) -> list[list[bytes]]:
    """``[address, encoded account]`` of every account this node holds."""
    return [[address, account.encode()] for address, account in store.accounts()]


def progress(copies: Copies) -> dict[str, int]:
    """Work left here and a counter that moves with every write (to tell "idle" from "between steps").

    ``seq`` is the store's sequence counter, which every accepted, received,
    queued or handled message advances: two looks that see the same ``seq``
    and nothing waiting saw no activity in between.
    """
    return {**copies.counts("pending", "outbound", "scheduled"), "seq": copies.store.next_seq()}


def replay_report(store: Store, actor: bytes | None = None, until: bytes | None = None) -> dict[str, Any]:
    """Replay this node's ledger (:func:`missive.actors.replay.replay`) and say how it went."""
    report = replay(store, actor=actor, until=until)
    divergence = report.divergence
    return {
        "checked": report.checked,
        "divergence": divergence.describe() if divergence is not None else None,
        "stopped_at": report.stopped_at,
    }
