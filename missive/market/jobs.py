"""The job board (issue 25; docs/jobs.md): stateless jobs for registered workers, as signed ledger
records, checked and applied by one function live and in replay (as the worker registry is).

A **poster** posts a job: a stateless program (EVM code, or a circuit's bundle), its input, the
gas it may use, a **bid** paid to each worker whose result is accepted, the **pledge** a taker
locks from its registry stake, and how the result is verified:

- ``redundant:N`` (N workers, k = N//2 + 1 must agree): each taker first *commits* to
  ``keccak(job, worker, result, salt)`` and reveals only once all N have committed, so no worker
  can copy another's result, and a result is bound to the worker that signed it.  When all have
  revealed, a unanimous result is accepted; otherwise the board re-runs the program (it is
  stateless, so that re-run is evidence anyone can repeat) and accepts the re-run's result:
  every worker that gave another loses its pledge.
- ``trust[:T]``: one worker; accepted at once when the poster's trust in the worker (its record on
  this board, ``good / (good + bad + 1)``) is at least T (default 0.9) and the job does not fall in
  the random sample (1 in ``SAMPLE``, drawn from the job id and result); re-run otherwise, as for
  state diffs.  A new worker is therefore re-checked until it has earned trust.
- ``zk``: one worker answers with the circuit's outputs and a Groth16 proof, checked against the
  job's verification key by the verifier contract on Missive's VM (missive.market.zk.onledger);
  a proof that fails costs the pledge and the job is open again.

The bid is escrowed for every slot when the job is posted (``--pay ledger``); each accepted worker's
bid goes to its coinbase and its pledge back to its stake; forfeited pledges go to the poster (who paid for a
wrong answer's re-check); what is left of the escrow returns to the poster when the job ends.
Every decision is a consequence of records on the ledger, so replay reaches it again.

**Paid by lottery tickets** (``--pay tickets``, win probability 1/N; :mod:`missive.market.jobpay`):
no bid is escrowed; the poster must hold a deposit of at least one winning ticket's face value
(bid × N) at the ticket broker, not unlocking and not in default, and a reserve backing the
workers; a taker must be one of the workers that reserve backs and names, in its take, the
commitment its job ticket will carry.  An accepted taker gets its pledge back and is *owed* one
ticket, which the poster's node signs off the ledger (:mod:`missive.node.jobtickets`).

Records: ``["job", op, signer, *args, public key, signature]``, signed over
``keccak256(msgpack(["job", op, chain id, signer, *args]))``; ops ``post``, ``take``, ``commit``,
``reveal``, ``cancel``.  State lives in the store's meta table under ``job:`` (the job),
``jobcode:`` (program and input, written once) and ``jobrep:`` (a worker's record).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final, Protocol, cast

import attrs
import msgpack

from missive.identity import verify
from missive.mailbox.envelope import EnvelopeError, bytes_int, int_bytes
from missive.mailbox.records import Account, RecordError
from missive.market.jobrun import MAX_GAS, MAX_INPUT, MAX_PROGRAM, decode_result, run_program, stateless_refusal
from missive.market.tickets.broker import Payer
from missive.market.workers import Worker
from missive.vm.keccak import keccak256

JOB: Final = b"job:"
JOBCODE: Final = b"jobcode:"
REPUTATION: Final = b"jobrep:"
OPS: Final = ("post", "take", "commit", "reveal", "cancel", "expire")
KINDS: Final = ("evm", "zk")
MODES: Final = ("redundant", "trust", "zk")
#: the most workers one job may ask for
MAX_WORKERS: Final = 9
#: trust mode re-runs one job in SAMPLE even from a trusted worker
SAMPLE: Final = 8
#: trust mode's default threshold, per mille
DEFAULT_TRUST: Final = 900
#: seconds a taker has to answer, unless the poster says otherwise
DEFAULT_WINDOW: Final = 600


@attrs.frozen
class Taker:
    worker: bytes
    commitment: bytes = b""
    result: bytes | None = None
    verdict: str = ""
    #: when it took the job (seconds, the time its take record carries)
    taken_at: int = 0
    #: a ticket-paid job: the commitment (keccak256 of the worker's secret for this job) its ticket must carry
    pay_to: bytes = b""


@attrs.frozen
class Job:
    poster: bytes
    kind: str
    mode: str
    n: int
    k: int
    threshold: int
    gas: int
    bid: int
    pledge: int
    escrow: int
    status: str = "open"  # open, running (every slot taken), done, cancelled
    takers: tuple[Taker, ...] = ()
    outcome: bytes | None = None
    history: tuple[str, ...] = ()
    #: seconds each taker has to answer; after it the poster may expire the job (``expire``)
    window: int = DEFAULT_WINDOW
    #: 0: paid on the ledger from the escrow; N >= 1: paid by a lottery ticket winning with probability 1/N
    odds: int = 0

    def encode(self) -> bytes:
        # a ledger-paid job keeps the shape it had before tickets (the extra fields only when used)
        takers = [[t.worker, t.commitment, t.result, t.verdict, t.taken_at, *([t.pay_to] if t.pay_to else [])]
                  for t in self.takers]
        return cast(bytes, msgpack.packb(
            [self.poster, self.kind, self.mode, self.n, self.k, self.threshold, self.gas, int_bytes(self.bid),
             int_bytes(self.pledge), int_bytes(self.escrow), self.status, takers, self.outcome, list(self.history),
             self.window, *([self.odds] if self.odds else [])], use_bin_type=True))

    @property
    def by_tickets(self) -> bool:
        return self.odds > 0

    @classmethod
    def decode(cls, raw: bytes) -> Job:
        try:
            return cls._decode(raw)
        except (ValueError, TypeError, msgpack.ExtraData) as exc:
            raise RecordError(f"a job board entry does not decode ({exc})") from None

    @classmethod
    def _decode(cls, raw: bytes) -> Job:
        fields = msgpack.unpackb(raw)
        (poster, kind, mode, n, k, threshold, gas, bid, pledge, escrow, status, takers, outcome,
         history, window), odds = fields[:15], (fields[15:] or [0])[0]
        if len(fields) > 16:
            raise ValueError(f"{len(fields)} fields")
        return cls(bytes(poster), kind, mode, n, k, threshold, gas, bytes_int(bid, "bid"), bytes_int(pledge, "pledge"),
                   bytes_int(escrow, "escrow"), status,
                   tuple(Taker(bytes(w), bytes(c), bytes(r) if r is not None else None, v, at,
                               bytes(rest[0]) if rest else b"")
                         for w, c, r, v, at, *rest in takers),
                   bytes(outcome) if outcome is not None else None, tuple(history), window, odds)

    def taker(self, worker: bytes) -> Taker | None:
        return next((t for t in self.takers if t.worker == worker), None)

    @property
    def active(self) -> list[Taker]:
        """Takers still in the job (a zk taker whose proof failed is out, and may not take it again)."""
        return [t for t in self.takers if not t.verdict.startswith("rejected")]


class Board(Protocol):
    """The state the rules read and write: the store's write transaction live, dicts in replay."""

    def account(self, address: bytes) -> Account | None: ...
    def set_account(self, address: bytes, account: Account) -> None: ...
    def worker(self, address: bytes) -> Worker | None: ...
    def set_worker(self, address: bytes, worker: Worker) -> None: ...
    def job(self, job_id: bytes) -> Job | None: ...
    def set_job(self, job_id: bytes, job: Job) -> None: ...
    def code(self, job_id: bytes) -> tuple[bytes, bytes]: ...
    def set_code(self, job_id: bytes, program: bytes, data: bytes) -> None: ...
    def reputation(self, worker: bytes) -> tuple[int, int]: ...
    def set_reputation(self, worker: bytes, good: int, bad: int) -> None: ...
    def payer(self, address: bytes) -> Payer | None: ...


