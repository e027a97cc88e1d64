"""The demo: contract actors messaging each other on a fresh embedded store.

``missive demo`` runs :func:`run_demo` with a terminal view (``missive/cli/demo_cmd.py``).
The scenario is written against the public node API (:class:`~missive.node.NodeAPI`) only, so it
doubles as a worked example of that API.  It walks through every kind of message:

1. three ``deploy`` messages: an ERC20 token, an escrow, a ticker (``examples/``);
2. ``call`` messages: token transfers;
3. a request and its reply: the escrow asks the token to ``transferFrom`` the buyer and
   marks the deal FUNDED only when the ``reply`` says it worked;
4. a ``query``: the escrow audits its own token balance and acts on the answer;
5. a failing callee: a deal without approval is CANCELLED by the failure reply;
6. a settlement: the escrow pays the seller, again by request and reply;
7. a ``bounce``: a native-coin deal that fails returns its value to the buyer;
8. ``scheduled`` messages: the ticker wakes itself up three times;
9. the market (a node alone): transfers offering different bids wait together, the lowest one's
   sender raises it, and the round serves them highest bid first, the fees landing in the
   coinbase of the node's worker;
10. bulk traffic: many senders, many transfers, group-committed;

then checks what a user should be able to rely on: the token supply and the native
coin are conserved, and a replay of the ledger alone reproduces every receipt.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import attrs

from missive.errors import MissiveError
from missive.mailbox.envelope import Envelope, Kind
from missive.mailbox.records import Receipt
from missive.node import Contract, Node, NodeAPI, Wallet

#: Where the example contracts live: the repository's ``examples/`` folder.
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TOKEN_SUPPLY = 1_000_000
NATIVE_GRANT = 10**18


class DemoError(MissiveError):
    """The demo cannot run (e.g. the examples folder is missing)."""


class DemoView(Protocol):
    """What the demo tells its audience; the CLI renders it with rich."""

    def begin(self, node: NodeAPI, names: dict[bytes, str]) -> None:
        """The node the demo runs on, and the names it gives addresses (filled in as it goes)."""

    def step(self, number: int, title: str, explanation: str) -> None: ...

    def round(self, pairs: list[tuple[Envelope, Receipt]]) -> None: ...

    def bulk_start(self, total: int) -> None: ...

    def bulk_advance(self, handled: int) -> None: ...

    def bulk_done(self, handled: int, seconds: float) -> None: ...

    def note(self, text: str) -> None:
        """A line of plain words after a scene (what it showed that no message says)."""



@attrs.frozen
class DemoResult:
    """What the demo ends with, for the final screen (and for tests)."""

    token_balances: dict[str, int]
    native_balances: dict[str, int]
    deals: list[dict[str, Any]]
    ticks: list[int]
    messages_by_kind: dict[str, int]
    receipts_by_status: dict[str, int]
    ledger_records: int
    bulk_messages: int
    bulk_seconds: float
    supply_conserved: bool
    native_conserved: bool
    replay_checked: int
    replay_problem: str | None


@attrs.define
class Cast:
    """The demo's accounts and contracts, and the names the view shows for their addresses."""

    node: NodeAPI
    alice: Wallet
    bob: Wallet
    carol: Wallet
    token: Contract
    escrow: Contract
    ticker: Contract
    names: dict[bytes, str] = attrs.field(factory=dict)


def example(name: str) -> Path:
    path = EXAMPLES / name
    if not path.is_file():
        raise DemoError(f"the demo needs {path}; run it from a source checkout (pip install -e .)")
    return path


def run_demo(path: Path, view: DemoView, *, bulk: int = 2000, senders: int = 20, pace: float = 0.0,
             seed: int = 7, node: NodeAPI | None = None) -> DemoResult:
    """Run the whole scenario on a fresh node directory at ``path``, or on ``node`` if given.

    ``node`` is any implementation of the node API: the cluster demo passes a
    :class:`~missive.cluster.remote.RemoteNode`, so one scenario serves both.
    The demo closes it at the end.
    """
    for needed in ("Token.vy", "Escrow.vy", "Ticker.vy"):
        example(needed)
    if node is None:
        node = Node.init(path, encrypt_keys=False)  # a demo node: its keys are throw-away (missive.keys)
    names: dict[bytes, str] = {}
    view.begin(node, names)
    stop_observing = node.observe(view.round)
    try:
        cast = _deploy(node, view, names)
        _scenes(cast, view, pace)
        traffic = 10 if _market(cast, view, pace) else 9
        stop_observing()  # from here on, the view shows progress, not each message
        bulk_seconds = _bulk_traffic(cast, view, bulk, senders, random.Random(seed), traffic)
        return _final_state(cast, bulk, bulk_seconds)
    finally:
        node.close()


