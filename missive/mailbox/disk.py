"""The store's errors, and what a full or failing disk becomes: one line naming the disk.

Why a module of its own: every write of the store (and of the files beside it: keys, the trust
store, the lock file) meets the disk the same way, and a process stopped by its store exits with
a documented status (:data:`EXIT_DISK`, :data:`EXIT_DAMAGED`).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb

from missive.errors import DiskFailure, MissiveError, NotFound
from missive.mailbox.integrity import Damaged


class StoreError(MissiveError):
    """The store cannot be used as asked (missing, wrong format, locked)."""


class NoStore(StoreError, NotFound):
    """There is no store where one was asked for (and none was ever there)."""


#: the name the rest of the package used before the integrity check came
NoNode = NoStore


class StoreDamaged(StoreError, Damaged):
    """The store is not whole: a damaged, truncated or foreign ``data.mdb``, or a ledger gone missing.

    Raised before anything is mapped or written; the message is one line naming the file.
    """


class DiskFull(StoreError, DiskFailure):
    """A write transaction met a full (or failing) disk: nothing of it was written.

    LMDB writes a transaction's pages, then its meta page; a transaction whose
    pages could not all be written never becomes the store's state, so the
    store stays as it was and opens and replays as before.  Writes may work
    again once there is space.  The text is one line naming the store's path.
    """


#: LMDB's reader table (one slot per open read transaction of every process): LMDB's default is 126,
#: which a busy node and its clients, or readers killed inside a read, use up
MAX_READERS = 1024
#: bytes of a lock file made here: MAX_READERS slots of 64 bytes and room for LMDB's header
LOCK_FILE_SIZE = (MAX_READERS + 64) * 64
#: below this many free bytes an Input/output error on a write is read as a full disk (LMDB turns a
#: short write, as a filling disk gives, into EIO)
NEARLY_FULL = 64 << 20
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO)


def _disk_errno(exc: BaseException) -> int | None:
    """The errno of a failed write that points at the disk (full, over quota, failing), if any.

    py-lmdb gives no errno, only LMDB's text ("mdb_txn_commit: Input/output error"),
    so its errors are matched by their strerror."""
    if isinstance(exc, OSError):
        return exc.errno if exc.errno in _DISK_ERRNOS else None
    if isinstance(exc, lmdb.DiskError):
        return errno.ENOSPC
    if isinstance(exc, lmdb.Error):
        text = str(exc)
        return next((code for code in _DISK_ERRNOS if text.endswith(os.strerror(code))), None)
    return None


def _free_bytes(path: Path) -> int | None:
    """The bytes left on the disk holding ``path`` for an unprivileged writer (None: unknown)."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def _size_text(size: int | None) -> str:
    """``size`` bytes free, for a person ("12.0 MiB free")."""
    if size is None:
        return "free space unknown"
    if size < 1024:
        return f"{size} B free"
    value, unit = size / 1024, "KiB"
    for larger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{value:.1f} {unit} free"


def disk_full(path: Path, exc: BaseException) -> DiskFull | None:
    """``exc`` as one line naming the disk that holds the store at ``path``, if it says that disk is
    full or failing; None for any other error.

    Why: LMDB reports a full disk as ``lmdb.DiskError`` (ENOSPC), as a plain
    ``lmdb.Error`` "Input/output error" (LMDB turns a short write into EIO), or,
    past the map size, as ``MapFullError``; the files beside it fail with OSError.
    Raw, these reach a client or a log as a traceback naming neither the disk
    nor what to do about it.
    """
    if isinstance(exc, DiskFull):
        return exc
    done = "nothing was written; free space and retry"
    if isinstance(exc, lmdb.MapFullError):
        return DiskFull(f"the store at {path} is full: it has reached its LMDB map size (MDB_MAP_FULL): nothing "
                        "was written")
    code = _disk_errno(exc)
    if code is None:
        return None
    free = _free_bytes(path)
    if code == errno.EIO and (free is None or free >= NEARLY_FULL):
        return DiskFull(f"the disk holding {path} failed a write ({os.strerror(code)}, {_size_text(free)}): "
                        "nothing was written; check the disk and retry")
    return DiskFull(f"the disk holding {path} is full ({os.strerror(code)}, {_size_text(free)}): {done}")


#: exit status of a process stopped by its store's disk (full or failing) or by a store LMDB gave up on
#: (sysexits' EX_IOERR), for ``missive`` commands and cluster nodes alike
EXIT_DISK = 74
#: exit status of a process that refused a store that is not whole (the same as the CLI's EXIT_DAMAGED)
EXIT_DAMAGED = 4


def fatal_error(exc: BaseException, path: Path) -> StoreError | None:
    """The store error ``exc`` stops a process with (``exc`` may be a group: a nursery's errors),
    a full disk under ``path`` as :class:`DiskFull`; None if it holds none (a bug, which keeps its
    traceback)."""
    leaves = [exc]
    while leaves:
        leaf = leaves.pop(0)
        if isinstance(leaf, BaseExceptionGroup):
            leaves.extend(leaf.exceptions)
        elif isinstance(leaf, StoreError):
            return leaf
        elif isinstance(leaf, lmdb.Error | OSError) and (found := disk_full(path, leaf)) is not None:
            return found
    return None


def exit_status(error: StoreError) -> int:
    """:data:`EXIT_DISK` for a full or failing disk (or a store LMDB gave up on), 4 for a store that is
    not whole (:class:`StoreDamaged`), else 1."""
    if isinstance(error, StoreDamaged):
        return EXIT_DAMAGED
    return EXIT_DISK if isinstance(error, DiskFull) or isinstance(error.__cause__, lmdb.Error) else 1


@contextmanager
def disk_errors(path: Path) -> Iterator[None]:
    """Raise what a write meets on a full or failing disk as :class:`DiskFull` (see :func:`disk_full`)."""
    try:
        yield
    except (lmdb.Error, OSError) as exc:
        converted = disk_full(path, exc)
        if converted is None:
            raise
        raise converted from exc
