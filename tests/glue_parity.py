"""Worker for tests/test_build.py: run the compiled glue on hostile and sample records, print JSON.

Run once with the mypyc-compiled modules and once with ``MISSIVE_PURE_PYTHON=1``;
the two outputs must be equal (same results, same exceptions, same bytes).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs
import msgpack

from missive.actors.handler import ActorState, handle, next_root
from missive.mailbox.diffs import StateDiff
from missive.mailbox.envelope import Envelope, Kind
from missive.mailbox.records import Account, Receipt

A, B = bytes(range(20)), bytes(range(1, 21))


def outcome(fn: Callable[..., object], *args: Any, **kwargs: Any) -> str:
    try:
        return "ok " + repr(fn(*args, **kwargs))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def envelopes() -> list[object]:
    """A valid canonical envelope, then things a peer might send instead."""
    good = sample_envelope().canonical()
    fields = msgpack.unpackb(good)
    variants: list[object] = [good, bytearray(good), memoryview(good), good[:-1], good + b"\x00", b"", b"\xc1",
                              "text", 5, None, [1, 2], msgpack.packb([*fields, 0])]
    for i, bad in [(0, 1), (0, 3), (1, 9), (1, "2"), (1, True), (2, b"short"), (4, b"\x00\x05"), (4, "5"), (6, -1),
                   (6, "gas"), (7, b"\x01" * 33), (10, b"x"), (11, 1), (14, -3), (15, -1), (15, True),
                   (15, "1"), (16, b"short"), (16, 5)]:
        changed = list(fields)
        changed[i] = bad
        variants.append(msgpack.packb(changed))
    return variants


def sample_envelope() -> Envelope:
    return Envelope(Kind.CALL, A, B, value=5, payload=b"\x01\x02", gas=90_000, nonce=3, time=7, wants_reply=True,
                    chain_id=281_474_976_710_000)


def sample_receipt() -> Receipt:
    return Receipt(bytes(32), B, 4, "success", 21_000, b"\x00\x01", b"r" * 32, ((B, (1, 2**255), b"d"),),
                   (b"o" * 32,), ((A, b"h" * 32),), 9, "", 1_796_000_000, 63_000, 2**200, A)


def sample_account() -> Account:
    return Account(10**20, 2, b"c" * 32, 3, 4, b"s" * 32, b"k" * 32, 1_796_000_000)


def mistyped(record: bytes) -> list[bytes]:
    """``record`` with one field of the wrong type, for each field in turn."""
    fields = msgpack.unpackb(record)
    out = []
    for i in range(1, len(fields)):
        changed = list(fields)
        changed[i] = "text" if not isinstance(fields[i], str) else 5
        out.append(msgpack.packb(changed))
    return out


def encodings() -> list[str]:
    """The ledger's byte formats: envelope, id, receipt, account, state root."""
    envelope = sample_envelope()
    return [envelope.canonical().hex(), envelope.id.hex(), sample_receipt().encode().hex(),
            sample_account().encode().hex(),
            next_root(b"r" * 32, b"m" * 32, {2**255: 1, 3: 0}, -5, 1, b"h" * 32, 1_796_000_000).hex()]


def handled() -> list[object]:
    """One handler run: SSTORE 42 at slot 1, LOG1, a CALL out, STOP; the message asks for a reply."""
    code = bytes.fromhex("602a600155" "60aa6000526001600160a01b" "60206000a1" "6000600060006000600573"
                         + B.hex() + "61fffff1" "00")
    out: list[object] = []
    for bid in (0, 3):  # free, and paying a fee per gas (its escrow split into fee, refund and forwarded gas)
        envelope = attrs.evolve(sample_envelope(), bid=bid)
        actor = ActorState(A, Account(balance=50, code_hash=b"h" * 32), code)
        o = handle(actor, envelope, envelope.id, ("pending", b"k"), lambda slot: 0, lambda address: (b"", b""),
                   1_796_000_000, 281_474_976_710_000, B)
        out += [o.receipt.encode().hex(), o.account.encode().hex(), repr(o.storage_writes),
                [e.canonical().hex() for e in o.new_messages], repr(actor.storage), o.payer.hex()]
    return out


def main() -> None:
    records: list[object] = [sample_receipt().encode(), sample_account().encode(), sample_receipt().encode()[:-2],
                             b"\x93\x01\x02\x03", "x", 7, *mistyped(sample_receipt().encode()),
                             *mistyped(sample_account().encode())]
    out = {
        "envelope": [outcome(Envelope.decode, v) for v in envelopes()]
        + [outcome(Envelope.decode, v, check=False) for v in envelopes()],
        "receipt": [outcome(Receipt.decode, r) for r in records],
        "account": [outcome(Account.decode, r) for r in records],
        "diff": [outcome(StateDiff.decode, msgpack.packb([1, A, 0, r, [], b"", [], []])) for r in records],
        "encodings": encodings(),
        "handled": handled(),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
