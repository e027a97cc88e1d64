"""The Ethereum JSON-RPC methods, over an embedded node or a cluster (:mod:`missive.rpc.backend`).

What is different from Ethereum, and said so in the answers:

- A transaction is a message.  ``eth_sendRawTransaction`` returns once the message is durable
  (admitted to the ledger) and, as anvil's automine does, handled and in a block (or after
  :data:`HANDLED_WAIT` seconds, when the receipt comes later); a receipt means *its own*
  message was handled.  The messages
  it caused (queries, replies, calls, scheduled ones) are handled later: ``missive_waitForTree``
  waits for them, ``missive_traceTransaction`` shows the tree; a receipt names the messages its
  run sent (``missiveCaused``).
- ``eth_call`` and ``eth_estimateGas`` run one actor's code against its current state.  A run
  that sends a query or asks for a reply (a view that needs another contract's answer) fails,
  saying so: the answer would come later, as a message.
- State is the latest only: a block number other than the head's (or a tag) is refused for state
  reads (balances, code, storage, calls).

Parameters are checked before anything is read or written; a refused transaction changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from missive.errors import MissiveError
from missive.mailbox import ethtx
from missive.mailbox.envelope import MAX_GAS, Envelope, EnvelopeError, Kind
from missive.mailbox.records import Receipt
from missive.rpc.backend import POLL, Backend, Record
from missive.rpc.index import Block
from missive.rpc.pool import Pool, PoolFull
from missive.rpc.signer import transaction_fields
from missive.vm.creation import create_address
from missive.vm.keccak import keccak256

if TYPE_CHECKING:
    from missive.keys import EthKey

log = logging.getLogger(__name__)

# JSON-RPC 2.0 and EIP-1474 error codes
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000  # a transaction refused (nonce, funds, chain id...), as geth says it
LIMIT_EXCEEDED = -32005
EXECUTION_REVERTED = 3

GAS_PRICE = ethtx.MIN_GAS_PRICE
PRIORITY_FEE = ethtx.MIN_GAS_PRICE
BLOCK_GAS_LIMIT = MAX_GAS
ZERO32 = bytes(32)
EMPTY_BLOOM = bytes(256)
#: the keccak of an empty RLP list (an empty uncles list), as Ethereum blocks carry it
EMPTY_UNCLES = bytes.fromhex("1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347")
ESTIMATE_MARGIN = 25_000
MAX_LOG_BLOCKS = 10_000
MAX_FILTERS = 1_000
#: eth_sendRawTransaction answers once its message is handled and in a block, or after this many seconds
HANDLED_WAIT = 5.0


class RpcError(MissiveError):
    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def as_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def bad(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, message)


# -- encoding ------------------------------------------------------------------------------------------


def q(n: int) -> str:
    return hex(n)


def h(data: bytes) -> str:
    return "0x" + data.hex()


def addr(data: bytes) -> str:
    return "0x" + data.hex()


def quantity(value: object, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if not isinstance(value, str) or not value.startswith(("0x", "0X")) or len(value) > 66 or len(value) < 3:
        raise bad(f"{name} must be a hex quantity (0x...), not {value!r:.80}")
    try:
        return int(value, 16)
    except ValueError:
        raise bad(f"{name} must be a hex quantity (0x...), not {value!r:.80}") from None


def data_bytes(value: object, name: str, size: int | None = None) -> bytes:
    if not isinstance(value, str) or not value.startswith(("0x", "0X")):
        raise bad(f"{name} must be hex data (0x...), not {value!r:.80}")
    body = value[2:]
    if len(body) % 2:
        raise bad(f"{name} has an odd number of hex digits")
    try:
        raw = bytes.fromhex(body)
    except ValueError:
        raise bad(f"{name} is not hex: {value!r:.80}") from None
    if size is not None and len(raw) != size:
        raise bad(f"{name} must be {size} bytes, not {len(raw)}")
    return raw


def address(value: object, name: str = "address") -> bytes:
    return data_bytes(value, name, 20)


def params_of(params: object, names: tuple[str, ...], required: int) -> list[Any]:
    if params is None:
        params = []
    if not isinstance(params, list):
        raise bad("params must be an array")
    if len(params) < required:
        raise bad(f"expected {required} parameter(s) ({', '.join(names[:required])}), got {len(params)}")
    if len(params) > len(names):
        raise bad(f"expected at most {len(names)} parameter(s) ({', '.join(names)}), got {len(params)}")
    return params + [None] * (len(names) - len(params))


def revert_reason(output: bytes) -> str | None:
    from missive.node import revert_reason as decode

    try:
        return decode(output)
    except Exception:  # a reason that does not decode is simply not shown
        return None


Handler = Callable[[list[Any]], Awaitable[Any]]


class EthApi:
    """The methods, over a node or a cluster (:mod:`missive.rpc.backend`).  ``wake``: tell the node's
    runtime a message is waiting (nothing on a cluster, whose nodes run all the time)."""

    def __init__(self, backend: Backend, *, wake: Callable[[], None] = lambda: None, version: str = "",
                 signers: Sequence[EthKey] = (), handled_wait: float = HANDLED_WAIT, nonce_queue: int = 0) -> None:
        self.backend = backend
        #: how long eth_sendRawTransaction waits for its message to be handled (see _until_in_block)
        self.handled_wait = handled_wait
        #: keys the operator unlocked (``missive rpc --unlock``): eth_accounts, eth_sendTransaction
        self.signers = {key.address: key for key in signers}
        self.wake = wake
        self.version = version
        self._waiting: list[list[Any]] = []
        self._admitting = False
        #: transactions waiting for earlier nonces, and the admission of those (missive/rpc/pool.py)
        self.pool = Pool(max_ahead=nonce_queue)
        self._draining = trio.Lock()
        #: sender -> its transactions admitted through this endpoint and not known handled yet
        self.unhandled: dict[bytes, set[bytes]] = {}
        self.filters: dict[str, dict[str, Any]] = {}
        self._next_filter = 1
        self.methods: dict[str, Handler] = {
            name[4:] if name.startswith("rpc_") else name: getattr(self, name)
            for name in dir(self) if name.startswith(("eth_", "net_", "web3_", "missive_", "rpc_"))
        }

    @property
    def index(self) -> Any:
        return self.backend.index

    async def call(self, method: str, params: object) -> Any:
        handler = self.methods.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, f"the method {method} does not exist/is not available")
        if params is not None and not isinstance(params, list):
            raise bad("params must be an array")
        return await handler(params or [])

    # -- chain ---------------------------------------------------------------------------------

    async def web3_clientVersion(self, params: list[Any]) -> str:
        params_of(params, (), 0)
        return f"Missive/{self.version}/python"

    async def eth_chainId(self, params: list[Any]) -> str:
        params_of(params, (), 0)
        return q(self.backend.chain_id)

    async def net_version(self, params: list[Any]) -> str:
        params_of(params, (), 0)
        return str(self.backend.chain_id)

    async def net_listening(self, params: list[Any]) -> bool:
        return True

    async def net_peerCount(self, params: list[Any]) -> str:
        return "0x0"

    async def eth_syncing(self, params: list[Any]) -> bool:
        return False

    async def eth_mining(self, params: list[Any]) -> bool:
        return False

    async def eth_accounts(self, params: list[Any]) -> list[str]:
        return [addr(a) for a in self.signers]

    async def eth_blockNumber(self, params: list[Any]) -> str:
        params_of(params, (), 0)
        await self.backend.refresh()
        return q(self.index.head)

    async def eth_gasPrice(self, params: list[Any]) -> str:
        return q(GAS_PRICE)

    async def eth_maxPriorityFeePerGas(self, params: list[Any]) -> str:
        return q(PRIORITY_FEE)

    async def eth_feeHistory(self, params: list[Any]) -> dict[str, Any]:
        count_raw, newest_raw, percentiles = params_of(params, ("blockCount", "newestBlock", "rewardPercentiles"), 2)
        count = min(quantity(count_raw, "blockCount"), 1024)
        newest = await self.block_number(newest_raw)
        oldest = max(0, newest - count + 1)
        n = newest - oldest + 1
        out: dict[str, Any] = {"oldestBlock": q(oldest), "baseFeePerGas": [q(GAS_PRICE)] * (n + 1),
                               "gasUsedRatio": [0.0] * n}
        if percentiles is not None:
            if not isinstance(percentiles, list) or not all(isinstance(p, (int, float)) for p in percentiles):
                raise bad("rewardPercentiles must be an array of numbers")
            out["reward"] = [[q(PRIORITY_FEE)] * len(percentiles) for _ in range(n)]
        return out

    async def block_number(self, tag: object, *, state: bool = False) -> int:
        """A block tag or number; ``state``: the caller reads state, which is the latest only."""
        await self.backend.refresh()
        head = self.index.head
        if tag is None or tag in ("latest", "pending", "safe", "finalized"):
            return int(head)
        if tag == "earliest":
            number = 0
        elif isinstance(tag, dict):  # EIP-1898
            if "blockHash" in tag:
                found = self.index.by_hash(data_bytes(tag["blockHash"], "blockHash", 32))
                if found is None:
                    raise RpcError(SERVER_ERROR, "unknown block hash")
                number = found
            else:
                number = quantity(tag.get("blockNumber"), "blockNumber")
        else:
            number = quantity(tag, "block")
        if number > head:
            raise RpcError(SERVER_ERROR, f"block {number} is not there yet (the head is {head})")
        if state and number != head:
            raise RpcError(SERVER_ERROR, f"this {self.backend.scope} keeps only the latest state (block {head}), "
                                         f"not block {number}'s")
        return number

    def _at(self, number: int) -> Block:
        block: Block | None = self.index.block(number)
        if block is None:
            raise RpcError(SERVER_ERROR, f"block {number} is not there yet")
        return block

    # -- state ---------------------------------------------------------------------------------

    async def eth_getBalance(self, params: list[Any]) -> str:
        who, tag = params_of(params, ("address", "block"), 1)
        where = address(who)
        await self.block_number(tag, state=True)
        account = await self.backend.account(where)
        return q(account.balance if account else 0)

    async def eth_getTransactionCount(self, params: list[Any]) -> str:
        """``pending``: the sender's next nonce, counting every admitted transaction (handled or not);
        otherwise (``latest``): less those admitted through this endpoint and not handled yet, as
        Ethereum counts only mined ones there.  Queued ones (ahead of a gap) count in neither."""
        who, tag = params_of(params, ("address", "block"), 1)
        where = address(who)
        await self.block_number(tag, state=True)
        account = await self.backend.account(where)
        nonce = account.nonce if account else 0
        if tag == "pending" or where not in self.unhandled:
            return q(nonce)
        waiting = self.unhandled[where]
        for message_id in list(waiting):
            if await self.backend.receipt(message_id) is not None:
                waiting.discard(message_id)
        if not waiting:
            del self.unhandled[where]
        return q(nonce - len(waiting))

    async def eth_getCode(self, params: list[Any]) -> str:
        who, tag = params_of(params, ("address", "block"), 1)
        where = address(who)
        await self.block_number(tag, state=True)
        return h(await self.backend.code(where))

    async def eth_getStorageAt(self, params: list[Any]) -> str:
        who, slot_raw, tag = params_of(params, ("address", "slot", "block"), 2)
        where = address(who)
        slot = quantity(slot_raw, "slot") if not (isinstance(slot_raw, str) and len(slot_raw) == 66) else \
            int.from_bytes(data_bytes(slot_raw, "slot", 32), "big")
        if slot >> 256:
            raise bad("slot must be under 2**256")
        await self.block_number(tag, state=True)
        return h((await self.backend.slot(where, slot)).to_bytes(32, "big"))

    # -- running code read-only ------------------------------------------------------------------

    async def _simulate(self, call: object, tag: object) -> tuple[Envelope, Receipt, list[Envelope]]:
        if not isinstance(call, dict):
            raise bad("the call must be an object {from, to, gas, value, data}")
        sender = address(call["from"], "from") if call.get("from") is not None else bytes(20)
        data_raw = call.get("data", call.get("input"))
        data = data_bytes(data_raw, "data") if data_raw is not None else b""
        value = quantity(call["value"], "value") if call.get("value") is not None else 0
        gas = quantity(call["gas"], "gas") if call.get("gas") is not None else BLOCK_GAS_LIMIT
        gas = min(gas, BLOCK_GAS_LIMIT)
        to = address(call["to"], "to") if call.get("to") is not None else None
        await self.block_number(tag, state=True)
        backend = self.backend
        if to is None:
            nonce_account = await backend.account(sender)
            target = create_address(sender, nonce_account.nonce if nonce_account else 0)
            envelope = Envelope(Kind.DEPLOY, sender, target, value=value, payload=data, gas=gas,
                                time=backend.clock(), chain_id=backend.chain_id)
        else:
            target = to
            envelope = Envelope(Kind.CALL, sender, target, value=value, payload=data, gas=gas,
                                time=backend.clock(), chain_id=backend.chain_id)
        receipt, outgoing = await backend.run_call(envelope)
        asks = [m for m in outgoing if m.kind is Kind.QUERY or m.wants_reply]
        if asks:
            first = asks[0]
            raise RpcError(SERVER_ERROR, (
                f"0x{target.hex()} asked 0x{first.recipient.hex()} for an answer ({first.kind.name.lower()} message): "
                "on Missive another contract answers later, by message, so a read-only call cannot run through it; "
                "send a transaction and follow its message tree (missive_waitForTree), or read that contract "
                "directly"))
        return envelope, receipt, outgoing

    def _reverted(self, receipt: Receipt) -> RpcError:
        if receipt.status == "revert":
            reason = revert_reason(receipt.output)
            text = f"execution reverted: {reason}" if reason else "execution reverted"
            return RpcError(EXECUTION_REVERTED, text, h(receipt.output))
        return RpcError(SERVER_ERROR, f"execution failed: {receipt.error or receipt.status}")

    async def eth_call(self, params: list[Any]) -> str:
        call, tag, *_ = params_of(params, ("call", "block", "stateOverrides"), 1)
        _, receipt, _ = await self._simulate(call, tag)
        if not receipt.success:
            raise self._reverted(receipt)
        return h(receipt.output)

    async def eth_estimateGas(self, params: list[Any]) -> str:
        call, tag, *_ = params_of(params, ("call", "block", "stateOverrides"), 1)
        envelope, receipt, _ = await self._simulate(call, tag)
        if not receipt.success:
            raise self._reverted(receipt)
        estimate = max(ethtx.INTRINSIC_GAS, receipt.gas_used * 5 // 4 + ESTIMATE_MARGIN)
        return q(min(estimate, BLOCK_GAS_LIMIT))

    # -- transactions ----------------------------------------------------------------------------

    async def eth_sendRawTransaction(self, params: list[Any]) -> str:
        """Admit a signed transaction, or queue it while its nonce is ahead of the sender's next one
        (:mod:`missive.rpc.pool`); either way its hash answers."""
        (raw_hex,) = params_of(params, ("data",), 1)
        raw = data_bytes(raw_hex, "data")
        try:
            tx = ethtx.decode(raw)
        except EnvelopeError as err:
            raise RpcError(INVALID_PARAMS, f"invalid transaction: {err}") from None
        chain_id = self.backend.chain_id
        if tx.chain_id != chain_id:
            raise RpcError(SERVER_ERROR, f"invalid chain id: the transaction is signed for chain id {tx.chain_id}, "
                                         f"not this ledger's ({chain_id})")
        if tx.hash in self.pool.by_hash or await self.backend.eth_transaction(tx.hash) is not None:
            return h(tx.hash)  # known already: the same answer, nothing changes
        envelope = tx.envelope(self.backend.clock())
        try:
            envelope.validate()
        except EnvelopeError as err:
            raise RpcError(INVALID_PARAMS, f"invalid transaction: {err}") from None
        account = await self.backend.account(tx.sender)
        if account is not None and tx.nonce > account.nonce:
            try:
                ethtx.admit(envelope, account.balance)  # what can be checked now is checked now
            except EnvelopeError as err:
                raise RpcError(SERVER_ERROR, str(err)) from None
            try:
                self.pool.queue(tx, raw, account.nonce)
            except PoolFull as err:
                raise RpcError(SERVER_ERROR, str(err)) from None
            await self._admit_queued(tx.sender)  # its turn may have come meanwhile
            return h(tx.hash)
        result = await self._admit((envelope, tx.public_key, raw))
        if isinstance(result, EnvelopeError):
            raise RpcError(SERVER_ERROR, await self._refusal(tx, result))
        self._admitted(tx.sender, result.message_id)
        await self._admit_queued(tx.sender)
        self.wake()
        await self._until_in_block(result.message_id)
        return h(tx.hash)

    async def _until_in_block(self, message_id: bytes) -> None:
        """Wait, at most ``handled_wait`` seconds, until the message is handled and in a block, as
        anvil's and Hardhat's automine answer: a tool that takes the block number after asking for
        the receipt (ethers does) would otherwise wait for a block after the receipt's, which an
        idle ledger never makes.  After that, the hash answers anyway; the receipt comes later."""
        with trio.move_on_after(self.handled_wait):
            while True:
                change = self.backend.change()  # before the look: a round that ends after it is not missed
                await self.backend.refresh()
                if self.index.where(message_id) is not None:
                    return
                with trio.move_on_after(POLL):  # woken by the round that handles it, where one is seen
                    await change.wait()

    async def eth_sendTransaction(self, params: list[Any]) -> str:
        """Sign a transaction with an unlocked key (:mod:`missive.rpc.signer`) and send it as
        ``eth_sendRawTransaction`` does; nonce, gas and fees filled in when not given."""
        (call,) = params_of(params, ("transaction",), 1)
        if not isinstance(call, dict):
            raise bad("the transaction must be an object {from, to, gas, value, data, nonce, ...}")
        sender = address(call.get("from"), "from")
        key = self.signers.get(sender)
        if key is None:
            raise RpcError(SERVER_ERROR, f"unknown account 0x{sender.hex()}: this endpoint signs only for the keys "
                                         "unlocked when it started (`missive rpc --unlock NAME`; see eth_accounts)")
        to = address(call["to"], "to") if call.get("to") is not None else None
        data_raw = call.get("data", call.get("input"))
        data = data_bytes(data_raw, "data") if data_raw is not None else b""
        value = quantity(call["value"], "value") if call.get("value") is not None else 0
        fee = {name: quantity(call[name], name) if call.get(name) is not None else None
               for name in ("gasPrice", "maxFeePerGas", "maxPriorityFeePerGas")}
        if call.get("nonce") is not None:
            nonce = quantity(call["nonce"], "nonce")
        else:
            account = await self.backend.account(sender)
            nonce = account.nonce if account else 0
        if call.get("gas") is not None:
            gas = quantity(call["gas"], "gas")
        else:
            gas = int(await self.eth_estimateGas([{**call, "gas": None}]), 16)
        fields = transaction_fields(chain_id=self.backend.chain_id, nonce=nonce, gas=gas, to=to, value=value,
                                    data=data, gas_price=fee["gasPrice"], max_fee=fee["maxFeePerGas"] or GAS_PRICE,
                                    priority_fee=fee["maxPriorityFeePerGas"] or PRIORITY_FEE)
        try:
            raw = key.sign_transaction(fields)
        except (ValueError, TypeError, OverflowError) as exc:
            raise bad(f"cannot sign that transaction: {exc}") from None
        return await self.eth_sendRawTransaction([h(raw)])

    async def _refusal(self, tx: ethtx.EthTransaction, error: EnvelopeError) -> str:
        """An admission's refusal in the words Ethereum tools look for (geth's)."""
        text = str(error)
        if text.startswith("nonce "):
            account = await self.backend.account(tx.sender)
            expected = account.nonce if account else 0
            return f"nonce too {'low' if tx.nonce < expected else 'high'}: {text}"
        if text.startswith("balance too low"):
            return f"insufficient funds for transfer: {text}"
        if text.startswith("unknown account"):
            return f"insufficient funds: 0x{tx.sender.hex()} has nothing on this ledger (fund it first)"
        return text

    def _admitted(self, sender: bytes, message_id: bytes) -> None:
        self.unhandled.setdefault(sender, set()).add(message_id)

    async def _admit_queued(self, sender: bytes) -> None:
        """Admit ``sender``'s queued transactions whose turn has come, in nonce order (one at a time for
        the whole endpoint, so a transaction is never taken twice)."""
        if not self.pool.waiting(sender):
            return
        async with self._draining:
            while self.pool.waiting(sender):
                account = await self.backend.account(sender)
                found = self.pool.take(sender, account.nonce if account else 0)
                if found is None:
                    return
                tx, raw = found
                result = await self._admit((tx.envelope(self.backend.clock()), tx.public_key, raw))
                if isinstance(result, EnvelopeError):
                    log.info("queued transaction 0x%s dropped: %s", tx.hash.hex(), result)
                    continue
                self._admitted(sender, result.message_id)
                self.wake()

    async def _admit(self, submission: tuple[Envelope, bytes, bytes]) -> Any:
        """Group admission: the transactions that arrive while one admission is being written are
        admitted together in the next (one fsync, or one request to the cluster, for the lot); each is
        checked on its own and a refused one changes nothing."""
        slot: list[Any] = [submission, None, trio.Event()]
        self._waiting.append(slot)
        if not self._admitting:
            self._admitting = True
            try:
                while self._waiting:
                    batch, self._waiting = self._waiting, []
                    try:
                        results = await self.backend.admit([s[0] for s in batch])
                    except Exception as exc:  # (a full disk, say): every waiting request is told
                        results = [exc] * len(batch)
                    for waiting, result in zip(batch, results, strict=True):
                        waiting[1] = result
                        waiting[2].set()
            finally:
                self._admitting = False
        await slot[2].wait()
        if isinstance(slot[1], Exception) and not isinstance(slot[1], EnvelopeError):
            raise slot[1]
        return slot[1]

    async def _message_id(self, raw: object) -> bytes:
        """A transaction hash, or a Missive message id (either answers for the message)."""
        key = data_bytes(raw, "transaction hash", 32)
        return await self.backend.eth_transaction(key) or key

    async def _record(self, message_id: bytes) -> Record | None:
        return await self.backend.message(message_id)

    def tx_hash(self, message_id: bytes, public_key: bytes, signature: bytes) -> bytes:
        return keccak256(signature) if ethtx.is_eth_public_key(public_key) else message_id

    async def _where(self, message_id: bytes) -> tuple[Block | None, int]:
        await self.backend.refresh()
        found = self.index.where(message_id)
        if found is None:
            return None, 0
        return self.index.block(found[0]), found[1]

    async def _transaction(self, message_id: bytes, record: Record) -> dict[str, Any]:
        envelope, public_key, signature = record
        block, position = await self._where(message_id)
        out: dict[str, Any] = {
            "hash": h(self.tx_hash(message_id, public_key, signature)),
            "nonce": q(envelope.nonce), "from": addr(envelope.sender),
            "to": None if envelope.kind is Kind.DEPLOY else addr(envelope.recipient),
            "value": q(envelope.value), "gas": q(envelope.gas), "gasPrice": q(envelope.bid),
            "input": h(envelope.payload),
            "blockHash": h(block.hash) if block else None, "blockNumber": q(block.number) if block else None,
            "transactionIndex": q(position) if block else None,
            "chainId": q(envelope.chain_id or self.backend.chain_id), "type": "0x0",
            "v": "0x0", "r": "0x0", "s": "0x0",
            "missiveMessageId": h(message_id), "missiveKind": envelope.kind.name.lower(),
        }
        if ethtx.is_eth_public_key(public_key):
            tx = ethtx.decode(signature)
            out.update(type=q(tx.type), v=q(tx.v), r=q(tx.r), s=q(tx.s))
            if tx.type == 2:
                out.update(maxFeePerGas=q(tx.gas_price), maxPriorityFeePerGas=q(tx.max_priority_fee), yParity=q(tx.v))
            if tx.type:
                out["accessList"] = [{"address": addr(a), "storageKeys": [h(k) for k in keys]}
                                     for a, keys in tx.access_list]
        return out

    async def eth_getTransactionByHash(self, params: list[Any]) -> dict[str, Any] | None:
        (raw,) = params_of(params, ("hash",), 1)
        queued = self.pool.by_hash.get(data_bytes(raw, "transaction hash", 32))
        if queued is not None:  # waiting for an earlier nonce: no message yet
            tx, signed_raw = queued
            envelope = tx.envelope(0)
            return {**await self._transaction(envelope.id, (envelope, tx.public_key, signed_raw)),
                    "missiveMessageId": None, "missiveQueued": True}
        message_id = await self._message_id(raw)
        record = await self._record(message_id)
        return None if record is None else await self._transaction(message_id, record)

    @staticmethod
    def _log_json(block: Block, tx_hash: bytes, position: int, index: int, emitter: bytes, topics: Any,
                  data: bytes) -> dict[str, Any]:
        return {"address": addr(emitter), "topics": [h(t.to_bytes(32, "big")) for t in topics], "data": h(data),
                "blockNumber": q(block.number), "blockHash": h(block.hash), "transactionHash": h(tx_hash),
                "transactionIndex": q(position), "logIndex": q(index), "removed": False}

    async def eth_getTransactionReceipt(self, params: list[Any]) -> dict[str, Any] | None:
        (raw,) = params_of(params, ("hash",), 1)
        message_id = await self._message_id(raw)
        block, position = await self._where(message_id)
        if block is None:  # not handled, or its block not indexed yet: at the next look
            return None
        record = await self._record(message_id)
        receipt = await self.backend.receipt(message_id)
        if record is None or receipt is None:
            return None
        envelope, public_key, signature = record
        tx_hash = self.tx_hash(message_id, public_key, signature)
        first = self.index.block_logs_before(block.number, position) if receipt.logs else 0
        logs = [self._log_json(block, tx_hash, position, first + i, emitter, topics, data)
                for i, (emitter, topics, data) in enumerate(receipt.logs)]
        out: dict[str, Any] = {
            "transactionHash": h(tx_hash), "transactionIndex": q(position), "blockHash": h(block.hash),
            "blockNumber": q(block.number), "from": addr(envelope.sender),
            "to": None if envelope.kind is Kind.DEPLOY else addr(envelope.recipient),
            "cumulativeGasUsed": q(receipt.gas_used), "gasUsed": q(receipt.gas_used),
            "effectiveGasPrice": q(envelope.bid),
            "contractAddress": addr(envelope.recipient) if envelope.kind is Kind.DEPLOY and receipt.success else None,
            "logs": logs, "logsBloom": h(bloom(receipt)), "status": "0x1" if receipt.success else "0x0",
            "type": q(ethtx.tx_type(signature)) if ethtx.is_eth_public_key(public_key) else "0x0",
            "missiveMessageId": h(message_id), "missiveCaused": [h(m) for m in receipt.outgoing],
        }
        if not receipt.success:
            out["missiveError"] = receipt.error or receipt.status
            reason = revert_reason(receipt.output) if receipt.status == "revert" else None
            if reason:
                out["revertReason"] = reason
            out["revertData"] = h(receipt.output)
        return out

    # -- blocks ----------------------------------------------------------------------------------

    async def _block(self, block: Block, full: bool) -> dict[str, Any]:
        txs: list[Any] = []
        gas_used = 0
        for message_id in block.handled:
            record = await self._record(message_id)
            if record is None or not record[0].is_external:
                continue
            receipt = await self.backend.receipt(message_id)
            gas_used += receipt.gas_used if receipt else 0
            txs.append(await self._transaction(message_id, record) if full else
                       h(self.tx_hash(message_id, record[1], record[2])))
        return {
            "number": q(block.number), "hash": h(block.hash), "parentHash": h(block.parent),
            "nonce": "0x0000000000000000", "sha3Uncles": h(EMPTY_UNCLES), "logsBloom": h(EMPTY_BLOOM),
            "transactionsRoot": h(block.hash), "stateRoot": h(ZERO32), "receiptsRoot": h(ZERO32),
            "miner": addr(bytes(20)), "difficulty": "0x0", "totalDifficulty": "0x0", "extraData": "0x",
            "size": q(1000), "gasLimit": q(BLOCK_GAS_LIMIT), "gasUsed": q(min(gas_used, BLOCK_GAS_LIMIT)),
            "timestamp": q(block.timestamp), "transactions": txs, "uncles": [], "baseFeePerGas": q(GAS_PRICE),
            "mixHash": h(ZERO32), "missiveLedgerSeq": q(block.seq),
        }

    async def eth_getBlockByNumber(self, params: list[Any]) -> dict[str, Any] | None:
        tag, full = params_of(params, ("block", "full"), 1)
        try:
            number = await self.block_number(tag)
        except RpcError as err:
            if err.code == SERVER_ERROR:
                return None
            raise
        block = self.index.block(number)
        return None if block is None else await self._block(block, bool(full))

    async def eth_getBlockByHash(self, params: list[Any]) -> dict[str, Any] | None:
        raw, full = params_of(params, ("hash", "full"), 1)
        wanted = data_bytes(raw, "hash", 32)
        await self.backend.refresh()
        number = self.index.by_hash(wanted)
        return None if number is None else await self._block(self._at(number), bool(full))

    async def eth_getBlockTransactionCountByNumber(self, params: list[Any]) -> str:
        (tag,) = params_of(params, ("block",), 1)
        block = self._at(await self.block_number(tag))
        return q(len((await self._block(block, False))["transactions"]))

    # -- logs and filters ------------------------------------------------------------------------

    async def _log_query(self, spec: object) -> tuple[int, int, set[bytes] | None, list[set[bytes] | None]]:
        if not isinstance(spec, dict):
            raise bad("the filter must be an object {fromBlock, toBlock, address, topics}")
        if spec.get("blockHash") is not None:
            number = self.index.by_hash(data_bytes(spec["blockHash"], "blockHash", 32))
            if number is None:
                raise RpcError(SERVER_ERROR, "unknown block hash")
            first = last = number
        else:
            first = await self.block_number(spec.get("fromBlock"))
            last = await self.block_number(spec.get("toBlock"))
        raw_addresses = spec.get("address")
        addresses: set[bytes] | None = None
        if raw_addresses is not None:
            addresses = {address(a) for a in (raw_addresses if isinstance(raw_addresses, list) else [raw_addresses])}
        topics: list[set[bytes] | None] = []
        raw_topics = spec.get("topics") or []
        if not isinstance(raw_topics, list) or len(raw_topics) > 4:
            raise bad("topics must be an array of at most 4 entries")
        for entry in raw_topics:
            if entry is None:
                topics.append(None)
            elif isinstance(entry, list):
                topics.append({data_bytes(t, "topic", 32) for t in entry} if entry else None)
            else:
                topics.append({data_bytes(entry, "topic", 32)})
        return first, last, addresses, topics

    async def _matching_logs(self, first: int, last: int, addresses: set[bytes] | None,
                             topics: list[set[bytes] | None]) -> list[dict[str, Any]]:
        """The index's logs of blocks ``first``..``last`` (by address through its address keys) that
        match the topics; the ledger is not read, except for the transaction hash of each match."""
        if last - first >= MAX_LOG_BLOCKS:
            raise RpcError(LIMIT_EXCEEDED, f"query returned more than {MAX_LOG_BLOCKS} blocks: ask for fewer")
        out: list[dict[str, Any]] = []
        hashes: dict[bytes, bytes] = {}
        blocks: dict[int, Block] = {}
        for entry in self.index.logs(first, last, addresses):
            if not all(wanted is None or (i < len(entry.topics) and entry.topics[i].to_bytes(32, "big") in wanted)
                       for i, wanted in enumerate(topics)):
                continue
            if entry.message_id not in hashes:
                record = await self._record(entry.message_id)
                hashes[entry.message_id] = (self.tx_hash(entry.message_id, record[1], record[2]) if record
                                            else entry.message_id)
            if entry.block not in blocks:
                blocks[entry.block] = self._at(entry.block)
            out.append(self._log_json(blocks[entry.block], hashes[entry.message_id], entry.position, entry.index,
                                      entry.emitter, entry.topics, entry.data))
        return out

    async def eth_getLogs(self, params: list[Any]) -> list[dict[str, Any]]:
        (spec,) = params_of(params, ("filter",), 1)
        return await self._matching_logs(*await self._log_query(spec))

    def _new_filter(self, entry: dict[str, Any]) -> str:
        if len(self.filters) >= MAX_FILTERS:
            raise RpcError(LIMIT_EXCEEDED, f"too many filters ({MAX_FILTERS}): uninstall some")
        ident = q(self._next_filter)
        self._next_filter += 1
        self.filters[ident] = entry
        return ident

    async def eth_newFilter(self, params: list[Any]) -> str:
        (spec,) = params_of(params, ("filter",), 1)
        first, last, addresses, topics = await self._log_query(spec)
        to_latest = not isinstance(spec, dict) or spec.get("toBlock") in (None, "latest", "pending")
        return self._new_filter({"kind": "logs", "next": first if isinstance(spec, dict) and spec.get("fromBlock")
                                 not in (None, "latest", "pending") else self.index.head + 1,
                                 "last": None if to_latest else last, "addresses": addresses, "topics": topics,
                                 "spec": spec})

    async def eth_newBlockFilter(self, params: list[Any]) -> str:
        await self.backend.refresh()
        return self._new_filter({"kind": "blocks", "next": self.index.head + 1})

    async def eth_uninstallFilter(self, params: list[Any]) -> bool:
        (ident,) = params_of(params, ("id",), 1)
        return self.filters.pop(str(ident), None) is not None

    def _filter(self, ident: object) -> dict[str, Any]:
        entry = self.filters.get(str(ident))
        if entry is None:
            raise RpcError(SERVER_ERROR, "filter not found")
        return entry

    async def eth_getFilterChanges(self, params: list[Any]) -> list[Any]:
        (ident,) = params_of(params, ("id",), 1)
        entry = self._filter(ident)
        await self.backend.refresh()
        head = self.index.head if entry.get("last") is None else min(entry["last"], self.index.head)
        first = entry["next"]
        if first > head:
            return []
        entry["next"] = head + 1
        if entry["kind"] == "blocks":
            return [h(self._at(n).hash) for n in range(first, head + 1)]
        return await self._matching_logs(first, head, entry["addresses"], entry["topics"])

    async def eth_getFilterLogs(self, params: list[Any]) -> list[Any]:
        (ident,) = params_of(params, ("id",), 1)
        entry = self._filter(ident)
        if entry["kind"] != "logs":
            raise bad("not a log filter")
        return await self._matching_logs(*await self._log_query(entry["spec"]))

    # -- subscriptions (WebSocket) -----------------------------------------------------------------

    async def subscription(self, kind: object, spec: object) -> dict[str, Any]:
        """A new ``eth_subscribe`` entry: ``newHeads``, or ``logs`` with an address/topics filter."""
        await self.backend.refresh()
        if kind == "newHeads":
            return {"kind": "blocks", "next": self.index.head + 1}
        if kind == "logs":
            query = spec if spec is not None else {}
            if not isinstance(query, dict):
                raise bad("the logs subscription takes a filter object {address, topics}")
            _, _, addresses, topics = await self._log_query({**query, "fromBlock": "latest", "toBlock": "latest"})
            return {"kind": "logs", "next": self.index.head + 1, "addresses": addresses, "topics": topics}
        raise bad(f"unknown subscription {kind!r:.40} (newHeads or logs)")

    async def subscription_changes(self, entry: dict[str, Any]) -> list[Any]:
        """What a subscription has not been told yet: block headers, or matching logs."""
        await self.backend.refresh()
        first, head = entry["next"], self.index.head
        if first > head:
            return []
        entry["next"] = head + 1
        if entry["kind"] == "blocks":
            out = []
            for number in range(first, head + 1):
                header = await self._block(self._at(number), False)
                header.pop("transactions")
                out.append(header)
            return out
        return await self._matching_logs(max(first, head - MAX_LOG_BLOCKS + 1), head, entry["addresses"],
                                         entry["topics"])

    # -- Missive's own: the message tree ---------------------------------------------------------

    def _tree(self, node: Any) -> dict[str, Any]:
        envelope, receipt = node.envelope, node.receipt
        out: dict[str, Any] = {"messageId": h(node.id), "kind": envelope.kind.name.lower(), "from": addr(envelope.sender),
                               "to": addr(envelope.recipient), "value": q(envelope.value), "gas": q(envelope.gas),
                               "status": None if receipt is None else receipt.status,
                               "gasUsed": None if receipt is None else q(receipt.gas_used)}
        if receipt is not None and not receipt.success:
            out["error"] = receipt.error
            reason = revert_reason(receipt.output) if receipt.status == "revert" else None
            if reason:
                out["revertReason"] = reason
        out["children"] = [self._tree(child) for child in node.children]
        return out

    async def _known_message(self, raw: object) -> bytes:
        message_id = await self._message_id(raw)
        if await self._record(message_id) is None:
            raise RpcError(SERVER_ERROR, "unknown transaction or message")
        return message_id

    async def missive_traceTransaction(self, params: list[Any]) -> dict[str, Any]:
        (raw,) = params_of(params, ("hash",), 1)
        message_id = await self._known_message(raw)
        return self._tree(await self.backend.trace(message_id))

    async def missive_waitForTree(self, params: list[Any]) -> dict[str, Any]:
        """Wait (at most ``timeout`` seconds, default 10, at most 60) until every message the
        transaction caused is handled: {done, handled, failed: [...], unfinished: [...]}."""
        raw, timeout_raw = params_of(params, ("hash", "timeout"), 1)
        timeout = 10.0 if timeout_raw is None else timeout_raw
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 <= timeout <= 60:
            raise bad("timeout must be a number of seconds from 0 to 60")
        message_id = await self._known_message(raw)
        chain = await self.backend.follow(message_id, float(timeout))
        return {"done": not chain.unfinished, "handled": chain.handled,
                "failed": [{"messageId": h(m), "status": r.status, "error": r.error,
                            "revertReason": revert_reason(r.output) if r.status == "revert" else None}
                           for m, r in chain.failed],
                "unfinished": [h(m) for m in chain.unfinished]}

    async def missive_messageOf(self, params: list[Any]) -> str | None:
        """The Missive message id a transaction hash became."""
        (raw,) = params_of(params, ("hash",), 1)
        found = await self.backend.eth_transaction(data_bytes(raw, "hash", 32))
        return None if found is None else h(found)


def bloom(receipt: Receipt) -> bytes:
    """A receipt's logs bloom, as Ethereum's yellow paper defines it (each emitter and topic sets
    three of 2048 bits, from the first three byte pairs of its keccak); made with the VM's keccak
    (compiled), not eth-bloom's, which took a quarter of eth_getTransactionReceipt's time."""
    if not receipt.logs:
        return EMPTY_BLOOM
    bits = 0
    for emitter, topics, _ in receipt.logs:
        for item in (emitter, *(t.to_bytes(32, "big") for t in topics)):
            digest = keccak256(item)
            for i in (0, 2, 4):
                bits |= 1 << (((digest[i] << 8) | digest[i + 1]) & 2047)
    return bits.to_bytes(256, "big")
