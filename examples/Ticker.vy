# pragma version ^0.4.0
# A contract that wakes itself up: `start(interval, times)` asks the system
# contract to send this actor a `scheduled` message `interval` logical-time
# units later; each `tick` records the time and schedules the next one, until
# `times` ticks have happened.
#
# Gas: a scheduled message's gas is prepaid out of the run that schedules it,
# so each tick can only hand the next one *less* than it got itself (a chain of
# messages never burns more gas than its root had).  The gas given to `start`
# therefore pays for the whole chain; when it runs low the ticker stops by
# itself (`Stopped("out of gas")`) instead of failing.

interface System:
    def now() -> uint256: view
    def currentMessageId() -> bytes32: view
    # `gas` is a reserved word in Vyper; parameter names do not reach the ABI.
    def schedule(delay: uint256, message_gas: uint256, payload: Bytes[4]) -> bytes32: nonpayable

SYSTEM: constant(address) = 0x000000000000000000000000006D697373697665
# Gas a run keeps for itself after scheduling the next tick (the SSTORE of
# `nextTick`, the log).
RESERVE: constant(uint256) = 30_000
# The least gas worth giving a tick: its own work is about 45000 (a new
# `history` slot is 22100 of it).  A tick given less would run out of gas
# half-way and leave `nextTick` set until the owner calls stop().
MIN_TICK_GAS: constant(uint256) = 80_000
MAX_TICKS: constant(uint256) = 1000

event Started:
    interval: uint256
    times: uint256

event Ticked:
    count: uint256
    at: uint256

event Stopped:
    count: uint256
    reason: String[16]

owner: public(address)
interval: public(uint256)
times: public(uint256)
count: public(uint256)
# When (logical time) each tick ran: history[1] is the first tick.
history: public(HashMap[uint256, uint256])
# Id of the one scheduled message we are waiting for; empty when stopped.
nextTick: public(bytes32)


@deploy
def __init__():
    self.owner = msg.sender


@external
def start(interval: uint256, times: uint256):
    assert msg.sender == self.owner, "only the owner"
    assert self.nextTick == empty(bytes32), "already running"
    assert interval > 0 and times > 0 and times <= MAX_TICKS, "bad interval or times"
    self.interval = interval
    self.times = times
    self.count = 0
    log Started(interval=interval, times=times)
    assert self._schedule_next(), "not enough gas for even one tick"


@external
def stop():
    """@notice Forget the tick in flight: when it arrives, it is ignored."""
    assert msg.sender == self.owner, "only the owner"
    self._stop("stopped")


@external
def tick():
    # Only the scheduled messages we sent ourselves: their sender is this actor.
    # (No other account can be msg.sender == self; we never CALL ourselves.)
    assert msg.sender == self, "tick() is for the ticker's own scheduled messages"
    # A tick scheduled before stop() (or before a later start()) may still arrive.
    # Handle it idempotently: do nothing unless it is the one we are waiting for.
    if staticcall System(SYSTEM).currentMessageId() != self.nextTick:
        return
    now: uint256 = staticcall System(SYSTEM).now()
    self.count += 1
    self.history[self.count] = now
    log Ticked(count=self.count, at=now)
    if self.count >= self.times:
        self._stop("done")
    elif not self._schedule_next():
        self._stop("out of gas")


@internal
def _schedule_next() -> bool:
    if msg.gas < RESERVE + MIN_TICK_GAS * 64 // 63:
        return False
    # Hand the next tick all we can spare: the system call is given at most
    # 63/64 of what is left (the EVM rule) and must keep 100 for itself.
    next_gas: uint256 = (msg.gas - RESERVE) * 63 // 64
    self.nextTick = extcall System(SYSTEM).schedule(self.interval, next_gas, method_id("tick()"))
    return True


@internal
def _stop(reason: String[16]):
    self.nextTick = empty(bytes32)
    log Stopped(count=self.count, reason=reason)
