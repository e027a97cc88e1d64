// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import "missive/Missive.sol";

interface IValue {
    function value() external view returns (uint256);
}

/// The smallest query and reply in Solidity: ask another contract for value(), keep the answer.
contract Pinger is MessageClient {
    uint256 public lastAnswer;
    uint256 public answers;

    function ping(address ponger) external returns (bytes32) {
        return _query(ponger, abi.encodeCall(IValue.value, ()), 100_000);
    }

    function _onReply(bytes32, bool success, bytes calldata data) internal override {
        if (success && data.length == 32) {
            lastAnswer = abi.decode(data, (uint256));
            answers += 1;
        }
    }
}
