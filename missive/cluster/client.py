"""Talking to a cluster node from a client: one authenticated RPC connection per session.

A client has its own throwaway Ed25519 identity (nodes accept any client; what
a client may *do* is limited by the account keys that sign its messages).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from missive.net import NodeIdentity, RpcConnection, initiate, open_rpc

CONNECT_TIMEOUT = 5.0


class ClusterError(Exception):
    """A node could not be reached or refused the request; the text says which and why."""


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


@asynccontextmanager
async def connect(host: str, port: int, expected_id: bytes | None = None,
                  timeout: float = CONNECT_TIMEOUT) -> AsyncIterator[RpcConnection]:
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(host, port)
            channel = await initiate(stream, NodeIdentity.generate(), expected_peer=expected_id)
    except (OSError, trio.TooSlowError) as exc:
        raise ClusterError(f"cannot reach node {host}:{port}: {exc or 'timed out'}") from None
    async with open_rpc(channel) as conn:
        yield conn


async def acall(host: str, port: int, method: str, params: Any = None, *, timeout: float = 10.0) -> Any:
    """One request to one node."""
    try:
        async with connect(host, port) as conn:
            return await conn.call(method, params, timeout=timeout)
    except BaseExceptionGroup as group:  # trio nurseries wrap errors; a lone one is the error
        leaves = list(_leaves(group))
        if len(leaves) == 1 and isinstance(leaves[0], Exception):
            raise leaves[0] from None
        raise


def call(host: str, port: int, method: str, params: Any = None, *, timeout: float = 10.0) -> Any:
    """One request to one node, from synchronous code."""
    return trio.run(lambda: acall(host, port, method, params, timeout=timeout))


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
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def call(self, method: str, params: Any = None, *, timeout: float = 10.0) -> Any:
        from missive.net import NetError

        try:
            return call(self.host, self.port, method, params, timeout=timeout)
        except NetError as exc:
            raise ClusterError(f"node {self.host}:{self.port}: {method} failed: {exc}") from None

    def account(self, address: bytes) -> Any:
        from missive.mailbox.records import Account

        raw = self.call("account", address)
        return Account.decode(raw) if raw is not None else None

    def create_account(self, key: Any, balance: int) -> None:
        self.call("create_account", {"address": key.address, "public_key": key.public_key,
                                     "balance": balance.to_bytes(32, "big")})

    def _signed(self, key: Any, kind: Any, to: bytes | None, payload: bytes, value: int, gas: int,
                wants_reply: bool) -> tuple[Any, bytes]:
        """(envelope, signed record) of one message from ``key``, with the nonce its node has."""
        import msgpack

        from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
        from missive.vm.messages import create_address

        account = self.account(key.address)
        if account is None:
            raise ClusterError(f"unknown account 0x{key.address.hex()} on this cluster")
        recipient = create_address(key.address, account.nonce) if kind is Kind.DEPLOY else to
        if recipient is None:
            raise EnvelopeError("recipient must be a 20-byte address")  # as envelope.validate() says
        envelope = Envelope(kind, key.address, recipient, value=value, payload=payload, gas=gas,
                            nonce=account.nonce, wants_reply=wants_reply)
        envelope.validate()
        signed = key.sign(envelope)
        return envelope, msgpack.packb([signed[0].canonical(), signed[1], signed[2]])

    def submit(self, key: Any, kind: Any, to: bytes | None, payload: bytes = b"", *, value: int = 0,
               gas: int = 1_000_000, wants_reply: bool = False) -> Any:
        """Sign one message with ``key`` (nonce from the sender's node) and submit it; its envelope."""
        from missive.mailbox.envelope import EnvelopeError

        envelope, record = self._signed(key, kind, to, payload, value, gas, wants_reply)
        (answer,) = self.call("submit", [record])
        if "error" in answer:
            raise EnvelopeError(answer["error"])
        return envelope

    def submit_wait(self, key: Any, kind: Any, to: bytes | None, payload: bytes = b"", *, value: int = 0,
                    gas: int = 1_000_000, wants_reply: bool = False, until: str = "receipt",
                    timeout: float = 30.0) -> tuple[Any, Any]:
        """Sign, submit and wait in one request: (envelope, the node's ``handled`` answer: the
        receipt and sent messages, or with ``until="reply"`` the reply and its receipt).  Raises
        ClusterError if that did not come within ``timeout`` s (at most 30)."""
        from missive.mailbox.envelope import EnvelopeError

        envelope, record = self._signed(key, kind, to, payload, value, gas, wants_reply)
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
