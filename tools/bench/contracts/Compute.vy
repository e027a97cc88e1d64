# pragma version ~=0.4.3
# pragma evm-version cancun
"""
@title Long computations inside one call, for the VM benchmark
@notice Each function runs for tens of milliseconds in one message: the kind of
        work where per-call costs vanish and only the interpreter counts.
"""

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    amount: uint256

balanceOf: public(HashMap[address, uint256])


@external
def transfers(n: uint256) -> uint256:
    """`n` ERC20-style transfers from the caller to 64 rotating receivers, each
    with its balance checks, two HashMap writes and a Transfer event."""
    self.balanceOf[msg.sender] = 10**30
    for i: uint256 in range(n, bound=100000):
        receiver: address = convert(convert(3203334144 + i % 64, uint160), address)
        amount: uint256 = 1 + i % 7
        self.balanceOf[msg.sender] -= amount
        self.balanceOf[receiver] += amount
        log Transfer(sender=msg.sender, receiver=receiver, amount=amount)
    return self.balanceOf[msg.sender]


@external
@pure
def keccak_chain(seed: bytes32, n: uint256) -> bytes32:
    """h := keccak256(h), `n` times."""
    h: bytes32 = seed
    for i: uint256 in range(n, bound=1000000):
        h = keccak256(h)
    return h


@external
@pure
def bubble_sort(n: uint256, seed: uint256) -> uint256:
    """Bubble-sort `n` pseudo-random words (a linear congruential generator) in
    memory; return a checksum of the sorted array."""
    xs: DynArray[uint256, 1000] = []
    x: uint256 = seed
    for i: uint256 in range(n, bound=1000):
        x = unsafe_add(unsafe_mul(x, 6364136223846793005), 1442695040888963407) % 2**64
        xs.append(x)
    for i: uint256 in range(n, bound=1000):
        for j: uint256 in range(n - 1 - i, bound=1000):
            if xs[j] > xs[j + 1]:
                t: uint256 = xs[j]
                xs[j] = xs[j + 1]
                xs[j + 1] = t
    acc: uint256 = 0
    for i: uint256 in range(n, bound=1000):
        acc = unsafe_add(unsafe_mul(acc, 31), xs[i])
    return acc
