"""Ethereum JSON-RPC for Missive nodes: ``missive rpc`` (server), the methods, the block index."""
