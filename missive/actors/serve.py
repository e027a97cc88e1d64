"""Run a node's actors until stopped: ``python -m missive.actors.serve DIR``.

This is the long-running executor of one node directory.  Other processes
(``missive send``, load generators) accept messages into the same LMDB
environment; this one handles them as they arrive.  It holds the executor
lock, so a second executor fails at once instead of handling messages twice.
It can be killed at any moment: every round is one LMDB transaction, so a
restart resumes from the last committed round and nothing is handled twice.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import trio

from missive.actors.runtime import ExecutorLock, Runtime
from missive.mailbox.store import Store, StoreDamaged, check_whole

log = logging.getLogger(__name__)


async def serve(node_dir: Path, *, poll_interval: float = 0.005) -> None:
    check_whole(node_dir)  # a damaged store is refused before anything (the executor lock) is made
    lock = ExecutorLock(node_dir)
    lock.acquire()
    try:
        with Store(node_dir) as store:
            runtime = Runtime(store)
            log.info("serving %s", node_dir)
            await runtime.run(until_idle=False, poll_interval=poll_interval)
    finally:
        lock.release()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m missive.actors.serve NODE_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        trio.run(serve, Path(args[0]))
    except StoreDamaged as exc:
        print(f"missive serve: error: {exc}", file=sys.stderr)
        return 4  # damaged data (missive.cli.common.EXIT_DAMAGED)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
