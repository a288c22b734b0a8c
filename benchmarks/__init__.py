"""Benchmarks: a closed-loop load generator and the scenarios that compare the sidecar to a baseline.

``python -m benchmarks.run`` runs every scenario twice on loopback: once through a bare aiohttp
two-hop proxy with the same handler logic in memory (the ceiling: nothing journaled), once through
the sidecar with the handlers written with ``handler_sdk``. See ``docs/benchmarks.md``.
"""