def _deploy(node: NodeAPI, view: DemoView, names: dict[bytes, str]) -> Cast:
    view.step(1, "Deploy three contracts",
              "Each deploy is a message; the contract exists once its actor has handled it.")
    alice = node.new_account("alice", balance=NATIVE_GRANT)
    bob = node.new_account("bob", balance=NATIVE_GRANT)
    carol = node.new_account("carol", balance=NATIVE_GRANT)
    _, token = node.deploy_message(example("Token.vy"), "Demo Token", "DEMO", TOKEN_SUPPLY, sender=alice)
    _, escrow = node.deploy_message(example("Escrow.vy"), sender=alice)
    _, ticker = node.deploy_message(example("Ticker.vy"), sender=alice)
    cast = Cast(node, alice, bob, carol, token, escrow, ticker, names)
    names.update({alice.address: "alice", bob.address: "bob", carol.address: "carol",
                       token.address: "Token", escrow.address: "Escrow", ticker.address: "Ticker"})
    node.run_until_idle()
    return cast


def _scenes(cast: Cast, view: DemoView, pace: float) -> None:
    node, token, escrow = cast.node, cast.token, cast.escrow
    alice, bob, carol = cast.alice, cast.bob, cast.carol

    def scene(number: int, title: str, explanation: str, send: Callable[[], object]) -> None:
        view.step(number, title, explanation)
        send()
        node.run_until_idle()
        if pace:
            time.sleep(pace)

    scene(2, "Token transfers", "Plain call messages: the token handles them one at a time, in order.",
          lambda: (token.transfer(bob.address, 5_000, sender=alice), token.transfer(carol.address, 3_000, sender=alice)))
    scene(3, "A request and its reply",
          "bob approves the escrow, then opens a deal.  The escrow asks the token to transferFrom bob "
          "and marks the deal FUNDED only when the reply says it worked.",
          lambda: (token.approve(escrow.address, 1_000, sender=bob),
                   escrow.openToken(token.address, carol.address, 1_000, 50, sender=bob)))
    scene(4, "A query and its reply",
          "The escrow audits its token balance: a STATICCALL becomes a query; the answer arrives "
          "later, in onReply, and the escrow checks it covers its funded deals.",
          lambda: escrow.audit(token.address, sender=alice))
    scene(5, "A failing callee",
          "carol opens a deal without approving the escrow: transferFrom reverts in the token, "
          "the failure comes back as a reply, and the escrow cancels the deal.",
          lambda: escrow.openToken(token.address, bob.address, 700, 50, sender=carol))
    scene(6, "Settlement",
          "bob releases deal 1: the escrow marks the payment in flight, asks the token to pay carol, "
          "and settles when the reply arrives.",
          lambda: escrow.release(1, sender=bob))
    scene(7, "A bounce",
          "carol opens a native-coin deal with herself as seller: the handler reverts, and the coins "
          "she sent come back to her in a bounce message.",
          lambda: escrow.openNative(carol.address, 50, sender=carol, value=10**15))
    scene(8, "Scheduled messages",
          "The ticker asks the system contract to wake it up every 10 units of logical time, three times.",
          lambda: cast.ticker.start(10, 3, sender=alice, gas=2_000_000))


#: the market scene: (sender, bid) of the transfers that wait together, in the order they are sent;
#: the last one (alice's, the lowest bid, queued last) is then raised to RAISED_BID
MARKET_BIDS = (("bob", 3), ("carol", 5), ("bob", 3), ("carol", 5), ("alice", 1))
RAISED_BID = 9


