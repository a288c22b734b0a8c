"""The admin API behind a bearer token: refused without it, the CLI and helpers with it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.e2e.conftest import Cluster, running_cluster
from tests.procs import Process, eventually, free_port, sidecar_cli

TOKEN = "t0ken-of-the-admin-api-0123456789"


@pytest.fixture
async def guarded(tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """Two workers, the admin token given through SIDECAR_ADMIN_TOKEN."""
    flags = ["--durability", "none", "--workers", "2"]
    async with running_cluster(tmp_path, http, request, flags, admin_token=TOKEN) as running:
        yield running


async def _admin(cluster: Cluster, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], object]:
    async with cluster.http.request(method, f"http://{cluster.admin}{path}", headers=headers) as response:
        body = await response.json(content_type=None)
        return response.status, dict(response.headers), body


async def test_without_the_token_nothing_is_read_or_done(guarded: Cluster) -> None:
    parked = (await guarded.post("/Waits/park/send", 60))[1]["invocationId"]
    for method, path in [("GET", "/invocations"), ("GET", f"/invocations/{parked}"), ("GET", "/metrics"),
                         ("POST", f"/invocations/{parked}/cancel"), ("DELETE", f"/invocations/{parked}"),
                         ("PUT", "/state/Counter/a/count"), ("GET", "/schedules"), ("PUT", "/schedules/nightly"),
                         ("DELETE", "/schedules/nightly"), ("GET", "/nowhere")]:
        status, headers, body = await _admin(guarded, method, path, {})
        assert status == 401, (method, path, body)
        assert isinstance(body, dict) and "SIDECAR_ADMIN_TOKEN" in body["message"]
        assert headers["WWW-Authenticate"].startswith("Bearer")
    for header, says in [(f"Bearer {TOKEN}x", "wrong"), (f"Basic {TOKEN}", "Bearer TOKEN"), ("Bearer", "Bearer TOKEN"),
                         ("Bearer   ", "Bearer TOKEN"), (f"bearer {TOKEN[:-1]}", "wrong")]:
        status, _, body = await _admin(guarded, "POST", f"/invocations/{parked}/cancel", {"authorization": header})
        assert status == 401 and isinstance(body, dict) and says in body["message"], (header, body)
    # Nothing was cancelled: the invocation still waits out its sleep.
    status, body = await guarded.get(f"/invocations/{parked}", admin=True)
    assert status == 200 and body["status"] in ("running", "suspended")
    # Liveness stays open for probes; the ingress never needed the token.
    assert (await _admin(guarded, "GET", "/health", {}))[0] == 200
    assert (await guarded.post("/Counter/auth/add", 2))[:2] == (200, 2)

    cancelled = await guarded.cli("invocations", "cancel", parked)
    assert cancelled.returncode == 0, cancelled.stderr
    scheduled = await guarded.cli("schedules", "set", "nightly", "--cron", "0 3 * * *", "--target", "Counter/n/add",
                                  "--input", "1")
    assert scheduled.returncode == 0, scheduled.stderr
    assert "nightly" in (await guarded.cli("schedules", "list")).stdout
    assert (await guarded.get(f"/restate/invocation/{parked}/attach"))[0] == 409


async def test_the_cli_reads_the_token_from_its_environment(guarded: Cluster) -> None:
    done = await guarded.cli("invoke", "Counter/cli/add", "4")
    invocation_id = done.stderr.strip().split()[-1]
    listed = await guarded.cli("invocations", "list", "--key", "cli")
    assert listed.returncode == 0 and invocation_id in listed.stdout, listed.stderr
    env = {k: v for k, v in os.environ.items() if k != "SIDECAR_ADMIN_TOKEN"}
    env |= {"SIDECAR_INGRESS": guarded.ingress, "SIDECAR_ADMIN": guarded.admin}
    refused = subprocess.run(sidecar_cli("invocations", "list"), capture_output=True, text=True, timeout=60, env=env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "needs a token" in refused.stderr and "401" in refused.stderr


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_categories=("Cs",)), max_size=80))
async def test_any_authorization_header_is_a_401_or_the_token(guarded: Cluster, header: str) -> None:
    try:
        status, _, body = await _admin(guarded, "GET", "/services", {"authorization": header})
    except (ValueError, aiohttp.ClientError):
        return  # not sendable as a header by the client
    expected = 200 if header.strip().lower().startswith("bearer ") and header.split()[-1] == TOKEN \
        and len(header.split()) == 2 else 401
    assert status == expected, (header, body)


def _serve(tmp_path: Path, *flags: str, env: dict[str, str] | None = None) -> Process:
    return Process("sidecar", sidecar_cli("serve", "--data-dir", str(tmp_path / "data"), "--durability", "none",
                                          "--workers", "1", "--ingress", f"127.0.0.1:{free_port()}", *flags),
                   tmp_path, env)


@pytest.mark.parametrize("flags, says", [
    (["--admin", "0.0.0.0:{port}"], "--admin-token"),
    (["--admin", "[::]:{port}"], "--admin-token"),
    (["--admin", "127.0.0.1:{port}", "--admin-token", "short"], "at least 16"),
    (["--admin", "127.0.0.1:{port}", "--admin-token", "has a space in it, see"], "without spaces"),
])
def test_a_start_that_would_expose_the_admin_api_is_refused(tmp_path: Path, flags: list[str], says: str) -> None:
    argv = sidecar_cli("serve", "--data-dir", str(tmp_path / "data"), "--ingress", f"127.0.0.1:{free_port()}",
                       *[flag.format(port=free_port()) for flag in flags])
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and says in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("extra", [["--admin-insecure"], ["--admin-token", TOKEN]])
async def test_beyond_loopback_with_a_token_or_on_purpose(tmp_path: Path, http: aiohttp.ClientSession,
                                                         extra: list[str]) -> None:
    port = free_port()
    sidecar = _serve(tmp_path, "--admin", f"0.0.0.0:{port}", *extra).start()
    try:
        async def services() -> int:
            async with http.get(f"http://127.0.0.1:{port}/services") as response:
                return response.status
        status = await eventually(services, timeout=60, what="the admin API")
        assert status == (401 if "--admin-token" in extra else 200)
    finally:
        sidecar.stop()
