"""What every command group shares: consoles, the error type, argument parsers.

Commands report bad input by raising :class:`CliError`; :func:`missive.cli.main.main`
prints its message (never a traceback) and exits with its code, so every
command fails the same way.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Final

from rich.console import Console

from missive.errors import MissiveError

#: Exit statuses shared by all commands.
EXIT_OK: Final = 0
#: The command ran and the thing it checked failed (revert, halt, failing vectors, bad contract).
EXIT_FAILED: Final = 1
#: The command could not run: malformed arguments or input files.
EXIT_USAGE: Final = 2
#: Not found: no node or cluster there, an unknown account, contract or message.
EXIT_NOT_FOUND: Final = 3
#: Damaged data: a store, key file or ledger that is not whole (nothing was changed).
EXIT_DAMAGED: Final = 4
#: Interrupted (Ctrl-C): what was committed is kept, nothing is half-written.
EXIT_INTERRUPTED: Final = 130
#: The disk holding the node's store is full or failing: nothing was written (sysexits' EX_IOERR;
#: the same as :data:`missive.mailbox.disk.EXIT_DISK`, which cluster nodes exit with).
EXIT_DISK: Final = 74


def exit_code(exc: BaseException, default: int = EXIT_USAGE) -> int:
    """The exit code for an error of a room below: by its kind (:mod:`missive.errors`); an error
    of no kind gets the command's ``default``."""
    from missive.errors import BadInput, Damaged, DiskFailure, Failed, NotFound

    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, Damaged):
        return EXIT_DAMAGED
    if isinstance(exc, DiskFailure):
        return EXIT_DISK
    if isinstance(exc, BadInput):
        return EXIT_USAGE
    if isinstance(exc, Failed):
        return EXIT_FAILED
    return default


class CliError(MissiveError):
    """A user-facing error: the message is printed as is, then the CLI exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def make_console(*, stderr: bool = False) -> Console:
    """A console that never re-wraps long lines (hex must stay copy-pasteable) nor colours numbers."""
    return Console(stderr=stderr, soft_wrap=True, highlight=False)


def print_json(data: Any) -> None:
    """One machine-readable JSON object on stdout, bypassing rich (no styling, no wrapping)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def parse_int(text: str) -> int:
    """argparse ``type=`` for numbers: decimal, ``0x`` hex, underscores allowed (``10_000_000``)."""
    cleaned = text.strip().replace("_", "")
    try:
        if cleaned[:2].lower() == "0x":
            value = int(cleaned[2:], 16)
        else:
            value = int(cleaned, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (decimal or 0x-hex)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def parse_seconds(text: str) -> float:
    """argparse ``type=`` for a duration in seconds: a finite number, not negative."""
    try:
        value = float(text.strip().replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (seconds, 0 or more)")
    return value


def parse_word(text: str) -> int:
    """A 256-bit unsigned value."""
    value = parse_int(text)
    if value >> 256:
        raise argparse.ArgumentTypeError(f"{text!r} does not fit in 256 bits")
    return value


def parse_address(text: str) -> bytes:
    """argparse ``type=`` for a 20-byte address written as 40 hex digits (``0x`` optional)."""
    body = text.strip()
    if body[:2].lower() == "0x":
        body = body[2:]
    if len(body) != 40:
        raise argparse.ArgumentTypeError(f"{text!r} is not an address (need 40 hex digits, got {len(body)})")
    try:
        return bytes.fromhex(body)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an address (not hex)") from None


def read_hex_argument(option: str, value: str) -> bytes:
    """Hex bytes from ``0x...`` text or ``@FILE``; a Vyper ``@FILE.vy`` is compiled to runtime code.

    Errors name the option and the offending character's position.
    """
    from missive.toolchain.compiler import CompileError, CompileInputError, compile_source, parse_hex

    if value.startswith("@"):
        path = Path(value[1:])
        if not path.is_file():
            raise CliError(f"{option}: {path}: no such file")
        try:
            if path.suffix.lower() == ".vy":
                return compile_source(path).runtime_bytecode
            return parse_hex(path.read_text(encoding="utf-8"), what=f"{option} {path}")
        except CompileInputError as exc:
            raise CliError(str(exc)) from exc
        except CompileError as exc:
            raise CliError(f"{option}: {exc}", EXIT_FAILED) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"{option}: cannot read {path}: {exc}") from exc
    try:
        return parse_hex(value, what=option)
    except CompileError as exc:
        raise CliError(str(exc)) from exc