class MemoryBoard:
    """The board over plain dicts, for replay: accounts through the replay's own state."""

    def __init__(self, get_account: Callable[[bytes], Account | None], put_account: Callable[[bytes, Account], None],
                 workers: dict[bytes, Worker], payer: Callable[[bytes], Payer | None] = lambda _: None) -> None:
        self.get_account, self.put_account, self.workers = get_account, put_account, workers
        self._payer = payer  # the ticket broker's payer records, as replay rebuilds them
        self.jobs: dict[bytes, Job] = {}
        self.codes: dict[bytes, tuple[bytes, bytes]] = {}
        self.reputations: dict[bytes, tuple[int, int]] = {}

    def account(self, address: bytes) -> Account | None:
        return self.get_account(address)

    def set_account(self, address: bytes, account: Account) -> None:
        self.put_account(address, account)

    def worker(self, address: bytes) -> Worker | None:
        return self.workers.get(address)

    def set_worker(self, address: bytes, worker: Worker) -> None:
        self.workers[address] = worker

    def job(self, job_id: bytes) -> Job | None:
        return self.jobs.get(job_id)

    def set_job(self, job_id: bytes, job: Job) -> None:
        self.jobs[job_id] = job

    def code(self, job_id: bytes) -> tuple[bytes, bytes]:
        return self.codes.get(job_id, (b"", b""))

    def set_code(self, job_id: bytes, program: bytes, data: bytes) -> None:
        self.codes[job_id] = (program, data)

    def reputation(self, worker: bytes) -> tuple[int, int]:
        return self.reputations.get(worker, (0, 0))

    def payer(self, address: bytes) -> Payer | None:
        return self._payer(address)

    def set_reputation(self, worker: bytes, good: int, bad: int) -> None:
        self.reputations[worker] = (good, bad)


