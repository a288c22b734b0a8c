"""Threads for sync ``ctx.run`` functions that never hold up the service's exit.

A thread cannot be stopped, and the default executor's threads are joined at exit: one sync step
blocked on a slow vendor would keep a SIGTERMed service alive for as long as it blocks. These
threads are daemons and ``shutdown`` does not wait for them, so a step still running when the
service stops is abandoned, as in a crash; the sidecar retries it under the same idempotency key.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonExecutor(ThreadPoolExecutor):
    """A pool of daemon threads, grown on demand up to ``max_workers`` (the default executor's size).

    A ``ThreadPoolExecutor`` only by type (``loop.set_default_executor`` insists on one): it
    shares none of its machinery, whose threads are joined at interpreter exit.
    """

    def __init__(self, max_workers: int | None = None) -> None:  # no super().__init__(): none of its state is used
        self._max_workers = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._guard = threading.Lock()
        self._started = 0
        self._idle_threads = 0
        self._stopped = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._guard:
            if self._stopped:
                raise RuntimeError("cannot schedule new steps after shutdown")
            if self._idle_threads <= 0 and self._started < self._max_workers:
                self._started += 1
                threading.Thread(target=self._run, name="handler_sdk-step", daemon=True).start()
            else:
                self._idle_threads -= 1  # this item is taken by an idle thread (or waits for the next free one)
            self._queue.put((future, fn, args, kwargs))
        return future

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # noqa: BLE001 - handed to the awaiting step
                    future.set_exception(exc)
            del item, future, fn, args, kwargs
            with self._guard:
                self._idle_threads += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work and let idle threads end; never waits for a running step."""
        with self._guard:
            self._stopped = True
            threads = self._started
        for _ in range(threads):
            self._queue.put(None)
