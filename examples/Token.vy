# pragma version ^0.4.0
# A plain ERC20 token.
#
# Nothing here is specific to Missive: the token makes no external calls, so
# each handler runs to completion on the token's own state, exactly as on
# Ethereum.  What changes is how *other contracts* talk to it:
#
# * `transfer`/`transferFrom`/`approve` arrive as `call` messages.  A caller
#   that wants to know the outcome sends them with a non-zero output size and
#   gets a reply (success flag + the ABI-encoded bool) in its `onReply`.
# * `balanceOf`/`allowance`/`totalSupply` are read by `query` messages
#   (STATICCALL); the answer comes back later, as a reply, and reflects the
#   token's state at the moment the token handled the query.

from ethereum.ercs import IERC20

implements: IERC20

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256

event Approval:
    owner: indexed(address)
    spender: indexed(address)
    value: uint256

name: public(String[32])
symbol: public(String[8])
decimals: public(uint8)
totalSupply: public(uint256)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])


@deploy
def __init__(name: String[32], symbol: String[8], supply: uint256):
    self.name = name
    self.symbol = symbol
    self.decimals = 18
    self.totalSupply = supply
    self.balanceOf[msg.sender] = supply
    log Transfer(sender=empty(address), receiver=msg.sender, value=supply)


@internal
def _transfer(sender: address, receiver: address, amount: uint256):
    assert receiver != empty(address), "transfer to the zero address"
    assert self.balanceOf[sender] >= amount, "balance too low"
    self.balanceOf[sender] -= amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=sender, receiver=receiver, value=amount)


@external
def transfer(receiver: address, amount: uint256) -> bool:
    self._transfer(msg.sender, receiver, amount)
    return True


@external
def transferFrom(owner: address, receiver: address, amount: uint256) -> bool:
    allowed: uint256 = self.allowance[owner][msg.sender]
    assert allowed >= amount, "allowance too low"
    if allowed != max_value(uint256):
        self.allowance[owner][msg.sender] = allowed - amount
    self._transfer(owner, receiver, amount)
    return True


@external
def approve(spender: address, amount: uint256) -> bool:
    self.allowance[msg.sender][spender] = amount
    log Approval(owner=msg.sender, spender=spender, value=amount)
    return True
