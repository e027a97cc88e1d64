"""The root of every Missive error, and the kinds of failure every room shares.

Every exception Missive raises is a :class:`MissiveError` (the VM's are the one
exception: ``missive/vm`` is compiled by mypyc and imports nothing of Missive, so
its ``Halt`` and ``ForbiddenRead`` stay inside the handler, which turns them into
receipts).  Under the root, each room keeps its own family, named in its own
words and raised by one failing layer each (``net/errors.py`` is the model)::

    MissiveError
      NodeError       missive.node: the Python API (ArgumentError, Reverted, NodeTimeout...)
                      and the cluster client (NodeUnreachable...)
      StoreError      missive.mailbox.store: the ledger store (NoStore, StoreDamaged, DiskFull)
      EnvelopeError, RecordError, DiffError, SealError   the ledger's records
      TicketError     missive.market.tickets: lottery tickets and the ticket broker's records
      KeystoreError   missive.keys
      NetError        missive.net: frames, handshake, channel, RPC
      Refused         missive.net.rpc: a handler turning a request away (BadRequest, NotAllowed...)
      ClusterError, ConfigError, TrustFrameError          missive.cluster
      EpochError, EvidenceError, CannotCheck              the replication and trust rules
      CompileError, AssemblyError, ConformanceError       missive.toolchain
      BackupError, DemoError, CliError

Where an error is also one of the *kinds* below, it inherits the kind as a
second base.  A kind is what the CLI answers with an exit code
(:func:`missive.cli.common.exit_code`), without knowing every room's classes; an
error without a kind gets the command's default.  This module imports nothing, so
that anything may import it.
"""

from __future__ import annotations


class MissiveError(Exception):
    """Base of every error Missive raises (the VM's excepted): ``except MissiveError`` catches
    what Missive refuses or fails at, and nothing else (a bug stays a bug)."""


class NotFound(MissiveError):
    """What was asked for is not there: no node or cluster at a directory, an unknown key,
    message, function or node name (exit 3)."""


class Damaged(MissiveError):
    """Data that is not whole: a damaged store or key file, a ledger whose replay differs
    (exit 4).  Nothing was changed."""


class Failed(MissiveError):
    """It ran, and what it did or checked failed: a handler reverted or halted, a wait gave up,
    a compiler failed, a wrong passphrase (exit 1)."""


class BadInput(MissiveError):
    """Usage or refused input: arguments or files that do not fit what was asked (exit 2, also
    where the error's family would otherwise mean exit 1)."""


class DiskFailure(MissiveError):
    """The disk holding a store is full or failing: nothing was written (exit 74)."""
