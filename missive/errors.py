"""Kinds of failure every room shares, so that the CLI answers each kind with one exit code.

An error class says what went wrong in its own room's words (``StoreError``,
``KeystoreError``, ``ClusterError``...); where it is also one of these kinds it
inherits the kind as a second base.  The CLI maps kinds to exit codes
(``missive/cli/common.py``) without knowing every room's classes.
"""

from __future__ import annotations


class NotFound(Exception):
    """What was asked for is not there: no node or cluster at a directory, an unknown key,
    message or node name (exit 3)."""


class Damaged(Exception):
    """Data that is not whole: a damaged store or key file, a ledger whose replay differs
    (exit 4).  Nothing was changed."""
