"""Inputs a careless or hostile client sends get a JSON 4xx that says what is wrong; nothing is
written and the sidecar goes on serving."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
from aiohttp import web

from tests.e2e.conftest import Cluster
from tests.e2e.rawhttp import RawResponse, exchange, request_bytes
from tests.procs import free_port


async def _invocation_count(cluster: Cluster) -> int:
    _, listed = await cluster.get("/invocations?limit=1000", admin=True)
    return len(listed["invocations"])


def _error(response: RawResponse | None, status: int) -> str:
    """The message of a JSON ``{code, message}`` error with ``status``."""
    assert response is not None
    assert response.status == status, (response.status, response.body[:300])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = msgspec.json.decode(response.body)
    assert body["code"] == status
    return str(body["message"])


def _deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


async def test_delays_past_the_maximum_are_refused(cluster: Cluster) -> None:
    before = await _invocation_count(cluster)
    for delay in ["9" * 400 + "s", "P" + "9" * 400 + "D", "P99999999999D", f"{11 * 366}d", "1e400s"]:
        status, body, _ = await cluster.post(f"/Counter/d/add/send?delay={delay}", 1)
        assert status == 400, (delay, body)
        assert "at most" in body["message"] or "write it like" in body["message"], body
    status, body, _ = await cluster.post("/Counter/d/add/send?delay=3650d", 1)
    assert status == 202, body
    assert await _invocation_count(cluster) == before + 1


async def test_json_nested_too_deep_is_400_everywhere_json_is_read(cluster: Cluster) -> None:
    deep = _deep(100_000)
    before = await _invocation_count(cluster)
    status, body, _ = await cluster.post("/Counter/j/add", raw=deep)
    assert status == 400 and "JSON" in body["message"], body
    status, body, _ = await cluster.post("/Waits/nap/send", "x")
    assert status == 202
    for path in [f"/restate/awakeables/awk_{body['invocationId']}_1_x/resolve"]:
        status, body, _ = await cluster.post(path, raw=deep)
        assert status in (400, 404), body
    address = f"http://{cluster.admin}"
    for method, path in [("PUT", "/state/Counter/j/n"), ("POST", "/deployments"),
                         ("POST", "/invocations/inv_x/resume")]:
        async with cluster.http.request(method, address + path, data=deep) as response:
            answer = await response.json()
            assert response.status in (400, 404), (path, answer)
    assert (await cluster.post("/Counter/j/get"))[:2] == (200, 0)
    assert await _invocation_count(cluster) == before + 2


async def test_header_values_and_paths_that_cannot_be_stored_are_400(cluster: Cluster) -> None:
    before = await _invocation_count(cluster)
    for headers in ([(b"idempotency-key", b"\xff")], [(b"x-trace", b"ok\xfe\xff")]):
        response = await exchange(cluster.ingress, request_bytes(
            "POST", b"/Counter/h/add", [(b"content-type", b"application/json"), *headers], b"1"))
        assert "UTF-8" in _error(response, 400)
    response = await exchange(cluster.ingress, request_bytes("POST", b"/Counter/%FF/add", body=b"1"))
    assert "UTF-8" in _error(response, 400)
    response = await exchange(cluster.ingress, request_bytes("GET", b"/restate/invocation/Counter/%FF/add/k/output"))
    assert "UTF-8" in _error(response, 400)
    assert await _invocation_count(cluster) == before
    assert (await cluster.post("/Counter/h/get"))[:2] == (200, 0)


async def test_deployment_uris_are_checked_before_discovery(cluster: Cluster) -> None:
    for uri, fragment in [
        (f"http://{'a' * 64}", "host"), ("http://" + "a" * 9 * 1024 * 1024, "long"), ("ftp://x", "http"),
        ("http://", "host"), ("http://[::1", "uri"), ("http://exa mple.com", "uri"),
    ]:
        async with cluster.http.post(f"http://{cluster.admin}/deployments",
                                     data=io.BytesIO(msgspec.json.encode({"uri": uri}))) as response:
            status, body = response.status, await response.json()
        assert status == 400, (uri[:80], body)
        assert fragment in body["message"], (uri[:80], body["message"][:300])
        assert len(body["message"]) < 2000


@asynccontextmanager
async def _discovery_server(handler: web.Handler) -> AsyncIterator[str]:
    """A hostile deployment: every request to it is answered by ``handler``."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, shutdown_timeout=1.0)  # the silent handler is not waited out
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _discovery(name: str, handler: str = "h") -> dict[str, object]:
    return {"protocol": 1, "services": [{"name": name, "kind": "service",
                                          "handlers": [{"name": handler, "kind": "shared"}]}]}


async def test_discovery_is_bounded_timed_and_not_redirected(cluster: Cluster) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b" " * 65536
        for _ in range(4096):  # 256 MiB
            await response.write(chunk)
        return response

    async def silent(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"http://127.0.0.1:{cluster.handler_port}/discover")

    for handler, fragment in [(endless, "1 MiB"), (redirect, "redirect"), (silent, "timed out")]:
        async with _discovery_server(handler) as uri:
            started = time.monotonic()
            status, body = await cluster.admin_call("POST", "/deployments", {"uri": uri})
            assert status == 400 and fragment in body["message"], body
            assert time.monotonic() - started < 12
    _, services = await cluster.get("/services", admin=True)
    assert "x" not in {s["name"] for s in services["services"]}


