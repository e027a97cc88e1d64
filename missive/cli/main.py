"""The ``missive`` command: argument parsing and dispatch.

Each command group is a module with ``register(subparsers)``, which adds its
parser(s) and sets ``handler`` (a function ``(args) -> exit status``).  To add
a group (``init``, ``deploy``, ``send``...), write the module and list it in
:data:`COMMAND_GROUPS`.  Errors a user can cause are :class:`CliError`, or any
:class:`~missive.errors.MissiveError` a command does not put in its own words;
they are printed as one line (exit status by their kind) and never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import NoReturn

from missive.cli import (
    backup_cmd,
    check_cmd,
    cluster_cmds,
    compile_cmd,
    demo_cmd,
    jobs_cmd,
    market_cmd,
    node_cmds,
    replay_cmd,
    rpc_cmd,
    tickets_cmd,
    trust_cmd,
    version,
    vm,
)
from missive.cli.common import (
    EXIT_DISK,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliError,
    exit_code,
    make_console,
)
from missive.errors import MissiveError

#: Command-group modules, in the order ``missive --help`` lists them.
COMMAND_GROUPS: tuple[ModuleType, ...] = (demo_cmd, version, compile_cmd, check_cmd, vm, node_cmds, market_cmd,
                                          tickets_cmd, jobs_cmd, replay_cmd, backup_cmd, cluster_cmds, trust_cmd, rpc_cmd)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what was wrong, and where help is) and exit 2,
    like every other error of the CLI; ``--help`` still prints the whole usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="missive",
        description="Missive: every contract an actor, every call a message on a ledger.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    _name_commands(parser)
    return parser


def _name_commands(parser: argparse.ArgumentParser) -> None:
    """Let each command know its own name (``missive cluster up``): an argument none of the
    command's parsers knows is reported by the top parser, which would name only ``missive``."""
    parser.set_defaults(command_name=parser.prog)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _name_commands(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if unknown:
        sys.stderr.write(f"{args.command_name}: error: unrecognized arguments: {' '.join(unknown)} "
                         f"(see `{args.command_name} --help`)\n")
        return EXIT_USAGE
    try:
        return int(args.handler(args))
    except CliError as exc:
        make_console(stderr=True).print(f"missive: error: {exc.message}", markup=False, style="red")
        return exc.code
    except KeyboardInterrupt:
        make_console(stderr=True).print("missive: interrupted", markup=False)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `missive ... | head`
        sys.stderr.close()
        return 0
    except BaseExceptionGroup as group:  # from a trio nursery: Ctrl-C, or one user-facing error, inside
        from missive.actors.serve import interrupted

        if interrupted(group):
            make_console(stderr=True).print("missive: interrupted", markup=False)
            return EXIT_INTERRUPTED
        only, rest = group.split(CliError)
        if only is None or rest is not None:
            raise
        first = only.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        assert isinstance(first, CliError)
        make_console(stderr=True).print(f"missive: error: {first.message}", markup=False, style="red")
        return first.code
    except MissiveError as exc:  # a room's error met by a command without its own handling (a damaged store, a
        # full disk): one line, the exit status of its kind (an error of no kind: it ran and failed)
        make_console(stderr=True).print(f"missive: error: {exc}", markup=False, style="red")
        return exit_code(exc, EXIT_FAILED)
    except Exception as exc:  # a full disk under a command that does not expect one (demo, say), as LMDB raises it
        from missive.mailbox.disk import DiskFull, fatal_error

        failure = fatal_error(exc, Path(getattr(args, "dir", None) or Path.cwd()))  # (a raw error: where it ran)
        if not isinstance(failure, DiskFull):
            raise
        make_console(stderr=True).print(f"missive: error: {failure}", markup=False, style="red")
        return EXIT_DISK


if __name__ == "__main__":
    raise SystemExit(main())
