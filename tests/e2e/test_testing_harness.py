"""handler_sdk.testing as users run it, and the test clock it drives.

A user's project (``harness_user/``: its services and its tests, written with the ``sidecar_harness``
fixture) is copied to a directory of its own and run by pytest in a subprocess: under
pytest-asyncio's auto mode, its strict mode, and with no asyncio plugin at all. The test clock's
admin route is then held to the contract: bad input is a 400 that says why (fuzzed), and the
route does not exist without ``--test-clock``.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handler_sdk.testing import HarnessError, TestSidecar
from sidecar.http.test_clock import MAX_ADVANCE_MS, MAX_OFFSET_MS
from tests.e2e.conftest import START_TIMEOUT_S
from tests.e2e.handlers import counter
from tests.procs import ROOT, Process, eventually, free_port, sidecar_cli

USER_PROJECT = Path(__file__).parent / "harness_user"
DAY = timedelta(days=1)


def _users_pytest(tmp_path: Path, ini: str, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest in a copy of the user's project, as its own root (its own ini, no conftest of ours)."""
    project = tmp_path / "project"
    shutil.copytree(USER_PROJECT, project, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "pytest.ini").write_text(f"[pytest]\nfilterwarnings = error\ntimeout = 240\n{ini}")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=project, capture_output=True, text=True, timeout=400)


def _passed(result: subprocess.CompletedProcess[str], count: int) -> None:
    assert result.returncode == 0 and f"{count} passed" in result.stdout, result.stdout[-6000:] + result.stderr[-3000:]


@pytest.mark.timeout(420)
def test_a_users_tests_pass_under_pytest_asyncio_auto_mode(tmp_path: Path) -> None:
    """Three days of sleep, a delayed send, a deadline and an hour's retry back-off under advance; a
    SIGKILL mid-step with no step repeated; a restart that keeps what finished and the time: see
    harness_user/test_shop.py."""
    ini = "asyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    _passed(_users_pytest(tmp_path, ini, "test_shop.py"), 8)


@pytest.mark.timeout(240)
def test_the_docs_example_passes_as_written(tmp_path: Path) -> None:
    """docs/testing.md's two files, pasted as they stand: its services module and its test."""
    section = (ROOT / "docs" / "testing.md").read_text().split("## A complete example\n", 1)[1].split("\n## ", 1)[0]
    services, tests = re.findall(r"```python\n(.*?)```", section, re.S)[:2]
    project = tmp_path / "docs-example"
    project.mkdir()
    (project / "reminders.py").write_text(services)
    (project / "test_reminders.py").write_text(tests)
    (project / "pytest.ini").write_text(
        "[pytest]\nfilterwarnings = error\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project,
                            capture_output=True, text=True, timeout=200)
    _passed(result, 1)


@pytest.mark.timeout(420)
def test_the_fixture_works_in_strict_mode_and_with_no_asyncio_plugin(tmp_path: Path) -> None:
    strict = _users_pytest(tmp_path / "strict", "asyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n",
                           "test_shop.py", "-k", "restart or failures")
    _passed(strict, 2)
    _passed(_users_pytest(tmp_path / "plain", "", "-p", "no:asyncio", "-p", "no:aiohttp", "test_plain.py"), 1)


# --- the test clock's route ----------------------------------------------------------------------


async def _post_clock(sc: TestSidecar, body: bytes) -> tuple[int, object]:
    async with aiohttp.ClientSession() as http, http.post(f"{sc.admin_url}/test/clock", data=body) as response:
        return response.status, msgspec.json.decode(await response.read())


