"""Jobs paid by lottery tickets (issue 25 item 4; docs/jobs.md, "Paid by tickets"): the board
escrows no bid, the poster's deposit at the ticket broker backs one ticket per accepted result,
the poster's node signs it under the commitment the worker named in its take, the worker checks
it off the ledger and redeems the winners.  Workers are driven through the Python API (one
``work`` pass is ``missive worker run --once``); the CLI test at the end runs the commands."""

from __future__ import annotations

import contextlib
import io
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from missive.actors.replay import replay
from missive.cli.main import main as cli
from missive.mailbox import broker
from missive.mailbox.envelope import EnvelopeError
from missive.mailbox.jobboard import escrowed, job, jobs
from missive.market.jobpay import MAX_ODDS, face_value, parse_odds, win_threshold
from missive.market.jobs import post_args
from missive.market.tickets import ONE, Ticket, TicketError
from missive.node import Node
from missive.node.jobs import work
from missive.node.jobtickets import drop_box, earnings, owed, pay

#: PUSH1 0 CALLDATALOAD PUSH1 2 MUL PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN: twice its input
DOUBLE = bytes.fromhex("6000356002026000526020" + "6000f3")


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("MISSIVE_UNENCRYPTED_KEYS", "1")
    made = Node.init(tmp_path / "node", default_balance=10**12)
    for name in ("w1", "w2", "outsider"):
        made.new_account(name, balance=10**6)
        made.worker_op("register", sender=name, stake=100_000)
    yield made
    made.close()


def address(node: Node, name: str) -> bytes:
    return node.wallet(name).address


def balance(node: Node, name: str) -> int:
    account = node.account(address(node, name))
    return account.balance if account is not None else 0


def held(node: Node) -> int:
    """Every coin: balances, stakes, job escrows and the ticket broker's holdings."""
    store = node.store
    return (sum(a.balance for _, a in store.accounts()) + sum(w.stake + w.unbonding for _, w in store.workers())
            + escrowed(store) + broker.held(store))


def fund(node: Node, deposit: int, reserve: int, recipients: tuple[str, ...] = ("w1", "w2")) -> None:
    node.tickets.fund(deposit=deposit, reserve=reserve, recipients=[address(node, n) for n in recipients])


def post(node: Node, n: int, *, bid: int = 100, odds: int = 10, verify: str = "trust:0") -> bytes:
    args = post_args(os.urandom(16), "evm", DOUBLE, n.to_bytes(32, "big"), 50_000, bid, 50, verify, 600, odds)
    return node.job_op("post", args)


