"""Loopback ports for the processes of tests: free now, and kept from every other test run.

A test sidecar and its handler service are restarted on the ports they had (a deployment is
registered by its URI), so a port must stay ours while its process is down.
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path

#: Where test processes claim ports: one lock file per port, held until the process exits.
_CLAIMS = Path(tempfile.gettempdir()) / "durable-sidecar-test-ports"
_claimed: list[int] = []  # the claims' descriptors, kept open for the session


def _claim(port: int) -> bool:
    """Make ``port`` this process's for the session. A port free now may be bound by another test
    run on the machine a moment later (two runs at once), or while a service of ours that was killed
    is down; a claim keeps every other run, and this one, from handing it out again."""
    _CLAIMS.mkdir(exist_ok=True)
    fd = os.open(_CLAIMS / str(port), os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _claimed.append(fd)
    return True


def free_port() -> int:
    """A loopback port free now and claimed by no other test run, below the kernel's ephemeral
    range: a port the kernel picked (``bind(0)``) can be handed out again as the local port of an
    outgoing connection, which then keeps a sidecar restarted on it from binding. Never the same
    port twice, in this run or another one at the same time (see ``_claim``)."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 10000), low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        if _claim(port):
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
