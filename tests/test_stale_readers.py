"""Readers killed inside a read transaction leave no lasting trace (issue 20, bug 9).

Real LMDB in temp dirs, real processes killed with SIGKILL while they read.  Such a
process keeps its slot in the lock file's reader table.  Before the fix nothing ever
freed those slots: after 126 kills every new read failed with ``MDB_READERS_FULL``
in every process, and before that each stale slot pinned the snapshot it had read,
so the pages later transactions freed could not be reused and the file kept growing
(244 MB against 17.5 MB without kills).  Now every process that opens a store frees
the slots of dead ones, and a node's writer does so every few seconds.

The test process keeps the store open throughout, as a running node does: LMDB resets
the reader table only when a process opens an environment nobody else has open, which
would hide the bug.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trio

from missive.mailbox.store import Store
from missive.mailbox.writer import GroupWriter

#: Forks readers and kills each one inside its read transaction; prints each reader's answer.
#: One process imports Missive once and forks from there: a reader costs a fork, not a start.
#: It never opens the store itself, so each reader's environment is its own.
KILLER = r"""
import os, signal, sys, time
import lmdb
from missive.mailbox.store import Store

path, how, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
for _ in range(count):
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        try:
            if how == "store":  # a Missive process: a CLI command, a replay, a node starting
                store = Store(path, readonly=True)
                txn = store.read()
                assert txn.get(b"format", db=store.db["meta"]) is not None
            else:  # a process that frees nobody's slot (another tool, an older Missive)
                env = lmdb.open(path, max_dbs=64, readonly=True)
                txn = env.begin()
                txn.get(b"format")
            answer = "reading"
        except Exception as exc:
            answer = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        os.write(ready_w, (answer + "\n").encode())
        time.sleep(600)
        os._exit(0)
    os.close(ready_w)
    with os.fdopen(ready_r) as ready:
        answer = ready.readline().strip()
    os.kill(pid, signal.SIGKILL)  # inside its read transaction
    os.waitpid(pid, 0)
    print(answer, flush=True)
"""


def kill_readers(path: Path, count: int, how: str = "store") -> list[str]:
    """Start ``count`` readers of the store at ``path`` one after the other, each killed (SIGKILL)
    while its read transaction is open; what each said once it was reading (or why it could not)."""
    done = subprocess.run([sys.executable, "-c", KILLER, str(path), how, str(count)], capture_output=True,
                          text=True, timeout=300, check=True)
    return done.stdout.splitlines()


def dead_readers(store: Store) -> int:
    """Slots of the reader table held by processes that no longer exist."""
    dead = 0
    for line in store.env.readers().splitlines()[1:]:  # "pid thread txnid" rows after a header
        fields = line.split()
        if not fields or not fields[0].isdigit():
            continue
        try:
            os.kill(int(fields[0]), 0)
        except ProcessLookupError:
            dead += 1
        except PermissionError:
            pass
    return dead


def test_readers_killed_while_reading_do_not_use_up_the_reader_table(tmp_path: Path) -> None:
    """130 readers (more than LMDB's default table of 126) killed inside a read: every one could
    read, a fresh process still opens the store and reads, and the table does not stay full."""
    store = Store(tmp_path / "node", create=True)  # the running node
    answers = kill_readers(store.path, 130)
    assert answers == ["reading"] * 130, [a for a in answers if a != "reading"][:1]  # was: MDB_READERS_FULL
    assert kill_readers(store.path, 1) == ["reading"]
    with store.read() as txn:
        assert txn.get(b"format", db=store.db["meta"]) is not None
    # each opener freed the slots of the readers killed before it: at most the last one's is left
    assert dead_readers(store) <= 1
    store.clear_stale_readers()
    assert dead_readers(store) == 0
    store.close()


def test_a_node_frees_the_slots_that_other_processes_leave(tmp_path: Path) -> None:
    """Readers that free nobody's slot when they open (another tool, an older Missive) leave every
    slot they held; the node's own call frees them all, and says how many."""
    store = Store(tmp_path / "node", create=True)
    assert kill_readers(store.path, 130, how="raw") == ["reading"] * 130  # the table has room for them
    assert dead_readers(store) == 130
    assert store.clear_stale_readers() == 130
    assert dead_readers(store) == 0
    assert store.clear_stale_readers(every=3600) == 0  # nothing left; and no second look within the hour
    store.close()


def _data_size(store: Store) -> int:
    return (store.path / "data.mdb").stat().st_size


def _churn(store: Store, txn: object) -> None:
    """Rewrite the same 16 values of 4,000 bytes: each transaction frees as many pages as it takes."""
    for index in range(16):
        txn.put(b"churn%02d" % index, os.urandom(4000), db=store.db["code"])  # type: ignore[attr-defined]


def test_writes_after_a_reader_was_killed_reuse_pages_once_the_writer_frees_its_slot(tmp_path: Path) -> None:
    """A reader killed inside its read pins the snapshot it read: transactions that rewrite the same
    data grow the file instead of reusing the pages they free.  The node's writer frees the slot
    (every ``readers_every`` seconds; at once here), and the writes after that reuse pages: the
    file stops growing."""
    store = Store(tmp_path / "node", create=True)
    for _ in range(30):
        store.write_together([lambda txn: _churn(store, txn)])
    settled = _data_size(store)
    assert kill_readers(store.path, 3, how="raw") == ["reading"] * 3
    for _ in range(100):  # no one frees the slots: every page freed from here on stays pinned
        store.write_together([lambda txn: _churn(store, txn)])
    pinned = _data_size(store)
    assert pinned - settled > 4 << 20, (settled, pinned)  # 100 x 16 pages of 4 KiB, and the trees'

    async def through_the_writer(count: int) -> None:
        writer = GroupWriter(store, readers_every=0.0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            for _ in range(count):
                await writer.write(lambda txn: _churn(store, txn))
            nursery.cancel_scope.cancel()

    trio.run(through_the_writer, 300)
    assert dead_readers(store) == 0
    assert _data_size(store) - pinned < 1 << 20, (pinned, _data_size(store))  # 300 transactions: no growth
    store.close()
