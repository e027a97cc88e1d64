"""Replication of actors across their holders: who may execute and acknowledge, and whose history
wins (``epochs``).  Network-free: the cluster node (:mod:`missive.cluster.node`) carries its
messages, and the simulation in ``tests/test_epochs_sim.py`` runs it on trio's ``MockClock``.
"""