def test_a_stream_of_small_jobs_is_paid_by_tickets_within_the_binomial_spread(node: Node) -> None:
    jobs_count, bid, odds = 120, 100, 10
    face = face_value(bid, odds)
    fund(node, deposit=jobs_count * face, reserve=20 * face, recipients=("w1",))
    total, w1_before, poster_before = held(node), balance(node, "w1"), balance(node, "default")
    for batch in range(jobs_count // 10):
        ids = [post(node, 10 * batch + i, bid=bid, odds=odds) for i in range(10)]
        assert escrowed(node.store) == 0  # no bid escrowed: the deposit at the broker backs the tickets
        lines = work(node, "w1")  # takes and answers each (trust:0: accepted, one in 8 re-run first)
        assert sum("taken (bid 100, paid by a ticket at 1/10" in line for line in lines) == 10, lines
        assert owed(node, "w1") == 10
        paid = pay(node)  # the poster's node signs one ticket per accepted result
        assert len(paid) == 10 and pay(node) == []  # and never a second one
        work(node, "w1")  # the worker checks them, keeps the winners and redeems them
        assert owed(node, "w1") == 0
        for job_id in ids:
            entry = job(node.store, job_id)
            assert entry is not None and entry[0].status == "done"
            assert f"owed a ticket of face value {face} at 1/{odds} (worth the bid {bid})" in entry[0].history[-2]
    mine = earnings(node, "w1")
    assert len(mine.jobs) == jobs_count and mine.expected == jobs_count * bid and not mine.pending
    payer = broker.payer(node.store, address(node, "default"))
    assert payer is not None
    # every winning ticket redeemed, once: the broker paid as many as won, the worker got exactly that
    assert payer.redeemed == mine.won and payer.paid == mine.won_value == mine.won * face == mine.redeemed
    assert balance(node, "w1") - w1_before == mine.redeemed
    assert poster_before - balance(node, "default") == 0  # the poster paid from its deposit, not its balance
    # the expected payment is the bids; the actual one is within the binomial spread around it
    p = 1 / odds
    spread = math.sqrt(jobs_count * p * (1 - p))  # σ of the number of wins
    assert abs(mine.won - jobs_count * p) <= 5 * spread, (mine.won, jobs_count * p, spread)
    assert held(node) == total
    assert broker.used_count(node.store) == mine.won
    report = replay(node.store)
    assert report.divergence is None, report.divergence


def test_a_poster_without_a_deposit_is_refused_at_posting_in_one_line(node: Node) -> None:
    before = (balance(node, "default"), jobs(node.store))
    with pytest.raises(EnvelopeError, match=r"^0x[0-9a-f]{40} cannot pay this job by tickets: no deposit at the "
                       r"ticket broker \(fund one of at least the face value 1000") as refused:
        post(node, 1)
    assert "\n" not in str(refused.value)
    fund(node, deposit=999, reserve=500)  # below one winning ticket (100 × 10)
    with pytest.raises(EnvelopeError, match="its ticket deposit 999 is below one winning ticket's face value 1000"):
        post(node, 1)
    node.tickets.fund(deposit=1)
    node.tickets.unlock()
    with pytest.raises(EnvelopeError, match="its ticket funds are unlocking"):
        post(node, 1)
    assert (balance(node, "default") + 1_500, jobs(node.store)) == before
    node.tickets.fund(deposit=1)  # funding again cancels the unlock: now it may post
    post(node, 1)
    assert replay(node.store).divergence is None


def test_a_worker_the_reserve_does_not_back_cannot_take_a_ticket_job(node: Node) -> None:
    fund(node, deposit=10_000, reserve=4_000)  # backs w1 and w2, not the outsider
    job_id = post(node, 3)
    lines = work(node, "outsider")
    assert any("not taken: the poster's ticket reserve does not back it" in line for line in lines), lines
    with pytest.raises(EnvelopeError, match="cannot take this ticket-paid job: the poster's ticket reserve does not"):
        node.job_op("take", [job_id, int(time.time()), bytes(32)], sender="outsider")
    with pytest.raises(EnvelopeError, match=r"a take is \[job id, time, the ticket commitment\]"):
        node.job_op("take", [job_id], sender="w1")


def test_a_worker_can_refuse_ticket_paid_jobs(node: Node) -> None:
    fund(node, deposit=10_000, reserve=4_000)
    ticket_job = post(node, 5)
    ledger_job = node.job_op("post", post_args(os.urandom(16), "evm", DOUBLE, (6).to_bytes(32, "big"), 50_000, 100,
                                               50, "trust:0"))
    lines = work(node, "w1", tickets=False)
    assert any(f"job {ticket_job.hex()[:16]}: not taken: paid by tickets, and this worker takes none" in line
               for line in lines), lines
    assert any(f"job {ledger_job.hex()[:16]}: taken (bid 100, pledge 50)" in line for line in lines), lines
    lines = work(node, "w1", max_odds=5)  # tickets at 1/10 are too long odds for this worker
    assert any("wins with probability 1/10, less than this worker's 1/5" in line for line in lines), lines
    entry = job(node.store, ticket_job)
    assert entry is not None and not entry[0].takers
    work(node, "w2")  # another worker takes it
    entry = job(node.store, ticket_job)
    assert entry is not None and entry[0].status == "done"


def test_the_worker_refuses_a_ticket_that_does_not_pay_its_job(node: Node) -> None:
    fund(node, deposit=10_000, reserve=4_000)
    first, second = post(node, 1), post(node, 2)
    work(node, "w1")
    assert len(pay(node)) == 2
    box = drop_box(node, address(node, "w1"))
    ticket = (box / f"{first.hex()}.ticket").read_text()
    # the first job's ticket offered as the second's: another job's commitment
    (box / f"{second.hex()}.ticket").write_text(ticket)
    lines = work(node, "w1")
    assert any("ticket refused: the ticket does not carry the commitment" in line for line in lines), lines
    assert (box / f"{second.hex()}.refused").exists()
    # and the first's again: a second ticket for a job paid already
    (box / f"{first.hex()}.ticket").write_text(ticket)
    lines = work(node, "w1")
    assert any("is paid by a ticket already: a second one is refused" in line for line in lines), lines
    assert len(earnings(node, "w1").jobs) == 1 and owed(node, "w1") == 1


def test_a_poster_that_does_not_pay_gets_no_more_work(node: Node) -> None:
    fund(node, deposit=100_000, reserve=40_000)
    for n in range(6):
        post(node, n)
    lines = work(node, "w1", max_unpaid=4)
    assert sum(": taken (" in line for line in lines) == 4  # max_unpaid: then it waits for its tickets
    assert any("this worker has 4 of the poster's ticket-paid jobs unpaid or in hand" in line for line in lines), lines
    pay(node)
    lines = work(node, "w1", max_unpaid=4)
    assert sum("ticket taken" in line for line in lines) == 4 and sum(": taken (" in line for line in lines) == 2


@given(st.integers(1, 10**30), st.integers(1, MAX_ODDS))
def test_a_job_ticket_is_worth_its_bid(bid: int, odds: int) -> None:
    """Face value bid × N at threshold ⌊2**256 / N⌋: the expected value is the bid, short by less
    than one unit; and the ticket's fields hold those numbers."""
    face, threshold = face_value(bid, odds), win_threshold(odds)
    assert 0 <= bid * ONE - face * threshold < ONE  # face × p is the bid, short by less than one unit
    Ticket(bytes(32), bytes(20), face, threshold, 0, bytes(32), 1, 1)  # both fit a ticket


def test_win_probability_text() -> None:
    assert parse_odds("1/100") == 100 and parse_odds("1") == 1
    for bad in ("0.01", "2/100", "1/0", "1/x", ""):
        with pytest.raises(TicketError, match="a job ticket's win probability is 1/N"):
            parse_odds(bad)


def test_missive_job_pay_and_worker_run_with_tickets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISSIVE_UNENCRYPTED_KEYS", "1")
    d = str(tmp_path / "n")
    program = tmp_path / "double.hex"
    program.write_text(DOUBLE.hex())
    out = io.StringIO()

    def run(*args: str) -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            return cli([*args, "--dir", d])

    assert run("init") == 0
    for name in ("w1", "w2"):
        assert run("account", "new", name, "--fund", "1000000") == 0
        assert run("worker", "register", "--stake", "100000", "--from", name) == 0
    submit = ("job", "submit", str(program), "--input", "0x" + (7).to_bytes(32, "big").hex(), "--bid", "100",
              "--verify", "trust:0", "--pay", "tickets", "--win-prob", "1/4")
    out.truncate(0)
    assert run(*submit) == 2  # no deposit yet: one line, exit 2
    errors = [line for line in out.getvalue().splitlines() if line.strip()]
    assert len(errors) == 1 and "cannot pay this job by tickets: no deposit at the ticket broker" in errors[0], errors
    assert run("tickets", "fund", "--deposit", "10000", "--reserve", "2000") == 0
    assert run(*submit) == 0
    job_id = out.getvalue().split("posted job 0x")[1][:64]
    out.truncate(0)
    assert run("worker", "run", "--once", "--from", "w2", "--no-tickets") == 0
    assert "not taken: paid by tickets, and this worker takes none (--no-tickets)" in out.getvalue()
    assert run("worker", "run", "--once", "--from", "w1") == 0
    assert "paid by a ticket at 1/4" in out.getvalue() and "1 accepted job(s) still owed a ticket" in out.getvalue()
    out.truncate(0)
    assert run("job", "pay") == 0 and "a ticket to w1 (face value 400 at 1/4" in out.getvalue()
    assert run("worker", "run", "--once", "--from", "w1") == 0
    assert "ticket taken (face value 400 at 1/4)" in out.getvalue()
    assert "ticket earnings: 1 job(s) paid by ticket, expected 100" in out.getvalue()
    out.truncate(0)
    assert run("job", "status", job_id[:12]) == 0 and "owed a ticket of face value 400 at 1/4" in out.getvalue()
    assert "paid by lottery tickets: face value 400 at 1/4 each (expected value: the bid 100); 1 owed, 1 signed by " \
           "the poster's node (to w1)" in out.getvalue()
    assert run("job", "list") == 0 and "by tickets at 1/4" in out.getvalue()
    assert run("ledger") == 0 and "paid by lottery tickets at 1/4" in out.getvalue()
    assert run("job", "submit", str(program), "--bid", "1", "--verify", "trust", "--pay", "tickets", "--win-prob",
               "0.5") == 2
    assert "Traceback" not in out.getvalue()
    assert run("replay") == 0


def test_damaged_tickets_and_files_are_refused_in_one_line(node: Node, tmp_path: Path) -> None:
    fund(node, deposit=10_000, reserve=4_000)
    job_id = post(node, 1)
    work(node, "w1")
    box = drop_box(node, address(node, "w1"))
    box.mkdir(parents=True, exist_ok=True)
    (box / f"{job_id.hex()}.ticket").write_text("not hex at all\n")
    (box / "nonsense.ticket").write_text("00")
    (box / f"{bytes(32).hex()}.ticket").write_text("00")
    lines = work(node, "w1")
    refused = [line for line in lines if "ticket refused" in line]
    assert len(refused) == 3, lines
    assert any("malformed ticket: not hex" in line for line in refused)
    assert any("not named after a job id" in line for line in refused)
    assert any("no job 0000000000000000 on this ledger" in line for line in refused)
    assert earnings(node, "w1").jobs == () and owed(node, "w1") == 1  # still owed: nothing taken
    pay(node)  # the real ticket comes: taken
    assert any("ticket taken" in line for line in work(node, "w1"))
    (node.path / "tickets" / f"{address(node, 'w1').hex()}.jobs").write_bytes(b"\xc1 damaged")
    with pytest.raises(TicketError, match=r"^cannot read .*\.jobs: "):
        work(node, "w1")
