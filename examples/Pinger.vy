# pragma version ^0.4.0
# Request/reply in its simplest form: ask Ponger for its value with a query,
# get the answer later in onReply.
#
# On Ethereum this would be one line, `x = staticcall Ponger(p).value()`.  In
# Missive a STATICCALL only *sends* a query; the answer arrives as a separate
# message, so the asking and the answering are two handlers.  (Vyper's
# `staticcall` would reject the empty return data it gets now: raw_call does
# not look at it.)

interface System:
    def lastMessageId() -> bytes32: view

SYSTEM: constant(address) = 0x000000000000000000000000006D697373697665

event Answer:
    ponger: indexed(address)
    value: uint256

# Open requests: request id -> the account that must answer it.
asked: public(HashMap[bytes32, address])
last_answer: public(uint256)


@external
def ping(ponger: address):
    # Sends a `query` for value(); 100000 gas pays for Ponger's run and, with
    # what it leaves, for our onReply.  Returns at once with empty data.
    nothing_yet: Bytes[32] = raw_call(ponger, method_id("value()"), max_outsize=32, gas=100_000, is_static_call=True)
    # The id of the message just sent is what the reply will carry.
    self.asked[staticcall System(SYSTEM).lastMessageId()] = ponger


@external
def onReply(requestId: bytes32, success: bool, data: Bytes[256]):
    # Accept only answers to our own open requests, from the account we asked.
    assert self.asked[requestId] != empty(address), "unknown or already answered"
    assert msg.sender == self.asked[requestId], "reply from the wrong account"
    self.asked[requestId] = empty(address)
    if success and len(data) == 32:
        self.last_answer = abi_decode(data, uint256)
        log Answer(ponger=msg.sender, value=self.last_answer)
