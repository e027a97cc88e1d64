"""100,000 deployed contracts on one node, with room for only a hundred live actors.

Every contract is an EIP-1167 proxy of one template (deployed by a signed
message each), then every one of them is sent a message by a fan-out
contract.  The runtime must load each actor on demand, unload idle ones, and
reload them from LMDB with their state intact, while never holding more than a
bounded number in memory.
"""

from __future__ import annotations

import random
from pathlib import Path

from eth_abi import encode
from test_ledger_actors import Ledger, selector

from missive.actors.runtime import Runtime
from missive.mailbox.envelope import Envelope, EnvelopeError, Kind
from missive.vm.creation import create_address

CELL = """
# pragma version ^0.4.0
value: public(uint256)

@external
def bump():
    self.value += 1
"""

FAN_OUT = """
# pragma version ^0.4.0
@external
def bump_all(cells: DynArray[address, 600]):
    for cell: address in cells:
        raw_call(cell, method_id("bump()"), gas=40000)
"""

CONTRACTS = 100_000
MAX_LIVE = 100
BATCH = 256


def proxy_init_code(target: bytes) -> bytes:
    """EIP-1167 minimal proxy: init code that returns 45 bytes delegating every call to ``target``."""
    runtime = bytes.fromhex("363d3d373d3d3d363d73") + target + bytes.fromhex("5af43d82803e903d91602b57fd5bf3")
    return bytes.fromhex("3d602d80600a3d3981f3") + runtime


def test_hundred_thousand_contracts_with_a_hundred_live_actors(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "node")
    ledger.runtime = runtime = Runtime(ledger.store, batch=BATCH, max_live=MAX_LIVE)
    peak = 0

    def watch(outcomes: object) -> None:
        nonlocal peak
        peak = max(peak, len(runtime.live))

    runtime.observers.append(watch)
    alice = ledger.alice
    template = ledger.deploy(alice, CELL)
    fan_out = ledger.deploy(alice, FAN_OUT)

    first = ledger.nonce(alice)
    init = proxy_init_code(template)
    cells = [create_address(alice.address, first + i) for i in range(CONTRACTS)]
    for start in range(0, CONTRACTS, 2_000):
        signed = [alice.sign(Envelope(Kind.DEPLOY, alice.address, cells[i], payload=init, gas=100_000, nonce=first + i,
                                    chain_id=ledger.store.chain_id))
                  for i in range(start, min(start + 2_000, CONTRACTS))]
        assert not any(isinstance(r, EnvelopeError) for r in ledger.store.accept(signed, ledger.check))
    ledger.run()
    deployed = {a for a, account in ledger.store.accounts() if account.code_hash}
    assert deployed >= set(cells)

    def bump(targets: list[bytes]) -> None:
        sent = []
        for start in range(0, len(targets), 600):
            payload = selector("bump_all(address[])") + encode(["address[]"], [targets[start:start + 600]])
            sent.append(ledger.submit(alice, Kind.CALL, fan_out, payload, gas=30_000_000))
        ledger.run()
        assert all(ledger.store.receipt(i).success for i in sent)  # type: ignore[union-attr]

    bump(cells)
    # a second bump for a sample: those actors were unloaded in between and come back from LMDB
    twice = random.Random(1).sample(cells, 500)
    bump(twice)
    assert not ledger.store.pending(limit=1)  # everything handled
    twice_set = set(twice)
    for address in random.Random(2).sample(cells, 2_000) + twice:
        assert ledger.store.storage(address) == {0: 2 if address in twice_set else 1}, address.hex()
        assert ledger.store.account(address).handled == (3 if address in twice_set else 2)  # type: ignore[union-attr]
    # never more than max_live idle actors, plus the (at most two) rounds not yet committed
    assert peak <= MAX_LIVE + 2 * BATCH
    assert len(runtime.live) == 0  # run() ends with every actor unloaded