def _market(cast: Cast, view: DemoView, pace: float) -> bool:
    """The market scene, on a node alone (its messages wait together until the round; a cluster node
    handles each as it arrives, so the scene would show nothing there); False if skipped."""
    node = cast.node
    raise_bid = getattr(node, "raise_bid", None)
    store = getattr(node, "store", None)
    if raise_bid is None or store is None:
        return False
    view.step(9, "The market",
              "Five transfers wait together, each offering a fee per gas (its bid): bob's 3, carol's 5, and "
              "alice's 1, sent last. alice raises hers to 9: the round serves the highest bids first (each "
              "sender's own messages in order), and every run pays its gas used × its bid to the node's worker.")
    coinbase = store.coinbase()
    cast.names.setdefault(coinbase, "worker")
    before = node.balance(coinbase)
    wallets = {"alice": cast.alice, "bob": cast.bob, "carol": cast.carol}
    pays = {"alice": cast.bob, "bob": cast.carol, "carol": cast.bob}  # bob and carol pay each other back
    sent = [cast.token.transfer.send(pays[who].address, 1, sender=wallets[who], bid=bid) for who, bid in MARKET_BIDS]
    top_up = raise_bid(sent[-1].id, RAISED_BID)
    view.note(f"alice raised her transfer from bid 1 to {RAISED_BID}: {top_up} more wei escrowed")
    node.run_until_idle()
    fees = sum(receipt.fee for s in sent if (receipt := node.receipt(s.id)) is not None)
    view.note(f"fees: {node.balance(coinbase) - before} wei landed in the worker's coinbase ({fees} from these "
              "five runs); the unused gas of each escrow went back to its sender")
    if pace:
        time.sleep(pace)
    return True


def _bulk_traffic(cast: Cast, view: DemoView, bulk: int, senders: int, rng: random.Random, number: int = 9) -> float:
    """Many senders send token transfers; the runtime handles them in fair, group-committed rounds."""
    if bulk <= 0:
        return 0.0
    node, token = cast.node, cast.token
    view.step(number, "Traffic",
              f"{senders} accounts send {bulk} token transfers to each other; the runtime handles them "
              "in fair rounds and commits each round in one transaction.")
    crowd = [node.new_account(f"sender{i:02d}") for i in range(senders)]
    for wallet in crowd:
        cast.names[wallet.address] = wallet.name
    calls: list[tuple[object, object, bytes]] = []
    for _ in range(bulk):
        source, target = rng.sample(crowd, 2)
        calls.append((source, token.address, token.transfer.encode(target.address, rng.randint(1, 100))))
    node.send_many([(cast.alice, token.address, token.transfer.encode(w.address, 10_000)) for w in crowd])
    node.run_until_idle()
    view.bulk_start(bulk)
    handled = 0

    def progress(pairs: list[tuple[Envelope, Receipt]]) -> None:
        nonlocal handled
        handled += len(pairs)
        view.bulk_advance(handled)

    stop = node.observe(progress)
    started = time.perf_counter()
    for start in range(0, len(calls), 500):
        node.send_many(calls[start:start + 500])
    node.run_until_idle()
    seconds = time.perf_counter() - started
    stop()
    view.bulk_done(handled, seconds)
    return seconds


def _held_by_market(node: NodeAPI) -> int:
    """Coin the worker registry holds (stakes, unbonding stakes) or burned by slashing, on a node
    alone (on a cluster the registry is an actor: its coin is its account's balance)."""
    store = getattr(node, "store", None)
    if store is None:
        return 0
    return int(sum(w.stake + w.unbonding for _, w in store.workers()) + store.burned())


