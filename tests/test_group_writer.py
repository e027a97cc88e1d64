"""One writer per node: writes waiting together share a transaction; each learns its own outcome.

Real LMDB in temp dirs.  The cluster node sends every write through a
GroupWriter (admissions, deliveries, the runtime's commits, dequeues), so what
matters to users is here: nothing a write did survives if it failed, nothing
the others did is lost with it, the ledger stays sealed and replays clean, and
a waiter for a receipt or a reply is woken by the commit.
"""

from __future__ import annotations

import os
import socket
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from eth_abi import encode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ledger_actors import TOKEN, Ledger, selector, transfer

from missive.actors.replay import replay
from missive.actors.runtime import Runtime
from missive.cluster.waiters import Waiters
from missive.keys import Key
from missive.mailbox.admission import check_signatures, checker
from missive.mailbox.disk import StoreError
from missive.mailbox.envelope import Envelope, Kind
from missive.mailbox.store import Accepted, Store
from missive.mailbox.writer import GroupWriter
from tests.copies_support import copies_of


def payment(ledger: Ledger, value: int, nonce: int) -> tuple[Envelope, bytes, bytes]:
    return ledger.alice.sign(Envelope(Kind.CALL, ledger.alice.address, ledger.bob.address, value=value,
                                      nonce=nonce, gas=100_000, chain_id=ledger.store.chain_id))


def test_a_failing_write_is_undone_alone_and_the_transaction_stays_sealed(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "node")
    store = ledger.store
    first, second = payment(ledger, 5, 0), payment(ledger, 7, 1)

    def accept_then_fail(txn: object) -> None:
        store.accept([second], ledger.check, txn=txn)  # appends a ledger record, then fails
        raise StoreError("this write fails after appending")

    copies = copies_of(store)
    results = store.write_together([
        lambda txn: store.accept([first], ledger.check, txn=txn),
        accept_then_fail,
        lambda txn: copies.dequeue("outbound", [b"no such key"], txn),
    ])
    assert isinstance(results[0][0], Accepted) and not results[0][0].duplicate
    assert isinstance(results[1], StoreError) and "fails after appending" in str(results[1])
    assert results[2] is None
    assert store.message(first[0].id) is not None
    assert store.message(second[0].id) is None  # nothing of the failed write is left
    assert store.account(ledger.alice.address).nonce == 1  # type: ignore[union-attr]
    # the kept writes' records are sealed once, and the ledger replays clean
    report = replay(store)
    assert report.ok, report.problems
    # the failed write can be made again: its nonce was not used up
    (again,) = store.accept([second], ledger.check)
    assert isinstance(again, Accepted) and not again.duplicate


def test_all_or_nothing_needs_its_own_transaction(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "node")
    (result,) = ledger.store.write_together(
        [lambda txn: ledger.store.accept([payment(ledger, 1, 0)], ledger.check, all_or_nothing=True, txn=txn)])
    assert isinstance(result, StoreError) and "all_or_nothing" in str(result)


def test_concurrent_writes_share_transactions_and_each_gets_its_own_result(tmp_path: Path) -> None:
    store = Store(tmp_path / "node", create=True)
    check = checker(store)
    writer = GroupWriter(store)
    senders = [Key("", os.urandom(32)) for _ in range(40)]
    for key in senders:
        store.create_account(key.address, key.public_key, 1000)
    messages = [key.sign(Envelope(Kind.CALL, key.address, senders[0].address, value=10, nonce=0, gas=100_000,
                                  chain_id=store.chain_id))
                for key in senders]
    results: dict[int, object] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)

            async def one(i: int) -> None:
                if i == 13:  # a write that raises: only its caller sees the error
                    def refused(txn: object) -> None:
                        raise StoreError("write 13 is refused")
                    with pytest.raises(StoreError, match="write 13"):
                        await writer.write(refused)
                    results[i] = "raised"
                    return
                results[i] = (await writer.write(lambda txn: store.accept([messages[i]], check, txn=txn)))[0]

            async with trio.open_nursery() as tasks:
                for i in range(40):
                    tasks.start_soon(one, i)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert results.pop(13) == "raised"
    assert all(isinstance(r, Accepted) and not r.duplicate for r in results.values())
    assert writer.writes == 40 and writer.transactions < 40  # writes that waited together shared one
    assert store.message(messages[13][0].id) is None
    assert all(store.message(messages[i][0].id) is not None for i in results)
    assert replay(store).ok
    store.close()


