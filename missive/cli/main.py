"""The ``missive`` command: argument parsing and dispatch.

Each command group is a module with ``register(subparsers)``, which adds its
parser(s) and sets ``handler`` (a function ``(args) -> exit status``).  To add
a group (``init``, ``deploy``, ``send``...), write the module and list it in
:data:`COMMAND_GROUPS`.  Errors a user can cause are :class:`CliError`; they are
printed as one line and never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from missive.cli import (
    backup_cmd,
    cluster_cmds,
    compile_cmd,
    demo_cmd,
    node_cmds,
    replay_cmd,
    trust_cmd,
    version,
    vm,
)
from missive.cli.common import EXIT_DAMAGED, EXIT_DISK, EXIT_USAGE, CliError, make_console

#: Command-group modules, in the order ``missive --help`` lists them.
COMMAND_GROUPS: tuple[ModuleType, ...] = (demo_cmd, version, compile_cmd, vm, node_cmds, replay_cmd, backup_cmd,
                                          cluster_cmds, trust_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="missive",
        description="Missive: every contract an actor, every call a message on a ledger.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return int(args.handler(args))
    except CliError as exc:
        make_console(stderr=True).print(f"missive: error: {exc.message}", markup=False, style="red")
        return exc.code
    except KeyboardInterrupt:
        make_console(stderr=True).print("missive: interrupted", markup=False)
        return 130
    except BrokenPipeError:  # e.g. `missive ... | head`
        sys.stderr.close()
        return 0
    except Exception as exc:  # a full disk under a command that does not expect one (demo, say)
        from missive.mailbox.integrity import Damaged

        if isinstance(exc, Damaged):  # a damaged store met by a command without its own handling
            make_console(stderr=True).print(f"missive: error: {exc}", markup=False, style="red")
            return EXIT_DAMAGED

        from missive.mailbox.store import DiskFull, fatal_error

        failure = fatal_error(exc, Path(getattr(args, "dir", None) or Path.cwd()))  # (a raw error: where it ran)
        if not isinstance(failure, DiskFull):
            raise
        make_console(stderr=True).print(f"missive: error: {failure}", markup=False, style="red")
        return EXIT_DISK


if __name__ == "__main__":
    raise SystemExit(main())