def _final_state(cast: Cast, bulk: int, bulk_seconds: float) -> DemoResult:
    node, token, escrow = cast.node, cast.token, cast.escrow
    holders = [a for a in cast.names if a not in (cast.ticker.address,)]
    token_balances = {cast.names[a]: int(token.balanceOf(a, sender=cast.alice)) for a in holders}
    native_balances = {cast.names[a]: node.balance(a) for a in cast.names}
    deals = []
    for deal_id in range(1, int(escrow.dealCount(sender=cast.alice)) + 1):
        buyer, seller, deal_token, amount, _deadline, stage = escrow.deals(deal_id, sender=cast.alice)
        deals.append({"deal": deal_id, "buyer": cast.names.get(_raw(buyer), buyer),
                      "seller": cast.names.get(_raw(seller), seller),
                      "token": "native" if int(deal_token, 16) == 0 else cast.names.get(_raw(deal_token), deal_token),
                      "amount": amount, "stage": stage_name(stage)})
    count = int(cast.ticker.count(sender=cast.alice))
    ticks = [int(cast.ticker.history(i, sender=cast.alice)) for i in range(1, count + 1)]
    kinds: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    genesis = 0  # what genesis created (on a cluster, other accounts such as the launcher's `default` too)
    for record in node.iter_ledger():
        if record.type == "genesis":
            genesis += record.balance
        elif record.type == "receipt" and record.envelope is not None and record.receipt is not None:
            kinds[record.envelope.kind.name.lower()] += 1
            statuses[record.receipt.status] += 1
    in_flight = sum(e.value + e.gas * e.bid for e in node.pending()) + _held_by_market(node)
    replay_checked, replay_problem = node.replay_check()
    return DemoResult(
        token_balances=token_balances,
        native_balances=native_balances,
        deals=deals,
        ticks=ticks,
        messages_by_kind=dict(kinds),
        receipts_by_status=dict(statuses),
        ledger_records=node.ledger_length(),
        bulk_messages=bulk,
        bulk_seconds=bulk_seconds,
        supply_conserved=sum(token_balances.values()) == TOKEN_SUPPLY,
        native_conserved=sum(a.balance for a in node.accounts().values()) + in_flight == genesis,
        replay_checked=replay_checked,
        replay_problem=replay_problem,
    )


STAGES = ("AWAITING_FUNDS", "FUNDED", "RELEASING", "REFUNDING", "RELEASED", "REFUNDED", "CANCELLED")


def stage_name(flag: int) -> str:
    """Vyper flags are bit masks: bit i is the i-th member."""
    names = [name for i, name in enumerate(STAGES) if flag >> i & 1]
    return "|".join(names) or "NONE"


def _raw(address: str | bytes) -> bytes:
    return address if isinstance(address, bytes) else bytes.fromhex(address.removeprefix("0x"))


def describe(envelope: Envelope, receipt: Receipt, names: dict[bytes, str],
             functions: Callable[[bytes, bytes], str | None], request_of: Callable[[bytes], Envelope | None]) -> str:
    """One line of plain words for a handled message: ``bob → Escrow openToken(...)``."""
    who = names.get(envelope.sender, "0x" + envelope.sender.hex()[:8])
    whom = names.get(envelope.recipient, "0x" + envelope.recipient.hex()[:8])
    if envelope.kind in (Kind.REPLY, Kind.BOUNCE):
        request = request_of(envelope.request_id)
        asked = (functions(request.recipient, request.payload) if request is not None else None) or "a request"
        if envelope.kind is Kind.BOUNCE:
            return f"{who} → {whom}  returns {envelope.value} wei ({asked} failed)"
        return f"{who} → {whom}  answers {asked}: {'succeeded' if envelope.success else 'failed'}"
    if envelope.kind is Kind.DEPLOY:
        return f"{who} → {whom}  deploy ({len(envelope.payload)} bytes of init code)"
    call = functions(envelope.recipient, envelope.payload) or f"{len(envelope.payload)} bytes"
    value = f" + {envelope.value} wei" if envelope.value else ""
    return f"{who} → {whom}  {call}{value}"


def shown(value: Any, names: dict[bytes, str]) -> str:
    """An ABI-decoded value for people: known addresses by name, long bytes shortened."""
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return names.get(bytes.fromhex(value[2:]), value[:10])
    if isinstance(value, bytes):
        return "0x" + value.hex()[:8]
    return str(value)


def function_namer(node: NodeAPI, names: dict[bytes, str]) -> Callable[[bytes, bytes], str | None]:
    """``transfer(bob, 5000)`` for a payload the recipient's ABI knows."""
    from eth_abi.abi import decode as abi_decode

    by_selector: dict[tuple[bytes, bytes], Any] = {}
    for address, (contract_name, abi) in node.abis().items():
        for fn in node.at(address, abi, contract_name).functions():
            by_selector[(address, fn.selector)] = fn

    def name(address: bytes, payload: bytes) -> str | None:
        fn = by_selector.get((address, payload[:4]))
        if fn is None:
            return None
        try:
            values = abi_decode(fn.inputs, payload[4:])
        except Exception:
            return f"{fn.name}(?)"
        return f"{fn.name}({', '.join(shown(v, names) for v in values)})"

    return name