def test_a_transaction_takes_in_the_writes_already_under_way_and_waits_for_nothing_else(tmp_path: Path) -> None:
    """A frame that has already arrived when a write comes in is read, and its write joins the
    same transaction, even two task hops later (a read loop starting a handler); and no
    transaction waits for writes that are not under way.  The clock is virtual (it jumps
    whenever every task waits), so a timed wait would show as time passing, and the window is
    a minute so that it could not be what ends the gathering."""
    store = Store(tmp_path / "node", create=True)
    writer = GroupWriter(store, window=60.0)
    stamped: list[int] = []

    def stamp(n: int) -> Any:
        return lambda txn: stamped.append(n) or writer.transactions

    async def main() -> None:
        near, far = socket.socketpair()
        reader = trio.SocketStream(trio.socket.from_stdlib_socket(far))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            answers: dict[bytes, int] = {}

            async def handle(frame: bytes) -> None:
                answers[frame] = await writer.write(stamp(frame[0]))

            async def read_loop() -> None:
                while frame := await reader.receive_some(1):
                    nursery.start_soon(handle, frame)

            nursery.start_soon(read_loop)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            for round_ in range(3):
                near.send(bytes([100 + round_]))  # arrived before the write below joins
                mine = await writer.write(stamp(round_))
                while bytes([100 + round_]) not in answers:
                    await trio.sleep(0)
                assert answers[bytes([100 + round_])] == mine  # one transaction for both
            alone = await writer.write(stamp(9))  # nothing else under way: written at once
            assert trio.current_time() == start  # nothing waited for a timer
            assert alone == writer.transactions - 1 == 3
            nursery.cancel_scope.cancel()
        near.close()
        reader.socket.close()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert sorted(stamped) == [0, 1, 2, 9, 100, 101, 102]
    store.close()


def test_writes_after_the_writer_stopped_fail_instead_of_hanging(tmp_path: Path) -> None:
    store = Store(tmp_path / "node", create=True)
    copies = copies_of(store)
    writer = GroupWriter(store)

    async def main() -> None:
        with trio.move_on_after(0.05):
            await writer.run()
        with pytest.raises(StoreError, match="writer has stopped"):
            await writer.write(lambda txn: copies.dequeue("outbound", [], txn))

    trio.run(main)
    store.close()


def test_a_deferred_write_rides_in_the_next_transaction_or_gets_its_own_soon(tmp_path: Path,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    """``write_later`` (dropping acknowledged records) costs no fsync of its own when another write
    comes; when none comes it is still made within ``later`` seconds; if it fails, that is logged
    and no other write is affected."""
    ledger = Ledger(tmp_path / "node")
    store = ledger.store
    writer = GroupWriter(store, later=0.2)
    first, second = payment(ledger, 5, 0), payment(ledger, 7, 1)
    seen: list[str] = []

    def remember(name: str) -> object:
        def run(txn: object) -> None:
            seen.append(name)
        return run

    def refused(txn: object) -> None:
        raise StoreError("deferred write refused")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            await trio.sleep(0.01)
            writer.write_later(remember("rider"))
            writer.write_later(refused)
            (accepted,) = await writer.write(lambda txn: store.accept([first], ledger.check, txn=txn))
            assert isinstance(accepted, Accepted)
            assert seen == ["rider"] and writer.transactions == 1  # it rode along: one transaction
            # nothing else comes: the deferred write is made on its own, within `later` seconds
            writer.write_later(remember("alone"))
            started = trio.current_time()
            while "alone" not in seen:
                await trio.sleep(0.01)
            assert trio.current_time() - started < 0.2 + 0.5
            assert writer.transactions == 2
            # a joined write keeps its place in line even if its caller waits for it later
            joined = writer.join(lambda txn: store.accept([second], ledger.check, txn=txn))
            writer.write_later(remember("after"))
            (accepted,) = await writer.result(joined)
            assert isinstance(accepted, Accepted) and seen[-1] == "after"
            nursery.cancel_scope.cancel()

    with caplog.at_level("WARNING", logger="missive.mailbox.writer"):
        trio.run(main)
    assert any("deferred write failed" in r.message and "refused" in r.message for r in caplog.records)
    assert store.account(ledger.alice.address).nonce == 2  # type: ignore[union-attr]
    assert replay(store).ok
    store.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.booleans(), min_size=1, max_size=12))
def test_signatures_are_checked_apart_from_the_transaction(tmp_path_factory: pytest.TempPathFactory,
                                                           forged: list[bool]) -> None:
    """Whatever mix of good and forged signatures: exactly the forged ones are refused, by name."""
    ledger = Ledger(tmp_path_factory.mktemp("sig") / "node")
    items = []
    for i, bad in enumerate(forged):
        envelope, public_key, signature = payment(ledger, 1, i)
        items.append((envelope, public_key, bytes(64) if bad else signature))
    problems = check_signatures(items)
    assert [p is not None for p in problems] == forged
    assert all("bad signature" in str(p) for p in problems if p is not None)
    ledger.store.close()


