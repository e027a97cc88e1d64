// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

// A view call to another contract, as an Ethereum contract would write it.
interface IBalance {
    function balanceOf(address who) external view returns (uint256);
}

contract Reader {
    uint256 public seen;

    function look(IBalance token, address who) external {
        seen = token.balanceOf(who);
    }
}
