// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

// The start of an ERC4626 vault as OpenZeppelin writes it: the asset's decimals are read in the
// constructor, falling back to 18 when the call returns nothing. On Missive it always falls back.

interface IERC20Metadata {
    function decimals() external view returns (uint8);
}

contract Vault {
    address public immutable asset;
    uint8 public immutable decimals;

    constructor(address asset_) {
        asset = asset_;
        (bool ok, bytes memory data) = asset_.staticcall(abi.encodeCall(IERC20Metadata.decimals, ()));
        decimals = ok && data.length >= 32 ? abi.decode(data, (uint8)) : 18;
    }
}
