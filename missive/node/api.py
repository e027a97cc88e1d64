"""The node API: what a client can do with a ledger, on one node or on a cluster.

:class:`NodeAPI` is the one client API.  Two classes implement it in full:
:class:`missive.node.Node` (a node directory: its store, its keystore, the actors
run in this process) and :class:`missive.cluster.remote.RemoteNode` (a running
cluster, reached through one of its nodes).  Both derive their shared behaviour
from :class:`missive.node.base.BaseNode`; :class:`~missive.node.records.Wallet`,
:class:`~missive.node.sent.Sent`, :class:`~missive.node.contract.Contract` and
the CLI are written against this protocol, so they work the same on either.

Everything that runs the node or waits has an ``a``-prefixed coroutine twin for
trio code; the plain versions call ``trio.run`` on them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from missive.mailbox.envelope import Envelope, Kind
from missive.mailbox.records import Account, Receipt

if TYPE_CHECKING:
    from missive.keys import Keystore
    from missive.node.contract import Contract, ContractFunction
    from missive.node.records import LedgerRecord, Wallet
    from missive.node.sent import Chain, Sent, Trace

#: ``address -> (contract name, ABI)``: the ABIs a client knows (``deploy`` registers them)
Abis = dict[bytes, tuple[str, list[dict[str, Any]]]]
#: what an observer is called with: each handled message with its receipt
Observer = Callable[[list[tuple[Envelope, Receipt]]], None]


class NodeAPI(Protocol):
    """A ledger as a client sees it: accounts, contracts, messages sent and waited for, the ledger read."""

    #: the client's directory: its keystore and ABI registry (a node's directory, or a cluster's)
    path: Path
    #: what errors call the place the messages are ("no message 0x.. on this node/cluster")
    scope: str

    # -- the client itself ------------------------------------------------------------------

    @property
    def chain_id(self) -> int:
        """What CHAINID gives the ledger's contracts; external messages are signed for it."""

    @property
    def keystore(self) -> Keystore:
        """The keys that sign what this client sends."""

    def close(self) -> None: ...

    def __enter__(self) -> NodeAPI: ...

    def __exit__(self, *exc: object) -> None: ...

    # -- accounts ----------------------------------------------------------------------------

    def new_account(self, name: str = "", balance: int = 0) -> Wallet:
        """A new keystore key and its genesis account holding ``balance`` (the development faucet)."""

    def wallet(self, name_or_address: object) -> Wallet:
        """The keystore account with this name or address."""

    def wallets(self) -> list[Wallet]: ...

    @property
    def default(self) -> Wallet:
        """The sender when none is given."""

    @default.setter
    def default(self, value: object) -> None: ...

    def resolve_address(self, text: str, what: str = "address") -> bytes:
        """``0x`` + 40 hex digits, or the name of a keystore account."""

    def account(self, address: object) -> Account | None: ...

    def accounts(self) -> dict[bytes, Account]: ...

    def balance(self, address: object) -> int: ...

    # -- contracts ----------------------------------------------------------------------------

    def abis(self) -> Abis: ...

    def register_abi(self, address: object, abi: list[dict[str, Any]], name: str = "contract") -> None: ...

    def at(self, address: object, abi: list[dict[str, Any]] | None = None, name: str | None = None) -> Contract: ...

    def deploy_message(self, source: str | os.PathLike[str] | bytes, *args: Any, sender: object = None,
                       value: int = 0, gas: int | None = None, abi: list[dict[str, Any]] | None = None,
                       name: str | None = None, accept_async: Sequence[str] | bool = (),
                       bid: int | None = None) -> tuple[Sent, Contract]:
        """Compile, check and send a deploy message without waiting: (its Sent, the future contract)."""

    def deploy(self, source: str | os.PathLike[str] | bytes, *args: Any, sender: object = None, value: int = 0,
               gas: int | None = None, abi: list[dict[str, Any]] | None = None, name: str | None = None,
               timeout: float | None = None, accept_async: Sequence[str] | bool = (),
               bid: int | None = None) -> Contract: ...

    async def adeploy(self, source: str | os.PathLike[str] | bytes, *args: Any, sender: object = None,
                      value: int = 0, gas: int | None = None, abi: list[dict[str, Any]] | None = None,
                      name: str | None = None, timeout: float | None = None,
                      accept_async: Sequence[str] | bool = (), bid: int | None = None) -> Contract: ...

    # -- sending -------------------------------------------------------------------------------

    #: the fee per gas of messages sent without ``bid=`` (docs/market.md)
    default_bid: int

    def submit(self, kind: Kind, to: bytes | None, payload: bytes, *, sender: object, value: int,
               gas: int | None, wants_reply: bool, function: ContractFunction | None = None,
               bid: int | None = None) -> Sent:
        """Sign one external message and submit it; return once it is durable."""

    def send_many(self, calls: Sequence[tuple[object, object, bytes]], *, value: int = 0,
                  gas: int | None = None, bid: int | None = None) -> list[Sent]:
        """Sign many ``call`` messages, each ``(sender, to, data)``, and submit them together."""

    def send(self, to: object, data: bytes = b"", *, value: int = 0, sender: object = None, gas: int | None = None,
             wants_reply: bool = False, bid: int | None = None) -> Sent: ...

    async def asend(self, to: object, data: bytes = b"", *, value: int = 0, sender: object = None,
                    gas: int | None = None, wants_reply: bool = False, bid: int | None = None) -> Sent: ...

    def query(self, to: object, data: bytes, *, sender: object = None, gas: int | None = None,
              bid: int | None = None) -> Sent: ...

    async def aquery(self, to: object, data: bytes, *, sender: object = None, gas: int | None = None,
                     bid: int | None = None) -> Sent: ...

    def observe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer`` with handled messages and their receipts; returns what stops it."""

    # -- running and waiting ----------------------------------------------------------------------

    def is_idle(self) -> bool:
        """Nothing waiting: no pending message and no scheduled one."""

    def run_until_idle(self, timeout: float | None = None) -> int: ...

    async def arun_until_idle(self, timeout: float | None = None) -> int:
        """Until every waiting message (and what they send) is handled; how many this process handled."""

    def follow(self, message_id: bytes | str, timeout: float | None = None) -> Chain: ...

    async def afollow(self, message_id: bytes | str, timeout: float | None = None) -> Chain:
        """Until every message ``message_id`` caused is handled, or ``timeout``: the chain."""

    def receipt_of(self, envelope: Envelope) -> Receipt | None:
        """The receipt of a message this client sent, if it is handled (without waiting)."""

    async def await_receipt(self, envelope: Envelope, what: str, timeout: float | None) -> Receipt:
        """The receipt of ``envelope`` once it is handled (``what`` names it in a timeout)."""

    async def await_reply(self, request: Envelope, what: str, timeout: float | None) -> tuple[Envelope, Receipt]:
        """The reply to ``request`` once it is in the requester's mailbox, and the request's receipt."""

    # -- inspecting -----------------------------------------------------------------------------

    def explain(self, data: bytes, address: object = None) -> str | None:
        """Revert data in words, with the ABI of ``address`` (or any registered one)."""

    def trace(self, message_id: bytes | str) -> Trace: ...

    def resolve_id(self, text: str) -> bytes:
        """A full message id from hex text: the whole id, or a unique prefix of at least 4 bytes."""

    def message(self, message_id: bytes | str) -> Envelope | None: ...

    def receipt(self, message_id: bytes | str) -> Receipt | None: ...

    def storage(self, address: object) -> dict[int, int]: ...

    def mailbox(self, address: object) -> list[tuple[Envelope, Receipt | None]]: ...

    def pending(self, address: object = None) -> list[Envelope]: ...

    def inbox(self, address: object) -> list[Envelope]: ...

    def scheduled(self) -> list[tuple[int, Envelope]]: ...

    def scheduled_for(self, address: object) -> list[tuple[int, Envelope]]: ...

    def ledger_length(self) -> int: ...

    def iter_ledger(self, start: int = 0) -> Iterator[LedgerRecord]: ...

    def ledger(self, start: int = 0, limit: int | None = None, *, last: int | None = None) -> list[LedgerRecord]: ...

    def replay_check(self, actor: object = None) -> tuple[int, str | None]:
        """Re-execute the ledger: (receipts checked, the first divergence described, or None)."""
