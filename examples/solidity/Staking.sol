// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import "missive/Missive.sol";

interface IERC20 {
    function transfer(address to, uint256 value) external returns (bool);
    function transferFrom(address from, address to, uint256 value) external returns (bool);
}

/// Staking written for messages. On Ethereum, `token.transferFrom(...)` has happened by the next line;
/// here it is a request, and the stake is credited only when the token's reply says it succeeded.
/// A withdrawal takes the stake off first (checks-effects-message) and puts it back if the transfer fails.
contract Staking is MessageClient {
    IERC20 public immutable token;
    uint256 public constant TOKEN_GAS = 200_000;

    mapping(address => uint256) public staked;
    uint256 public totalStaked;

    enum Action { Stake, Withdraw }
    struct Pending { Action action; address staker; uint256 amount; }
    mapping(bytes32 => Pending) public pending;

    event Staked(address indexed staker, uint256 amount);
    event Withdrawn(address indexed staker, uint256 amount);
    event Failed(address indexed staker, uint256 amount, bytes reason);

    error NotEnoughStaked(uint256 staked, uint256 wanted);

    constructor(IERC20 token_) {
        token = token_;
    }

    /// Approve this contract on the token first, and wait for that to be handled.
    function stake(uint256 amount) external {
        bytes32 id = _request(address(token), abi.encodeCall(IERC20.transferFrom, (msg.sender, address(this), amount)),
                              TOKEN_GAS, 0);
        pending[id] = Pending(Action.Stake, msg.sender, amount);
    }

    function withdraw(uint256 amount) external {
        uint256 mine = staked[msg.sender];
        if (mine < amount) revert NotEnoughStaked(mine, amount);
        staked[msg.sender] = mine - amount;   // effects before the message
        totalStaked -= amount;
        bytes32 id = _request(address(token), abi.encodeCall(IERC20.transfer, (msg.sender, amount)), TOKEN_GAS, 0);
        pending[id] = Pending(Action.Withdraw, msg.sender, amount);
    }

    function _onReply(bytes32 requestId, bool success, bytes calldata data) internal override {
        Pending memory p = pending[requestId];
        delete pending[requestId];
        // A token that returns nothing is taken at its (successful) run; one that returns false failed.
        bool ok = success && (data.length == 0 || abi.decode(data, (bool)));
        if (p.action == Action.Stake) {
            if (ok) {
                staked[p.staker] += p.amount;
                totalStaked += p.amount;
                emit Staked(p.staker, p.amount);
            } else {
                emit Failed(p.staker, p.amount, data);
            }
        } else if (ok) {
            emit Withdrawn(p.staker, p.amount);
        } else {
            staked[p.staker] += p.amount;     // the transfer did not happen: the stake is still here
            totalStaked += p.amount;
            emit Failed(p.staker, p.amount, data);
        }
    }
}
