"""A local cluster: node processes over authenticated TCP, actors placed by address.

* :mod:`~missive.cluster.placement`: which node executes which actor (rendezvous hashing);
* :mod:`~missive.cluster.config`: a node's config file (its identity, address and seed peers);
* :mod:`~missive.cluster.node`: one node process: store, runtime, RPC server, links to peers,
  and the forwarder that moves messages to the node executing their recipient;
* :mod:`~missive.cluster.client`: what the CLI uses to talk to any node;
* :mod:`~missive.cluster.launcher`: ``missive cluster up/status/down``;
* :mod:`~missive.cluster.trust`: the trust layer on a node (attestation and gossip between members).
"""
