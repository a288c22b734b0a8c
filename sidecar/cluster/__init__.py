"""Cluster mode: partitions replicated through a log (NATS JetStream), owned by one node at a time.

See docs/cluster.md. Without ``--cluster`` nothing here is imported: single-node mode commits to
LMDB alone, as before.
"""
