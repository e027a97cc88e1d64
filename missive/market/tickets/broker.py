"""The ticket broker's rules (issue 24; docs/tickets.md): deposits, reserves, unlocks, withdrawals
and redemptions as signed ledger records, like the worker registry (docs/market.md says why
records rather than an actor).

Each operation is signed by the acting account over
``keccak256(msgpack(["tickets", op, chain id, broker, address, *args]))`` (:func:`digest`) and
appended to the ledger as ``["tickets", op, address, clock, *args, public key, signature]``, where
``clock`` is the ledger's logical time when it was applied.  :func:`apply` is the one
check-and-apply used live (the store, in its write transaction) and by replay (on the state it
rebuilds), so replay re-checks every record.

- ``fund [ops, deposit, reserve, recipients]``: move coin from the payer's balance into its
  deposit and its reserve; name the recipients the reserve backs (only while it backs nobody
  yet).  Cancels a pending unlock.
- ``unlock [ops]``: start the unlock delay (:data:`UNLOCK_DELAY`).
- ``withdraw [ops]``: after the delay, the deposit (and the reserve, unless the payer is in
  default) go back to the balance.
- ``redeem [signed ticket, secret]``: signed by the ticket's recipient; pays a winning ticket once.

``ops`` is the payer's count of operations so far: a payer's signed ``fund`` cannot be applied a
second time by whoever copies it.  A redemption needs none: its ticket is used once.

**Overspend and the penalty.**  A redemption pays from the deposit first.  When the deposit is
short, the payer is in *default* from then on: its reserve is frozen (no top-up, no withdrawal)
and split into equal allowances, one per recipient it named (``reserve // len(recipients)``,
fixed at that moment); each recipient draws the shortfall of its winning tickets from its own
allowance only.  So a recipient whose unredeemed winnings stay within its allowance is paid in
full, whatever the payer did with its deposit.  Once :data:`MAX_VALIDITY` logical time has passed
since the default (every ticket the payer had issued before has expired), what the recipients did
not draw is **burned** (the payer's penalty) by the payer's next operation, or anyone's redemption
of its tickets; the payer may then fund a new reserve.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import attrs
import msgpack

from missive.identity import verify
from missive.mailbox.envelope import int_bytes
from missive.mailbox.records import Account
from missive.market.tickets.ticket import (
    MAX_VALIDITY,
    SignedTicket,
    TicketError,
    commitment_of,
    verify_ticket,
    wins,
)
from missive.vm.keccak import keccak256

#: meta key prefix of a payer's record: b"tickets:payer:" + address -> :meth:`Payer.encode`
PAYER = b"tickets:payer:"
#: meta key prefix of the used-ticket set: b"tickets:nonce:" + :func:`nonce_key` -> the ticket's hash
NONCES = b"tickets:nonce:"
#: the same entries by expiry, to drop them once expired: b"tickets:used:" + expiry (8 bytes) + nonce key -> b""
USED = b"tickets:used:"
#: meta key of the coin burned as penalties, in all
BURNED = b"tickets:burned"
#: logical time between ``unlock`` and the earliest ``withdraw``: at least a ticket's longest validity,
#: so every ticket a recipient took before the unlock has expired (redeemed or not) by then
UNLOCK_DELAY = MAX_VALIDITY
#: the most recipients one reserve can back
MAX_RECIPIENTS = 256
OPS = ("fund", "unlock", "withdraw", "redeem")


class Unfunded(TicketError):
    """A winning ticket its payer cannot pay now (no deposit, no allowance left): the recipient
    keeps it, since the payer may fund again before it expires."""


@attrs.frozen
class Payer:
    """A payer's holdings at the broker and what its tickets have done."""

    deposit: int = 0
    reserve: int = 0
    #: who the reserve backs (each gets an equal allowance of it)
    recipients: tuple[bytes, ...] = ()
    #: logical time from which ``withdraw`` is allowed (0: no unlock pending)
    unlock_at: int = 0
    #: in default since this logical time + 1 (0: not in default)
    defaulted: int = 0
    #: each recipient's allowance of the frozen reserve (fixed at the default)
    share: int = 0
    #: what each recipient drew from the reserve, in ``recipients`` order
    claimed: tuple[int, ...] = ()
    #: operations signed by the payer so far (fund, unlock, withdraw)
    ops: int = 0
    redeemed: int = 0
    paid: int = 0
    burned: int = 0

    @property
    def in_default(self) -> bool:
        return self.defaulted > 0

    @property
    def held(self) -> int:
        """Coin the broker holds for this payer (for the conservation check)."""
        return self.deposit + self.reserve

    def allowance(self, recipient: bytes) -> int:
        """What ``recipient`` may still draw from the reserve (0 if the reserve does not back it)."""
        if recipient not in self.recipients:
            return 0
        index = self.recipients.index(recipient)
        share = self.share if self.in_default else self.reserve // len(self.recipients)
        return max(0, share - (self.claimed[index] if self.claimed else 0))

    def encode(self) -> bytes:
        return cast(bytes, msgpack.packb(
            [int_bytes(self.deposit), int_bytes(self.reserve), list(self.recipients), self.unlock_at, self.defaulted,
             int_bytes(self.share), [int_bytes(c) for c in self.claimed], self.ops, self.redeemed,
             int_bytes(self.paid), int_bytes(self.burned)], use_bin_type=True))

    @classmethod
    def decode(cls, raw: bytes) -> Payer:
        (deposit, reserve, recipients, unlock_at, defaulted, share, claimed, ops, redeemed, paid,
         burned) = msgpack.unpackb(raw)
        number = _number
        return cls(number(deposit), number(reserve), tuple(bytes(r) for r in recipients), unlock_at, defaulted,
                   number(share), tuple(number(c) for c in claimed), ops, redeemed, number(paid), number(burned))


