"""A cluster node accuses, in the worker registry, the executor whose wrong state diff it caught.

Execution trust (:mod:`missive.replicas.execution_trust`) makes signed evidence when a re-run
contradicts a diff, spreads it to every member and distrusts the executor.  That stops the
liar executing; this module makes it *pay* (issue 23, "Slashing"): the node that found the
evidence sends it to the cluster's registry actor (:mod:`missive.market.registry_actor`) as an
``accuse`` message signed by its own worker's key, the account of its node key, which slashing
names.  The registry re-checks the evidence and forfeits the executor's pledge: a tenth to this
node's worker, the first valid accuser, the rest burned.  A second accuser of the same liar (another
holder that caught it too) is told it has no pledge left; nothing moves.

The message goes in through this node's own client door, as a client's would: admitted by the
node that executes the worker's account, with its nonce, bid 0 (the registry's run costs the
accuser nothing but gas it need not pay for).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from missive.cluster.client_door import ClientDoor
from missive.keys import Key
from missive.mailbox.envelope import EnvelopeError, Kind
from missive.mailbox.records import Account, Receipt
from missive.market.registry_actor import ACCUSE_GAS, REGISTRY, payload
from missive.net import NetError, NodeIdentity
from missive.node.signing import pack_signed, sign_external

#: how long the accusation's receipt is waited for before the answer says it is on its way
WAIT = 20.0


class AccusationFailed(NetError):
    """The accusation could not be sent now (the worker's account or the registry unreachable): retried."""


def accuser(door: ClientDoor, identity: NodeIdentity, chain_id: int) -> Callable[[bytes], Awaitable[str]]:
    """``submit(evidence)``: send it to the registry as this node's worker; one line saying what the
    registry did (or why nothing could be sent: this node has no worker account)."""
    key = Key("worker", identity.seed)

    async def submit(evidence: bytes) -> str:
        raw = await door.account(door.me, key.address)
        if raw is None:
            return f"not sent: this node's worker 0x{key.address.hex()} has no account on the cluster"
        nonce = Account.decode(raw).nonce
        try:
            signed = sign_external(key, Kind.CALL, REGISTRY, payload("accuse", evidence), nonce=nonce, value=0,
                                   gas=ACCUSE_GAS + 50_000, chain_id=chain_id)
        except EnvelopeError as exc:
            return f"not sent: {exc}"
        answer = await door.submit_wait(door.me, {"record": pack_signed(signed), "until": "receipt", "timeout": WAIT})
        if "error" in answer:
            if "nonce" in answer["error"]:
                raise AccusationFailed(f"the registry refused the nonce, to retry: {answer['error']}")
            return f"not sent: {answer['error']}"
        handled = answer.get("handled")
        if handled is None:
            return f"sent as 0x{signed[0].id.hex()}; its receipt did not come within {WAIT:.0f} s"
        receipt = Receipt.decode(handled["receipt"])
        if receipt.success:
            return f"slashed by 0x{signed[0].id.hex()}"
        return f"the registry refused 0x{signed[0].id.hex()}: {receipt.error}"

    return submit


__all__ = ["AccusationFailed", "accuser"]
