# pragma version ^0.4.0
# The other half of Pinger.vy: an ordinary contract with a value to read.
# Nothing here knows about messages; a query runs `value()` read-only and the
# runtime sends what it returns back to the asker as a reply.

value: public(uint256)


@deploy
def __init__(initial: uint256):
    self.value = initial


@external
def set(new_value: uint256):
    self.value = new_value
