"""Fixtures shared by the test modules."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest
from net_support import ListRecords

# Keystores the tests make keep seeds unencrypted (the documented development mode, missive.keys): an
# Argon2id derivation per command would only slow the suite down.  The tests of encryption set a passphrase
# and clear this themselves.  Subprocesses (the CLI, cluster nodes) inherit it.
os.environ.setdefault("MISSIVE_UNENCRYPTED_KEYS", "1")


@pytest.fixture
def net_log() -> Any:
    """Records from the missive.net loggers (all threads), at DEBUG and above."""
    handler = ListRecords()
    logger = logging.getLogger("missive.net")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)
