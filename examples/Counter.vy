# pragma version ^0.4.0
# A counter that also tells another contract about every change, by message.
# In Missive the extcall below does not run `listener` now: it becomes a `call`
# message on the ledger, handled later by the listener's own actor.
# `changed` returns nothing: a CALL comes back at once with empty return data,
# so an extcall to a function that returns a value would fail Vyper's check.

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
    # The message carries 100000 gas, paid out of this run.  Without `gas=` it
    # would take 63/64 of all that is left, as in the EVM.
    extcall Listener(self.listener).changed(self.count, gas=100_000)
