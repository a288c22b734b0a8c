"""``sidecar serve --workers N``: one writer process and N workers, started and watched together.

The supervisor fixes the data directory's partition count, hands each worker one end of a
socket pair whose other end goes to the writer process, and waits. Children die with it (a
SIGKILLed supervisor leaves nothing running), and if any worker or the writer dies, the whole group is stopped
and started again: each worker's recovery then picks up exactly its own partitions, so a
partition is never served by two processes at once.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from ..cli.config import Settings
from ..metrics import MULTIPROC_ENV
from ..store import Store
from .worker import SETTINGS_ENV

log = logging.getLogger("sidecar.process.supervisor")

#: How often the supervisor looks at its children, and how long a stop may take.
_POLL_S = 0.1
_STOP_TIMEOUT_S = 15.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook that has the kernel SIGKILL the child when the supervisor dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return hook


class _Stop:
    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._set)

    def _set(self, signum: int, frame: object) -> None:
        self.requested = True


def supervise(settings: Settings, workers: int) -> int:
    """Run the group until SIGINT/SIGTERM; restart it whenever a worker dies."""
    store = Store(settings.data_dir, durability=settings.durability, map_size=settings.map_size_bytes,
                  blob_threshold=settings.blob_threshold_bytes)
    partitions = store.partition_count(settings.partitions)
    store.close_environment()
    if workers > partitions:
        log.warning("%d workers asked for, but the data directory has %d partitions: running %d", workers,
                    partitions, partitions)
        workers = partitions
    stop = _Stop()
    delay = 0.5
    while True:
        _fresh_metrics_dir(settings.data_dir)
        started = time.monotonic()
        crashed = _generation(settings, workers, partitions, stop)
        if not crashed:
            return 0
        if time.monotonic() - started > 60:
            delay = 0.5
        log.error("a worker or the writer died; restarting all workers in %.1f s to recover their partitions", delay)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not stop.requested:
            time.sleep(_POLL_S)
        if stop.requested:
            return 0
        delay = min(delay * 2, 10.0)


def _fresh_metrics_dir(data_dir: str) -> None:
    """The workers' shared metric files: emptied for each generation of workers."""
    path = Path(data_dir) / "metrics"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(path)  # inherited by the workers


def _generation(settings: Settings, workers: int, partitions: int, stop: _Stop) -> bool:
    """Start the writer and the workers, wait; True if a worker or the writer died (not asked to stop)."""
    pairs = [socket.socketpair() for _ in range(workers)]
    hook = _die_with_parent()
    writer = subprocess.Popen(
        [sys.executable, "-m", "sidecar.store.writer", "--data-dir", settings.data_dir,
         "--durability", settings.durability, "--map-size", str(settings.map_size_bytes),
         "--blob-threshold", str(settings.blob_threshold_bytes),
         *[arg for _, theirs in pairs for arg in ("--fd", str(theirs.fileno()))]],
        pass_fds=[theirs.fileno() for _, theirs in pairs], preexec_fn=hook,
    )
    for _, theirs in pairs:
        theirs.close()
    # Settings travel in the environment, not on the command line that `ps` shows everyone.
    env = {**os.environ, SETTINGS_ENV: msgspec.json.encode(settings).decode()}
    children = []
    for index, (ours, _) in enumerate(pairs):
        children.append(subprocess.Popen(
            [sys.executable, "-m", "sidecar.process.worker", "--index", str(index), "--workers", str(workers),
             "--partitions", str(partitions), "--writer-fd", str(ours.fileno())],
            pass_fds=[ours.fileno()], preexec_fn=hook, env=env,
        ))
        ours.close()  # the worker holds it now: when the worker dies, the writer sees it hang up
    # The writer is watched too: workers whose writer died can make nothing durable.
    while not stop.requested and writer.poll() is None and all(child.poll() is None for child in children):
        time.sleep(_POLL_S)
    crashed = not stop.requested
    if crashed and writer.returncode is not None:
        log.error("the writer process (pid %d) died with status %d", writer.pid, writer.returncode)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL if crashed else signal.SIGTERM)
    for child in children:
        try:
            child.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    try:
        writer.wait(_STOP_TIMEOUT_S)  # it exits once every worker has hung up
    except subprocess.TimeoutExpired:
        writer.kill()
        writer.wait()
    return crashed
