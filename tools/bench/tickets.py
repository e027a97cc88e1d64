"""Benchmark and simulation: probabilistic payments with lottery tickets (issue 24; docs/tickets.md).

1. **Off the ledger, one core**: tickets issued (signed) per second and checked per second by
   the recipient (signature, commitment, nonce, expiry, allowance, win test; the payer's broker
   record read once and kept, as a recipient does between redemptions).  Target: at least 10,000
   checks/s.
2. **Simulation**: ``--tickets`` (1,000,000) tickets at win probability ``--win`` (1/1,000)
   between ``--payers`` (100) payers and ``--recipients`` (100) recipients, every ticket really
   signed and checked, every winner redeemed on a real ledger (LMDB in a temporary directory)
   and the recipient's secret rotated.  Prints each recipient's income against its expected
   value (how many are within 5%), redemptions per ticket, and the spread a recipient sees against
   the number of tickets it took (the coefficient of variation across recipients at checkpoints,
   beside the binomial's sqrt((1 − p) / (n p))).
3. **On the ledger**: a redemption's cost (wall time per redemption, its ledger record's bytes;
   it runs no VM, so no gas) beside the peer the issue names, a **direct on-ledger payment per
   task** (a signed value transfer accepted and handled by the runtime: its gas and its time);
   and what paying one task costs each way (tickets: issue + check + the redemption ÷ 1/p).

Writes JSON (default tools/bench/results/tickets.json).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
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

from missive.actors.runtime import Runtime  # noqa: E402
from missive.keys import Keystore  # noqa: E402
from missive.mailbox import broker as ledger_broker  # noqa: E402
from missive.mailbox.admission import checker  # noqa: E402
from missive.mailbox.envelope import Envelope, Kind  # noqa: E402
from missive.mailbox.store import Store  # noqa: E402
from missive.market.tickets import BROKER, ONE, Issuer, Recipient, TicketError, args_of, digest  # noqa: E402
from missive.vm import build_info  # noqa: E402

FACE = 1_000


def broker_op(store: Store, key: Any, op: str, **kwargs: Any) -> Any:
    args = args_of(op, ledger_broker.payer(store, key.address), **kwargs)
    signature = bytes(key.signing_key.sign(digest(store.chain_id, BROKER, op, key.address, args)).signature)
    return ledger_broker.ticket_op(store, op, key.address, args, key.public_key, signature)


class World:
    """A ledger with ``payers`` funded payers and ``recipients`` recipients."""

    def __init__(self, path: Path, payers: int, recipients: int, deposit: int, reserve: int) -> None:
        os.environ.setdefault("MISSIVE_UNENCRYPTED_KEYS", "1")
        self.store = Store(path, create=True)
        self.keys = Keystore(path, create=True)
        self.payers = [self.keys.new(f"payer{i}") for i in range(payers)]
        self.recipients = [self.keys.new(f"recipient{i}") for i in range(recipients)]
        for key in self.payers:
            self.store.create_account(key.address, key.public_key, deposit + reserve + 10**9)
        for key in self.recipients:
            self.store.create_account(key.address, key.public_key, 0)
        everyone = tuple(r.address for r in self.recipients)
        for key in self.payers:
            broker_op(self.store, key, "fund", deposit=deposit, reserve=reserve, recipients=everyone)
        self.issuers = [Issuer(k.signing_key, k.public_key) for k in self.payers]
        self.wallets = [Recipient(k.address) for k in self.recipients]

    def close(self) -> None:
        self.store.close()
        self.keys.close()


def off_ledger_speed(world: World, n: int, win: int) -> dict[str, float]:
    """Issue n tickets from payer 0 to recipient 0, then check them: CPU seconds each way."""
    store, issuer, wallet = world.store, world.issuers[0], world.wallets[0]
    payer = world.payers[0].address
    commitment = wallet.commitment(payer)
    record = ledger_broker.payer(store, payer)
    chain_id, clock = store.chain_id, store.clock()
    recipient = world.recipients[0].address
    start = time.process_time()
    tickets = [issuer.issue(recipient, commitment, 1, win, chain_id=chain_id, clock=clock) for _ in range(n)]
    issued = time.process_time() - start
    start = time.process_time()
    for signed in tickets:
        wallet.take(signed, chain_id=chain_id, clock=clock, payer=record, save=False)
    checked = time.process_time() - start
    wallet.payers[payer].winners.clear()  # face value 1: not worth redeeming here
    return {"tickets": n, "issued_per_s": n / issued, "checked_per_s": n / checked,
            "issue_us": issued / n * 1e6, "check_us": checked / n * 1e6}


def simulate(world: World, n: int, win: int, seed: int) -> dict[str, Any]:
    """n tickets, each from a random payer to a random recipient; winners redeemed at once."""
    rng = random.Random(seed)
    store = world.store
    chain_id, clock = store.chain_id, store.clock()
    records = {k.address: ledger_broker.payer(store, k.address) for k in world.payers}
    taken = [0] * len(world.recipients)
    income = [0] * len(world.recipients)
    checkpoints = sorted({c for c in (100, 300, 1_000, 3_000, 10_000, 30_000, 100_000) if c <= n // len(taken)}
                         | {n // len(taken)})
    at_checkpoint: dict[int, list[int]] = {c: [] for c in checkpoints}
    redemptions, redeem_wall, record_bytes, refused, refused_checks = 0, 0.0, 0, 0, 0
    issue_cpu = check_cpu = 0.0
    started = time.perf_counter()
    for i in range(n):
        p, r = rng.randrange(len(world.payers)), rng.randrange(len(world.recipients))
        payer, wallet = world.payers[p], world.wallets[r]
        commitment = wallet.commitment(payer.address)
        t0 = time.process_time()
        signed = world.issuers[p].issue(wallet.address, commitment, FACE, win, chain_id=chain_id, clock=clock)
        t1 = time.process_time()
        try:
            checked = wallet.take(signed, chain_id=chain_id, clock=clock, payer=records[payer.address], save=False)
        except TicketError:
            refused_checks += 1
            continue
        finally:
            check_cpu += time.process_time() - t1
            issue_cpu += t1 - t0
        taken[r] += 1
        if checked.wins:
            secret = wallet.winners(payer.address)[0][1]
            t2 = time.perf_counter()
            try:
                effect = broker_op(store, world.recipients[r], "redeem", signed=signed.encode(), secret=secret)
            except Exception:
                refused += 1
            else:
                income[r] += sum(effect.paid)
                records[payer.address] = effect.payer
                redemptions += 1
            redeem_wall += time.perf_counter() - t2
            record_bytes += len(signed.encode()) + 32 + 32 + 64 + 40
            wallet.forget(signed)
            wallet.rotate(payer.address)
        if taken[r] in at_checkpoint:
            at_checkpoint[taken[r]].append(income[r])
        if (i + 1) % 100_000 == 0:
            print(f"  {i + 1:,} tickets, {redemptions} redeemed, {time.perf_counter() - started:.0f} s", flush=True)
    probability = win / ONE
    ev = FACE * probability  # expected income per ticket
    expected = [t * ev for t in taken]
    deviations = [abs(inc - e) / e for inc, e in zip(income, expected, strict=True) if e]
    spread = []
    for c in checkpoints:
        values = at_checkpoint[c]
        if len(values) >= 2:
            mean = statistics.fmean(values)
            spread.append({"tickets_taken": c, "recipients": len(values),
                           "cv": statistics.pstdev(values) / (c * ev),
                           "binomial_cv": ((1 - probability) / (c * probability)) ** 0.5,
                           "mean_over_ev": mean / (c * ev)})
    return {
        "tickets": n, "win_probability": probability, "payers": len(world.payers),
        "recipients": len(world.recipients), "redemptions": redemptions, "refused_redemptions": refused,
        "refused_checks": refused_checks, "redemptions_per_1000": redemptions / n * 1000,
        "income_total": sum(income), "expected_total": sum(expected),
        "total_deviation": abs(sum(income) - sum(expected)) / sum(expected),
        "recipients_within_5pct": sum(d <= 0.05 for d in deviations),
        "max_recipient_deviation": max(deviations), "median_recipient_deviation": statistics.median(deviations),
        "tickets_per_recipient": statistics.fmean(taken),
        "issue_cpu_s": issue_cpu, "check_cpu_s": check_cpu, "wall_s": time.perf_counter() - started,
        "redeem_ms": redeem_wall / max(1, redemptions + refused) * 1e3,
        "redeem_record_bytes": record_bytes / max(1, redemptions + refused), "spread": spread,
    }


def direct_payments(path: Path, n: int) -> dict[str, float]:
    """n direct on-ledger payments, one per task: a signed value transfer accepted alone and handled."""
    os.environ.setdefault("MISSIVE_UNENCRYPTED_KEYS", "1")
    store = Store(path, create=True)
    keys = Keystore(path, create=True)
    payer, worker = keys.new("payer"), keys.new("worker")
    store.create_account(payer.address, payer.public_key, 10**18)
    store.create_account(worker.address, worker.public_key, 0)
    check = checker(store)
    runtime = Runtime(store)
    gas = 0
    start = time.perf_counter()
    ids = []
    for nonce in range(n):
        signed = payer.sign(Envelope(Kind.CALL, payer.address, worker.address, value=1, gas=21_000, nonce=nonce,
                                     chain_id=store.chain_id))
        (accepted,) = store.accept([signed], check)
        ids.append(accepted.message_id)  # type: ignore[union-attr]
        trio.run(runtime.run)
    elapsed = time.perf_counter() - start
    for message_id in ids:
        receipt = store.receipt(message_id)
        assert receipt is not None and receipt.success
        gas += receipt.gas_used
    record = sum(len(store.get(None, "messages", m) or b"") for m in ids) / n
    store.close()
    keys.close()
    return {"payments": n, "ms": elapsed / n * 1e3, "gas": gas / n, "message_bytes": record}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--payers", type=int, default=100)
    parser.add_argument("--recipients", type=int, default=100)
    parser.add_argument("--win", default="1/1000", help="win probability (a fraction)")
    parser.add_argument("--speed-tickets", type=int, default=20_000, help="tickets for the one-core issue/check rate")
    parser.add_argument("--direct", type=int, default=300, help="direct on-ledger payments to time")
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--out", type=Path, default=_common.RESULTS / "tickets.json")
    args = parser.parse_args()
    from missive.market.tickets.ticket import probability

    win = probability(args.win)
    console = Console()
    figures: dict[str, Any] = {"build": build_info(), "machine": _common.machine_info()}
    with tempfile.TemporaryDirectory(prefix="missive-tickets-") as tmp:
        n_payers, n_recipients = args.payers, args.recipients
        per_payer_ev = args.tickets / n_payers * FACE * win / ONE
        world = World(Path(tmp) / "tickets", n_payers, n_recipients, deposit=int(per_payer_ev * 3) + 20 * FACE,
                      reserve=FACE * n_recipients * 2)
        try:
            figures["off_ledger"] = speed = off_ledger_speed(world, args.speed_tickets, win)
            console.print(f"off the ledger, one core: {speed['issued_per_s']:,.0f} issued/s "
                          f"({speed['issue_us']:.0f} µs), {speed['checked_per_s']:,.0f} checked/s "
                          f"({speed['check_us']:.0f} µs; target 10,000/s)")
            console.print(f"simulating {args.tickets:,} tickets ...")
            figures["simulation"] = sim = simulate(world, args.tickets, win, args.seed)
        finally:
            world.close()
        figures["direct"] = direct = direct_payments(Path(tmp) / "direct", args.direct)
    p = sim["win_probability"]
    per_task_tickets_ms = (sim["issue_cpu_s"] + sim["check_cpu_s"]) / sim["tickets"] * 1e3 + sim["redeem_ms"] * p
    figures["per_task"] = {"tickets_ms": per_task_tickets_ms, "direct_ms": direct["ms"],
                           "direct_over_tickets": direct["ms"] / per_task_tickets_ms,
                           "ledger_records_per_task_tickets": sim["redemptions"] / sim["tickets"],
                           "ledger_records_per_task_direct": 2,
                           "tickets_for_5pct_at_2_sigma": (2 / 0.05) ** 2 * (1 - p) / p}
    table = Table(title=f"{sim['tickets']:,} tickets at p = {p:g}, {sim['payers']} payers → {sim['recipients']} "
                  "recipients")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("redemptions on the ledger", f"{sim['redemptions']:,} ({sim['redemptions_per_1000']:.2f} per 1,000 tickets)"),
        ("income, all recipients / expected", f"{sim['income_total']:,} / {sim['expected_total']:,.0f} "
         f"({sim['total_deviation']:.1%} off)"),
        ("recipients within 5% of expected", f"{sim['recipients_within_5pct']} of {sim['recipients']}"),
        ("recipient deviation: median, max", f"{sim['median_recipient_deviation']:.1%}, "
         f"{sim['max_recipient_deviation']:.1%}"),
        ("tickets a recipient needs for ±5% at 2σ", f"{(2 / 0.05) ** 2 * (1 - p) / p:,.0f} "
         f"(each took {sim['tickets_per_recipient']:,.0f} here)"),
        ("one redemption (wall, fsync)", f"{sim['redeem_ms']:.2f} ms, ~{sim['redeem_record_bytes']:.0f} B, no gas"),
        ("direct payment per task (wall)", f"{direct['ms']:.2f} ms, {direct['gas']:,.0f} gas (a transfer to an account runs nothing), 2 ledger records"),
        ("one task paid by ticket (issue+check+redeem×p)", f"{per_task_tickets_ms * 1e3:.0f} µs"),
        ("direct ÷ ticket, per task", f"{direct['ms'] / per_task_tickets_ms:.1f}×"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    spread = Table(title="what a recipient sees: spread of income against tickets taken")
    for column in ("tickets taken", "recipients", "CV measured", "CV binomial", "mean ÷ EV"):
        spread.add_column(column, justify="right")
    for row in sim["spread"]:
        spread.add_row(f"{row['tickets_taken']:,}", str(row["recipients"]), f"{row['cv']:.1%}",
                       f"{row['binomial_cv']:.1%}", f"{row['mean_over_ev']:.3f}")
    console.print(spread)
    console.print(f"wrote {_common.write_json(args.out, figures)}")


if __name__ == "__main__":
    main()
