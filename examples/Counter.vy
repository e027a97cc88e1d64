# pragma version ^0.4.0
# A counter that also tells another contract about every change, by message.
# In Missive the extcall below does not run `listener` now: it becomes a `call`
# message on the ledger, handled later by the listener's own actor.

interface Listener:
    def changed(new_value: uint256): nonpayable

count: public(uint256)
listener: public(address)


@deploy
def __init__(listener: address):
    self.listener = listener


@external
def increment(by: uint256):
    self.count += by
    extcall Listener(self.listener).changed(self.count)
