"""What every implementation of the node API shares: :class:`BaseNode`.

The shared behaviour is written once here, on a few primitives each
implementation provides (:class:`missive.node.Node` over its store and
runtime, :class:`missive.cluster.remote.RemoteNode` over RPC): accounts and
wallets, ABIs, deploying, and **signing and submitting** messages.  That last one
is :meth:`BaseNode.submit` (one message) and :meth:`BaseNode.send_many` (many,
together): they alone build and sign external envelopes, taking each sender's
next nonce, the ledger's chain id and clock from :meth:`~BaseNode._nonce`,
:attr:`~BaseNode.chain_id` and :meth:`~BaseNode._clock`, and hand the signed
messages to :meth:`~BaseNode._admit` (a store's group commit, or a cluster
node's ``submit`` request).
"""

from __future__ import annotations

import abc
import fcntl
import functools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, cast

import msgpack
import trio

from missive.keys import Key, Keystore
from missive.mailbox.envelope import MAX_GAS, Envelope, EnvelopeError, Kind
from missive.mailbox.records import Account, Receipt
from missive.market.fees import default_bid
from missive.node.abi import abi_type, encode_args, revert_reason
from missive.node.api import Abis, Observer
from missive.node.contract import Contract, ContractFunction
from missive.node.errors import ArgumentError, AsyncHazard, NodeError, Reverted, UnknownMessage
from missive.node.records import LedgerRecord, Wallet
from missive.node.sent import Chain, Sent, Trace
from missive.node.signing import Signed, sign_external
from missive.node.twins import run_sync
from missive.node.values import hexstr, looks_like_address, to_address, to_message_id

#: Gas a message carries unless told otherwise.
DEFAULT_GAS: Final = 1_000_000
DEFAULT_DEPLOY_GAS: Final = 10_000_000
#: The ABI registry in a client's directory: address -> (contract name, ABI).
ABI_FILE: Final = "abis.msgpack"
#: How often :meth:`BaseNode.submit` takes a fresh nonce when another process sent from the same account.
NONCE_ATTEMPTS: Final = 8


def check_new_account(name: str, balance: int) -> None:
    """What a new account's name and balance must be, checked before anything is created."""
    if not isinstance(balance, int) or isinstance(balance, bool) or balance < 0 or balance >> 256:
        raise ArgumentError(f"balance must be an integer in [0, 2**256), got {balance!r}")
    if looks_like_address(name):
        raise ArgumentError(f"account name {name!r} looks like an address; pick another")


