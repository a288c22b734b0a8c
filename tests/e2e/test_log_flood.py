"""A client cannot flood the sidecar's log: each malformed request it sends is at most one line,
without a traceback, and past a few lines a second they are counted instead of written."""

from __future__ import annotations

import asyncio

from tests.e2e.conftest import Cluster
from tests.e2e.rawhttp import exchange
from tests.procs import eventually

#: Requests aiohttp's parser refuses before any route sees them.
_MALFORMED = [
    b"POST /Counter/a/add HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"POST /Counter/a/add HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /Counter/a/add HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n",
    b"POST /Counter/a/add HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /restate/health HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
]


async def _flood(address: str, rounds: int) -> None:
    for _ in range(rounds):
        await asyncio.gather(*(exchange(address, data) for data in _MALFORMED))


async def test_malformed_requests_leave_one_line_each_at_most_and_are_rate_limited(cluster: Cluster) -> None:
    before = len(cluster.sidecar.log().splitlines())
    await _flood(cluster.ingress, 60)  # 300 malformed requests
    await _flood(cluster.admin, 20)  # 100 more on the admin port
    await eventually(lambda: _logged_since(cluster, before, "malformed request"), what="a refusal logged")
    await asyncio.sleep(1.1)  # the next line after a second says how many were not written
    await exchange(cluster.ingress, _MALFORMED[0])
    await eventually(lambda: _logged_since(cluster, before, "not logged"), what="the count of dropped lines")
    lines = cluster.sidecar.log().splitlines()[before:]
    assert not [line for line in lines if "Traceback" in line], "\n".join(lines[:40])
    assert len(lines) < 60, "\n".join(lines)
    assert (await cluster.post("/Counter/a/get"))[:2] == (200, 0)


async def _logged_since(cluster: Cluster, before: int, fragment: str) -> bool:
    return any(fragment in line for line in cluster.sidecar.log().splitlines()[before:])