def nonce_key(signed: SignedTicket) -> bytes:
    """A ticket's entry in the used-ticket set: its payer, commitment and nonce.  A second ticket
    with the same three (a reused nonce) is refused, as is the same ticket again."""
    ticket = signed.ticket
    return keccak256(cast(bytes, msgpack.packb(["used", ticket.payer_key, ticket.commitment, ticket.nonce],
                                               use_bin_type=True)))


def _number(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def _amount(raw: object, name: str) -> int:
    if not isinstance(raw, bytes) or len(raw) > 32 or raw[:1] == b"\x00":
        raise TicketError(f"malformed broker record: {name} must be a canonical big-endian integer of at most 32 bytes")
    return int.from_bytes(raw, "big")


def digest(chain_id: int, broker: bytes, op: str, address: bytes, args: list[Any]) -> bytes:
    """What the acting account signs."""
    return keccak256(cast(bytes, msgpack.packb(["tickets", op, chain_id, broker, address, *args], use_bin_type=True)))


def args_of(op: str, payer: Payer | None = None, deposit: int = 0, reserve: int = 0,
            recipients: tuple[bytes, ...] = (), signed: bytes = b"", secret: bytes = b"") -> list[Any]:
    """The signed arguments of an operation (``payer``: the payer's record now, for its ``ops``)."""
    if op == "redeem":
        return [signed, secret]
    ops = (payer or Payer()).ops
    if op == "fund":
        return [ops, int_bytes(deposit), int_bytes(reserve), list(recipients)]
    return [ops]


@attrs.frozen
class Effect:
    """What an operation does: the payer's record after it, the balances it credits (negative:
    debits), the used-ticket entry it adds and the coin it burns."""

    payer_address: bytes
    payer: Payer
    credits: dict[bytes, int]
    #: (nonce key, expiry, ticket hash) of a redeemed ticket
    used: tuple[bytes, int, bytes] | None = None
    burned: int = 0
    #: a redemption: the ticket's hash and what it paid from the deposit and from the reserve
    paid: tuple[int, int] = (0, 0)


class View:
    """What :func:`apply` reads of the ledger: accounts, payer records, the used-ticket set (the
    hash of the ticket redeemed under a nonce key, if any)."""

    def __init__(self, account: Callable[[bytes], Account | None], payer: Callable[[bytes], Payer | None],
                 used: Callable[[bytes], bytes | None]) -> None:
        self.account, self.payer, self.used = account, payer, used


def settle(payer: Payer, clock: int) -> tuple[Payer, int]:
    """Burn what is left of a defaulted payer's reserve once every ticket issued before the default
    has expired (the penalty); the payer's record after it and the coin burned."""
    if payer.in_default and clock >= payer.defaulted - 1 + MAX_VALIDITY:
        burned = payer.reserve
        return attrs.evolve(payer, reserve=0, defaulted=0, share=0, claimed=(), burned=payer.burned + burned), burned
    return payer, 0


def _signed_by(address: bytes, public_key: object, signature: object, message: bytes, op: str) -> None:
    if (not isinstance(public_key, bytes) or keccak256(public_key)[12:] != address
            or not isinstance(signature, bytes) or not verify(public_key, message, signature)):
        raise TicketError(f"the {op} of 0x{address.hex()} is not signed by its account")


def apply(op: str, address: bytes, clock: int, args: list[Any], public_key: object, signature: object,
          chain_id: int, broker: bytes, view: View) -> Effect:
    """Check a signed broker operation against the state it meets; its :class:`Effect`, or
    TicketError (one line, nothing changed)."""
    shown = f"0x{address.hex()}"
    if op not in OPS:
        raise TicketError(f"no ticket broker operation {op!r} (one of {', '.join(OPS)})")
    if not isinstance(clock, int) or isinstance(clock, bool) or clock < 0 or clock >> 64:
        raise TicketError("malformed broker record: the clock is not a 64-bit time")
    _signed_by(address, public_key, signature, digest(chain_id, broker, op, address, args), op)
    if op == "redeem":
        if len(args) != 2:
            raise TicketError("malformed broker record: a redeem carries a signed ticket and a secret")
        return _redeem(address, clock, args[0], args[1], chain_id, broker, view)
    account = view.account(address)
    if account is None or account.is_contract:
        raise TicketError(f"{shown} is not an external account: only an account can fund tickets")
    payer, burned = settle(view.payer(address) or Payer(), clock)
    if len(args) != (4 if op == "fund" else 1) or not isinstance(args[0], int) or isinstance(args[0], bool):
        raise TicketError(f"malformed broker record: a {op} carries "
                          + ("ops, deposit, reserve and recipients" if op == "fund" else "the payer's operation count"))
    if args[0] != payer.ops:
        raise TicketError(f"the {op} of {shown} is signed for operation {args[0]}, "
                          f"not its next one ({payer.ops}): a copy of an earlier operation")
    payer = attrs.evolve(payer, ops=payer.ops + 1)
    if op == "fund":
        return _fund(address, account, payer, burned, args)
    if op == "unlock":
        if payer.unlock_at:
            raise TicketError(f"{shown} is unlocking already (withdraw from logical time {payer.unlock_at})")
        if not payer.held:
            raise TicketError(f"{shown} has nothing at the ticket broker to unlock")
        return Effect(address, attrs.evolve(payer, unlock_at=clock + UNLOCK_DELAY), {}, burned=burned)
    if not payer.unlock_at:
        raise TicketError(f"{shown} has not unlocked its funds: `missive tickets unlock` first, then wait "
                          f"{UNLOCK_DELAY}")
    if clock < payer.unlock_at:
        raise TicketError(f"the funds of {shown} unlock at logical time {payer.unlock_at} (now {clock}): "
                          f"{payer.unlock_at - clock} to go")
    back = payer.deposit + (0 if payer.in_default else payer.reserve)
    after = attrs.evolve(payer, deposit=0, unlock_at=0)
    if not payer.in_default:
        after = attrs.evolve(after, reserve=0, recipients=(), claimed=())
    return Effect(address, after, {address: back}, burned=burned)


def _fund(address: bytes, account: Account, payer: Payer, burned: int, args: list[Any]) -> Effect:
    shown = f"0x{address.hex()}"
    if not isinstance(args[3], list):
        raise TicketError("malformed broker record: a fund's recipients are a list")
    deposit, reserve = _amount(args[1], "the deposit"), _amount(args[2], "the reserve")
    recipients = tuple(args[3])
    if len(recipients) > MAX_RECIPIENTS or any(not isinstance(r, bytes) or len(r) != 20 for r in recipients):
        raise TicketError(f"malformed broker record: recipients are at most {MAX_RECIPIENTS} 20-byte addresses")
    if len(set(recipients)) != len(recipients):
        raise TicketError("a recipient is named twice")
    if not deposit and not reserve:
        raise TicketError("nothing to fund: a deposit or a reserve of 0")
    if deposit + reserve > account.balance:
        raise TicketError(f"balance too low: {shown} has {account.balance}, funding deposit {deposit} and "
                          f"reserve {reserve} takes {deposit + reserve}")
    if reserve and payer.in_default:
        raise TicketError(f"the reserve of {shown} is frozen by an overspend (default at logical time "
                          f"{payer.defaulted - 1}): it cannot take more until what is left is burned")
    if recipients and recipients != payer.recipients:
        if payer.reserve:
            raise TicketError(f"the reserve of {shown} backs {len(payer.recipients)} recipient(s) already: they "
                              "cannot change while it holds coin (withdraw it first)")
        payer = attrs.evolve(payer, recipients=recipients, claimed=())
    if reserve and not payer.recipients:
        raise TicketError("a reserve backs named recipients: name them (--recipient ADDR)")
    after = attrs.evolve(payer, deposit=payer.deposit + deposit, reserve=payer.reserve + reserve, unlock_at=0)
    return Effect(address, after, {address: -(deposit + reserve)}, burned=burned)


def _redeem(address: bytes, clock: int, raw: object, secret: object, chain_id: int, broker: bytes,
            view: View) -> Effect:
    signed = SignedTicket.decode(raw)
    ticket = signed.ticket
    if ticket.recipient != address:
        raise TicketError(f"the ticket pays 0x{ticket.recipient.hex()}, not 0x{address.hex()}: only its recipient "
                          "can redeem it")
    ticket_hash = verify_ticket(signed, chain_id, broker, clock)
    if not isinstance(secret, bytes) or len(secret) != 32 or commitment_of(secret) != ticket.commitment:
        raise TicketError("wrong secret: it does not hash to the ticket's commitment")
    used = view.used(nonce_key(signed))
    if used == ticket_hash:
        raise TicketError(f"ticket 0x{ticket_hash.hex()[:16]}.. is redeemed already")
    if used is not None:
        raise TicketError(f"reused nonce: ticket 0x{used.hex()[:16]}.. of the same payer and commitment, with nonce "
                          f"{ticket.nonce} too, is redeemed already")
    if not wins(signed.signature, secret, ticket.win_prob):
        raise TicketError(f"ticket 0x{ticket_hash.hex()[:16]}.. does not win")
    recipient = view.account(address)
    if recipient is not None and recipient.is_contract:
        raise TicketError(f"0x{address.hex()} is a contract: tickets pay external accounts")
    payer, burned = settle(view.payer(ticket.payer) or Payer(), clock)
    from_deposit = min(ticket.face_value, payer.deposit)
    short = ticket.face_value - from_deposit
    from_reserve = min(short, payer.allowance(address), payer.reserve)
    if not from_deposit + from_reserve:
        raise Unfunded(f"payer 0x{ticket.payer.hex()} has nothing left for 0x{address.hex()} (deposit 0, "
                          f"allowance of its reserve {payer.allowance(address)})")
    if short and not payer.in_default:  # the first overspend: the reserve freezes into allowances
        share = payer.reserve // len(payer.recipients) if payer.recipients else 0
        payer = attrs.evolve(payer, defaulted=clock + 1, share=share, claimed=(0,) * len(payer.recipients))
        from_reserve = min(short, payer.allowance(address), payer.reserve)
    claimed = payer.claimed
    if from_reserve:
        index = payer.recipients.index(address)
        claimed = claimed[:index] + (claimed[index] + from_reserve,) + claimed[index + 1:]
    paid = from_deposit + from_reserve
    after = attrs.evolve(payer, deposit=payer.deposit - from_deposit, reserve=payer.reserve - from_reserve,
                         claimed=claimed, redeemed=payer.redeemed + 1, paid=payer.paid + paid)
    return Effect(ticket.payer, after, {address: paid}, used=(nonce_key(signed), ticket.expiry, ticket_hash), burned=burned,
                  paid=(from_deposit, from_reserve))


def describe(record: list[Any]) -> str:
    """A ``tickets`` ledger record in words (``missive ledger``); a malformed one says so."""
    try:
        op, address, clock = str(record[1]), bytes(record[2]), record[3]
        args = record[4:-2]
        if op == "fund":
            what = (f"deposit {_number(args[1])}, reserve {_number(args[2])}"
                    + (f" backing {len(args[3])} recipient(s)" if args[3] else ""))
        elif op == "redeem":
            ticket = SignedTicket.decode(bytes(args[0])).ticket
            what = (f"a winning ticket of payer 0x{ticket.payer.hex()}, face value {ticket.face_value}, nonce "
                    f"{ticket.nonce}")
        else:
            what = f"operation {args[0]}"
    except (IndexError, TypeError, ValueError) as exc:  # TicketError is a ValueError
        return f"tickets record, malformed ({exc})"
    return f"tickets {op} by 0x{address.hex()} at logical time {clock}: {what}"


class Rebuilt:
    """The broker's state as replay rebuilds it from the ledger's ``tickets`` records, applied with
    the same :func:`apply` as live (so a forged or out-of-order record is refused here too)."""

    def __init__(self) -> None:
        self.payers: dict[bytes, Payer] = {}
        self.used: dict[bytes, tuple[bytes, int]] = {}  # nonce key -> (ticket hash, expiry)
        self.burned = 0
        self.clock = 0

    def replay(self, record: list[Any], chain_id: int, broker: bytes,
               account: Callable[[bytes], Account], set_account: Callable[[bytes, Account], None]) -> Effect:
        """Apply one ``["tickets", op, address, clock, *args, public key, signature]`` record;
        TicketError if it is refused (a divergence) or malformed."""
        if len(record) < 6:
            raise TicketError("malformed broker record")
        op, address, clock = str(record[1]), bytes(record[2]), record[3]
        if not isinstance(clock, int) or clock < self.clock:
            raise TicketError(f"the record's logical time {clock!r} is before the last one's ({self.clock})")
        self.clock = clock
        view = View(account, self.payers.get, lambda key: self.used[key][0] if key in self.used else None)
        effect = apply(op, address, clock, list(record[4:-2]), record[-2], record[-1], chain_id, broker, view)
        for target, amount in effect.credits.items():
            before = account(target)
            set_account(target, before.replace(balance=before.balance + amount))
        self.payers[effect.payer_address] = effect.payer
        self.burned += effect.burned
        if effect.used is not None:
            key, expiry, ticket_hash = effect.used
            self.used[key] = (ticket_hash, expiry)
            if len(self.used) > 1024:  # drop the expired ones now and then, as the store does
                self.used = {k: v for k, v in self.used.items() if v[1] > clock}
        return effect


__all__ = ["BURNED", "NONCES", "Rebuilt", "nonce_key", "Unfunded", "describe", "MAX_RECIPIENTS", "OPS", "PAYER", "UNLOCK_DELAY", "USED", "Effect", "Payer", "View", "apply",
           "args_of", "digest", "settle"]
