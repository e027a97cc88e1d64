// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

// Staking as written for Ethereum with OpenZeppelin 5's SafeERC20 (its _callOptionalReturn, as in
// @openzeppelin/contracts 5.1). On Missive the token's empty return data counts as success.

interface IERC20 {
    function transfer(address to, uint256 value) external returns (bool);
    function transferFrom(address from, address to, uint256 value) external returns (bool);
}

library SafeERC20 {
    error SafeERC20FailedOperation(address token);

    function safeTransfer(IERC20 token, address to, uint256 value) internal {
        _callOptionalReturn(token, abi.encodeCall(token.transfer, (to, value)));
    }

    function safeTransferFrom(IERC20 token, address from, address to, uint256 value) internal {
        _callOptionalReturn(token, abi.encodeCall(token.transferFrom, (from, to, value)));
    }

    function _callOptionalReturn(IERC20 token, bytes memory data) private {
        uint256 returnSize;
        uint256 returnValue;
        assembly ("memory-safe") {
            let success := call(gas(), token, 0, add(data, 0x20), mload(data), 0, 0x20)
            if iszero(success) {
                let ptr := mload(0x40)
                returndatacopy(ptr, 0, returndatasize())
                revert(ptr, returndatasize())
            }
            returnSize := returndatasize()
            returnValue := mload(0)
        }
        if (returnSize == 0 ? address(token).code.length == 0 : returnValue != 1) {
            revert SafeERC20FailedOperation(address(token));
        }
    }
}

contract SafeStaking {
    using SafeERC20 for IERC20;

    IERC20 public immutable token;
    mapping(address => uint256) public staked;

    constructor(IERC20 token_) {
        token = token_;
    }

    function stake(uint256 amount) external {
        token.safeTransferFrom(msg.sender, address(this), amount);
        staked[msg.sender] += amount;
    }

    function withdraw(uint256 amount) external {
        staked[msg.sender] -= amount;
        token.safeTransfer(msg.sender, amount);
    }
}
