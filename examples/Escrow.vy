# pragma version ^0.4.0
# An escrow for ERC20 tokens and for native coin, written for Missive's message
# semantics (see GUIDE.md).  Every external call below is a message handled
# *later* by the other actor; its outcome comes back, if we ask for it, as a
# reply to `onReply`.  Between sending a request and getting its reply, any
# number of other messages may be handled here, so:
#
#   * every request is recorded in `pending` (request id -> what it was for,
#     and who must answer it); `onReply` accepts only those, from that account,
#     once;
#   * state moves *before* the message is sent (AWAITING_FUNDS, RELEASING,
#     REFUNDING) so no other message can act on a deal whose outcome is in
#     flight: this is the "lock" that replaces Ethereum's synchronous call;
#   * `onReply` re-checks the deal's stage instead of assuming nothing changed.
#
# Deal stages (token deals):
#
#   openToken:  AWAITING_FUNDS --transferFrom ok-----> FUNDED
#                              --transferFrom failed-> CANCELLED
#   release:    FUNDED -> RELEASING --transfer ok----> RELEASED
#   refund:     FUNDED -> REFUNDING --transfer ok----> REFUNDED
#               (a failed transfer puts the deal back to FUNDED)
#
# Funding uses approve + transferFrom, not "send us the tokens, then we ask the
# token for our balance": a balance only shows that *someone* sent tokens, so
# any buyer could claim another buyer's transfer.  The balance query is used
# for what it can show: a solvency audit (`audit`).
#
# Native-coin deals are FUNDED by the `openNative` message itself (its value
# arrives with it; if the handler fails, the value goes back to the buyer in a
# `bounce`).  Settling them credits the payee, who pulls the coins with
# `withdraw` (see there for why).

interface System:
    def lastMessageId() -> bytes32: view
    def now() -> uint256: view

SYSTEM: constant(address) = 0x000000000000000000000000006D697373697665

# Gas each request carries.  It pays for the callee's run, and what the callee
# leaves unused travels back with the reply and pays for our `onReply`, so it
# must cover both.  It comes out of the gas of the handler that sends it.
TOKEN_GAS: constant(uint256) = 200_000
PAYOUT_GAS: constant(uint256) = 100_000
# The longest reply data onReply accepts.  Longer data (e.g. a long revert
# string) would make onReply's own ABI decoding revert and the reply be lost.
MAX_REPLY: constant(uint256) = 1024
# Logical-time units after which a stuck native withdrawal may be settled.
WITHDRAW_TIMEOUT: constant(uint256) = 1000

flag Stage:
    AWAITING_FUNDS
    FUNDED
    RELEASING
    REFUNDING
    RELEASED
    REFUNDED
    CANCELLED

flag Action:
    FUND
    PAY
    WITHDRAW
    AUDIT

struct Deal:
    buyer: address
    seller: address
    token: address      # empty(address) for native coin
    amount: uint256
    deadline: uint256   # logical time from which the buyer alone may take a refund
    stage: Stage

struct Request:
    action: Action
    callee: address     # the only account whose reply we accept
    deal: uint256
    amount: uint256     # WITHDRAW: coins in flight; AUDIT: the balance we must at least see

event Opened:
    deal: indexed(uint256)
    buyer: indexed(address)
    seller: indexed(address)
    token: address
    amount: uint256

event Funded:
    deal: indexed(uint256)

event Cancelled:
    deal: indexed(uint256)

event Settled:
    deal: indexed(uint256)
    stage: Stage

event PaymentFailed:
    deal: indexed(uint256)

event Withdrawn:
    payee: indexed(address)
    amount: uint256
    ok: bool

event Audited:
    token: indexed(address)
    balance: uint256
    expected: uint256
    ok: bool

deals: public(HashMap[uint256, Deal])
dealCount: public(uint256)
pending: public(HashMap[bytes32, Request])
# What FUNDED deals hold, per token (empty(address): native coin).  Deals whose
# payment is in flight are not counted: their coins may already be gone.
held: public(HashMap[address, uint256])
# Native coin owed to payees, and its total.
owed: public(HashMap[address, uint256])
owedTotal: public(uint256)
# The native withdrawal in flight (at most one, see `withdraw`) and when it left.
withdrawing: public(bytes32)
withdrawingSince: public(uint256)


# -- opening deals -------------------------------------------------------------------


@external
def openToken(token: address, seller: address, amount: uint256, timeout: uint256) -> uint256:
    """
    @notice Open a token deal.  The buyer must have approved this escrow for
            `amount` on `token` first (and that approval must have been handled
            by the token before our transferFrom arrives, or funding fails and
            the deal is CANCELLED: open a new one).
    """
    assert token.is_contract, "token has no code"  # EXTCODESIZE of others is allowed: code is immutable
    assert amount > 0, "empty deal"
    deal_id: uint256 = self._open(msg.sender, seller, token, amount, timeout, Stage.AWAITING_FUNDS)
    # State first, message last.  We ask for a reply (max_outsize > 0): it will
    # tell us whether the tokens moved.  The CALL itself returns at once, with
    # no data: it only queued the message.
    self._request(token, abi_encode(msg.sender, self, amount, method_id=method_id("transferFrom(address,address,uint256)")),
                  Action.FUND, deal_id)
    return deal_id


