"""Back up and restore a node directory (``missive backup`` / ``missive restore``).

A backup is a node directory itself: every LMDB environment in it (the ledger's
``data.mdb``, the keystore, a cluster node's trust store) is copied with
LMDB's own copy (``mdb_env_copy2`` with compaction: a consistent snapshot of
one read transaction, safe while the node runs and writes), and every other
file (``ledger.key``, ``node.key``, ``node.toml``, ``abis.msgpack``, the
ledger marker) as it is, modes kept.  Lock files, logs and ``executor.lock``
are not copied: they belong to running processes.  The copy is made in a
hidden directory beside ``OUT`` and renamed into place once complete and
checked, so an interrupted backup leaves no ``OUT`` behind.

Restoring copies a backup into a directory that does not exist yet (or is
empty) the same way.  To restore over a damaged node, move its directory aside
first (``mv node node.damaged``), then restore: nothing is ever overwritten.

The backup holds the private keys the node directory holds (``ledger.key``,
the keystore): keep it as private (it is made 0700).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from missive.errors import MissiveError
from missive.mailbox.integrity import Damaged, check_lmdb

#: files that belong to the processes using a node, not to its data
SKIPPED = ("lock.mdb", "executor.lock", "node.log")


class BackupError(MissiveError):
    """A backup or restore that cannot be made as asked (one line; nothing was written)."""


def _lmdb_dirs(root: Path) -> list[Path]:
    """Every directory under ``root`` (itself included) holding an LMDB environment."""
    return sorted(p.parent for p in root.rglob("data.mdb"))


def _copy_env(source: Path, target: Path) -> None:
    import lmdb

    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    # A running node's environment has its lock file: take a reader slot in it, so the snapshot's pages
    # stay put while the node writes.  Without one nobody has it open (a backup being restored), and
    # a lock file is not made in it.
    locked = (source / "lock.mdb").exists()
    env = lmdb.open(str(source), readonly=True, max_dbs=64, lock=locked, map_size=1 << 36)
    try:
        env.copy(str(target), compact=True)
    finally:
        env.close()
    mode = (source / "data.mdb").stat().st_mode & 0o777
    os.chmod(target / "data.mdb", mode)


def _copy_node(source: Path, target: Path, say: Callable[[str], None]) -> None:
    from missive.mailbox.store import check_whole

    check_whole(source)  # the ledger (and any other LMDB file) whole, before anything is copied
    envs = _lmdb_dirs(source)
    for env_dir in envs:
        check_lmdb(env_dir, "an LMDB store")
    target.mkdir(mode=0o700)
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        out = target / relative
        if path.is_dir():
            out.mkdir(mode=path.stat().st_mode & 0o777, exist_ok=True)
        elif path.name in SKIPPED or path.name == "data.mdb" or path.name.startswith("."):
            continue
        elif path.is_file():
            shutil.copy2(path, out)
    for env_dir in envs:
        _copy_env(env_dir, target / env_dir.relative_to(source))
        check_lmdb(target / env_dir.relative_to(source), "the copy")
        say(f"copied {env_dir / 'data.mdb'}")


def _into(target: Path, make: Callable[[Path], None]) -> None:
    """Make ``target`` by ``make(spare)`` on a hidden directory beside it, renamed into place when done."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target} already exists and is not empty; nothing is ever overwritten "
                          "(pick a new directory, or move that one aside)")
    target.parent.mkdir(parents=True, exist_ok=True)
    spare = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(spare, ignore_errors=True)
    try:
        make(spare)
        if target.exists():
            target.rmdir()  # empty, checked above
        os.replace(spare, target)
    finally:
        shutil.rmtree(spare, ignore_errors=True)


def backup(node_dir: Path, out: Path, say: Callable[[str], None] = lambda _: None) -> None:
    """Copy the node directory ``node_dir`` (running or not) to the new directory ``out``."""
    if not (node_dir / "data.mdb").exists() and not (node_dir / "missive-ledger").exists():
        from missive.mailbox.disk import NoStore

        raise NoStore(f"no Missive node at {node_dir} (nothing to back up)")
    _into(out, lambda spare: _copy_node(node_dir, spare, say))


def restore(backup_dir: Path, node_dir: Path, say: Callable[[str], None] = lambda _: None) -> None:
    """Copy the backup ``backup_dir`` to ``node_dir``, which must not exist or be empty."""
    if not (backup_dir / "data.mdb").exists():
        from missive.mailbox.disk import NoStore

        if (backup_dir / "missive-ledger").exists():
            raise Damaged(f"{backup_dir / 'data.mdb'} is missing: {backup_dir} is not a whole backup")
        raise NoStore(f"{backup_dir} is not a backup of a Missive node (no data.mdb)")
    _into(node_dir, lambda spare: _copy_node(backup_dir, spare, say))


__all__ = ["BackupError", "backup", "restore"]