def test_waiters_are_woken_by_the_commit_and_replies_are_found_by_request(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "node")
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    waiters = Waiters(recent=4)
    runtime = Runtime(ledger.store)
    runtime.observers.append(waiters.observe)
    answers: dict[str, object] = {}

    async def main() -> None:
        transfer_id = ledger.submit(ledger.alice, Kind.CALL, token, transfer(ledger.bob.address, 3))
        query_id = ledger.submit(ledger.bob, Kind.QUERY, token,
                                 selector("balanceOf(address)") + encode(["address"], [ledger.bob.address]),
                                 wants_reply=True)
        async with trio.open_nursery() as nursery:
            async def wait_receipt() -> None:
                answers["receipt"] = await waiters.receipt(transfer_id, lambda: ledger.store.receipt(transfer_id), 30)

            async def wait_reply() -> None:
                answers["reply"] = await waiters.reply(query_id, 30)

            nursery.start_soon(wait_receipt)
            nursery.start_soon(wait_reply)
            await trio.sleep(0.01)
            assert not answers  # nothing is handled yet: both wait
            await runtime.run()
        # a wait that starts after the reply was handled finds it by request id
        answers["late"] = await waiters.reply(query_id, 0)
        answers["never"] = await waiters.receipt(b"\x01" * 32, lambda: ledger.store.receipt(b"\x01" * 32), 0.01)

    trio.run(main)
    receipt = answers["receipt"]
    assert receipt is not None and receipt.success  # type: ignore[attr-defined]
    reply = ledger.store.message(answers["reply"])  # type: ignore[arg-type]
    assert reply is not None and reply[0].kind is Kind.REPLY and reply[0].request_id is not None
    assert answers["late"] == answers["reply"]
    assert answers["never"] is None
    assert not waiters._handled and not waiters._replied  # nothing left registered


def test_a_wait_for_a_reply_handled_long_ago_comes_back_empty(tmp_path: Path) -> None:
    """Replies are remembered by request id only ``recent`` deep: an older one is not found by request
    (the client then asks for the request's receipt, which names the reply)."""
    ledger = Ledger(tmp_path / "node")
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    waiters = Waiters(recent=2)
    runtime = Runtime(ledger.store)
    runtime.observers.append(waiters.observe)
    queries = [ledger.submit(ledger.bob, Kind.QUERY, token,
                             selector("balanceOf(address)") + encode(["address"], [ledger.bob.address]),
                             wants_reply=True) for _ in range(5)]

    async def main() -> list[bytes | None]:
        await runtime.run()
        return [await waiters.reply(q, 0) for q in queries]

    found = trio.run(main)
    assert found[:3] == [None, None, None] and all(found[3:])
    assert len(waiters.recent) == 2


def _wired(ledger: Ledger) -> tuple[GroupWriter, Runtime]:
    """A writer and a runtime wired as on a cluster node: rounds commit through the writer, and an
    idle runtime handles in each transaction what that transaction queued."""
    writer = GroupWriter(ledger.store)
    runtime = Runtime(ledger.store, committer=lambda outcomes: writer.write(partial(ledger.store.commit, outcomes)))
    writer.last = runtime.round_in_transaction
    return writer, runtime


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.lists(st.integers(0, 400), min_size=1, max_size=4), st.booleans()),
                min_size=1, max_size=5))
