"""Run a node's actors until stopped: ``missive serve --dir DIR`` (or ``python -m missive.actors.serve DIR``).

This is the long-running executor of one node directory.  Other processes
(``missive send``, load generators) accept messages into the same LMDB
environment; this one handles them as they arrive.  It holds the executor
lock, so a second executor fails at once instead of handling messages twice.
It can be killed at any moment: every round is one LMDB transaction, so a
restart resumes from the last committed round and nothing is handled twice.

Why a node needs it: on one node the actors run only while some process runs
them.  ``missive send`` runs them until its message and what that message
caused are handled (within its time limit); a contract that keeps scheduling
itself, or messages submitted with ``--no-wait``, need a process that stays.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import trio

from missive.actors.runtime import ExecutorLock, Runtime
from missive.errors import Damaged, NotFound
from missive.mailbox.disk import StoreError
from missive.mailbox.store import Store, check_whole

log = logging.getLogger(__name__)

#: How often a serving node reports what it has handled (when it handled something).
REPORT_EVERY = 5.0


async def serve(node_dir: Path, *, poll_interval: float = 0.005, ready: Callable[[], None] | None = None,
                report: Callable[[int], None] | None = None, runtime_out: list[Runtime] | None = None) -> None:
    """Run the actors of ``node_dir`` until cancelled: call ``ready()`` once the executor lock is
    held, then, every ``REPORT_EVERY`` seconds in which messages were handled, ``report(total)``.

    The store is checked and opened before the lock is taken: a directory that is not a
    node, or a damaged store, is refused without leaving a lock file behind.
    """
    check_whole(node_dir)
    with Store(node_dir) as store:
        lock = ExecutorLock(node_dir)
        lock.acquire()
        try:
            runtime = Runtime(store)
            if runtime_out is not None:
                runtime_out.append(runtime)
            log.info("serving %s", node_dir)
            if ready is not None:
                ready()
            async with trio.open_nursery() as nursery:
                if report is not None:
                    nursery.start_soon(_report, runtime, report)
                await runtime.run(until_idle=False, poll_interval=poll_interval)
                nursery.cancel_scope.cancel()
        finally:
            lock.release()


async def _report(runtime: Runtime, report: Callable[[int], None]) -> None:
    shown = 0
    while True:
        await trio.sleep(REPORT_EVERY)
        if runtime.handled_total != shown:
            shown = runtime.handled_total
            report(shown)


def main(argv: list[str] | None = None) -> int:
    """The module form; ``missive serve`` is the documented one.  Errors are one line."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m missive.actors.serve NODE_DIR  (or: missive serve --dir NODE_DIR)",
              file=sys.stderr if args[:1] not in (["-h"], ["--help"]) else sys.stdout)
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        trio.run(serve, Path(args[0]))
    except StoreError as exc:
        print(f"missive serve: error: {exc}", file=sys.stderr)
        # the CLI's exit codes (README): not found 3, damaged data 4, else refused 2
        return 3 if isinstance(exc, NotFound) else 4 if isinstance(exc, Damaged) else 2
    except BaseException as exc:
        if not interrupted(exc):
            raise
        print("missive serve: interrupted; the actors stopped (every committed round is kept)", file=sys.stderr)
        return 130
    return 0


def interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl-C, alone or inside the exception group of a trio nursery."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(KeyboardInterrupt) is not None
    return isinstance(exc, KeyboardInterrupt)


if __name__ == "__main__":
    raise SystemExit(main())
