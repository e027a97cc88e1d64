"""``missive backup DIR OUT`` and ``missive restore BACKUP DIR``: see :mod:`missive.backup`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from missive.cli.common import EXIT_DAMAGED, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, CliError, make_console


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "backup", help="copy a node directory (running or not) to a new directory",
        description="Copy the node directory DIR to the new directory OUT: its ledger and keystore with LMDB's "
                    "own copy (a consistent snapshot, safe while the node runs), its key and config files as they "
                    "are. OUT must not exist (or be empty); it holds the node's private keys and is made 0700. "
                    "Restore with `missive restore OUT DIR2`.")
    p.add_argument("dir", type=Path, metavar="DIR", help="the node directory (e.g. .missive or CLUSTER/n1)")
    p.add_argument("out", type=Path, metavar="OUT", help="the backup directory to make")
    p.set_defaults(handler=run_backup)
    p = subparsers.add_parser(
        "restore", help="make a node directory from a backup",
        description="Copy the backup BACKUP (made by `missive backup`) to DIR, which must not exist (or be empty): "
                    "to restore over a damaged node, move its directory aside first. Then check it with "
                    "`missive replay --dir DIR`.")
    p.add_argument("backup", type=Path, metavar="BACKUP")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.set_defaults(handler=run_restore)


def _run(what: str, act: Any) -> int:
    from missive.backup import BackupError
    from missive.mailbox.disk import NoStore, StoreError
    from missive.mailbox.integrity import Damaged

    console = make_console()
    try:
        act(lambda line: console.print(line, markup=False))
    except Damaged as exc:
        raise CliError(str(exc), EXIT_DAMAGED) from None
    except NoStore as exc:
        raise CliError(str(exc), EXIT_NOT_FOUND) from None
    except (BackupError, StoreError) as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    except OSError as exc:
        raise CliError(f"{what}: {exc}", EXIT_FAILED) from None
    return EXIT_OK


def run_backup(args: argparse.Namespace) -> int:
    from missive.backup import backup

    code = _run("backup", lambda say: backup(args.dir, args.out, say))
    make_console().print(f"backed up {args.dir} to {args.out}", markup=False)
    return code


def run_restore(args: argparse.Namespace) -> int:
    from missive.backup import restore

    code = _run("restore", lambda say: restore(args.backup, args.dir, say))
    make_console().print(f"restored {args.backup} to {args.dir}; check it with `missive replay --dir {args.dir}`",
                         markup=False)
    return code
