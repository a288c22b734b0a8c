"""Which NATS answers a request is retried on: what an election, a reconnect or a cluster still
forming explains, and nothing that is a refusal."""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors
import pytest

from sidecar.cluster.changelog import LogUnavailable
from sidecar.cluster.nats_retry import retrying, transient


def _api(code: int, err_code: int, description: str) -> nats.js.errors.APIError:
    return nats.js.errors.APIError(code=code, err_code=err_code, description=description)


def test_what_passes_by_itself_is_transient() -> None:
    assert transient(nats.errors.NoRespondersError())
    assert transient(asyncio.TimeoutError())
    assert transient(_api(503, 10008, "JetStream system temporarily unavailable"))
    assert transient(_api(500, 10023, "insufficient resources"))
    # As a cluster forms, the meta leader may not count every server online yet.
    assert transient(_api(400, 10005, "no suitable peers for placement, peer offline"))


def test_a_refusal_is_not() -> None:
    assert not transient(_api(400, 10071, "wrong last sequence: 4"))
    assert not transient(_api(404, 10059, "stream not found"))
    assert not transient(nats.errors.ConnectionClosedError())


async def test_a_refusal_is_raised_at_once_and_transient_failures_until_the_bound() -> None:
    calls = 0

    async def refused(timeout: float) -> int:
        nonlocal calls
        calls += 1
        raise _api(400, 10071, "wrong last sequence: 4")

    with pytest.raises(LogUnavailable, match="wrong last sequence"):
        await retrying(refused, within=5.0, what="appending")
    assert calls == 1

    async def forming(timeout: float) -> int:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise _api(400, 10005, "no suitable peers for placement, peer offline")
        return 7

    calls = 0
    assert await retrying(forming, within=5.0, what="creating the stream") == 7 and calls == 4