async def test_discovered_names_must_be_identifiers(cluster: Cluster) -> None:
    for name, handler in [("../../../../tmp/x", "h"), ("S", "a/b"), ("", "h"), ("x" * 129, "h"), ("S", "h\n")]:
        async def discover(request: web.Request) -> web.StreamResponse:
            return web.json_response(_discovery(name, handler))

        async with _discovery_server(discover) as uri:
            status, body = await cluster.admin_call("POST", "/deployments", {"uri": uri})
            assert status == 400 and "name" in body["message"], (name, body)
    _, services = await cluster.get("/services", admin=True)
    assert {s["name"] for s in services["services"]} == {
        "Counter", "Steps", "Waits", "Callers", "Pongs", "Signup", "Streams", "Names"}


async def test_head_answers_on_get_routes_with_a_slash_inside_a_part(cluster: Cluster) -> None:
    for path in [b"/restate/workflow/Signup/%2F/output", b"/restate/workflow/Flow/%2F/output",
                 b"/restate/invocation/Counter/%2F/add/k/output", b"/restate/workflow/Signup/a%2Fb/attach"]:
        head = await exchange(cluster.ingress, request_bytes("HEAD", path))
        get = await exchange(cluster.ingress, request_bytes("GET", path))
        assert get is not None and head is not None
        assert get.status == 404 and head.status == get.status, (path, get, head)
        assert "no" in _error(get, 404)
    head = await exchange(cluster.admin, request_bytes("HEAD", b"/services/%2F"))
    assert head is not None and head.status == 404
    for method, path in [("GET", b"/invocations/%2F"), ("HEAD", b"/invocations/a%2Fb"), ("DELETE", b"/invocations/%2F"),
                         ("POST", b"/invocations/%2F/kill"), ("POST", b"/invocations/a%2F%2F/restart")]:
        response = await exchange(cluster.admin, request_bytes(method, path))
        assert response is not None and response.status == 404, (method, path, response)


async def test_head_on_the_admin_apis_get_routes_answers_as_get_does(cluster: Cluster) -> None:
    """HEAD on a GET route reached the state edit or invocation action path: a 500."""
    status, sent, _ = await cluster.post("/Counter/h/add/send", 1)
    assert status == 202
    paths = [f"/invocations/{sent['invocationId']}".encode(),
             *(f"/state/Counter/{key}".encode() for key in ("h", "k1", "k2", "k3"))]  # both workers' keys
    for path in paths:
        get = await exchange(cluster.admin, request_bytes("GET", path))
        head = await exchange(cluster.admin, request_bytes("HEAD", path))
        assert get is not None and head is not None
        assert (get.status, head.status, head.body) == (200, 200, b""), (path, get, head)


async def test_an_unknown_expectation_is_a_json_417(cluster: Cluster) -> None:
    response = await exchange(cluster.ingress, request_bytes(
        "POST", b"/Counter/e/add", [(b"expect", b"200-ok"), (b"content-type", b"application/json")], b"1"))
    assert "Expect" in _error(response, 417)
    response = await exchange(cluster.admin, request_bytes("PUT", b"/state/Counter/e/n", [(b"expect", b"x")], b"1"))
    assert "Expect" in _error(response, 417)
    for address, method, path in [(cluster.ingress, "GET", b"/restate/health"), (cluster.admin, "POST", b"/health"),
                                  (cluster.ingress, "GET", b"/restate/invocation/inv_x/events"),
                                  (cluster.ingress, "PUT", b"/nowhere"), (cluster.admin, "GET", b"/nowhere")]:
        response = await exchange(address, request_bytes(method, path, [(b"expect", b"\x80")]))
        assert "Expect" in _error(response, 417)
    response = await exchange(cluster.admin, request_bytes("POST", b"/health"))
    assert "allowed: GET, HEAD" in _error(response, 405)
    response = await exchange(cluster.admin, request_bytes("GET", b"/nowhere/at/all"))
    assert "no such route" in _error(response, 404)
    async with cluster.http.post(f"http://{cluster.ingress}/Counter/e/add", json=2, expect100=True) as answer:
        assert (answer.status, await answer.json()) == (200, 2)
    assert (await cluster.post("/Counter/e/get"))[:2] == (200, 2)


async def test_a_newline_in_a_key_is_a_key_like_any_other(cluster: Cluster) -> None:
    assert (await cluster.post("/Counter/a%0Ab/add", 3))[:2] == (200, 3)
    assert (await cluster.post("/Counter/a%0Ab/get"))[:2] == (200, 3)
    status, state = await cluster.get("/state/Counter/a%0Ab", admin=True)
    assert (status, state["state"]) == (200, {"count": 3})
    response = await exchange(cluster.ingress, request_bytes(
        "GET", b"/restate/invocation/Counter/a%0Ab/add/none/output", [(b"expect", b"\x80")]))
    assert "Expect" in _error(response, 417)
