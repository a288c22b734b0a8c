"""Filing webhooks: one message per receiver, in the batch that writes the status it tells of.

So a crash can neither lose one (the status is durable exactly when its message is) nor make
one up (a status that never became durable files nothing). The lifecycle calls :meth:`file`
where it writes a final status (``finish``) or a pause, and :meth:`committed` once that batch
is durable, which hands the message to the deliveries (``sidecar.webhooks.delivery``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import NamedTuple

from handler_sdk.protocol import Entry

from ..clock import InboxClock, now_ms
from ..http.costs import journal_cost
from ..store import Changes, InvocationRecord, Store
from ..store.keys import webhook_key
from ..store.records import WebhookMessage
from ..webhooks.messages import body_of, event_of, new_message_id


class Filed(NamedTuple):
    """What :meth:`WebhookOutbox.file` added to a batch: each receiver's key, and the message."""

    raw_keys: list[bytes]
    message: WebhookMessage


class WebhookOutbox:
    def __init__(self, *, store: Store, tags: list[bytes], events: frozenset[str], clock: InboxClock,
                 on_filed: Callable[[list[bytes], WebhookMessage], None]) -> None:
        self._store = store
        self._tags = tags
        self._events = events
        #: The worker's inbox clock: a message's seq orders it after every one filed before it,
        #: across restarts too (raised past the last seq filed, should the wall clock step back).
        self._clock = clock
        self._on_filed = on_filed
        for tag in tags:
            clock.observe(store.last_webhook_seq(tag))

    def file(self, changes: Changes, record: InvocationRecord, journal: list[Entry] | None) -> Filed | None:
        """Add ``record``'s message to ``changes`` if its new status is an event that is asked
        for; ``journal`` (``None``: read it from the store) gives its cost."""
        if not self._tags:
            return None
        event = event_of(record)
        if event is None or event not in self._events:
            return None
        if journal is None:
            journal = self._store.read_journal(record.id)
        message = WebhookMessage(id=new_message_id(), body=body_of(event, record, journal_cost(journal), now_ms()))
        seq = self._clock.next()
        filed = Filed([webhook_key(tag, seq, record.id) for tag in self._tags], message)
        for raw_key in filed.raw_keys:
            changes.put_webhook(raw_key, message)
        return filed

    def committed(self, filed: Filed | None, future: asyncio.Future[None]) -> None:
        """The batch ``file`` added ``filed`` to (if anything) is written: deliver it."""
        if filed is not None and not future.cancelled() and future.exception() is None:
            self._on_filed(filed.raw_keys, filed.message)