@payable
@external
def openNative(seller: address, timeout: uint256) -> uint256:
    """
    @notice Open a native-coin deal funded by this message's value.  If anything
            here fails, the value is not lost: it comes back to the buyer in a
            `bounce` message.
    """
    assert msg.value > 0, "send the amount as value"
    deal_id: uint256 = self._open(msg.sender, seller, empty(address), msg.value, timeout, Stage.FUNDED)
    self.held[empty(address)] += msg.value
    log Funded(deal=deal_id)
    return deal_id


@internal
def _open(buyer: address, seller: address, token: address, amount: uint256, timeout: uint256, stage: Stage) -> uint256:
    assert seller != empty(address) and seller != buyer, "bad seller"
    deal_id: uint256 = self.dealCount + 1
    self.dealCount = deal_id
    self.deals[deal_id] = Deal(buyer=buyer, seller=seller, token=token, amount=amount,
                               deadline=self._now() + timeout, stage=stage)
    log Opened(deal=deal_id, buyer=buyer, seller=seller, token=token, amount=amount)
    return deal_id


# -- settling deals ------------------------------------------------------------------


@external
def release(deal_id: uint256):
    """@notice The buyer pays the seller."""
    deal: Deal = self.deals[deal_id]
    assert msg.sender == deal.buyer, "only the buyer releases"
    assert deal.stage == Stage.FUNDED, "deal is not funded (or a payment is in flight)"
    self._pay(deal_id, deal, deal.seller, Stage.RELEASING, Stage.RELEASED)


@external
def refund(deal_id: uint256):
    """@notice The seller may refund at any time; the buyer once the deadline has passed."""
    deal: Deal = self.deals[deal_id]
    assert deal.stage == Stage.FUNDED, "deal is not funded (or a payment is in flight)"
    if msg.sender == deal.buyer:
        assert self._now() >= deal.deadline, "the buyer must wait for the deadline"
    else:
        assert msg.sender == deal.seller, "only the buyer or the seller refunds"
    self._pay(deal_id, deal, deal.buyer, Stage.REFUNDING, Stage.REFUNDED)


@internal
def _pay(deal_id: uint256, deal: Deal, payee: address, in_flight: Stage, done: Stage):
    self.held[deal.token] -= deal.amount
    if deal.token == empty(address):
        # Native coin: credit the payee now; the payee pulls it with withdraw().
        self.deals[deal_id].stage = done
        self._credit(payee, deal.amount)
        log Settled(deal=deal_id, stage=done)
        return
    # Mark the payment as in flight *before* sending it: until the reply comes,
    # release/refund see a deal that is not FUNDED and refuse to pay twice.
    self.deals[deal_id].stage = in_flight
    self._request(deal.token, abi_encode(payee, deal.amount, method_id=method_id("transfer(address,uint256)")),
                  Action.PAY, deal_id)


# -- native coin: pull payments ------------------------------------------------------


@external
def withdraw():
    """
    @notice Send the caller the native coin it is owed.
    @dev If the caller cannot take the coins (its code fails), they come back in a
         `bounce` and the failure reply re-credits the caller.  The runtime
         runs onReply only for real replies, but a withdrawal can also be
         settled as failed by the timeout below, with no reply at all; so a
         failure is believed only when the coins are really back, which is a
         check on our own balance.  That check is exact only if no other
         withdrawal's bounced coins can be mistaken for these, hence one native
         withdrawal in flight at a time.
    """
    if self.withdrawing != empty(bytes32):
        assert self._now() >= self.withdrawingSince + WITHDRAW_TIMEOUT, "a withdrawal is in flight, try later"
        self._settle_withdrawal(self.pending[self.withdrawing], False)
    amount: uint256 = self.owed[msg.sender]
    assert amount > 0, "nothing owed"
    self.owed[msg.sender] = 0
    self.owedTotal -= amount
    # The value leaves our balance now, into the message.
    nothing_yet: Bytes[32] = raw_call(msg.sender, b"", value=amount, max_outsize=32, gas=PAYOUT_GAS)
    request_id: bytes32 = staticcall System(SYSTEM).lastMessageId()
    self.pending[request_id] = Request(action=Action.WITHDRAW, callee=msg.sender, deal=0, amount=amount)
    self.withdrawing = request_id
    self.withdrawingSince = self._now()


@internal
def _credit(payee: address, amount: uint256):
    self.owed[payee] += amount
    self.owedTotal += amount


