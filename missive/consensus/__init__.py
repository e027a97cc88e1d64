"""Trust and gossip (SPEC §6, issue 5): the network-independent core.

Nodes attest each other; each attester's results become a signed *statement*
of direct trust (:mod:`direct_trust`, :mod:`kernel`); statements spread by
three gossip modes (:mod:`gossip`) over a small-world overlay
(:mod:`overlay`); from the kernel a node derives transitive trust and a
conspiracy-breaching score (:mod:`scores`).  :mod:`sim` runs the same logic for
thousands of simulated nodes.  Nothing here opens a socket: actors talk to a
:class:`~missive.consensus.actors.Transport`, which
:mod:`missive.cluster.trust` implements over ``missive.net`` on cluster nodes.
"""
