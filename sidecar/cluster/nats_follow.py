"""Following a JetStream stream from a position, exactly once and in order, through NATS failures.

Both the log's standbys (``nats_log.read_from``) and the membership watch (``membership.py``) must
see every message after the last one they saw, never one twice, for as long as they run, while
servers die and leaders move. A consumer lives on one server and its deliveries can be lost, so
each follower runs its own ephemeral push consumer (no acks, flow control, idle heartbeats) and
checks every delivery's consumer sequence: when a delivery is missing, the consumer goes quiet
(three missed heartbeats) or cannot be made, it starts a new consumer right after the last message
it yielded. nats-py's own ordered consumer does the same but gives up when the new consumer cannot
be created during an election; this one keeps trying.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from .nats_retry import ATTEMPT_TIMEOUT_S, transient

log = logging.getLogger(__name__)

#: How often a consumer proves it is alive when it has nothing to deliver.
HEARTBEAT_S = 0.5
#: The longest wait between two tries at a new consumer, and each try's own limit: during an
#: election the tries fail or go unanswered, and the first after it should come soon.
_RESTART_DELAY_S = 0.25
_CREATE_TIMEOUT_S = 1.0


class Delivery(msgspec.Struct, frozen=True):
    """A stream message as delivered: its stream sequence, subject, body and headers."""

    sequence: int
    subject: str
    data: bytes
    headers: dict[str, str]


class _Restart(Exception):
    """The consumer lost a delivery or went quiet: start a new one after the last yielded."""


async def follow(client: NATS, js: JetStreamContext, stream: str, subjects: str, *, start: int,
                 last_per_subject: bool = False) -> AsyncIterator[Delivery]:
    """Every message of ``stream`` on ``subjects`` from sequence ``start`` on (with
    ``last_per_subject``: each subject's last message first, then every new one), then each new
    one; never ends by itself. After a failure it starts a new consumer: what happened meanwhile
    is delivered late, not lost."""
    next_sequence = max(start, 1)
    delay = 0.05
    while True:
        try:
            async for delivery in _consume(client, js, stream, subjects, next_sequence, last_per_subject):
                next_sequence = delivery.sequence + 1
                last_per_subject = False
                delay = 0.05
                yield delivery
        except Exception as exc:
            if not transient(exc) and not isinstance(exc, _Restart):
                raise
            log.info("following %s from %d again: %r", stream, next_sequence, exc)
        await asyncio.sleep(delay)
        delay = min(delay * 1.6, _RESTART_DELAY_S)


async def _consume(client: NATS, js: JetStreamContext, stream: str, subjects: str, start: int,
                   last_per_subject: bool) -> AsyncIterator[Delivery]:
    """One consumer's deliveries; raises :class:`_Restart` (or a transient error) when it cannot go on."""
    inbox = client.new_inbox()
    subscription = await client.subscribe(inbox)
    consumer: str | None = None
    policy = dict(deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT) if last_per_subject else dict(
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start)
    try:
        info = await js.add_consumer(stream, api.ConsumerConfig(
            deliver_subject=inbox, ack_policy=api.AckPolicy.NONE, flow_control=True, idle_heartbeat=HEARTBEAT_S,
            mem_storage=True, num_replicas=1, inactive_threshold=30.0, filter_subject=subjects, **policy),
            timeout=_CREATE_TIMEOUT_S)
        consumer = info.name
        delivered = 0
        while True:
            message = await subscription.next_msg(timeout=3 * HEARTBEAT_S)
            if await _control(client, message, delivered):
                continue
            meta = message.metadata
            if meta.sequence.consumer != delivered + 1:
                raise _Restart(f"delivery {meta.sequence.consumer} after {delivered}")
            delivered += 1
            yield Delivery(meta.sequence.stream, message.subject, message.data, dict(message.headers or {}))
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
        if consumer is not None and not client.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(js.delete_consumer(stream, consumer), ATTEMPT_TIMEOUT_S)


async def _control(client: NATS, message: Msg, delivered: int) -> bool:
    """Answer a consumer's status message (idle heartbeat, flow control); False for a message."""
    headers = message.headers or {}
    if headers.get("Status") != "100":
        return False
    if message.reply:  # flow control: the consumer sends no more until this is answered
        await client.publish(message.reply, b"")
    if stalled := headers.get("Nats-Consumer-Stalled"):
        await client.publish(stalled, b"")
    last = headers.get("Nats-Last-Consumer")
    if last is not None and int(last) != delivered:
        raise _Restart(f"heartbeat says {last} delivered, {delivered} received")
    return True