def digest(chain_id: int, op: str, signer: bytes, args: list[Any]) -> bytes:
    return keccak256(cast(bytes, msgpack.packb(["job", op, chain_id, signer, *args], use_bin_type=True)))


def job_id_of(chain_id: int, poster: bytes, args: list[Any]) -> bytes:
    """A job's id: the digest its poster signed (it names a fresh salt, so ids do not repeat)."""
    return digest(chain_id, "post", poster, args)


def commitment(job_id: bytes, worker: bytes, result: bytes, salt: bytes) -> bytes:
    """What a redundant job's taker commits to: its result, bound to itself and the job."""
    return keccak256(job_id + worker + keccak256(result) + salt)


def parse_verify(text: str) -> tuple[str, int, int, int]:
    """``redundant:N`` | ``trust[:T]`` | ``zk`` -> (mode, n, k, threshold per mille); BadInput-style
    EnvelopeError naming what is wrong."""
    mode, _, arg = text.partition(":")
    if mode == "redundant":
        if not arg.isdigit() or not 2 <= int(arg) <= MAX_WORKERS:
            raise EnvelopeError(f"redundant:N needs N between 2 and {MAX_WORKERS}, not {arg or 'nothing'!r}")
        n = int(arg)
        return mode, n, n // 2 + 1, 0
    if mode == "trust":
        try:
            threshold = round(float(arg) * 1000) if arg else DEFAULT_TRUST
        except ValueError:
            raise EnvelopeError(f"trust:T needs a threshold between 0 and 1, not {arg!r}") from None
        if not 0 <= threshold <= 1000:
            raise EnvelopeError(f"trust:T needs a threshold between 0 and 1, not {arg!r}")
        return mode, 1, 1, threshold
    if mode == "zk" and not arg:
        return mode, 1, 1, 0
    raise EnvelopeError(f"--verify {text!r}: one of redundant:N, trust, trust:T, zk")


