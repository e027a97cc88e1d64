"""The Python API of a ledger, in the spirit of titanoboa: deploy, call, query, inspect.

::

    import missive.node as mn

    node = mn.Node.init("./.missive")                  # or mn.Node.open(path)
    alice = node.new_account("alice", balance=10**21)  # keystore key + genesis account (dev faucet)
    bob = node.new_account("bob")
    token = node.deploy("examples/Token.vy", "Tok", "TOK", 10**6, sender=alice)
    sent = token.transfer(bob.address, 10, sender=alice)   # a `call` message, durable, not yet handled
    sent.receipt()                                          # run the node until it is handled
    token.balanceOf(bob.address)                            # a `query`; runs until the reply arrives -> 10

Functions marked ``view``/``pure`` in the ABI are *queries*: calling one sends a
``query`` message that wants a reply, runs the node until the reply is in the
sender's mailbox, and returns the decoded answer (or raises :class:`Reverted`).
Every other function sends a ``call`` message and returns a :class:`Sent` as
soon as the message is durable; ``sent.receipt()`` waits for its handling and
``sent.reply()`` returns the decoded return value (raising on failure).

Everything that runs the node or waits has an ``a``-prefixed coroutine twin for
trio code (``await sent.areceipt()``, ``await token.balanceOf.acall(x)``,
``await node.arun_until_idle()``); the plain versions call ``trio.run`` on them,
so they cannot be used inside a trio run (the error says which twin to await).

The same API on a running cluster: :class:`missive.cluster.remote.RemoteNode`.
Both implement :class:`NodeAPI` in full.  The modules, one job each:

==================  ==========================================================================
``api``             :class:`NodeAPI`, the one client API (a ``typing.Protocol``)
``base``            :class:`BaseNode`: what both implementations share, submitting messages
                    included (``BaseNode.submit``/``send_many``, the one place they are sent)
``signing``         ``sign_external``: the one way an external message is made and signed
``embedded``        :class:`Node`: a node directory, its store and its actors run in this process
``contract``        :class:`Contract`, :class:`ContractFunction`: a deployed contract's functions
``sent``            :class:`Sent`, :class:`Chain`, :class:`Trace`: what a message did
``records``         :class:`Wallet`, :class:`LedgerRecord`
``abi``             ABI text and values, shared with the CLI: types, signatures, arguments as
                    Python values or as text, return data, logs, revert reasons
``values``          addresses and message ids from what callers pass
``errors``          :class:`NodeError` and its kinds
``twins``           the blocking twins of the coroutines
==================  ==========================================================================
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from missive.keys import KeystoreError
    from missive.mailbox.disk import StoreError
    from missive.mailbox.envelope import EnvelopeError
    from missive.node.abi import (
        ERROR_SELECTOR,
        PANIC_CODES,
        PANIC_SELECTOR,
        abi_type,
        decode_log,
        decode_values,
        encode_args,
        parse_signature,
        parse_type,
        revert_reason,
        split_top_level,
        type_str,
    )
    from missive.node.api import NodeAPI
    from missive.node.base import (
        ABI_FILE,
        DEFAULT_DEPLOY_GAS,
        DEFAULT_GAS,
        BaseNode,
    )
    from missive.node.contract import Contract, ContractFunction, OverloadedFunction
    from missive.node.embedded import CLUSTER_NODE_CONFIG, POLL_INTERVAL, Node
    from missive.node.errors import (
        ArgumentError,
        AsyncHazard,
        NodeError,
        NodeTimeout,
        NotHandled,
        Reverted,
        UnknownFunction,
        UnknownMessage,
    )
    from missive.node.records import LedgerRecord, Wallet, special_record
    from missive.node.sent import Chain, Sent, Trace
    from missive.node.values import hexstr, to_address, to_message_id

#: Where each public name lives.  They are imported when first used, so that a light module of
#: the package (``missive.node.values``, ``missive.node.abi``) can be imported alone, without the
#: store and the actor runtime.
_HOMES: dict[str, str] = {
    "KeystoreError": "missive.keys",
    "EnvelopeError": "missive.mailbox.envelope",
    "StoreError": "missive.mailbox.disk",
    "ERROR_SELECTOR": "missive.node.abi",
    "PANIC_CODES": "missive.node.abi",
    "PANIC_SELECTOR": "missive.node.abi",
    "abi_type": "missive.node.abi",
    "decode_log": "missive.node.abi",
    "decode_values": "missive.node.abi",
    "encode_args": "missive.node.abi",
    "parse_signature": "missive.node.abi",
    "parse_type": "missive.node.abi",
    "revert_reason": "missive.node.abi",
    "split_top_level": "missive.node.abi",
    "type_str": "missive.node.abi",
    "NodeAPI": "missive.node.api",
    "ABI_FILE": "missive.node.base",
    "DEFAULT_DEPLOY_GAS": "missive.node.base",
    "DEFAULT_GAS": "missive.node.base",
    "BaseNode": "missive.node.base",
    "Contract": "missive.node.contract",
    "ContractFunction": "missive.node.contract",
    "OverloadedFunction": "missive.node.contract",
    "CLUSTER_NODE_CONFIG": "missive.node.embedded",
    "POLL_INTERVAL": "missive.node.embedded",
    "Node": "missive.node.embedded",
    "ArgumentError": "missive.node.errors",
    "AsyncHazard": "missive.node.errors",
    "NodeError": "missive.node.errors",
    "NodeTimeout": "missive.node.errors",
    "NotHandled": "missive.node.errors",
    "Reverted": "missive.node.errors",
    "UnknownFunction": "missive.node.errors",
    "UnknownMessage": "missive.node.errors",
    "LedgerRecord": "missive.node.records",
    "Wallet": "missive.node.records",
    "special_record": "missive.node.records",
    "Chain": "missive.node.sent",
    "Sent": "missive.node.sent",
    "Trace": "missive.node.sent",
    "hexstr": "missive.node.values",
    "to_address": "missive.node.values",
    "to_message_id": "missive.node.values",
}

__all__ = [
    "ABI_FILE",
    "CLUSTER_NODE_CONFIG",
    "DEFAULT_DEPLOY_GAS",
    "DEFAULT_GAS",
    "ERROR_SELECTOR",
    "PANIC_CODES",
    "PANIC_SELECTOR",
    "POLL_INTERVAL",
    "ArgumentError",
    "AsyncHazard",
    "BaseNode",
    "Chain",
    "Contract",
    "ContractFunction",
    "EnvelopeError",
    "KeystoreError",
    "LedgerRecord",
    "Node",
    "NodeAPI",
    "NodeError",
    "NodeTimeout",
    "NotHandled",
    "OverloadedFunction",
    "Reverted",
    "Sent",
    "StoreError",
    "Trace",
    "UnknownFunction",
    "UnknownMessage",
    "Wallet",
    "abi_type",
    "decode_log",
    "decode_values",
    "encode_args",
    "hexstr",
    "parse_signature",
    "parse_type",
    "revert_reason",
    "special_record",
    "split_top_level",
    "to_address",
    "to_message_id",
    "type_str",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
