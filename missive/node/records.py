"""What the API hands back about accounts and ledgers: :class:`Wallet` (a key that signs) and
:class:`LedgerRecord` (one entry of a node's ledger, in words)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from missive.keys import Key
from missive.mailbox.envelope import Envelope
from missive.mailbox.records import Receipt
from missive.node.values import hexstr
from missive.vm.keccak import keccak256

if TYPE_CHECKING:
    from missive.node.api import NodeAPI


class Wallet:
    """An external account whose key is in the node's keystore: it signs what it sends."""

    def __init__(self, node: NodeAPI, key: Key) -> None:
        self.node = node
        self.key = key
        self.name = key.name
        self.address = key.address

    @property
    def hex(self) -> str:
        return hexstr(self.address)

    @property
    def balance(self) -> int:
        return self.node.balance(self.address)

    @property
    def nonce(self) -> int:
        account = self.node.account(self.address)
        return account.nonce if account is not None else 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Wallet) and other.address == self.address

    def __hash__(self) -> int:
        return hash(self.address)

    def __repr__(self) -> str:
        return f"<Wallet {self.name or '(unnamed)'} {self.hex}>"


@attrs.frozen
class LedgerRecord:
    """One ledger entry: a genesis account, an accepted message, or a receipt."""

    seq: int
    type: str
    #: genesis: the account; accept/receipt: the message's recipient
    address: bytes = b""
    message_id: bytes = b""
    balance: int = 0
    envelope: Envelope | None = None
    receipt: Receipt | None = None
    #: in a cluster, the node whose ledger holds the record (each node keeps its own)
    node: str = ""
    #: diff/rollback records (a cluster's): what they did, in words (they carry no message)
    detail: str = ""


def special_record(seq: int, record: list[Any], node: str = "") -> LedgerRecord | None:
    """A ``genesis``, ``diff`` or ``rollback`` ledger record as a :class:`LedgerRecord` (with its
    :attr:`~LedgerRecord.detail` for the last two); None for the other kinds, which name a message."""
    kind = str(record[0])
    if kind == "genesis":
        return LedgerRecord(seq, kind, address=bytes(record[1]), balance=int.from_bytes(record[3], "big"), node=node)
    if kind == "diff":
        from missive.mailbox.diffs import DiffError, StateDiff

        executor = bytes(record[1])
        try:
            diff = StateDiff.decode(bytes(record[2]))
        except DiffError as exc:
            return LedgerRecord(seq, kind, detail=f"state diff from executor 0x{executor.hex()[:16]}.. ({exc})", node=node)
        version = f" version {diff.version}" if diff.version else ""
        epoch = f" (epoch {diff.epoch})" if diff.epoch else ""
        return LedgerRecord(seq, kind, address=diff.address, node=node,
                            detail=f"state diff of 0x{diff.address.hex()}{version}{epoch} from executor "
                                   f"0x{executor.hex()[:16]}..: {len(diff.receipts)} receipt(s), "
                                   f"{len(diff.messages)} message(s), {len(diff.storage)} slot(s) written")
    if kind == "worker":  # the worker registry (missive.market.workers)
        op, address = str(record[1]), bytes(record[2])
        if op == "accuse":  # slashing: the evidence is in the record
            evidence = bytes(record[3])
            return LedgerRecord(seq, kind, address=address, node=node,
                                detail=f"0x{address.hex()} accuses a worker of a wrong state diff: evidence "
                                       f"0x{keccak256(evidence).hex()[:16]}.. ({len(evidence)} bytes)")
        what = (f"stake {int.from_bytes(record[3], 'big')}, coinbase 0x{bytes(record[4]).hex()}, minimum bid "
                f"{int.from_bytes(record[5], 'big')}" if op == "register" else f"at logical time {record[3]}")
        return LedgerRecord(seq, kind, address=address, node=node, detail=f"worker {op} of 0x{address.hex()}: {what}")
    if kind == "rollback":
        address, position, discarded = bytes(record[1]), int(record[2]), record[5]
        return LedgerRecord(seq, kind, address=address, node=node,
                            detail=f"rollback of 0x{address.hex()} to mailbox position {position}: gives up "
                                   f"{len(discarded)} record(s) another holder's copy replaced")
    return None