def test_what_a_transaction_queues_is_handled_in_it_or_by_a_later_round_once_and_in_order(
        tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[list[int], bool]]) -> None:
    """Token transfers are written through the writer, step by step.  With the runtime idle, a
    step's messages are handled in the very transaction that stores them (their receipts exist
    when the write returns, one transaction for all); with the runtime paused, they wait and a
    later round handles them.  Either way: each message once, in nonce order (a transfer fails
    exactly when it overdraws), and the ledger replays clean."""
    ledger = Ledger(tmp_path_factory.mktemp("inline") / "node")
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    writer, runtime = _wired(ledger)
    store = ledger.store
    sent: list[tuple[bytes, int]] = []

    def signed(amount: int, nonce: int) -> tuple[Envelope, bytes, bytes]:
        return ledger.alice.sign(Envelope(Kind.CALL, ledger.alice.address, token, payload=transfer(
            ledger.bob.address, amount), nonce=nonce, gas=500_000, chain_id=store.chain_id))

    async def until_handled() -> None:
        while any(store.receipt(m) is None for m, _ in sent):
            await trio.sleep(0.005)
        await trio.testing.wait_all_tasks_blocked()  # the runtime is back in its idle wait

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            # no polling: only wake() (or a transaction's last write) makes the runtime look
            nursery.start_soon(partial(runtime.run, until_idle=False, poll_interval=3600))
            for amounts, paused in steps:
                await until_handled()
                batch: list[tuple[Envelope, bytes, bytes]] = []
                for amount in amounts:
                    batch.append(signed(amount, ledger.nonce(ledger.alice) + len(batch)))
                    sent.append((batch[-1][0].id, amount))
                ids = [e.id for e, _, _ in batch]
                before = writer.transactions
                if paused:
                    async with runtime.paused():
                        await writer.write(lambda txn, b=batch: store.accept(b, ledger.check, txn=txn))
                        assert all(store.receipt(i) is None for i in ids)  # stored, not handled
                    runtime.wake()
                else:
                    await writer.write(lambda txn, b=batch: store.accept(b, ledger.check, txn=txn))
                    assert all(store.receipt(i) is not None for i in ids)  # stored and handled together
                    assert writer.transactions == before + 1
            await until_handled()
            nursery.cancel_scope.cancel()

    trio.run(main)
    balance = 1000
    for message_id, amount in sent:
        receipt = store.receipt(message_id)
        assert receipt is not None
        assert receipt.success == (amount <= balance), (amount, balance)
        balance -= amount if amount <= balance else 0
    assert store.mailbox(token).count(sent[0][0]) == 1 and len(store.mailbox(token)) == len(sent) + 1
    assert ledger.balance_of(token, ledger.alice.address) == balance
    assert ledger.balance_of(token, ledger.bob.address) == 1000 - balance
    report = replay(store)
    assert report.ok, report.problems
    store.close()


def test_the_transaction_that_commits_a_round_also_handles_what_it_stores(tmp_path: Path) -> None:
    """A regular round's commit is a write like any other; messages stored in the same transaction,
    after it, are handled there too (the loaded actors then match the transaction's state), not
    left for yet another round and another fsync."""
    ledger = Ledger(tmp_path / "node")
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [1000]))
    store = ledger.store
    writer = GroupWriter(store)
    nonce = ledger.nonce(ledger.alice)
    first, second = ([ledger.alice.sign(Envelope(Kind.CALL, ledger.alice.address, token, payload=transfer(
        ledger.bob.address, 10), nonce=nonce + i, gas=500_000, chain_id=store.chain_id)) for i in range(start, start + 3)] for start in (0, 3))
    joined: list[Any] = []  # the second batch's write, and the transactions written before it joined

    async def committer(outcomes: list[Any]) -> None:
        commit = writer.join(partial(store.commit, outcomes))
        if not joined:  # the second batch arrives while the first round's commit waits for its transaction
            joined.append((writer.join(lambda txn: store.accept(second, ledger.check, txn=txn)), writer.transactions))
        await writer.result(commit)

    runtime = Runtime(store, committer=committer)
    writer.last = runtime.round_in_transaction

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            nursery.start_soon(partial(runtime.run, until_idle=False, poll_interval=3600))
            async with runtime.paused():  # the first batch is stored, and left to a regular round
                await writer.write(lambda txn: store.accept(first, ledger.check, txn=txn))
            runtime.wake()
            while not joined:
                await trio.sleep(0.001)
            second_write, before = joined[0]
            await writer.result(second_write)
            assert writer.transactions == before + 1
            assert all(store.receipt(e.id) is not None for e, _, _ in first + second)  # one transaction for both
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert ledger.balance_of(token, ledger.bob.address) == 60
    report = replay(store)
    assert report.ok, report.problems
    store.close()


def test_a_failing_last_write_stops_the_writer_and_keeps_the_writes_before_it(tmp_path: Path) -> None:
    """If the round inside a transaction fails, the actors' memory no longer matches the store:
    the writer stops with an error naming the round (the node stops with it) instead of going
    on; the writes that joined the transaction before it keep their results."""
    ledger = Ledger(tmp_path / "node")
    store = ledger.store
    writer = GroupWriter(store)

    def broken_round(txn: object) -> None:
        raise RuntimeError("the handler crashed")

    writer.last = lambda: broken_round
    results: list[object] = []
    stopped: list[StoreError] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            async def write() -> None:
                results.append(await writer.write(lambda txn: store.accept([payment(ledger, 5, 0)], ledger.check,
                                                                           txn=txn)))
            nursery.start_soon(write)
            try:
                await writer.run()
            except StoreError as exc:
                stopped.append(exc)

    trio.run(main)
    assert isinstance(results[0][0], Accepted)  # type: ignore[index]
    assert "last write (a round) failed: the handler crashed" in str(stopped[0])
    assert store.account(ledger.alice.address).nonce == 1  # type: ignore[union-attr]
    store.close()
