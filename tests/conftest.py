"""Fixtures shared by the test modules."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from net_support import ListRecords


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
