"""Talking to a cluster node from a client: one authenticated RPC connection per session.

A client connects with a throwaway Ed25519 identity unless it is given one
(nodes accept any client; what a client may *do* is limited by the account
keys that sign its messages).  The administrative requests (``shutdown``,
``create_account``, ``replay``) are the exception: a node answers them only
for the cluster's *operator* key, which ``missive cluster up`` keeps in the
cluster directory (:data:`OPERATOR_FILE`, mode 0600); the tools that run a
cluster connect with it (:func:`load_operator`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from missive.errors import MissiveError
from missive.net import IdentityError, NodeIdentity, RemoteError, RpcConnection, initiate, open_rpc

CONNECT_TIMEOUT = 5.0
#: The cluster operator's identity, in the cluster directory.
OPERATOR_FILE = "operator.key"
#: The requests a node answers only for the operator's key.
ADMIN_METHODS = frozenset({"shutdown", "create_account", "create_registry", "replay"})


class ClusterError(MissiveError):
    """A node could not be reached or refused the request; the text says which and why."""


def failure_text(host: str, port: int, method: str, exc: Exception) -> str:
    """One line for a request that failed: a node's refusal that already names the method
    (as the door's do: "shutdown needs the cluster operator's key") is shown as it is."""
    if isinstance(exc, RemoteError) and exc.message.startswith(method):
        return f"node {host}:{port}: {exc.message}"
    return f"node {host}:{port}: {method} failed: {exc}"


def parse_node(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or just ``PORT`` on 127.0.0.1)."""
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 < number < 65536:
        raise ClusterError(f"--node must be HOST:PORT, not {text!r}")
    return host or "127.0.0.1", number


def operator_path(root: Path) -> Path:
    return Path(root) / OPERATOR_FILE


def create_operator(root: Path) -> NodeIdentity:
    """The operator identity of the cluster directory ``root``, made if there is none yet.

    Whoever holds it may stop the nodes and mint coin, so it is kept readable by
    its owner alone (mode 0600, set again here in case the file was loosened).
    """
    path = operator_path(root)
    try:
        identity = NodeIdentity.load_or_generate(path)
    except IdentityError as exc:
        raise ClusterError(f"cannot use the cluster operator's key: {exc}") from None
    os.chmod(path, 0o600)
    return identity


def load_operator(root: Path | None) -> NodeIdentity | None:
    """The operator identity kept in directory ``root``, or None if there is none (or no ``root``).

    A file that exists but cannot be read or is not an identity is an error, not None:
    silently connecting without the key would only move the failure somewhere less clear.
    """
    if root is None or not operator_path(root).exists():
        return None
    try:
        return NodeIdentity.load(operator_path(root))
    except IdentityError as exc:
        raise ClusterError(f"cannot use the cluster operator's key: {exc}") from None


@asynccontextmanager
async def connect(host: str, port: int, expected_id: bytes | None = None,
                  timeout: float = CONNECT_TIMEOUT, *,
                  identity: NodeIdentity | None = None) -> AsyncIterator[RpcConnection]:
    """An RPC connection to a node, as ``identity`` (default: a throwaway key; give the
    operator's for administrative requests)."""
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(host, port)
            channel = await initiate(stream, identity or NodeIdentity.generate(), expected_peer=expected_id)
    except (OSError, trio.TooSlowError) as exc:
        raise ClusterError(f"cannot reach node {host}:{port}: {exc or 'timed out'}") from None
    async with open_rpc(channel) as conn:
        yield conn


async def acall(host: str, port: int, method: str, params: Any = None, *, timeout: float = 10.0,
                identity: NodeIdentity | None = None) -> Any:
    """One request to one node (as ``identity``, if given: see :func:`connect`)."""
    try:
        async with connect(host, port, identity=identity) as conn:
            return await conn.call(method, params, timeout=timeout)
    except BaseExceptionGroup as group:  # trio nurseries wrap errors; a lone one is the error
        leaves = list(_leaves(group))
        if len(leaves) == 1 and isinstance(leaves[0], Exception):
            raise leaves[0] from None
        raise


def call(host: str, port: int, method: str, params: Any = None, *, timeout: float = 10.0,
         identity: NodeIdentity | None = None) -> Any:
    """One request to one node, from synchronous code."""
    return trio.run(lambda: acall(host, port, method, params, timeout=timeout, identity=identity))


def _leaves(group: BaseExceptionGroup[Any]) -> Any:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


class ClusterClient:
    """Sign and submit messages to a cluster through any one of its nodes; wait for receipts.

    Synchronous, one connection per request: this is the CLI's and the tests'
    view of a cluster.  The node forwards each request to where it belongs.
    With ``identity`` (the cluster operator's, :func:`load_operator`) it connects
    as that key and may make administrative requests (``create_account``...).
    """

    def __init__(self, host: str, port: int, identity: NodeIdentity | None = None) -> None:
        self.host, self.port = host, port
        self.identity = identity
        self._chain_id: int | None = None  # the cluster's, asked of the node once

    def call(self, method: str, params: Any = None, *, timeout: float = 10.0) -> Any:
        from missive.net import NetError

        try:
            return call(self.host, self.port, method, params, timeout=timeout, identity=self.identity)
        except NetError as exc:
            raise ClusterError(failure_text(self.host, self.port, method, exc)) from None

    def account(self, address: bytes) -> Any:
        from missive.mailbox.records import Account

        raw = self.call("account", address)
        return Account.decode(raw) if raw is not None else None

    def create_account(self, key: Any, balance: int) -> None:
        self.call("create_account", {"address": key.address, "public_key": key.public_key,
                                     "balance": balance.to_bytes(32, "big")})

    def _signed(self, key: Any, kind: Any, to: bytes | None, payload: bytes, value: int, gas: int,
                wants_reply: bool, bid: int = 0) -> tuple[Any, bytes]:
        """(envelope, signed record) of one message from ``key``, with the nonce its node has."""
        from missive.node.signing import pack_signed, sign_external

        account = self.account(key.address)
        if account is None:
            raise ClusterError(f"unknown account 0x{key.address.hex()} on this cluster")
        if self._chain_id is None:
            self._chain_id = int(self.call("status")["chain_id"])
        signed = sign_external(key, kind, to, payload, nonce=account.nonce, value=value, gas=gas, bid=bid,
                               chain_id=self._chain_id, wants_reply=wants_reply)
        return signed[0], pack_signed(signed)

    def submit(self, key: Any, kind: Any, to: bytes | None, payload: bytes = b"", *, value: int = 0,
               gas: int = 1_000_000, wants_reply: bool = False, bid: int = 0) -> Any:
        """Sign one message with ``key`` (nonce from the sender's node) and submit it; its envelope."""
        from missive.mailbox.envelope import EnvelopeError

        envelope, record = self._signed(key, kind, to, payload, value, gas, wants_reply, bid)
        (answer,) = self.call("submit", [record])
        if "error" in answer:
            raise EnvelopeError(answer["error"])
        return envelope

    def submit_wait(self, key: Any, kind: Any, to: bytes | None, payload: bytes = b"", *, value: int = 0,
                    gas: int = 1_000_000, wants_reply: bool = False, until: str = "receipt",
                    timeout: float = 30.0, bid: int = 0) -> tuple[Any, Any]:
        """Sign, submit and wait in one request: (envelope, the node's ``handled`` answer: the
        receipt and sent messages, or with ``until="reply"`` the reply and its receipt).  Raises
        ClusterError if that did not come within ``timeout`` s (at most 30)."""
        from missive.mailbox.envelope import EnvelopeError

        envelope, record = self._signed(key, kind, to, payload, value, gas, wants_reply, bid)
        answer = self.call("submit_wait", {"record": record, "until": until, "timeout": timeout},
                           timeout=timeout + 10.0)
        if "error" in answer:
            raise EnvelopeError(answer["error"])
        if answer["handled"] is None:
            raise ClusterError(f"message 0x{envelope.id.hex()} was accepted but its {until} did not come "
                               f"within {timeout} s")
        return envelope, answer["handled"]

    def receipt(self, envelope: Any, timeout: float = 30.0) -> tuple[Any, list[Any]]:
        """Wait until ``envelope`` is handled: (its receipt, the envelopes it sent)."""
        import time

        from missive.cluster.waiters import MAX_WAIT
        from missive.mailbox.envelope import Envelope
        from missive.mailbox.records import Receipt

        deadline = time.monotonic() + timeout
        while True:  # the node answers when the receipt is committed, or after `left` seconds with None
            left = max(0.0, min(deadline - time.monotonic(), MAX_WAIT))
            found = self.call("wait", {"id": envelope.id, "recipient": envelope.recipient, "timeout": left},
                              timeout=left + 10.0)
            if found is not None:
                return Receipt.decode(found["receipt"]), [Envelope.decode(raw) for raw in found["sent"]]
            if time.monotonic() >= deadline:
                raise ClusterError(f"message 0x{envelope.id.hex()} was not handled within {timeout} s")
