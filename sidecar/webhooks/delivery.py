"""Delivering webhooks from the outbox: at least once, in order per invocation, never in the way.

Each worker delivers the messages of the invocations it owns (an outbox key ends with the
invocation's ID, which names its partition), to each receiver on its own:

- **What is in hand.** While every message of the receiver's range is in hand ("caught up"), a
  newly filed one is handed over in memory once its batch is durable: no read. Otherwise (at
  start, after a restart with a backlog, or past ``HAND`` messages) a scan reads the oldest keys
  of the range (``keys.webhook_key``: filing order) and takes the ones it does not hold yet, at
  most ``SCAN`` at a time and only when none is waiting for a slot, so that a receiver that is
  down costs a few reads per wake-up, not a pass over its backlog; one that is not caught up
  scans again at least every second. Every scan starts at the front: a message whose batch
  committed late (a retried end) is found all the same.
- **Order per invocation.** An invocation's next message waits until the one before it got its
  2xx; messages of different invocations go out side by side, up to ``IN_FLIGHT`` at once.
- **Failures.** No answer within ``webhook_timeout_s``, a refused connection or an answer other
  than 2xx (a redirect included) is retried after a backoff that the receiver's failures share:
  the first failure at each level doubles the wait (0.5 s to 30 s, equal jitter), and the next
  2xx clears it. A receiver that never answers holds its own slots only: invocations are not
  delayed by it (a message is a put in their batch), nor are other receivers (each has its own
  slots and connections).
- **Done.** A 2xx deletes the message, in a batch with the others delivered within
  ``DELETE_DELAY_S``: a batch per message would cost the writer a commit (with fsync, a sync)
  each. Until that delete commits the key stays in hand, so it is not sent again meanwhile. A crash
  before then sends it again after the restart, with the same ``webhook-id``.
- **Retention.** A message still undelivered ``retention_s`` after it was filed is dropped, with
  a warning, and counted as ``expired``; so are, at start, the messages of receivers that are no
  longer configured (``dropped``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import msgspec
from yarl import URL

from handler_sdk import backoff

from ..cli.config import Settings
from ..metrics import Metrics
from ..store import Changes, Store
from ..store.keys import split_webhook_key, webhook_tag
from ..store.records import WebhookMessage
from .signing import parse_secret, sign

log = logging.getLogger(__name__)

#: Runs a task until shutdown (the invoker's ``Background.spawn``).
Spawn = Callable[[Coroutine[Any, Any, None]], None]

#: Messages one receiver sends at once (one connection each).
IN_FLIGHT = 16
#: New messages a scan takes into hand, keys it reads per page and at most (skipping those in
#: hand), and the messages held at most before new ones are left to scans.
SCAN, SCAN_PAGE, SCAN_READS, HAND = 64, 256, 4096, 1024
INITIAL_BACKOFF_S, MAX_BACKOFF_S = 0.5, 30.0
#: How long a delivered message's delete waits for others to share its batch.
DELETE_DELAY_S = 0.05
#: How often a receiver that is not caught up scans again, woken or not.
_RESCAN_S = 1.0
#: Keys read per transaction when counting a backlog at start.
_COUNT_PAGE = 1000


def shown(url: str) -> str:
    """``url`` as logs and metrics name it: without credentials or query, which may hold secrets."""
    return str(URL(url).with_user(None).with_query(None).with_fragment(None))


class ReceiverView(msgspec.Struct, kw_only=True):
    """What ``GET /webhooks`` shows of one receiver."""

    receiver: str
    #: Messages not yet delivered, every worker's (counted in the store), and when the oldest was filed.
    backlog: int
    oldest_ms: int | None
    #: As this worker sees it: messages on their way, and, while it fails, why and until when it waits.
    in_flight: int
    last_error: str | None
    retry_at_ms: int | None


def _log_failure(future: asyncio.Future[None]) -> None:
    error = None if future.cancelled() else future.exception()
    if error is not None:
        log.error("could not drop webhooks: %s", error)


class Receiver:
    """One receiver's deliveries of this worker's messages."""

    def __init__(self, *, url: str, store: Store, owns: Callable[[str], bool], key: bytes | None,
                 retention_s: float, metrics: Metrics, spawn: Spawn) -> None:
        self._url = URL(url)  # parsed once, not on every request
        self.tag = webhook_tag(url)
        self.name = shown(url)
        self._store = store
        self._owns = owns
        self._key = key
        self._retention_us = retention_s * 1e6
        self._spawn = spawn
        self._backlog = metrics.webhook_backlog.labels(self.name)
        self._outcomes = {outcome: metrics.webhook_deliveries.labels(self.name, outcome)
                          for outcome in ("delivered", "failed", "expired")}
        #: Outbox key -> invocation ID of every message scanned and not yet deleted.
        self._in_hand: dict[bytes, str] = {}
        #: Per invocation with a message ready or in flight: its later messages, in order.
        self._chains: dict[str, deque[tuple[bytes, WebhookMessage]]] = {}
        self._ready: deque[tuple[bytes, WebhookMessage]] = deque()
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._level = 0
        self._not_before = 0.0
        self._last_error: str | None = None
        self._deleting: list[bytes] = []
        #: Every message of the range is in hand: new ones are taken as they are filed.
        self._caught_up = False

    def count_backlog(self) -> None:
        """Set the backlog gauge from the store (at start, before anything is filed)."""
        after: bytes | None = None
        count = 0
        while page := self._store.webhook_keys(self.tag, after, _COUNT_PAGE):
            count += sum(1 for k in page if self._owns(split_webhook_key(k)[2]))
            after = page[-1]
        self._backlog.set(count)
        if count:
            log.info("webhook %s: %d messages to deliver", self.name, count)

    async def view(self) -> ReceiverView:
        """Its backlog, counted in pages (giving the event loop back between them), and its state."""
        after: bytes | None = None
        count, oldest = 0, None
        while page := self._store.webhook_keys(self.tag, after, _COUNT_PAGE):
            if oldest is None:
                oldest = split_webhook_key(page[0])[1] // 1000
            count += len(page)
            after = page[-1]
            await asyncio.sleep(0)
        waits = self._not_before - asyncio.get_running_loop().time()
        return ReceiverView(receiver=self.name, backlog=count, oldest_ms=oldest, in_flight=self._in_flight,
                            last_error=self._last_error,
                            retry_at_ms=int((time.time() + waits) * 1000) if waits > 0 else None)

    def filed(self, raw_key: bytes, message: WebhookMessage) -> None:
        """``message``, filed under ``raw_key`` for this receiver, is durable."""
        self._backlog.inc()
        if not self._caught_up or len(self._in_hand) >= HAND:
            self._caught_up = False  # a scan finds it
        elif raw_key not in self._in_hand:  # in hand already if a scan saw it committed
            self._take(raw_key, message)
        self._wake.set()

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            self._wake.clear()
            if not self._caught_up and not self._ready and self._in_flight < IN_FLIGHT:
                self._scan()
            while self._ready and self._in_flight < IN_FLIGHT:
                key, message = self._ready.popleft()
                self._in_flight += 1
                self._spawn(self._deliver(session, key, message))
            if self._caught_up:
                await self._wake.wait()
            else:  # rows past what a scan reads (other workers') are looked for again, busy or not
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_RESCAN_S):
                        await self._wake.wait()

    def _scan(self) -> None:
        """Take up to ``SCAN`` messages not in hand yet, oldest first; caught up if none is left."""
        after: bytes | None = None
        taken = reads = 0
        while reads < SCAN_READS:
            page = self._store.webhook_keys(self.tag, after, SCAN_PAGE)
            reads += len(page)
            fresh = [k for k in page if k not in self._in_hand and self._owns(split_webhook_key(k)[2])]
            more = len(fresh) > SCAN - taken  # a later scan goes on from the front
            fresh = fresh[:SCAN - taken]
            for raw_key, message in zip(fresh, self._store.webhook_messages(fresh)):
                if message is not None:  # None: dropped since its key was read
                    self._take(raw_key, message)
                    taken += 1
            if more:
                return
            if len(page) < SCAN_PAGE:
                self._caught_up = True
                return
            after = page[-1]

    def _take(self, raw_key: bytes, message: WebhookMessage) -> None:
        invocation_id = split_webhook_key(raw_key)[2]
        self._in_hand[raw_key] = invocation_id
        chain = self._chains.get(invocation_id)
        if chain is None:
            self._chains[invocation_id] = deque()
            self._ready.append((raw_key, message))
        else:
            chain.append((raw_key, message))

    async def _deliver(self, session: aiohttp.ClientSession, raw_key: bytes, message: WebhookMessage) -> None:
        try:
            outcome = await self._until_delivered(session, raw_key, message)
        finally:  # cancelled at shutdown: the message stays in the outbox, and goes after the restart
            self._in_flight -= 1
            self._wake.set()
        self._outcomes[outcome].inc()
        self._delete(raw_key)
        chain = self._chains[self._in_hand[raw_key]]
        if chain:
            self._ready.append(chain.popleft())
        else:
            del self._chains[self._in_hand[raw_key]]

    async def _until_delivered(self, session: aiohttp.ClientSession, raw_key: bytes, message: WebhookMessage) -> str:
        loop = asyncio.get_running_loop()
        while True:
            if split_webhook_key(raw_key)[1] < time.time() * 1e6 - self._retention_us:
                log.warning("webhook %s: message %s undelivered for longer than the retention, dropped",
                            self.name, message.id)
                return "expired"
            while (wait := self._not_before - loop.time()) > 0:
                await asyncio.sleep(wait)  # the receiver's backoff
            level = self._level
            problem = await self._post(session, message)
            if problem is None:
                if self._level:
                    log.info("webhook %s: delivering again", self.name)
                    self._level, self._not_before, self._last_error = 0, 0.0, None
                return "delivered"
            self._outcomes["failed"].inc()
            self._last_error = problem
            if level == self._level:  # the first failure since the last backoff: wait longer
                self._level += 1
                pause = backoff.delay(self._level, INITIAL_BACKOFF_S, 2.0, MAX_BACKOFF_S, floor=0.5)
                self._not_before = loop.time() + pause
                log.warning("webhook %s: %s; retrying in %.1f s", self.name, problem, pause)

    async def _post(self, session: aiohttp.ClientSession, message: WebhookMessage) -> str | None:
        """Send ``message`` once; what went wrong (``None``: the receiver took it)."""
        timestamp = int(time.time())  # of this try: receivers refuse stale ones
        headers = {"content-type": "application/json", "webhook-id": message.id,
                   "webhook-timestamp": str(timestamp)}
        if self._key is not None:
            headers["webhook-signature"] = sign(self._key, message.id, timestamp, message.body)
        try:
            async with session.post(self._url, data=message.body, headers=headers, allow_redirects=False) as response:
                return None if 200 <= response.status < 300 else f"answered {response.status}"
        except TimeoutError:
            return "no answer in time"
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}"

    def _delete(self, raw_key: bytes) -> None:
        self._deleting.append(raw_key)
        if len(self._deleting) == 1:
            asyncio.get_running_loop().call_later(DELETE_DELAY_S, self._flush)

    def _flush(self) -> None:
        done, self._deleting = self._deleting, []
        changes = Changes()
        for raw_key in done:
            changes.remove_webhook(raw_key)
        self._store.submit(changes).add_done_callback(lambda future: self._deleted(done, future))

    def _deleted(self, done: list[bytes], future: asyncio.Future[None]) -> None:
        error = None if future.cancelled() else future.exception()
        if error is not None:  # the store is full: they stay in hand, not sent again, and the delete waits
            log.error("webhook %s: could not delete %d delivered messages, trying again in 1 s: %s",
                      self.name, len(done), error)
            asyncio.get_running_loop().call_later(1.0, self._delete_again, done)
            return
        self._backlog.dec(len(done))
        for raw_key in done:
            self._in_hand.pop(raw_key, None)
        self._wake.set()

    def _delete_again(self, done: list[bytes]) -> None:
        for raw_key in done:
            self._delete(raw_key)


class Webhooks:
    """Every configured receiver's deliveries in this worker, and the HTTP client they share."""

    def __init__(self, *, settings: Settings, store: Store, owns: Callable[[str], bool], metrics: Metrics,
                 spawn: Spawn) -> None:
        key = parse_secret(settings.webhook_secret) if settings.webhook_secret else None
        self._store = store
        self._owns = owns
        self._metrics = metrics
        self._spawn = spawn
        self._timeout_s = settings.webhook_timeout_s
        self.receivers = [
            Receiver(url=url, store=store, owns=owns, key=key, retention_s=settings.retention_s, metrics=metrics,
                     spawn=spawn)
            for url in dict.fromkeys(settings.webhooks)]  # a URL given twice gets each message once
        self._session: aiohttp.ClientSession | None = None

    @property
    def tags(self) -> list[bytes]:
        return [receiver.tag for receiver in self.receivers]

    def start(self) -> None:
        """Drop what receivers no longer configured were left, count the backlogs, start delivering."""
        configured = set(self.tags)
        for tag in self._store.webhook_tags():
            if tag not in configured:
                self._drop(tag)
        if not self.receivers:
            return
        self._session = aiohttp.ClientSession(  # no cookies: a receiver's would only cost time
            timeout=aiohttp.ClientTimeout(total=self._timeout_s), connector=aiohttp.TCPConnector(limit=0),
            cookie_jar=aiohttp.DummyCookieJar())
        for receiver in self.receivers:
            receiver.count_backlog()
            self._spawn(receiver.run(self._session))

    def filed(self, raw_keys: list[bytes], message: WebhookMessage) -> None:
        """``message`` is durable, filed for each receiver under its key in ``raw_keys`` (in the
        order of :attr:`tags`)."""
        for receiver, raw_key in zip(self.receivers, raw_keys):
            receiver.filed(raw_key, message)

    async def close(self) -> None:
        """After the background tasks have stopped."""
        if self._session is not None:
            await self._session.close()

    def _drop(self, tag: bytes) -> None:
        after: bytes | None = None
        dropped = 0
        while page := self._store.webhook_keys(tag, after, _COUNT_PAGE):
            after = page[-1]
            changes = Changes()
            for raw_key in page:
                if self._owns(split_webhook_key(raw_key)[2]):
                    changes.remove_webhook(raw_key)
                    dropped += 1
            self._store.submit(changes).add_done_callback(_log_failure)
        if dropped:
            log.warning("dropped %d undelivered webhooks of a receiver that is no longer configured", dropped)
            self._metrics.webhook_deliveries.labels("(not configured)", "dropped").inc(dropped)