class BaseNode(abc.ABC):
    """The node API's shared behaviour; subclasses provide the abstract primitives (every one of them)."""

    #: what "no message ... on this X" names in errors
    scope: str = "node"
    #: whether :meth:`send_many`'s messages are admitted all or none (one node: one transaction)
    atomic_batches: bool = True

    def __init__(self, path: Path, abi_dir: Path | None) -> None:
        self.path = path
        #: where the ABI registry is (None: this client keeps none)
        self._abi_dir = abi_dir
        self._default: Wallet | None = None
        self._submit_lock = threading.Lock()
        #: the fee per gas of messages sent without ``bid=`` (docs/market.md); $MISSIVE_BID, else 0
        self.default_bid = default_bid()

    # -- what each implementation provides ------------------------------------------------------

    @property
    @abc.abstractmethod
    def chain_id(self) -> int:
        """The ledger's id: what CHAINID gives its contracts, and what its external messages are signed for."""

    @property
    @abc.abstractmethod
    def keystore(self) -> Keystore:
        """The keys that sign what this client sends."""

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def _create_account(self, name: str, balance: int) -> Key:
        """A new keystore key, and its genesis account holding ``balance`` (arguments already checked)."""

    @abc.abstractmethod
    def wallets(self) -> list[Wallet]: ...

    @abc.abstractmethod
    def account(self, address: object) -> Account | None: ...

    @abc.abstractmethod
    def accounts(self) -> dict[bytes, Account]: ...

    @abc.abstractmethod
    def _nonce(self, address: bytes) -> int:
        """The nonce the next external message from ``address`` carries."""

    @abc.abstractmethod
    def _clock(self) -> int:
        """The logical time external messages are stamped with."""

    @abc.abstractmethod
    def _admit(self, signed: list[Signed], *, all_or_nothing: bool) -> list[bool | EnvelopeError]:
        """Submit signed messages; per message, whether it was a duplicate (durable either way), or why it
        was refused.  ``all_or_nothing``: admit none if one is refused, where the ledger can."""

    @abc.abstractmethod
    def observe(self, observer: Observer) -> Callable[[], None]: ...

    @abc.abstractmethod
    def is_idle(self) -> bool: ...

    @abc.abstractmethod
    async def arun_until_idle(self, timeout: float | None = None) -> int: ...

    @abc.abstractmethod
    async def afollow(self, message_id: bytes | str, timeout: float | None = None) -> Chain: ...

    @abc.abstractmethod
    def receipt_of(self, envelope: Envelope) -> Receipt | None: ...

    @abc.abstractmethod
    async def await_receipt(self, envelope: Envelope, what: str, timeout: float | None) -> Receipt: ...

    @abc.abstractmethod
    async def await_reply(self, request: Envelope, what: str, timeout: float | None) -> tuple[Envelope, Receipt]: ...

    @abc.abstractmethod
    def message(self, message_id: bytes | str) -> Envelope | None: ...

    @abc.abstractmethod
    def receipt(self, message_id: bytes | str) -> Receipt | None: ...

    @abc.abstractmethod
    def _ids_with_prefix(self, prefix: bytes) -> list[bytes]: ...

    @abc.abstractmethod
    def storage(self, address: object) -> dict[int, int]: ...

    @abc.abstractmethod
    def mailbox(self, address: object) -> list[tuple[Envelope, Receipt | None]]: ...

    @abc.abstractmethod
    def pending(self, address: object = None) -> list[Envelope]: ...

    @abc.abstractmethod
    def scheduled(self) -> list[tuple[int, Envelope]]: ...

    @abc.abstractmethod
    def ledger_length(self) -> int: ...

    @abc.abstractmethod
    def iter_ledger(self, start: int = 0) -> Iterator[LedgerRecord]: ...

    @abc.abstractmethod
    def ledger(self, start: int = 0, limit: int | None = None, *, last: int | None = None) -> list[LedgerRecord]: ...

    @abc.abstractmethod
    def replay_check(self, actor: object = None) -> tuple[int, str | None]: ...

    @abc.abstractmethod
    def ensure_writable(self, what: str) -> None:
        """Refuse writes (``what``: "send messages", "create accounts"...) this client may not make."""

    @abc.abstractmethod
    def _check_recipient(self, kind: Kind, to: bytes | None, payload: bytes) -> None:
        """Refuse a message before it is signed, where the ledger would not say why itself."""

    # -- the client itself ------------------------------------------------------------------------

    def __enter__(self) -> BaseNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- accounts ----------------------------------------------------------------------------

    def new_account(self, name: str = "", balance: int = 0) -> Wallet:
        """A new keystore key and its genesis account holding ``balance`` (the dev faucet)."""
        check_new_account(name, balance)
        return Wallet(self, self._create_account(name, balance))

    def wallet(self, name_or_address: object) -> Wallet:
        """The keystore account with this name or address (KeystoreError if unknown)."""
        if isinstance(name_or_address, Wallet):
            return name_or_address
        if isinstance(name_or_address, str):
            return Wallet(self, self.keystore.get(name_or_address))
        return Wallet(self, self.keystore.get(to_address(name_or_address, "sender").hex()))

    @property
    def default(self) -> Wallet:
        """The sender when none is given: the key named "default", else the first account created."""
        if self._default is None:
            key = self.keystore.find("default")
            if key is not None and key.name == "default":
                self._default = Wallet(self, key)
            else:
                for wallet in self.wallets():
                    if self.account(wallet.address) is not None:
                        self._default = wallet
                        break
            if self._default is None:
                raise NodeError("no accounts on this node yet: create one with node.new_account(name, balance=...)")
        return self._default

    @default.setter
    def default(self, value: object) -> None:
        self._default = self.wallet(value)

    def resolve_address(self, text: str, what: str = "address") -> bytes:
        """``0x`` + 40 hex digits, or the name of a keystore account."""
        if looks_like_address(text):
            return to_address(text.strip(), what)
        key = self.keystore.find(text.strip())
        if key is None:
            raise ArgumentError(f"{what} {text!r}: not an address (0x + 40 hex digits) nor an account name "
                                "(see `missive account list`)")
        return key.address

    def balance(self, address: object) -> int:
        account = self.account(address)
        return account.balance if account is not None else 0

    # -- ABIs ----------------------------------------------------------------------------------

    def abis(self) -> Abis:
        """Registered ABIs: address -> (contract name, ABI), from ``<dir>/abis.msgpack``."""
        if self._abi_dir is None:
            return {}
        path = self._abi_dir / ABI_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            data = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        except Exception as exc:
            raise NodeError(f"{path}: corrupt ABI registry ({exc})") from None
        return {bytes(k): (str(v[0]), list(v[1])) for k, v in data.items()}

    def register_abi(self, address: object, abi: list[dict[str, Any]], name: str = "contract") -> None:
        """Remember ``address``'s ABI so ``at(address)`` and the CLI can use it."""
        key = to_address(address)
        if self._abi_dir is None:
            return
        with open(self._abi_dir / (ABI_FILE + ".lock"), "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            table = {k: [n, a] for k, (n, a) in self.abis().items()}
            table[key] = [name, abi]
            tmp = self._abi_dir / (ABI_FILE + f".{os.getpid()}.tmp")
            tmp.write_bytes(cast(bytes, msgpack.packb(table, use_bin_type=True)))
            os.replace(tmp, self._abi_dir / ABI_FILE)

    def at(self, address: object, abi: list[dict[str, Any]] | None = None, name: str | None = None) -> Contract:
        """A handle on a deployed contract; the ABI defaults to the one registered at deploy."""
        target = to_address(address)
        account = self.account(target)
        if account is None or not account.is_contract:
            raise NodeError(f"no contract at {hexstr(target)}")
        if abi is None:
            registered = self.abis().get(target)
            if registered is None:
                raise NodeError(f"no ABI known for {hexstr(target)}: pass abi=...")
            name, abi = name or registered[0], registered[1]
        return Contract(self, target, abi, name or "contract")

    # -- signing and submitting (missive.node.signing makes each message) ---------------------------

    def _key(self, sender: object) -> Key:
        return (self.default if sender is None else self.wallet(sender)).key

    def _check_message(self, kind: Kind, value: int, gas: int | None) -> int:
        """Validate what the caller chose for a message; return its gas."""
        if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value >> 256:
            raise ArgumentError(f"value must be an integer in [0, 2**256), got {value!r}")
        gas = (DEFAULT_DEPLOY_GAS if kind is Kind.DEPLOY else DEFAULT_GAS) if gas is None else gas
        if not isinstance(gas, int) or isinstance(gas, bool) or not 0 < gas <= MAX_GAS:
            raise ArgumentError(f"gas must be an integer in [1, {MAX_GAS}], got {gas!r}")
        return gas

    def _check_bid(self, bid: int | None) -> int:
        """The fee per gas a message offers: ``bid``, or the node's default."""
        bid = self.default_bid if bid is None else bid
        if not isinstance(bid, int) or isinstance(bid, bool) or bid < 0 or bid >> 256:
            raise ArgumentError(f"bid (fee per gas) must be an integer in [0, 2**256), got {bid!r}")
        return bid

    def submit(self, kind: Kind, to: bytes | None, payload: bytes, *, sender: object, value: int,
               gas: int | None, wants_reply: bool, function: ContractFunction | None = None,
               bid: int | None = None) -> Sent:
        """Sign and submit one external message (``to`` None for a deploy: the address it creates);
        return once it is durable."""
        key = self._key(sender)
        self.ensure_writable("send messages")
        gas = self._check_message(kind, value, gas)
        fee = self._check_bid(bid)
        self._check_recipient(kind, to, payload)
        with self._submit_lock:
            for attempt in range(NONCE_ATTEMPTS):
                signed = sign_external(key, kind, to, payload, nonce=self._nonce(key.address), value=value, gas=gas,
                                       bid=fee, chain_id=self.chain_id, wants_reply=wants_reply, time=self._clock())
                (result,) = self._admit([signed], all_or_nothing=False)
                if isinstance(result, EnvelopeError):
                    if str(result).startswith("nonce ") and attempt < NONCE_ATTEMPTS - 1:
                        continue  # another process sent from this account meanwhile: take the next nonce
                    raise result
                return Sent(self, signed[0], duplicate=result, function=function)
        raise AssertionError("unreachable")  # pragma: no cover

    def send_many(self, calls: Sequence[tuple[object, object, bytes]], *, value: int = 0,
                  gas: int | None = None, bid: int | None = None) -> list[Sent]:
        """Send many ``call`` messages, each ``(sender, to, data)``, together.

        Nonces are taken in list order per sender.  On one node they go in one
        group commit (one transaction, one fsync: what makes bulk traffic cheap),
        and if any message is refused none is sent; on a cluster each sender's
        node admits its own, and the first refusal is raised after the others
        went in (:attr:`atomic_batches`).  The error names which message.
        """
        gas = self._check_message(Kind.CALL, value, gas)
        fee = self._check_bid(bid)
        prepared = [(self._key(sender), to_address(to, "recipient"), bytes(data)) for sender, to, data in calls]
        self.ensure_writable("send messages")
        with self._submit_lock:
            nonces: dict[bytes, int] = {}
            clock, chain_id = self._clock(), self.chain_id
            signed = []
            for key, to, data in prepared:
                if key.address not in nonces:
                    nonces[key.address] = self._nonce(key.address)
                signed.append(sign_external(key, Kind.CALL, to, data, nonce=nonces[key.address], value=value, gas=gas,
                                            bid=fee, chain_id=chain_id, time=clock))
                nonces[key.address] += 1
            results = self._admit(signed, all_or_nothing=True)
        sent = []
        for index, ((envelope, _, _), result) in enumerate(zip(signed, results, strict=True)):
            if isinstance(result, EnvelopeError):
                none_sent = ", none sent" if self.atomic_batches else ""
                raise EnvelopeError(f"message {index} of {len(results)} refused{none_sent}: {result}")
            sent.append(Sent(self, envelope, duplicate=result))
        return sent

    def send(self, to: object, data: bytes = b"", *, value: int = 0, sender: object = None, gas: int | None = None,
             wants_reply: bool = False, bid: int | None = None) -> Sent:
        """Send a raw ``call`` message (calldata ``data``) to ``to``; return once it is durable.
        ``bid``: fee per gas (None: :attr:`default_bid`)."""
        return self.submit(Kind.CALL, to_address(to, "recipient"), bytes(data), sender=sender, value=value, gas=gas,
                           wants_reply=wants_reply, bid=bid)

    async def asend(self, to: object, data: bytes = b"", *, value: int = 0, sender: object = None,
                    gas: int | None = None, wants_reply: bool = False, bid: int | None = None) -> Sent:
        return await trio.to_thread.run_sync(
            functools.partial(self.send, to, data, value=value, sender=sender, gas=gas, wants_reply=wants_reply,
                              bid=bid)
        )

    def query(self, to: object, data: bytes, *, sender: object = None, gas: int | None = None,
              bid: int | None = None) -> Sent:
        """Send a raw ``query`` message; ``.reply()`` on the result gives the raw answer bytes."""
        return self.submit(Kind.QUERY, to_address(to, "recipient"), bytes(data), sender=sender, value=0, gas=gas,
                           wants_reply=True, bid=bid)

    async def aquery(self, to: object, data: bytes, *, sender: object = None, gas: int | None = None,
                     bid: int | None = None) -> Sent:
        return await trio.to_thread.run_sync(functools.partial(self.query, to, data, sender=sender, gas=gas, bid=bid))

    # -- deploying -----------------------------------------------------------------------------

    def _prepare_deploy(self, source: str | os.PathLike[str] | bytes, args: Sequence[Any],
                        abi: list[dict[str, Any]] | None, name: str | None,
                        value: int, accept_async: Sequence[str] | bool = ()) -> tuple[bytes, list[dict[str, Any]], str]:
        from missive.toolchain.check import check_code, check_contract

        if isinstance(source, (bytes, bytearray)):
            from missive.toolchain.compiler import embedded_runtime

            init_code, abi, name = bytes(source), list(abi or []), name or "contract"
            report = None if accept_async is True else check_code(
                embedded_runtime(init_code) or b"", name=name, abi=abi, init=init_code)
        else:
            from missive.toolchain.compiler import compile_source

            compiled = compile_source(Path(source) if isinstance(source, os.PathLike) else source, name=name)
            init_code = compiled.bytecode
            abi = list(abi) if abi is not None else compiled.abi
            name = name or compiled.name
            report = None if accept_async is True else check_contract(compiled)
        if report is not None and not isinstance(accept_async, bool):
            refusal = report.refusal(accept_async)
            if refusal is not None:
                raise AsyncHazard(refusal, report.unaccepted(accept_async))
        constructor = next((e for e in abi if e.get("type") == "constructor"), None)
        if constructor is None:
            if args:
                raise ArgumentError(f"{name}: the ABI has no constructor, but {len(args)} argument(s) were given")
            encoded = b""
        else:
            inputs = constructor.get("inputs", [])
            encoded = encode_args([abi_type(i) for i in inputs], args, f"{name} constructor",
                                  [str(i.get("name", "")) for i in inputs])
            if value and constructor.get("stateMutability") != "payable" and not constructor.get("payable"):
                raise ArgumentError(f"{name}: the constructor is not payable; it cannot receive value")
        return init_code + encoded, abi, name

    def deploy_message(self, source: str | os.PathLike[str] | bytes, *args: Any, sender: object = None,
                       value: int = 0, gas: int | None = None, abi: list[dict[str, Any]] | None = None,
                       name: str | None = None, accept_async: Sequence[str] | bool = (),
                       bid: int | None = None) -> tuple[Sent, Contract]:
        """Compile, check and send a deploy message without waiting: (its Sent, the future contract).

        Code that would change meaning silently under message semantics (``missive check``) is refused with
        :class:`AsyncHazard` unless ``accept_async`` names each refused finding (by kind or ``kind@offset``);
        ``accept_async=True`` skips the check.
        """
        payload, abi, name = self._prepare_deploy(source, args, abi, name, value, accept_async)
        sent = self.submit(Kind.DEPLOY, None, payload, sender=sender, value=value, gas=gas, wants_reply=False,
                           bid=bid)
        self.register_abi(sent.envelope.recipient, abi, name)
        return sent, Contract(self, sent.envelope.recipient, abi, name, deployment=sent)

    def deploy(self, source: str | os.PathLike[str] | bytes, *args: Any, sender: object = None, value: int = 0,
               gas: int | None = None, abi: list[dict[str, Any]] | None = None, name: str | None = None,
               timeout: float | None = None, accept_async: Sequence[str] | bool = (),
               bid: int | None = None) -> Contract:
        """Deploy a contract (``.vy``/``.sol``/artifact/``.bin`` path, Vyper source text, or init code bytes +
        ``abi=``); ``accept_async`` as in :meth:`deploy_message`.

        Runs the node until the deploy is handled; raises :class:`Reverted` if it failed.
        """
        sent, contract = self.deploy_message(source, *args, sender=sender, value=value, gas=gas, abi=abi, name=name,
                                             accept_async=accept_async, bid=bid)
        _check_deployed(sent, sent.receipt(timeout), contract)
        return contract

    async def adeploy(self, source: str | os.PathLike[str] | bytes, *args: Any, sender: object = None,
                      value: int = 0, gas: int | None = None, abi: list[dict[str, Any]] | None = None,
                      name: str | None = None, timeout: float | None = None,
                      accept_async: Sequence[str] | bool = (), bid: int | None = None) -> Contract:
        sent, contract = await trio.to_thread.run_sync(functools.partial(
            self.deploy_message, source, *args, sender=sender, value=value, gas=gas, abi=abi, name=name,
            accept_async=accept_async, bid=bid))
        _check_deployed(sent, await sent.areceipt(timeout), contract)
        return contract

    # -- running and waiting: the blocking twins ------------------------------------------------------

    def run_until_idle(self, timeout: float | None = None) -> int:
        return run_sync("run_until_idle", lambda: self.arun_until_idle(timeout))

    def follow(self, message_id: bytes | str, timeout: float | None = None) -> Chain:
        return run_sync("follow", lambda: self.afollow(message_id, timeout))

    # -- inspecting -----------------------------------------------------------------------------

    def explain(self, data: bytes, address: object = None) -> str | None:
        """Revert data in words: ``Error(string)``, ``Panic(uint256)``, or a custom error from the ABI of
        ``address`` (the contract that reverted) or, failing that, of any contract registered here."""
        abis = self.abis()
        own = abis.get(to_address(address)) if address is not None else None
        reason = revert_reason(data, own[1] if own else ())
        if reason is None and len(data) >= 4:
            reason = revert_reason(data, [e for _, abi in abis.values() for e in abi if e.get("type") == "error"])
        return reason

    def trace(self, message_id: bytes | str) -> Trace:
        """The tree of messages ``message_id`` caused, with each one's receipt (None while not handled)."""
        root = self.resolve_id(message_id) if isinstance(message_id, str) else to_message_id(message_id)
        envelope = self.message(root)
        if envelope is None:
            raise UnknownMessage(f"no message {hexstr(root)} on this {self.scope}")
        top = Trace(root, envelope, self.receipt(root))
        stack = [top]
        while stack:
            current = stack.pop()
            if current.receipt is None:
                continue
            for child_id in current.receipt.outgoing:
                child_envelope = self.message(child_id)
                if child_envelope is None:
                    continue
                child = Trace(child_id, child_envelope, self.receipt(child_id))
                current.children.append(child)
                stack.append(child)
        return top

    def resolve_id(self, text: str) -> bytes:
        """A full message id from hex text: the whole id, or a unique prefix of at least 4 bytes."""
        body = text.strip().removeprefix("0x").removeprefix("0X")
        if len(body) > 64 or len(body) < 8 or len(body) % 2:
            raise ArgumentError(f"{text!r} is not a message id (64 hex digits, or an even-length prefix of 8+)")
        try:
            prefix = bytes.fromhex(body)
        except ValueError:
            raise ArgumentError(f"{text!r} is not a message id (not hex)") from None
        matches = self._ids_with_prefix(prefix)
        if not matches:
            raise UnknownMessage(f"no message {text} on this {self.scope}")
        if len(matches) > 1:
            raise ArgumentError(f"message id prefix {text} is ambiguous; give more digits")
        return matches[0]

    def inbox(self, address: object) -> list[Envelope]:
        """The messages waiting in ``address``'s queue (not handled yet)."""
        return self.pending(address)

    def scheduled_for(self, address: object) -> list[tuple[int, Envelope]]:
        """Scheduled messages to ``address`` not due yet: (logical time, message), soonest first."""
        target = to_address(address)
        return [(due, envelope) for due, envelope in self.scheduled() if envelope.recipient == target]


def _check_deployed(sent: Sent, receipt: Receipt, contract: Contract) -> None:
    if not receipt.success:
        raise Reverted(f"deploying {contract._label}", reason=revert_reason(receipt.output, contract.abi),
                       data=receipt.output,
                       status=receipt.status, error=receipt.error, receipt=receipt, message_id=sent.id)

