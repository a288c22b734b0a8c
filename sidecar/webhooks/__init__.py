"""Webhooks: a signed ``POST`` to each configured receiver when an invocation ends or pauses,
filed in the batch that writes that status and delivered at least once from a durable outbox.

``signing`` (Standard Webhooks signatures), ``messages`` (events, bodies, the settings' checks)
and ``delivery`` (the receivers) are imported by what needs them: the CLI's checks load neither
aiohttp nor the store.
"""