def post_args(salt: bytes, kind: str, program: bytes, data: bytes, gas: int, bid: int, pledge: int, verify_mode: str,
              window: int = DEFAULT_WINDOW, odds: int = 0) -> list[Any]:
    """A post's signed fields; ``odds`` N >= 1 pays by lottery tickets winning with probability 1/N
    (a 13th field, absent for a job paid on the ledger)."""
    mode, n, k, threshold = parse_verify(verify_mode)
    return [salt, kind, program, data, gas, int_bytes(bid), int_bytes(pledge), mode, n, k, threshold, window,
            *([odds] if odds else [])]


# -- checking and applying one record ----------------------------------------------------------


def _int(value: Any, what: str, limit: int = 1 << 64) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < limit:
        raise EnvelopeError(f"malformed job record: {what} is not a number in range")
    return value


def _bytes(value: Any, what: str, length: int | None = None) -> bytes:
    if not isinstance(value, bytes) or (length is not None and len(value) != length):
        raise EnvelopeError(f"malformed job record: {what} is not {length or 'some'} bytes")
    return value


def _credit(board: Board, address: bytes, amount: int) -> None:
    account = board.account(address) or Account()
    board.set_account(address, account.replace(balance=account.balance + amount))


def _return_pledge(board: Board, worker: bytes, pledge: int) -> None:
    """Back to the stake; to the unbonding amount if the worker unbonded meanwhile."""
    entry = board.worker(worker) or Worker()
    if entry.unbonding or not entry.stake:
        board.set_worker(worker, attrs.evolve(entry, unbonding=entry.unbonding + pledge))
    else:
        board.set_worker(worker, attrs.evolve(entry, stake=entry.stake + pledge))


def _shown(address: bytes) -> str:
    return f"0x{address.hex()}"


