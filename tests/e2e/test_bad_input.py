"""Every bad input gets a clear JSON error and leaves nothing half-written."""

from __future__ import annotations

import io

from tests.e2e.conftest import Cluster


async def _invocation_count(cluster: Cluster) -> int:
    _, listed = await cluster.get("/invocations?limit=1000", admin=True)
    return len(listed["invocations"])


async def test_malformed_json_is_400_and_journals_nothing(cluster: Cluster) -> None:
    before = await _invocation_count(cluster)
    status, body, _ = await cluster.post("/Counter/a/add", raw=b"{not json")
    assert status == 400 and "not valid JSON" in body["message"]
    assert await _invocation_count(cluster) == before


async def test_wrong_types_are_rejected_by_the_handler_with_400(cluster: Cluster) -> None:
    status, body, _ = await cluster.post("/Counter/a/add", "five")
    assert status == 400 and "Counter/add: n: expected int, got str" in body["message"], body
    status, body, _ = await cluster.post("/Steps/typed", {"item": "pen"})
    assert status == 400 and "Steps/typed" in body["message"] and "quantity" in body["message"], body
    assert (await cluster.post("/Steps/typed", {"item": "pen", "quantity": 2}))[:2] == (200, "2 x pen")
    assert (await cluster.post("/Counter/a/get"))[:2] == (200, 0)


async def test_unknown_targets_are_404_with_a_reason(cluster: Cluster) -> None:
    for path, fragment in [
        ("/Nope/x", "unknown service"), ("/Counter/k/nope", "no handler"), ("/Counter/add", "object"),
        ("/Steps/k/twenty", "service"), ("/restate/invocation/inv_0000000000000000000000000/attach", "no such"),
    ]:
        if path.startswith("/restate/invocation"):
            status, body = await cluster.get(path)
        else:
            status, body, _ = await cluster.post(path, 1)
        assert status == 404, path
        assert fragment in body["message"], (path, body)


async def test_oversized_body_is_413(cluster: Cluster) -> None:
    before = await _invocation_count(cluster)
    status, body, _ = await cluster.post("/Counter/a/add", raw=io.BytesIO(b"1" + b" " * (11 * 1024 * 1024)))
    assert status == 413 and "limit" in body["message"]
    assert await _invocation_count(cluster) == before


async def test_admin_rejects_bad_registrations_clearly(cluster: Cluster) -> None:
    status, body = await cluster.admin_call("POST", "/deployments", {"url": "x"})
    assert status == 400 and "uri" in body["message"]
    status, body = await cluster.admin_call("POST", "/deployments", {"uri": "http://127.0.0.1:1"})
    assert status == 400 and "cannot reach" in body["message"]
    status, body = await cluster.admin_call("POST", "/deployments", {"uri": "ftp://x"})
    assert status == 400
