// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

// The execute step of a multisig wallet as it is written for Ethereum: the transaction is marked
// executed when the call succeeded. On Missive the call only says the message was queued.
contract Multisig {
    struct Transaction { address to; uint256 value; bytes data; bool executed; }
    Transaction[] public transactions;
    mapping(address => bool) public isOwner;

    error CallFailed(uint256 index);

    constructor(address[] memory owners) {
        for (uint256 i = 0; i < owners.length; i++) isOwner[owners[i]] = true;
    }

    function submit(address to, uint256 value, bytes calldata data) external returns (uint256) {
        require(isOwner[msg.sender], "not an owner");
        transactions.push(Transaction(to, value, data, false));
        return transactions.length - 1;
    }

    function execute(uint256 index) external {
        require(isOwner[msg.sender], "not an owner");
        Transaction storage t = transactions[index];
        require(!t.executed, "already executed");
        t.executed = true;
        (bool ok, ) = t.to.call{value: t.value}(t.data);
        if (!ok) revert CallFailed(index);
    }
}
