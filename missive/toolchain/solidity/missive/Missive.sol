// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

// Missive's Solidity library: messages without inline assembly.
//
//   import "missive/Missive.sol";   // `missive compile`/`deploy` put this library on solc's include path
//
// In Missive a CALL does not run the callee: it queues a message and returns at once with empty
// return data. `Missive.send` sends a call; `Missive.request` and `Missive.query` send a call or
// a query that asks for a reply; the reply arrives later as a call to
// onReply(bytes32 requestId, bool success, bytes data). `MessageClient` keeps the requests in
// flight and accepts each reply once, from the account that was asked, then calls your
// `_onReply`. See examples/SOLIDITY.md.

interface IMissiveSystem {
    function sentMessageId(uint256 index) external view returns (bytes32);
    function lastMessageId() external view returns (bytes32);
    function currentMessageId() external view returns (bytes32);
    function now() external view returns (uint256);
    function schedule(uint256 delay, uint256 gas, bytes calldata payload) external returns (bytes32);
}

library Missive {
    /// The system contract ("missive"): synchronous, like a precompile.
    IMissiveSystem internal constant SYSTEM = IMissiveSystem(0x000000000000000000000000006D697373697665);

    error ValueTooHigh(uint256 value, uint256 balance);

    /// Send a call message (no reply); returns its id. The message carries `gasLimit`, paid now.
    function send(address to, bytes memory data, uint256 gasLimit, uint256 value) internal returns (bytes32) {
        _call(to, data, gasLimit, value, 0);
        return SYSTEM.lastMessageId();
    }

    /// Send a call that asks for a reply; returns the id its reply will carry as requestId.
    function request(address to, bytes memory data, uint256 gasLimit, uint256 value) internal returns (bytes32) {
        _call(to, data, gasLimit, value, 32);
        return SYSTEM.lastMessageId();
    }

    /// Send a query (a read-only run of `to`); its answer comes back in onReply. Returns the request's id.
    function query(address to, bytes memory data, uint256 gasLimit) internal returns (bytes32) {
        assembly {
            pop(staticcall(gasLimit, to, add(data, 0x20), mload(data), 0, 32))
        }
        return SYSTEM.lastMessageId();
    }

    /// Schedule a message to this contract `delay` logical-time units from now, with `payload` as calldata.
    function schedule(uint256 delay, uint256 gasLimit, bytes memory payload) internal returns (bytes32) {
        return SYSTEM.schedule(delay, gasLimit, payload);
    }

    /// The id of the message being handled.
    function currentMessageId() internal view returns (bytes32) {
        return SYSTEM.currentMessageId();
    }

    function _call(address to, bytes memory data, uint256 gasLimit, uint256 value, uint256 outSize) private {
        bool queued;
        assembly {
            queued := call(gasLimit, to, value, add(data, 0x20), mload(data), 0, outSize)
        }
        if (!queued) revert ValueTooHigh(value, address(this).balance);
    }
}

/// Inherit this to send requests and receive their replies in `_onReply`.
abstract contract MessageClient {
    /// who each request in flight was sent to (zero once answered)
    mapping(bytes32 => address) private _askedOf;

    error UnknownReply(bytes32 requestId, address from);

    /// Send a call asking for a reply; remember it.
    function _request(address to, bytes memory data, uint256 gasLimit, uint256 value) internal returns (bytes32 id) {
        id = Missive.request(to, data, gasLimit, value);
        _askedOf[id] = to;
    }

    /// Send a query; remember it.
    function _query(address to, bytes memory data, uint256 gasLimit) internal returns (bytes32 id) {
        id = Missive.query(to, data, gasLimit);
        _askedOf[id] = to;
    }

    /// Whether a request is still waiting for its reply.
    function _inFlight(bytes32 id) internal view returns (bool) {
        return _askedOf[id] != address(0);
    }

    /// Delivered by the runtime only (it refuses a call that sends this selector): accept each reply once,
    /// from the account that was asked.
    function onReply(bytes32 requestId, bool success, bytes calldata data) external {
        address asked = _askedOf[requestId];
        if (asked == address(0) || asked != msg.sender) revert UnknownReply(requestId, msg.sender);
        delete _askedOf[requestId];
        _onReply(requestId, success, data);
    }

    /// Your reply handler: `success` is false when the callee failed (its effects are gone; `data` is its revert
    /// data). The state may have changed since the request: check again.
    function _onReply(bytes32 requestId, bool success, bytes calldata data) internal virtual;
}
