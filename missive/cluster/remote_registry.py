"""The worker registry through :class:`~missive.cluster.remote.RemoteNode`: the same calls as a node
alone's (``worker_op``, ``accuse``), sent as messages to the cluster's registry actor
(:mod:`missive.market.registry_actor`), and what it holds, read from its storage.

A node alone applies a registry operation in one transaction and answers with the entry; a
cluster's registry is an actor, so an operation is a message: these calls send it, wait for its
receipt, and answer with the entry read back, or raise the registry's one-line refusal
(:class:`~missive.mailbox.envelope.EnvelopeError`, exit 2 from the CLI; the stake of a refused
``register`` bounces back to the sender, as any failed call's value does).
"""

from __future__ import annotations

from typing import Any

from missive.mailbox.envelope import EnvelopeError
from missive.mailbox.records import Receipt
from missive.market.registry_actor import ACCUSE_GAS, OP_GAS, REGISTRY, payload, read_worker, reader, view
from missive.market.workers import Worker
from missive.node.errors import NodeError


class NoRegistry(NodeError):
    """The cluster has no worker registry (made by a Missive from before it)."""


class RegistryClient:
    """What :class:`RemoteNode` adds for the registry (a mixin: it uses the node's ``send``,
    ``storage``, ``account`` and ``_key``)."""

    def registry(self) -> dict[str, Any]:
        """The registry as it stands: workers (address, :class:`Worker`), slashings, holdings
        (stakes, unbonding, burned), its balance, its unbonding delay in seconds."""
        return view(self.storage(REGISTRY), self._registry_account().balance)  # type: ignore[attr-defined]

    def _registry_account(self) -> Any:
        account = self.account(REGISTRY)  # type: ignore[attr-defined]
        if account is None:
            raise NoRegistry("this cluster has no worker registry (`missive cluster up` makes one with a new "
                             "cluster; a cluster made before it has none)")
        return account

    def _registry_call(self, op: str, args: list[Any], *, value: int = 0, sender: object = None) -> Receipt:
        self._registry_account()  # one clear line if there is none
        sent = self.send(REGISTRY, payload(op, *args), value=value, sender=sender,  # type: ignore[attr-defined]
                         gas=(ACCUSE_GAS if op == "accuse" else OP_GAS) + 50_000, bid=0)
        receipt: Receipt = sent.receipt()
        if not receipt.success:
            raise EnvelopeError(receipt.error or f"the registry refused the {op}")
        return receipt

    def worker_op(self, op: str, *, sender: object = None, stake: int = 0, coinbase: object = None,
                  min_bid: int = 0) -> Worker:
        """``register`` (sends ``stake`` to the registry; fees to ``coinbase``, default the account),
        ``unbond``, ``withdraw`` (after the registry's delay, the stake comes back as a message), by
        ``sender``'s account (None: the default); the worker's entry after it."""
        from missive.node.values import to_address

        if op not in ("register", "unbond", "withdraw"):
            raise EnvelopeError(f"no registry operation {op!r} (one of register, unbond, withdraw)")
        address = self._key(sender).address  # type: ignore[attr-defined]
        if op == "register":
            to = to_address(coinbase, "coinbase") if coinbase is not None else b""
            self._registry_call(op, [to, min_bid], value=stake, sender=sender)
        else:
            self._registry_call(op, [], sender=sender)
        worker = read_worker(reader(self.storage(REGISTRY)), address)  # type: ignore[attr-defined]
        assert worker is not None  # the registry just handled its operation
        return worker

    def accuse(self, evidence: bytes, *, sender: object = None) -> dict[str, Any]:
        """Submit wrong-diff evidence to the registry, as ``sender``'s account; the slashing it made
        (executor, accuser, reward, burned, evidence hash), or the registry's refusal."""
        self._registry_call("accuse", [bytes(evidence)], sender=sender)
        return dict(self.registry()["slashes"][-1])


__all__ = ["NoRegistry", "RegistryClient"]
