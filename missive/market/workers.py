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

from collections.abc import Callable
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
#: the stake of the worker ``missive init`` registers for the node itself: the account of its ledger
#: key (``ledger.key``), created at genesis holding just that stake, so no other balance moves
OWN_STAKE = 1_000_000
OPS = ("register", "unbond", "withdraw")
#: the share of a slashed pledge (percent) paid to the first valid accuser; the rest is burned
ACCUSER_SHARE = 10
#: meta key prefix of evidence that slashed a worker: b"slash:" + keccak256(evidence) -> :meth:`Slash.encode`
SLASH = b"slash:"
#: meta key of the coin burned by slashing, in total (a holding of its own: conservation counts it)
BURNED = b"burned"
#: re-checks wrong-diff evidence for the ledger ``chain_id``: (the executor's node id, the differences a
#: re-run finds: none, the evidence proves nothing); raises (a MissiveError or ValueError) for evidence that
#: is malformed or cannot be checked (``missive.replicas.slashing.check_evidence``)
EvidenceCheck = Callable[[bytes, int], tuple[bytes, list[str]]]


@attrs.frozen
class Worker:
    stake: int = 0
    coinbase: bytes = b""
    min_bid: int = 0
    unbonding: int = 0
    release_at: int = 0
    #: coin forfeited by slashing, in total (its pledges that evidence took)
    slashed: int = 0

    def encode(self) -> bytes:
        return cast(bytes, msgpack.packb([int_bytes(self.stake), self.coinbase, int_bytes(self.min_bid),
                                          int_bytes(self.unbonding), self.release_at, int_bytes(self.slashed)],
                                         use_bin_type=True))

    @classmethod
    def decode(cls, raw: bytes) -> Worker:
        fields = msgpack.unpackb(raw)
        stake, coinbase, min_bid, unbonding, release_at = fields[:5]
        slashed = bytes_int(fields[5], "slashed") if len(fields) > 5 else 0  # (an entry from before slashing: 5)
        return cls(bytes_int(stake, "stake"), bytes(coinbase), bytes_int(min_bid, "min bid"),
                   bytes_int(unbonding, "unbonding"), release_at, slashed)


@attrs.frozen
class Slash:
    """What one valid accusation did: the executor's worker loses its whole pledge (stake and
    unbonding stake); :data:`ACCUSER_SHARE` percent of it goes to the accuser, the rest is burned."""

    executor: bytes  # the slashed worker's address
    worker: Worker  # its registry entry after: no stake, nothing unbonding
    account: Account  # the accuser's account after, the reward credited
    reward: int
    burned: int
    finding: str  # the first difference the re-run found

    def encode(self, accuser: bytes) -> bytes:
        return cast(bytes, msgpack.packb([self.executor, accuser, int_bytes(self.reward), int_bytes(self.burned),
                                          self.finding], use_bin_type=True))


def decode_slash(raw: bytes) -> tuple[bytes, bytes, int, int, str]:
    """(executor, accuser, reward, burned, finding) of a slash kept in meta (:data:`SLASH`)."""
    executor, accuser, reward, burned, finding = msgpack.unpackb(raw)
    return bytes(executor), bytes(accuser), bytes_int(reward, "reward"), bytes_int(burned, "burned"), str(finding)


def accuse(address: bytes, evidence: object, public_key: bytes, signature: bytes, chain_id: int,
           account: Account | None, check: EvidenceCheck | None, worker_of: Callable[[bytes], Worker | None],
           used: bool) -> Slash:
    """Check an accusation (``address``'s account submits wrong-diff ``evidence``, signed over
    :func:`digest` of ``["accuse", evidence]``) against the registry as it stands; what it does, or
    EnvelopeError (one line, nothing changed).  ``used``: this evidence slashed a worker already."""
    shown = f"0x{address.hex()}"
    if not isinstance(evidence, bytes) or not evidence:
        raise EnvelopeError("malformed accusation: the evidence is not bytes")
    if account is None or account.is_contract:
        raise EnvelopeError(f"{shown} is not an external account: only an account can accuse")
    if (not isinstance(public_key, bytes) or keccak256(public_key)[12:] != address
            or not verify(public_key, digest(chain_id, "accuse", address, [evidence]), signature)):
        raise EnvelopeError(f"the accusation by {shown} is not signed by its account")
    if used:
        raise EnvelopeError("duplicate evidence: it has slashed its executor already; it changes nothing")
    executor, worker, reward, burned, finding = judge(evidence, chain_id, check, worker_of)
    return Slash(executor, worker, account.credited(reward), reward, burned, finding)


def judge(evidence: bytes, chain_id: int, check: EvidenceCheck | None,
          worker_of: Callable[[bytes], Worker | None]) -> tuple[bytes, Worker, int, int, str]:
    """What wrong-diff ``evidence`` forfeits, by either registry (a node alone's records, a cluster's
    actor): (the executor's worker address, its entry after, the accuser's reward, the coin burned,
    the first difference found); EnvelopeError (one line) if it proves nothing or finds nothing to take."""
    if check is None:
        raise EnvelopeError("this ledger cannot re-check wrong-diff evidence here (no evidence checker)")
    try:
        executor_id, differences = check(evidence, chain_id)
    except Exception as err:  # noqa: BLE001 - untrusted bytes: whatever the check refuses, it proves nothing
        raise EnvelopeError(f"the evidence proves nothing: {err}") from None
    if not differences:
        raise EnvelopeError("the evidence proves nothing: re-running the diff from the state it started from "
                            "gives what the executor signed")
    executor = keccak256(executor_id)[12:]
    worker = worker_of(executor)
    if worker is None:
        raise EnvelopeError(f"the executor 0x{executor.hex()} is not a worker in this registry: nothing to forfeit")
    pledge = worker.stake + worker.unbonding
    if not pledge:
        raise EnvelopeError(f"the worker 0x{executor.hex()} has no pledge left to forfeit (slashed or withdrawn "
                            "already): the evidence changes nothing")
    reward = pledge * ACCUSER_SHARE // 100
    after = attrs.evolve(worker, stake=0, unbonding=0, release_at=0, slashed=worker.slashed + pledge)
    return executor, after, reward, pledge - reward, differences[0]


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


def idle_reason(address: bytes, worker: Worker | None) -> str | None:
    """Why a node alone whose own worker is ``address`` executes nothing (None: it executes: the
    worker has a stake).  A node executes only as a registered worker."""
    if worker is not None and worker.stake:
        return None
    shown = f"0x{address.hex()}"
    if worker is not None and worker.unbonding:
        state = f"is unbonding its stake (until logical time {worker.release_at})"
    elif worker is not None and worker.slashed:
        state = f"was slashed (it forfeited {worker.slashed} on evidence of a wrong state diff)"
    else:
        state = "has no stake (deregistered)"
    return (f"this node executes nothing: its worker {shown} {state}; register a worker with a stake "
            "(`missive worker register --stake AMOUNT`)")


def below_minimum(bid: int, worker: Worker | None) -> str | None:
    """Why a message bidding ``bid`` is refused by a node executing as ``worker`` (None: it is not)."""
    if worker is not None and worker.stake and bid < worker.min_bid:
        return f"bid {bid} is below this node's minimum bid {worker.min_bid} (its worker's: `missive worker status`)"
    return None


__all__ = ["ACCUSER_SHARE", "BURNED", "MIN_STAKE", "OPS", "OWN_STAKE", "SELF", "SLASH", "UNBOND_DELAY", "WORKER",
           "EvidenceCheck", "Slash", "Worker", "accuse", "apply", "args_of", "below_minimum", "decode_slash", "digest",
           "idle_reason", "judge"]