def apply(op: str, signer: bytes, args: list[Any], public_key: bytes, signature: bytes, chain_id: int,
          board: Board) -> bytes:
    """Check one signed board operation against the state it meets and apply it; the job's id.
    Refused: EnvelopeError, one line, nothing changed (the caller's transaction is not committed)."""
    if op not in OPS:
        raise EnvelopeError(f"no job board operation {op!r} (one of {', '.join(OPS)})")
    account = board.account(signer)
    if account is None or account.is_contract:
        raise EnvelopeError(f"{_shown(signer)} is not an external account")
    if (not isinstance(public_key, bytes) or keccak256(public_key)[12:] != signer
            or not verify(public_key, digest(chain_id, op, signer, args), signature)):
        raise EnvelopeError(f"the {op} of {_shown(signer)} is not signed by its account")
    if op == "post":
        return _post(signer, args, account, chain_id, board)
    if not args:
        raise EnvelopeError("malformed job record: no job id")
    job_id = _bytes(args[0], "the job id", 32)
    job = board.job(job_id)
    if job is None:
        raise EnvelopeError(f"no job 0x{job_id.hex()} on this ledger")
    if job.status in ("done", "cancelled"):
        raise EnvelopeError(f"job 0x{job_id.hex()[:16]} is {job.status}")
    if op == "cancel":
        if signer != job.poster:
            raise EnvelopeError("only the job's poster can cancel it")
        if job.active:
            raise EnvelopeError("the job is taken: it can no longer be cancelled (a taker may be working on it)")
        _credit(board, job.poster, job.escrow)
        board.set_job(job_id, attrs.evolve(job, status="cancelled", escrow=0,
                                           history=(*job.history, f"cancelled: {job.escrow} back to the poster")))
        return job_id
    if op == "take":
        if len(args) != (3 if job.by_tickets else 2):
            raise EnvelopeError("malformed job record: a take is [job id, time" + (", the ticket commitment]: this job "
                                "is paid by tickets" if job.by_tickets else "]"))
        _take(job_id, job, signer, _int(args[1], "the take's time"), board,
              _bytes(args[2], "the ticket commitment", 32) if job.by_tickets else b"")
        return job_id
    if op == "expire":
        if signer != job.poster:
            raise EnvelopeError("only the job's poster can expire its silent takers")
        board.set_job(job_id, _expire(job_id, job, _int(args[1] if len(args) == 2 else None, "the time"), board))
        return job_id
    taker = job.taker(signer)
    if taker is None:
        raise EnvelopeError(f"{_shown(signer)} has not taken job 0x{job_id.hex()[:16]}: it cannot answer it")
    if taker.result is not None:
        raise EnvelopeError(f"{_shown(signer)} has answered job 0x{job_id.hex()[:16]} already")
    if op == "commit":
        if job.mode != "redundant":
            raise EnvelopeError(f"a {job.mode} job takes its result directly: reveal, no commit")
        if taker.commitment:
            raise EnvelopeError(f"{_shown(signer)} has committed to a result already")
        committed = _bytes(args[1] if len(args) > 1 else None, "the commitment", 32)
        board.set_job(job_id, _with_taker(job, attrs.evolve(taker, commitment=committed),
                                          f"{_shown(signer)} committed to a result"))
        return job_id
    if len(args) != 3:
        raise EnvelopeError("malformed job record: a reveal is [job id, result, salt]")
    result, salt = _bytes(args[1], "the result"), _bytes(args[2], "the salt")
    if len(result) > MAX_INPUT + MAX_PROGRAM:
        raise EnvelopeError(f"a result of {len(result)} bytes is too big")
    if job.mode == "redundant":
        if not taker.commitment:
            raise EnvelopeError("commit to the result first: a redundant job's results are revealed after every "
                                "taker has committed")
        if len(job.active) < job.n or any(not t.commitment for t in job.active):
            raise EnvelopeError(f"not every taker has committed yet ({sum(bool(t.commitment) for t in job.active)} "
                                f"of {job.n}): reveal after")
        if commitment(job_id, signer, result, salt) != taker.commitment:
            raise EnvelopeError("the result does not match the worker's commitment (a result is bound to its "
                                "worker and job)")
    job = _with_taker(job, attrs.evolve(taker, result=result), f"{_shown(signer)} answered")
    if job.mode == "redundant":
        if all(t.result is not None for t in job.active):
            job = _settle_redundant(job_id, job, board)
    elif job.mode == "trust":
        job = _settle_trust(job_id, job, signer, result, board)
    else:
        job = _settle_zk(job_id, job, signer, result, board)
    board.set_job(job_id, job)
    return job_id


