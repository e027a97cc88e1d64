"""The worker registry (issue 23 step 3, first part; docs/market.md "Workers"): signed records on
the ledger, not an actor.

A worker is an external account that locks a **stake**: ``register`` (stake, coinbase, minimum
bid), ``unbond`` (the stake stops backing the worker and waits ``UNBOND_DELAY`` units of the
ledger's logical time) and ``withdraw`` (after the delay, the stake returns to the balance).  Each
is signed by the worker's account key over ``keccak256(msgpack(["worker", op, chain id,
address, *args]))`` and appended to the ledger as ``["worker", op, address, *args, public key,
signature]``; :func:`apply` is the one check-and-apply used live (by the store, in the write
transaction) and by replay (on the state it rebuilds), so replay re-checks every record.

A node alone registered as a worker pays its fees to the worker's coinbase and refuses, at
admission, messages bidding below the worker's minimum (:func:`below_minimum`).
"""

from __future__ import annotations

from typing import Any, cast

import attrs
import msgpack

from missive.identity import verify
from missive.mailbox.envelope import EnvelopeError, bytes_int, int_bytes
from missive.mailbox.records import Account
from missive.vm.keccak import keccak256

#: meta key prefix of a worker: b"worker:" + address -> :meth:`Worker.encode`
WORKER = b"worker:"
#: meta key of the worker this node executes as (a node alone: the last account registered on it)
SELF = b"worker"
#: the least stake a worker may lock
MIN_STAKE = 1_000
#: logical time an unbonded stake waits before it can be withdrawn (long enough for evidence to arrive)
UNBOND_DELAY = 1_000
OPS = ("register", "unbond", "withdraw")


@attrs.frozen
class Worker:
    stake: int = 0
    coinbase: bytes = b""
    min_bid: int = 0
    unbonding: int = 0
    release_at: int = 0

    def encode(self) -> bytes:
        return cast(bytes, msgpack.packb([int_bytes(self.stake), self.coinbase, int_bytes(self.min_bid),
                                          int_bytes(self.unbonding), self.release_at], use_bin_type=True))

    @classmethod
    def decode(cls, raw: bytes) -> Worker:
        stake, coinbase, min_bid, unbonding, release_at = msgpack.unpackb(raw)
        return cls(bytes_int(stake, "stake"), bytes(coinbase), bytes_int(min_bid, "min bid"),
                   bytes_int(unbonding, "unbonding"), release_at)


def digest(chain_id: int, op: str, address: bytes, args: list[Any]) -> bytes:
    return keccak256(cast(bytes, msgpack.packb(["worker", op, chain_id, address, *args], use_bin_type=True)))


def args_of(op: str, stake: int = 0, coinbase: bytes = b"", min_bid: int = 0, clock: int = 0) -> list[Any]:
    """The signed arguments of an operation (``clock``: the ledger's logical time at ``unbond`` /
    ``withdraw``, recorded so that replay applies the same delay)."""
    if op == "register":
        return [int_bytes(stake), coinbase, int_bytes(min_bid)]
    return [clock]


def apply(op: str, address: bytes, args: list[Any], public_key: bytes, signature: bytes, chain_id: int,
          account: Account | None, worker: Worker | None) -> tuple[Account, Worker]:
    """Check a signed registry operation against the state it meets; the account and worker after
    it, or EnvelopeError (one line, nothing changed)."""
    shown = f"0x{address.hex()}"
    if op not in OPS:
        raise EnvelopeError(f"no registry operation {op!r} (one of {', '.join(OPS)})")
    if account is None or account.is_contract:
        raise EnvelopeError(f"{shown} is not an external account: only an account can be a worker")
    if (not isinstance(public_key, bytes) or keccak256(public_key)[12:] != address
            or not verify(public_key, digest(chain_id, op, address, args), signature)):
        raise EnvelopeError(f"the {op} of worker {shown} is not signed by its account")
    current = worker or Worker()
    if op == "register":
        stake, coinbase, min_bid = bytes_int(args[0], "stake"), bytes(args[1]), bytes_int(args[2], "min bid")
        if len(coinbase) != 20:
            raise EnvelopeError("a coinbase is a 20-byte address")
        if current.stake:
            raise EnvelopeError(f"{shown} is registered already (stake {current.stake}); unbond it first")
        if stake < MIN_STAKE:
            raise EnvelopeError(f"a stake of {stake} is below the registry's minimum stake ({MIN_STAKE})")
        if stake > account.balance:
            raise EnvelopeError(f"a stake of {stake} is above the balance of {shown} ({account.balance})")
        return (account.replace(balance=account.balance - stake),
                attrs.evolve(current, stake=stake, coinbase=coinbase, min_bid=min_bid))
    clock = args[0]
    if not isinstance(clock, int) or isinstance(clock, bool) or clock < 0 or clock >> 64:
        raise EnvelopeError("malformed registry record: the clock is not a 64-bit time")
    if op == "unbond":
        if current.unbonding:
            raise EnvelopeError(f"{shown} is unbonding already ({current.unbonding} until logical time "
                                f"{current.release_at}): a second unbond changes nothing")
        if not current.stake:
            raise EnvelopeError(f"{shown} is not a registered worker: nothing to unbond")
        return account, attrs.evolve(current, stake=0, unbonding=current.stake, release_at=clock + UNBOND_DELAY)
    if not current.unbonding:
        raise EnvelopeError(f"{shown} has no unbonded stake to withdraw")
    if clock < current.release_at:
        raise EnvelopeError(f"the stake of {shown} unbonds until logical time {current.release_at} "
                            f"(now {clock}): {current.release_at - clock} to go")
    return account.replace(balance=account.balance + current.unbonding), attrs.evolve(current, unbonding=0, release_at=0)


def below_minimum(bid: int, worker: Worker | None) -> str | None:
    """Why a message bidding ``bid`` is refused by a node executing as ``worker`` (None: it is not)."""
    if worker is not None and worker.stake and bid < worker.min_bid:
        return f"bid {bid} is below this node's minimum bid {worker.min_bid} (its worker's: `missive worker status`)"
    return None


__all__ = ["MIN_STAKE", "OPS", "SELF", "UNBOND_DELAY", "WORKER", "Worker", "apply", "args_of", "below_minimum",
           "digest"]