async def test_bad_advances_are_refused_with_the_reason_and_move_nothing(
        sidecar_harness: Callable[..., TestSidecar]) -> None:
    async with sidecar_harness([counter]) as sc:
        before = await sc.now()
        for body, reason in [
            (b'{"advance_ms": -1}', "Expected `int` >= 0 - at `$.advance_ms`"),
            (b'{"advance_ms": "3 days"}', "Expected `int`, got `str` - at `$.advance_ms`"),
            (b'{"advance_ms": 1.5}', "Expected `int`, got `float`"),
            (b'{"advance_ms": true}', "Expected `int`, got `bool`"),
            (msgspec.json.encode({"advance_ms": MAX_ADVANCE_MS + 1}), f"Expected `int` <= {MAX_ADVANCE_MS}"),
            (b'{"advance": 5}', "Object contains unknown field `advance`"),
            (b"{}", "Object missing required field `advance_ms`"),
            (b'{"advance_ms": 5, "by": 1}', "unknown field `by`"),
            (b"soon", "expected {\"advance_ms\": N}"),
            (b"", "expected {\"advance_ms\": N}"),
        ]:
            status, answer = await _post_clock(sc, body)
            assert status == 400 and isinstance(answer, dict) and answer["code"] == 400, (body, answer)
            assert reason in answer["message"], (body, answer)
        with pytest.raises(ValueError, match="advance must be zero or more"):
            await sc.advance(timedelta(seconds=-1))
        assert (await sc.now()) - before < timedelta(minutes=5)  # nothing above moved it
        assert (await sc.admin("GET", "/test/clock"))["offset_ms"] == 0

        for _ in range(MAX_OFFSET_MS // MAX_ADVANCE_MS):
            await sc.advance(timedelta(milliseconds=MAX_ADVANCE_MS))
        status, answer = await _post_clock(sc, msgspec.json.encode({"advance_ms": 1}))
        assert status == 400 and "at most" in answer["message"]  # type: ignore[index]
        assert await sc.call("Counter/far/add", 1) == 1  # and it still serves, a thousand years on


@settings(max_examples=150)
@given(body=st.one_of(
    st.binary(max_size=64),
    st.builds(lambda v: json.dumps({"advance_ms": v}).encode(), st.one_of(
        st.integers(min_value=-2**80, max_value=2**80), st.integers(min_value=0, max_value=10 * 86_400_000),
        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8), st.none(), st.booleans(),
        st.lists(st.integers(), max_size=3))),
    st.dictionaries(st.text(max_size=12), st.integers(), max_size=3).map(lambda d: json.dumps(d).encode()),
))
def test_fuzzed_advances_get_200_or_a_json_400_and_time_never_goes_back(fuzzed_clock: TestSidecar, body: bytes) -> None:
    async def one() -> None:
        before = msgspec.json.decode(await _get(f"{fuzzed_clock.admin_url}/test/clock"))["now_ms"]
        status, answer = await _post_clock(fuzzed_clock, body)
        assert isinstance(answer, dict)
        if status == 200:
            assert answer["now_ms"] >= before and answer["offset_ms"] >= 0
        else:
            assert status == 400 and answer["code"] == 400 and answer["message"], answer
    asyncio.run(one())


async def _get(url: str) -> bytes:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        return await response.read()


@pytest.fixture(scope="module")
def fuzzed_clock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestSidecar]:
    """One harness sidecar for every fuzzed example, on a loop of its own (hypothesis runs the
    examples synchronously); afterwards it must still serve and have logged no traceback."""
    loop = asyncio.new_event_loop()
    sc = TestSidecar([counter], directory=tmp_path_factory.mktemp("fuzzed-clock"))
    loop.run_until_complete(sc.start())
    yield sc
    try:
        assert loop.run_until_complete(sc.call("Counter/fuzz/add", 1)) == 1
        assert "Traceback" not in sc.logs() and "unhandled error" not in sc.logs()
    finally:
        loop.run_until_complete(sc.stop())
        loop.close()


async def test_without_the_flag_there_is_no_test_clock(tmp_path: Path) -> None:
    admin = f"127.0.0.1:{free_port()}"
    sidecar = Process("sidecar", sidecar_cli("serve", "--data-dir", str(tmp_path / "data"), "--durability", "none",
                                             "--ingress", f"127.0.0.1:{free_port()}", "--admin", admin), tmp_path)
    sidecar.start()
    try:
        async with aiohttp.ClientSession() as http:
            async def healthy() -> bool:
                async with http.get(f"http://{admin}/health") as response:
                    return response.status == 200
            await eventually(healthy, timeout=START_TIMEOUT_S, what="the sidecar")
            for method in ("GET", "POST"):
                async with http.request(method, f"http://{admin}/test/clock", json={"advance_ms": 1}) as response:
                    assert response.status == 404
                    assert (await response.json())["code"] == 404
    finally:
        sidecar.stop()
    assert not (tmp_path / "data" / "test-clock.json").exists()


async def test_a_sidecar_that_cannot_start_is_a_harness_error_with_its_log(
        sidecar_harness: Callable[..., TestSidecar]) -> None:
    """Here: more than one worker, which the test clock refuses (an advance moves one process's clock)."""
    with pytest.raises(HarnessError, match=r"(?s)the sidecar exited \(status 2\) before serving.*"
                                           r"--test-clock runs one worker .*not --workers 2"):
        async with sidecar_harness([counter], sidecar_args=["--workers", "2"]):
            pass
