"""Benchmark: the market on one node under a saturating mixed load (issue 23).

Many external accounts send ERC20 ``transfer`` messages to a few token actors, each sender
bidding around a level of its own drawn uniformly from 1..``--max-bid`` (± 2%; with
``--per-message-bids`` every message draws its bid afresh, so a high bid usually waits behind
earlier lower bids of its own pair, which keep their order), offered faster than the node handles them
(``--overload`` × the handling rate measured in a warm-up), for ``--seconds`` seconds; then the
backlog drains.  Meanwhile ``--raises`` messages of the lowest bids, each waiting for a while
already, are raised above every bid (``Store.raise_bid``, signed by their senders).

Figures (wall clock, one process): p50 and p99 of the time from acceptance to handled
(committed) for the highest-bid tenth and the lowest-bid tenth (raised messages left out), their
ratio at p50 (target: the high bids at least 5× sooner), and the time from each raise to its
message being handled (p50, p99, max).  Prints a table and writes JSON (default
tools/bench/results/market.json).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import vm as vm_bench  # noqa: E402

from missive.actors.runtime import Runtime  # noqa: E402
from missive.keys import Keystore  # noqa: E402
from missive.mailbox.admission import checker, verify_signature  # noqa: E402
from missive.mailbox.envelope import Envelope, Kind  # noqa: E402
from missive.mailbox.store import Store  # noqa: E402
from missive.market.raises import sign_raise  # noqa: E402
from missive.vm import build_info  # noqa: E402
from missive.vm.creation import create_address  # noqa: E402

TRANSFER = bytes.fromhex("a9059cbb")
GAS = 200_000


def transfer(to: bytes, amount: int) -> bytes:
    return TRANSFER + bytes(12) + to + amount.to_bytes(32, "big")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run(node_dir: Path, *, senders: int, tokens: int, seconds: float, overload: float, max_bid: int,
        raises: int, chunk: int, seed: int, per_message: bool) -> dict[str, Any]:
    rng = random.Random(seed)
    store = Store(node_dir, create=True)
    keys = Keystore(node_dir, create=True, encrypted=False)
    check = checker(store)
    # the messages of the timed phase are signed before it, and their signatures checked there
    # (as a node checks them on worker threads before the admission's transaction)
    presigned_check = checker(store, signatures=False)
    owner = keys.new("owner")
    store.create_account(owner.address, owner.public_key, 10**30)
    accounts = [keys.new(f"s{i}") for i in range(senders)]
    for key in accounts:
        store.create_account(key.address, key.public_key, 10**24)
    nonces = {owner.address: 0, **{k.address: 0 for k in accounts}}

    def signed(key: Any, kind: Kind, to: bytes, payload: bytes, bid: int) -> Any:
        env = Envelope(kind, key.address, to, payload=payload, gas=GAS if kind is Kind.CALL else 3_000_000, bid=bid,
                       nonce=nonces[key.address], chain_id=store.chain_id)
        nonces[key.address] += 1
        return key.sign(env)

    init, _ = vm_bench._compile_token()
    token_addresses = []
    for _ in range(tokens):
        address = create_address(owner.address, nonces[owner.address])
        store.accept([signed(owner, Kind.DEPLOY, address, init + (10**30).to_bytes(32, "big"), 0)], check)
        token_addresses.append(address)
    store.accept([signed(owner, Kind.CALL, t, transfer(k.address, 10**12), 0) for t in token_addresses
                  for k in accounts], check)
    runtime = Runtime(store)
    trio.run(runtime.run)

    # each sender bids around a level of its own (some are in a hurry, some are not), or, with
    # ``per_message``, every message draws its bid afresh
    levels = {k.address: rng.randint(1, max_bid) for k in accounts}

    def bid_for(sender: Any) -> int:
        if per_message:
            return rng.randint(1, max_bid)
        level = levels[sender.address]
        return min(max_bid, max(1, level + rng.randint(-max_bid // 50, max_bid // 50)))

    def random_batch(n: int) -> list[Any]:
        out = []
        for _ in range(n):
            sender, to = rng.sample(accounts, 2)
            out.append(signed(sender, Kind.CALL, rng.choice(token_addresses), transfer(to.address, 1),
                              bid_for(sender)))
        return out

    # warm-up: the handling rate of this node on this load, to overload it by a known factor
    warm = random_batch(2_000)
    store.accept(warm, check)
    started = time.perf_counter()
    trio.run(runtime.run)
    capacity = len(warm) / (time.perf_counter() - started)
    rate = capacity * overload
    supply = random_batch(int(rate * seconds) + chunk)
    assert all(verify_signature(*signed_message) is None for signed_message in supply)
    cursor = [0]

    accepted_at: dict[bytes, float] = {}
    bids: dict[bytes, int] = {}
    handled_at: dict[bytes, float] = {}
    raised_at: dict[bytes, float] = {}
    produced = [0]
    finished = [False]

    def observe(outcomes: list[tuple[Envelope, Any]]) -> None:
        now = time.perf_counter()
        for _, outcome in outcomes:
            handled_at[outcome.message_id] = now

    runtime.observers.append(observe)
    low_cut = max(1, max_bid // 10)

    async def produce() -> None:
        begin = time.perf_counter()
        raise_every = seconds / (raises + 1)
        next_raise = begin + raise_every
        done_raises = 0
        while time.perf_counter() - begin < seconds:
            due = int((time.perf_counter() - begin) * rate) - produced[0]
            if due > 0:
                batch = supply[cursor[0]:cursor[0] + min(due, chunk)]
                cursor[0] += len(batch)
                results = await trio.to_thread.run_sync(store.accept, batch, presigned_check)
                now = time.perf_counter()
                for (envelope, _, _), result in zip(batch, results, strict=True):
                    assert not isinstance(result, Exception), result
                    accepted_at[envelope.id] = now
                    bids[envelope.id] = envelope.bid
                produced[0] += len(batch)
                runtime.wake()
            now = time.perf_counter()
            if done_raises < raises and now >= next_raise:
                # a low bid accepted at least a second ago and still waiting: raised above every bid
                waiting = [m for m, t in accepted_at.items() if bids[m] <= low_cut and m not in handled_at
                           and m not in raised_at and now - t >= 1.0]
                if waiting:
                    message_id = rng.choice(waiting)
                    found = store.message(message_id)
                    assert found is not None
                    key = next(k for k in accounts if k.address == found[0].sender)
                    new_bid = max_bid + 1
                    signature = sign_raise(key.signing_key, store.chain_id, message_id, new_bid)
                    try:
                        await trio.to_thread.run_sync(store.raise_bid, message_id, new_bid, key.public_key, signature)
                    except Exception:  # noqa: BLE001 - handled meanwhile: try another
                        pass
                    else:
                        raised_at[message_id] = time.perf_counter()
                        done_raises += 1
                        runtime.wake()
                next_raise = now + raise_every
            await trio.sleep(0.005)
        finished[0] = True

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            await runtime.run(until_idle=False, poll_interval=0.005,
                              until=lambda: finished[0] and len(handled_at) >= produced[0])

    started = time.perf_counter()
    trio.run(main)
    wall = time.perf_counter() - started
    waits = {m: handled_at[m] - accepted_at[m] for m in accepted_at}
    ranked = sorted((m for m in accepted_at if m not in raised_at), key=lambda m: bids[m])
    tenth = max(1, len(ranked) // 10)
    low = [waits[m] for m in ranked[:tenth]]
    high = [waits[m] for m in ranked[-tenth:]]
    after_raise = [handled_at[m] - t for m, t in raised_at.items()]
    store.close()
    keys.close()
    figures = {
        "messages": produced[0], "senders": senders, "tokens": tokens, "seconds_offered": seconds,
        "bids_drawn": "per message" if per_message else "per sender (level ± 2%)",
        "capacity_per_s": capacity, "offered_per_s": rate, "overload": overload, "max_bid": max_bid,
        "wall_s": wall, "handled_per_s": produced[0] / wall,
        "high_tenth": {"bids": [bids[ranked[-tenth]], bids[ranked[-1]]], "p50_s": percentile(high, 50),
                       "p99_s": percentile(high, 99)},
        "low_tenth": {"bids": [bids[ranked[0]], bids[ranked[tenth - 1]]], "p50_s": percentile(low, 50),
                      "p99_s": percentile(low, 99)},
        "raised": {"count": len(after_raise), "p50_s": percentile(after_raise, 50),
                   "p99_s": percentile(after_raise, 99), "max_s": max(after_raise, default=float("nan")),
                   "waited_before_raise_p50_s": percentile([t - accepted_at[m] for m, t in raised_at.items()], 50)},
    }
    figures["p50_ratio_low_over_high"] = figures["low_tenth"]["p50_s"] / figures["high_tenth"]["p50_s"]
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--senders", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=4, help="token actors the load is spread over")
    parser.add_argument("--seconds", type=float, default=6.0, help="how long messages are offered")
    parser.add_argument("--overload", type=float, default=2.0, help="offered rate / measured handling rate")
    parser.add_argument("--max-bid", type=int, default=1_000)
    parser.add_argument("--raises", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=20_000, help="messages per admission transaction, at most")
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--per-message-bids", action="store_true",
                        help="every message draws its bid (default: each sender bids around a level of its own)")
    parser.add_argument("--quick", action="store_true", help="3 s offered, 8 raises (a smoke run)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "market.json")
    args = parser.parse_args(argv)
    seconds, raises = (3.0, 8) if args.quick else (args.seconds, args.raises)
    with tempfile.TemporaryDirectory() as tmp:
        figures = run(Path(tmp) / "node", senders=args.senders, tokens=args.tokens, seconds=seconds,
                      overload=args.overload, max_bid=args.max_bid, raises=raises, chunk=args.chunk, seed=args.seed,
                      per_message=args.per_message_bids)
    figures["vm_compiled"] = build_info()["compiled"]
    figures["machine"] = _common.machine_info()
    console = Console()
    table = Table(title=f"{figures['messages']:,} transfers to {args.tokens} tokens from {args.senders} senders, "
                  f"offered at {figures['offered_per_s']:,.0f}/s ({args.overload}× the {figures['capacity_per_s']:,.0f}/s "
                  f"handled) for {seconds:g} s; bids 1..{args.max_bid} drawn {figures['bids_drawn']} "
                  f"(VM compiled: {figures['vm_compiled']})")
    for column in ("messages", "bids", "p50 to handled", "p99 to handled"):
        table.add_column(column)
    for name, key in (("highest-bid tenth", "high_tenth"), ("lowest-bid tenth", "low_tenth")):
        part = figures[key]
        table.add_row(name, f"{part['bids'][0]}..{part['bids'][1]}", f"{part['p50_s']:.3f} s", f"{part['p99_s']:.3f} s")
    raised = figures["raised"]
    table.add_row(f"raised ({raised['count']}), from its raise", f"{args.max_bid + 1}", f"{raised['p50_s']:.3f} s",
                  f"{raised['p99_s']:.3f} s (max {raised['max_s']:.3f} s)")
    console.print(table)
    console.print(f"high bids handled {figures['p50_ratio_low_over_high']:.1f}× sooner at p50 (target ≥ 5×); "
                  f"raised messages had waited {raised['waited_before_raise_p50_s']:.2f} s (p50) before their raise; "
                  f"{figures['handled_per_s']:,.0f} handled/s overall")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2, default=str))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
