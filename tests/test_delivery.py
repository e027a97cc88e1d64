"""Several deliveries in flight per peer, still exactly once and in order (missive/replicas/delivery.py).

Real loopback sockets and the real secure channel; between sender and receiver
a proxy that drops a frame (which ends that connection), and a receiver whose
"writer" fails or stalls some deliveries: whatever happens, the receiver
stores every message once, in the order it was sent.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from missive.net import NodeId, NodeIdentity, PeerLink, RemoteError, allow_any
from missive.replicas import delivery
from tests.net_support import HOST, meddling_proxy, running_server, trio_test


@trio_test(15)
async def test_a_handlers_synchronous_part_runs_in_the_order_requests_arrived() -> None:
    """Why it matters: a handler that joins a queue before its first await (deliver joins the
    writer) sees requests in the order they were sent, not in the order trio starts tasks."""
    server, client = NodeIdentity.generate(), NodeIdentity.generate()
    seen: list[int] = []

    def take(peer: NodeId, params: Any) -> Awaitable[int]:
        if params < 0:
            raise ValueError(f"negative: {params}")
        seen.append(params)
        return trio.sleep(random.random() / 100)  # finishing in any order is fine

    async with running_server(server, allow_any, {"take": take}) as port:
        link = PeerLink(client, HOST, port, server.node_id)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.run)
            calls = [await link.start("take", n) for n in range(300)]
            for call in calls:
                assert await call.wait() is None
            with pytest.raises(RemoteError, match="ValueError: negative: -1"):  # raised before any await
                await link.call("take", -1, timeout=5)
            nursery.cancel_scope.cancel()
    assert seen == list(range(300))


def test_parse_names_what_is_wrong_with_a_delivery() -> None:
    assert delivery.parse({"records": [b"a"], "after": None, "last": b"k"}) == ([b"a"], None, b"k")
    for bad, why in [([b"a"], "a map"), ({"records": [], "last": b"k"}, "non-empty list"),
                     ({"records": [1], "last": b"k"}, "byte strings"),
                     ({"records": [b"a"], "after": 3, "last": b"k"}, "'after'"),
                     ({"records": [b"a"], "after": None}, "'last'")]:
        with pytest.raises(ValueError, match=why):
            delivery.parse(bad)


def test_a_batch_that_does_not_follow_is_refused_and_so_is_everything_behind_it() -> None:
    line, stored = delivery.Line(), []
    line.take(b"A", None, b"2", lambda: stored.append(1))  # a stream starts
    with pytest.raises(delivery.NotInLine, match="starts again"):
        line.take(b"A", b"3", b"4", lambda: stored.append(2))  # a gap: the batch ending at 3 is missing
    with pytest.raises(RuntimeError):
        line.take(b"A", b"2", b"5", lambda: (_ for _ in ()).throw(RuntimeError("disk")))  # failed to store
    with pytest.raises(delivery.NotInLine):
        line.take(b"A", b"5", b"6", lambda: stored.append(3))  # behind the failed one
    line.take(b"B", None, b"9", lambda: stored.append(4))  # other senders have their own line
    line.take(b"A", None, b"6", lambda: stored.append(5))  # the sender starts again
    line.take(b"A", b"6", b"7", lambda: stored.append(6))
    assert stored == [1, 4, 5, 6]


FATES = st.sampled_from(["ok"] * 6 + ["fail", "stall"])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.integers(1, 120), batch=st.integers(1, 7), window=st.integers(1, 5),
       fates=st.lists(FATES, max_size=25), drops=st.lists(st.integers(2, 30), max_size=2, unique=True),
       seed=st.integers(0, 2**32 - 1))
def test_every_message_is_stored_once_in_order_whatever_fails(
        messages: int, batch: int, window: int, fates: list[str], drops: list[int], seed: int) -> None:
    """The sender keeps ``window`` deliveries in flight; some are failed by the receiver's writer,
    some stall past the sender's timeout (and are stored late), and the proxy drops a frame
    (ending the connection) on the first connections.  Every message still arrives once, in order."""
    rng = random.Random(seed)
    stored: list[int] = []
    out_of_order: list[tuple[int, int]] = []
    fates = list(fates)

    def store(records: list[bytes], fate: str) -> int:
        if fate == "fail":
            raise RuntimeError("the disk is full")
        for raw in records:
            n = int.from_bytes(raw, "big")
            if n < len(stored):
                continue  # a copy: dropped by id
            if n != len(stored):
                out_of_order.append((n, len(stored)))
            stored.append(n)
        return len(records)

    async def main() -> None:
        server, client = NodeIdentity.generate(), NodeIdentity.generate()
        line = delivery.Line()
        joined: list[tuple[Any, trio.Event, list[Any]]] = []
        arrived = trio.Event()

        def deliver(peer: NodeId, params: Any) -> Awaitable[tuple[int, str | None]]:
            records, after, last = delivery.parse(params)
            fate = fates.pop(0) if fates else "ok"
            write = (lambda: line.take(peer, after, last, lambda: store(records, fate)), trio.Event(), [None])
            joined.append(write)
            arrived.set()
            return answer(write, fate)

        async def answer(write: tuple[Any, trio.Event, list[Any]], fate: str) -> tuple[int, str | None]:
            await write[1].wait()
            if fate == "stall":
                await trio.sleep(0.3)  # past the sender's timeout: it starts again meanwhile
            result = write[2][0]
            if isinstance(result, delivery.NotInLine):
                return 0, str(result)
            if isinstance(result, BaseException):
                raise result
            return result, None

        async def writer() -> None:  # the node's group writer in small: writes run in the order they joined
            nonlocal arrived
            while True:
                await arrived.wait()
                arrived = trio.Event()
                await trio.sleep(rng.random() / 200)
                batch, joined[:] = list(joined), []
                for run, done, result in batch:
                    try:
                        result[0] = run()
                    except Exception as exc:
                        result[0] = exc
                    done.set()

        queue = {n.to_bytes(8, "big"): n.to_bytes(8, "big") for n in range(messages)}  # key -> record

        async def batch_after(key: bytes | None) -> list[tuple[bytes, bytes]]:
            later = [k for k in sorted(queue) if key is None or k > key][:batch]
            if not later:
                await trio.sleep_forever()
            return [(k, queue[k]) for k in later]

        def acknowledged(keys: list[bytes], done: int, problem: str | None) -> None:
            for key in keys[:done]:
                queue.pop(key, None)

        connections = 0

        def meddle(index: int, frame: bytes) -> list[bytes]:
            nonlocal connections
            if index == 0:
                connections += 1
            return [] if connections <= len(drops) and index == drops[connections - 1] else [frame]

        async with running_server(server, allow_any, {"deliver": deliver}) as port, \
                meddling_proxy(port, meddle) as proxy_port:
            link = PeerLink(client, HOST, proxy_port, server.node_id, backoff_initial=0.01, backoff_max=0.05)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                nursery.start_soon(link.run)
                nursery.start_soon(lambda: delivery.send(link, batch_after, acknowledged, window=window))
                while queue:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(delivery, "DELIVERY_TIMEOUT", 0.15)
        patch.setattr(delivery, "RETRY_AFTER", 0.01)

        async def bounded() -> None:
            with trio.fail_after(30):
                await main()

        trio.run(bounded)
    assert out_of_order == []
    assert stored == list(range(messages))