def _post(poster: bytes, args: list[Any], account: Account, chain_id: int, board: Board) -> bytes:
    if len(args) not in (12, 13):
        raise EnvelopeError("malformed job record: a post has 12 fields (13 when paid by tickets)")
    salt, kind, program, data = args[0], args[1], args[2], args[3]
    _bytes(salt, "the salt", 16)
    if kind not in KINDS:
        raise EnvelopeError(f"no job kind {kind!r} (one of {', '.join(KINDS)})")
    program, data = _bytes(program, "the program"), _bytes(data, "the input")
    gas = _int(args[4], "the gas")
    bid, pledge = bytes_int(args[5], "bid"), bytes_int(args[6], "pledge")
    mode, n, k, threshold = args[7], _int(args[8], "N", MAX_WORKERS + 1), _int(args[9], "k"), _int(args[10], "T")
    window = _int(args[11], "the answer window")
    if not 1 <= window <= 30 * 86_400:
        raise EnvelopeError(f"a taker's time to answer is 1 s to 30 days, not {window} s")
    if mode not in MODES:
        raise EnvelopeError(f"no verification {mode!r} (one of {', '.join(MODES)})")
    if (mode == "zk") != (kind == "zk"):
        raise EnvelopeError("a circuit is verified by its proof (--verify zk), and only a circuit is")
    if n < 1 or k != (n // 2 + 1 if mode == "redundant" else 1) or (mode != "redundant" and n != 1):
        raise EnvelopeError("malformed job record: the worker counts do not fit the verification")
    if len(program) > MAX_PROGRAM:
        raise EnvelopeError(f"the program is too big: {len(program)} bytes, at most {MAX_PROGRAM}")
    if len(data) > MAX_INPUT:
        raise EnvelopeError(f"the input is too big: {len(data)} bytes, at most {MAX_INPUT}")
    if not 21_000 <= gas <= MAX_GAS:
        raise EnvelopeError(f"a job's gas is between 21000 and {MAX_GAS}, not {gas}")
    if kind == "evm":
        if (why := stateless_refusal(program)) is not None:
            raise EnvelopeError(why)
    else:
        from missive.market.zk.bundle import check_circuit_job

        check_circuit_job(program, data)
    if bid <= 0:
        raise EnvelopeError("a job's bid must be above 0")
    odds = _int(args[12], "the ticket odds") if len(args) == 13 else 0
    if len(args) == 13:
        from missive.market.jobpay import funding_refusal

        if (why := funding_refusal(board.payer(poster), bid, odds)) is not None:
            raise EnvelopeError(f"{_shown(poster)} cannot pay this job by tickets: {why}")
    escrow = 0 if odds else bid * n
    if escrow > account.balance:
        raise EnvelopeError(f"the bid escrow {escrow} ({bid} × {n} workers) is above the balance of "
                            f"{_shown(poster)} ({account.balance})")
    job_id = job_id_of(chain_id, poster, args)
    if board.job(job_id) is not None:
        raise EnvelopeError(f"job 0x{job_id.hex()[:16]} is posted already")
    board.set_account(poster, account.replace(balance=account.balance - escrow))
    board.set_code(job_id, program, data)
    verify_text = f"redundant:{n}" if mode == "redundant" else f"trust:{threshold / 1000:g}" if mode == "trust" else mode
    paid = (f"paid by lottery tickets: face value {bid * odds} at 1/{odds} each" if odds
            else f"{escrow} escrowed")
    board.set_job(job_id, Job(poster, kind, mode, n, k, threshold, gas, bid, pledge, escrow, window=window, odds=odds,
                              history=(f"posted by {_shown(poster)}: bid {bid} × {n} ({paid}), pledge {pledge}, "
                                       f"--verify {verify_text}, {window} s to answer",)))
    return job_id


def _take(job_id: bytes, job: Job, worker: bytes, now: int, board: Board, pay_to: bytes = b"") -> None:
    if job.status != "open":
        raise EnvelopeError(f"job 0x{job_id.hex()[:16]} has all its {job.n} workers")
    if job.taker(worker) is not None:
        raise EnvelopeError(f"{_shown(worker)} has taken this job already (once per job, whatever its verdict)")
    if worker == job.poster:
        raise EnvelopeError("a poster cannot work on its own job")
    entry = board.worker(worker)
    if entry is None or not entry.stake:
        raise EnvelopeError(f"{_shown(worker)} is not a registered worker (`missive worker register`)")
    if entry.stake < job.pledge:
        raise EnvelopeError(f"the job's pledge {job.pledge} is above the stake of {_shown(worker)} ({entry.stake})")
    if job.by_tickets:
        from missive.market.jobpay import take_refusal

        if (why := take_refusal(board.payer(job.poster), worker)) is not None:
            raise EnvelopeError(f"{_shown(worker)} cannot take this ticket-paid job: {why}")
    board.set_worker(worker, attrs.evolve(entry, stake=entry.stake - job.pledge))
    takers = (*job.takers, Taker(worker, taken_at=now, pay_to=pay_to))
    board.set_job(job_id, attrs.evolve(job, takers=takers, escrow=job.escrow + job.pledge,
                                       status="running" if len(job.active) + 1 == job.n else "open",
                                       history=(*job.history, f"taken by {_shown(worker)} (pledge {job.pledge} "
                                                f"locked)")))


def _expire(job_id: bytes, job: Job, now: int, board: Board) -> Job:
    """The poster ends the wait for takers silent past the answer window; each loses its pledge.

    A redundant job still gathering commitments, a trust job and a zk job open again for other
    workers.  A redundant job whose takers have all committed (its results are being revealed,
    so a newcomer could copy them) is decided at once by re-running the program: those who
    revealed its result are paid.  The window runs from a taker's take; in the reveal phase, from
    the last take (no one can reveal before every taker has committed)."""
    active = job.active
    revealing = job.mode == "redundant" and len(active) == job.n and all(t.commitment for t in active)
    if revealing:
        start = max(t.taken_at for t in active)
        silent = [t for t in active if t.result is None and now >= start + job.window]
    else:
        silent = [t for t in active if now >= t.taken_at + job.window
                  and (not t.commitment if job.mode == "redundant" else t.result is None)]
    if not silent:
        raise EnvelopeError(f"no taker is past its {job.window} s to answer")
    for taker in silent:
        job, _ = _pay(job, taker, board, False, f"no answer within {job.window} s")
    if not revealing:
        return attrs.evolve(job, status="open", history=(*job.history, "the job is open again"))
    answered = [t for t in job.takers if t.result is not None and not t.verdict]
    if not answered:
        return _finish(job, board, None, "expired: nobody revealed a result")
    accepted = _rerun(job_id, job, board)
    for taker in answered:
        good = taker.result == accepted
        job, _ = _pay(job, taker, board, good, "matches the program re-run on the ledger" if good
                      else "its result differs from the program's")
    return _finish(job, board, accepted, _accepted(job, accepted, "expired; result by re-running the program"))


def _with_taker(job: Job, taker: Taker, event: str) -> Job:
    return attrs.evolve(job, takers=tuple(taker if t.worker == taker.worker else t for t in job.takers),
                        history=(*job.history, event))


def _pay(job: Job, taker: Taker, board: Board, good: bool, why: str) -> tuple[Job, Taker]:
    """One taker's verdict: its bid and pledge back, or its pledge to the poster."""
    score = board.reputation(taker.worker)
    entry = board.worker(taker.worker) or Worker()
    if good and job.by_tickets:  # paid off the ledger: the poster's node owes it one ticket (docs/jobs.md)
        _return_pledge(board, taker.worker, job.pledge)
        board.set_reputation(taker.worker, score[0] + 1, score[1])
        event = (f"{_shown(taker.worker)} accepted ({why}): owed a ticket of face value {job.bid * job.odds} at "
                 f"1/{job.odds} (worth the bid {job.bid}) from the poster")
        job = attrs.evolve(job, escrow=job.escrow - job.pledge)
    elif good:
        coinbase = entry.coinbase or taker.worker
        _credit(board, coinbase, job.bid)
        _return_pledge(board, taker.worker, job.pledge)
        board.set_reputation(taker.worker, score[0] + 1, score[1])
        event = f"{_shown(taker.worker)} accepted ({why}): paid {job.bid} to {_shown(coinbase)}"
        job = attrs.evolve(job, escrow=job.escrow - job.bid - job.pledge)
    else:
        _credit(board, job.poster, job.pledge)
        board.set_reputation(taker.worker, score[0], score[1] + 1)
        event = f"{_shown(taker.worker)} rejected ({why}): pledge {job.pledge} forfeited to the poster"
        job = attrs.evolve(job, escrow=job.escrow - job.pledge)
    verdict = attrs.evolve(taker, verdict=("accepted: " if good else "rejected: ") + why)
    return _with_taker(job, verdict, event), verdict


def _finish(job: Job, board: Board, outcome: bytes | None, event: str) -> Job:
    if job.escrow:
        _credit(board, job.poster, job.escrow)
        event += f"; {job.escrow} of the escrow back to the poster"
    return attrs.evolve(job, status="done", escrow=0, outcome=outcome, history=(*job.history, event))


def _rerun(job_id: bytes, job: Job, board: Board) -> bytes:
    program, data = board.code(job_id)
    return run_program(program, data, job.gas)


def _settle_redundant(job_id: bytes, job: Job, board: Board) -> Job:
    results = [t.result or b"" for t in job.active]
    counts = {r: results.count(r) for r in results}
    best = max(counts, key=lambda r: counts[r])
    if counts[best] == job.n:
        accepted, how = best, f"all {job.n} agree"
    else:
        accepted = _rerun(job_id, job, board)  # the evidence: the stateless program run again on the ledger
        agreeing = counts.get(accepted, 0)
        how = (f"{agreeing} of {job.n} agree, confirmed by re-running the program" if agreeing >= job.k
               else f"only {agreeing} of {job.n} match the program re-run on the ledger")
    for taker in job.active:
        good = taker.result == accepted
        job, _ = _pay(job, taker, board, good, how if good else "its result differs from the program's")
    return _finish(job, board, accepted, _accepted(job, accepted, "result accepted"))


def _settle_trust(job_id: bytes, job: Job, worker: bytes, result: bytes, board: Board) -> Job:
    good, bad = board.reputation(worker)
    trust = good * 1000 // (good + bad + 1)
    sampled = keccak256(job_id + result)[0] % SAMPLE == 0
    taker = job.taker(worker)
    assert taker is not None
    if trust >= job.threshold and not sampled:
        job, _ = _pay(job, taker, board, True, f"trust {trust / 1000:g} ≥ {job.threshold / 1000:g}")
        return _finish(job, board, result, _accepted(job, result, "result accepted on trust"))
    reason = f"trust {trust / 1000:g} < {job.threshold / 1000:g}" if trust < job.threshold else "in the random sample"
    rerun = _rerun(job_id, job, board)
    if rerun == result:
        job, _ = _pay(job, taker, board, True, f"{reason}: re-run, same result")
    else:
        job, _ = _pay(job, taker, board, False, f"{reason}: re-run, the result differs")
    return _finish(job, board, rerun, _accepted(job, rerun, "result accepted after re-running"))


def _settle_zk(job_id: bytes, job: Job, worker: bytes, result: bytes, board: Board) -> Job:
    from missive.market.zk.bundle import check_on_ledger

    program, data = board.code(job_id)
    taker = job.taker(worker)
    assert taker is not None
    verdict = check_on_ledger(program, data, result)
    if verdict is None:
        job, _ = _pay(job, taker, board, True, "the proof verifies on the ledger")
        return _finish(job, board, result, f"proof accepted: {_describe_zk(result)}")
    job, _ = _pay(job, taker, board, False, verdict)
    # the slot is free again: another worker may take the job
    return attrs.evolve(job, status="open", history=(*job.history, "the job is open again"))


def _accepted(job: Job, result: bytes, how: str) -> str:
    """The job's last event; a run that did not end well is named as what the program does."""
    text = f"{how}: {_describe(result)}"
    status = _describe(result).split(" 0x")[0]
    if status == "out of gas":
        text += f" (the program did not finish within its gas ({job.gas}): a job that never ends)"
    elif status not in ("success", "revert") and not status.endswith("bytes)"):
        text += " (the program failed)"
    return text


def _describe(result: bytes) -> str:
    try:
        status, output = decode_result(result)
    except (ValueError, TypeError, msgpack.ExtraData):
        return f"{len(result)} bytes"
    return f"{status} 0x{output.hex()}" if len(output) <= 64 else f"{status} ({len(output)} bytes)"


def _describe_zk(result: bytes) -> str:
    try:
        outputs = json.loads(msgpack.unpackb(result)[0])
    except (ValueError, TypeError, IndexError, msgpack.ExtraData):
        return f"{len(result)} bytes"
    return f"outputs {outputs}"


__all__ = ["JOB", "JOBCODE", "OPS", "REPUTATION", "Board", "Job", "MemoryBoard", "Taker", "apply", "commitment", "digest",
           "job_id_of", "parse_verify", "post_args"]