@internal
def _settle_withdrawal(req: Request, reported_failure: bool):
    """
    Close the withdrawal in flight.  Its coins are back (the payee failed) iff our
    balance covers everything we owe plus them: nothing else can add coins here
    (no __default__: plain sends fail and bounce back to their sender).  The
    runtime delivers a failed call's bounce before its reply, so a genuine
    failure reply always finds the coins back.
    """
    self.pending[self.withdrawing] = empty(Request)
    self.withdrawing = empty(bytes32)
    back: bool = self.balance >= self.held[empty(address)] + self.owedTotal + req.amount
    if reported_failure:
        assert back, "failure reported but the coins are not back"
    if back:
        self._credit(req.callee, req.amount)
    log Withdrawn(payee=req.callee, amount=req.amount, ok=not back)


# -- solvency audit: a query ---------------------------------------------------------


@external
def audit(token: address):
    """
    @notice Ask `token` for our balance and check it covers the FUNDED deals.
    @dev The answer describes the token's state when the token handled the query,
         not when the reply arrives.  Our own transfers reach the token in the
         order we send them, so at that moment the token had processed every
         transfer we sent before this query and none we send after it; what
         FUNDED deals held at sending time is therefore a lower bound for the
         answer, and that is what the request records.
    """
    assert token.is_contract, "token has no code"
    # STATICCALL becomes a `query`; what it returns now is always empty.
    nothing_yet: Bytes[32] = raw_call(token, abi_encode(self, method_id=method_id("balanceOf(address)")),
                                      max_outsize=32, gas=TOKEN_GAS, is_static_call=True)
    self.pending[staticcall System(SYSTEM).lastMessageId()] = Request(
        action=Action.AUDIT, callee=token, deal=0, amount=self.held[token])


# -- replies -------------------------------------------------------------------------


@external
def onReply(requestId: bytes32, success: bool, data: Bytes[MAX_REPLY]):
    """
    @notice The runtime delivers the answer to each of our requests here.
    @dev Nothing stops an account from *calling* onReply with made-up arguments
         (today the runtime does not tell replies from calls), so: the request
         must be ours and still open, and msg.sender must be the account we
         asked.  What that account answers is then only as trustworthy as the
         account itself; see withdraw() for the one place where that matters.
    """
    req: Request = self.pending[requestId]
    assert req.callee != empty(address), "not a request of ours, or already answered"
    assert msg.sender == req.callee, "reply from the wrong account"
    if req.action == Action.WITHDRAW:
        assert requestId == self.withdrawing
        self._settle_withdrawal(req, not success)
        return
    self.pending[requestId] = empty(Request)  # one answer per request
    if req.action == Action.AUDIT:
        balance: uint256 = 0
        if success and len(data) >= 32:
            balance = convert(extract32(data, 0), uint256)
        log Audited(token=req.callee, balance=balance, expected=req.amount, ok=success and balance >= req.amount)
        return
    deal: Deal = self.deals[req.deal]
    ok: bool = success and self._returned_true(data)
    if req.action == Action.FUND:
        assert deal.stage == Stage.AWAITING_FUNDS
        if ok:
            self.deals[req.deal].stage = Stage.FUNDED
            self.held[deal.token] += deal.amount
            log Funded(deal=req.deal)
        else:
            self.deals[req.deal].stage = Stage.CANCELLED
            log Cancelled(deal=req.deal)
        return
    # Action.PAY: a release or a refund, as the deal's stage says.
    assert deal.stage == Stage.RELEASING or deal.stage == Stage.REFUNDING
    if ok:
        done: Stage = Stage.RELEASED if deal.stage == Stage.RELEASING else Stage.REFUNDED
        self.deals[req.deal].stage = done
        log Settled(deal=req.deal, stage=done)
    else:
        # The transfer failed: the tokens are still here.  Back to FUNDED, so the
        # buyer can release again or either side can refund.
        self.deals[req.deal].stage = Stage.FUNDED
        self.held[deal.token] += deal.amount
        log PaymentFailed(deal=req.deal)


# -- helpers -------------------------------------------------------------------------


@internal
def _request(to: address, data: Bytes[100], action: Action, deal_id: uint256):
    """Send `data` to `to` as a call message that asks for a reply, and remember it."""
    # max_outsize > 0 asks for a reply; what raw_call returns now is always empty.
    nothing_yet: Bytes[32] = raw_call(to, data, max_outsize=32, gas=TOKEN_GAS)
    self.pending[staticcall System(SYSTEM).lastMessageId()] = Request(action=action, callee=to, deal=deal_id, amount=0)


@internal
@pure
def _returned_true(data: Bytes[MAX_REPLY]) -> bool:
    """An ERC20 call succeeded: it returned true, or nothing (older tokens)."""
    if len(data) == 0:
        return True
    return len(data) >= 32 and convert(extract32(data, 0), uint256) == 1


@internal
@view
def _now() -> uint256:
    return staticcall System(SYSTEM).now()
