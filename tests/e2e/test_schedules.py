"""Schedules end to end (DESIGN §12): intervals and cron expressions fire invocations, once per
fire time across SIGKILL, catch up after downtime as their policy says, skip or queue while a
firing runs, stop when deleted; the CLI; and every bad schedule refused with a reason.

Every firing reports ``schedule|fire time|invocation ID`` at the sink (tests/e2e/scheduled.py):
a fire time with two invocation IDs would be a firing doubled, a fire time missing from a run
of them one lost. Intervals are 1 s; every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import aiohttp
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.e2e.conftest import Cluster, running_cluster
from tests.procs import eventually

_HANDLERS = "tests.e2e.scheduled:SERVICES"


@pytest.fixture
async def gates(tmp_path: Path) -> Path:
    folder = tmp_path / "gates"
    folder.mkdir()
    return folder


@pytest.fixture
async def sched(tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest,
                gates: Path) -> AsyncIterator[Cluster]:
    """Two workers: each schedule is fired by the one that owns its partition, its firings
    created wherever their target's partition is."""
    flags = ["--durability", "none", "--workers", "2"]
    async with running_cluster(tmp_path, http, request, flags, handlers=_HANDLERS,
                               handler_env={"SCHEDULE_GATES": str(gates)}) as running:
        yield running


@pytest.fixture
async def solo(tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest,
               gates: Path) -> AsyncIterator[Cluster]:
    """One process with fsync on: what a crash test kills."""
    async with running_cluster(tmp_path, http, request, [], handlers=_HANDLERS,
                               handler_env={"SCHEDULE_GATES": str(gates)}) as running:
        yield running


@pytest.fixture
async def skipping(tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest,
                   gates: Path) -> AsyncIterator[Cluster]:
    """One worker on the test clock: a cron's next minute comes when the test moves time on."""
    async with running_cluster(tmp_path, http, request, ["--durability", "none", "--test-clock"],
                               handlers=_HANDLERS, handler_env={"SCHEDULE_GATES": str(gates)}) as running:
        yield running


def _ms(iso: str) -> int:
    return round(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


async def firings(cluster: Cluster, name: str) -> dict[int, set[str]]:
    """Each fire time of schedule ``name`` the handlers saw, with the invocations that reported it."""
    seen: dict[int, set[str]] = {}
    for marker in await cluster.sink_counts():
        schedule, fire_time, invocation_id = marker.split("|")
        if schedule == name:
            seen.setdefault(_ms(fire_time), set()).add(invocation_id)
    return seen


async def put(cluster: Cluster, name: str, **body: Any) -> dict[str, Any]:
    status, answer = await cluster.admin_call("PUT", f"/schedules/{name}", body)
    assert status in (200, 201), answer
    return answer


async def schedule(cluster: Cluster, name: str) -> dict[str, Any]:
    status, answer = await cluster.admin_call("GET", f"/schedules/{name}")
    assert status == 200, answer
    return answer


async def until_fired(cluster: Cluster, name: str, count: int, timeout: float = 30.0) -> dict[int, set[str]]:
    async def enough() -> dict[int, set[str]] | None:
        seen = await firings(cluster, name)
        return seen if len(seen) >= count else None
    return await eventually(enough, timeout=timeout, what=f"{count} firings of {name}")


def _once_each(seen: dict[int, set[str]]) -> None:
    doubled = {fire: ids for fire, ids in seen.items() if len(ids) > 1}
    assert not doubled, f"fire times with more than one invocation: {doubled}"


async def _metric(cluster: Cluster, outcome: str) -> float:
    _, text = await cluster.get("/metrics", admin=True)
    prefix = f'sidecar_schedule_firings_total{{outcome="{outcome}"}} '
    return sum(float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix))


# --- firing on time ------------------------------------------------------------------------------


async def test_an_interval_fires_every_second_once_per_fire_time(sched: Cluster) -> None:
    # catch_up "all": a loop late by more than a second (a busy machine) still makes each fire time
    created = await put(sched, "tick", every="1s", target="Ticks/tick", input="hello", catch_up="all")
    assert created["every"] == "1s" and created["next_fire_ms"] > time.time() * 1000 - 1000
    seen = await until_fired(sched, "tick", 4)
    _once_each(seen)
    fire_times = sorted(seen)
    assert all(b - a == 1000 for a, b in zip(fire_times, fire_times[1:])), fire_times  # each fire time, none lost
    assert fire_times[0] == created["next_fire_ms"]

    view = await schedule(sched, "tick")
    assert view["fired"] >= 4 and view["skipped"] == 0 and view["last_error"] is None
    status, detail = await sched.admin_call("GET", f"/invocations/{view['last_invocation_id']}")
    assert status == 200 and detail["idempotency_key"] == f"schedule:tick:{view['last_fire_ms']}"
    assert detail["input"] == "hello" and view["next_fire_ms"] == view["last_fire_ms"] + 1000
    status, listed = await sched.admin_call("GET", "/schedules")
    assert [s["name"] for s in listed["schedules"]] == ["tick"]
    assert await _metric(sched, "repeated") == 0  # one worker fires it: no second try of any fire time


async def test_a_cron_schedule_fires_at_the_next_matching_minute_of_its_zone(skipping: Cluster) -> None:
    view = await put(skipping, "weekday-morning", cron="0 9 * * MON-FRI", timezone="Europe/Berlin",
                     target="Ticks/tick")
    berlin = datetime.now(ZoneInfo("Europe/Berlin"))
    expected = berlin.replace(hour=9, minute=0, second=0, microsecond=0)
    while expected <= berlin or expected.weekday() >= 5:
        expected = (expected + timedelta(days=1)).replace(hour=9)  # replace: the offset of that day
    assert view["next_fire_ms"] == round(expected.timestamp() * 1000)
    assert view["timezone"] == "Europe/Berlin" and view["cron"] == "0 9 * * MON-FRI"

    every_minute = await put(skipping, "minutely", cron="* * * * *", target="Ticks/tick")  # UTC by default
    assert every_minute["timezone"] == "UTC" and every_minute["next_fire_ms"] % 60_000 == 0
    # Time moves on to just past that minute (not to the next one): it fires once, at that minute.
    status, _ = await skipping.admin_call(
        "POST", "/test/clock", {"advance_ms": every_minute["next_fire_ms"] - round(time.time() * 1000) + 50})
    assert status == 200
    seen = await until_fired(skipping, "minutely", 1)
    assert list(seen) == [every_minute["next_fire_ms"]]


async def test_a_workflow_runs_on_a_key_of_its_own_at_each_firing(sched: Cluster) -> None:
    await put(sched, "daily-report", every="1s", target="Report/daily/run")
    seen = await until_fired(sched, "daily-report", 2)
    ids = [next(iter(ids)) for _, ids in sorted(seen.items())]
    status, detail = await sched.admin_call("GET", f"/invocations/{ids[0]}")
    assert status == 200 and detail["key"].startswith("daily-") and detail["status"] == "completed"
    assert len(set(ids)) == len(ids)


# --- once per fire time across crashes ---------------------------------------------------------------


async def test_a_sigkilled_sidecar_neither_loses_nor_doubles_a_firing(solo: Cluster) -> None:
    await put(solo, "beat", every="1s", target="Ticks/tick", catch_up="all")
    for round_ in range(3):
        seen = await until_fired(solo, "beat", 2 * (round_ + 1))
        solo.sidecar.kill()
        await solo.start_sidecar()
    seen = await until_fired(solo, "beat", len(seen) + 2)
    _once_each(seen)
    fire_times = sorted(seen)
    gaps = [b - a for a, b in zip(fire_times, fire_times[1:]) if b - a != 1000]
    assert not gaps, f"fire times lost: {gaps} ({fire_times})"


# --- catching up after downtime -------------------------------------------------------------------------


async def test_after_downtime_each_policy_makes_up_for_one_all_or_none(solo: Cluster) -> None:
    for policy in ("one", "all", "none"):  # queue: overlap applies to catch-up firings too, and skip would skip them
        await put(solo, f"catch-{policy}", every="1s", target="Ticks/tick", catch_up=policy, overlap="queue")
    before = {policy: await until_fired(solo, f"catch-{policy}", 1) for policy in ("one", "all", "none")}
    solo.sidecar.stop()
    stopped = time.time()
    await asyncio.sleep(4.5)  # the downtime is what this test is about: fire times pass with nobody firing
    await solo.start_sidecar()

    for policy in ("one", "all", "none"):
        name = f"catch-{policy}"

        async def caught_up() -> dict[str, Any] | None:
            view = await schedule(solo, name)
            catch = view["last_catch_up"]
            return view if catch is not None and catch["at_ms"] > stopped * 1000 else None

        view = await eventually(caught_up, what=f"{name} to catch up")
        catch = view["last_catch_up"]
        assert catch["due"] >= 3, catch  # 4.5 s down, firing each second
        known = max(before[policy])
        latest = known + (catch["at_ms"] - known) // 1000 * 1000
        due = {latest - i * 1000 for i in range(catch["due"])}
        expected = {"one": {latest}, "all": due, "none": set()}[policy]
        assert catch["fired"] == len(expected) and view["missed"] == catch["due"] - len(expected)

        async def settled() -> bool:
            return set(await firings(solo, name)) & due == expected
        await eventually(settled, what=f"the firings {name} makes up for")
        seen = await until_fired(solo, name, len(await firings(solo, name)) + 1)  # and on it goes
        _once_each(seen)


# --- overlap --------------------------------------------------------------------------------------------


async def test_skip_leaves_out_firings_while_the_last_one_runs_and_queue_does_not(sched: Cluster, gates: Path) -> None:
    await put(sched, "slow-skip", every="1s", target="Ticks/slow", input="skip-gate", overlap="skip")
    await put(sched, "slow-queue", every="1s", target="Ticks/slow", input="queue-gate", overlap="queue")

    async def skipped_twice() -> dict[str, Any] | None:
        view = await schedule(sched, "slow-skip")
        return view if view["skipped"] >= 2 else None
    view = await eventually(skipped_twice, what="two skipped firings")
    assert view["fired"] == 1 and view["last_skipped_ms"] > view["last_fire_ms"]
    assert len(await firings(sched, "slow-skip")) == 1
    await until_fired(sched, "slow-queue", 3)  # each made, all three running at once

    (gates / "skip-gate").touch()
    (gates / "queue-gate").touch()
    seen = await until_fired(sched, "slow-skip", 2)
    first, second = sorted(seen)
    assert second - first >= 3000  # the fire times in between were skipped
    assert (await schedule(sched, "slow-skip"))["skipped"] >= 2


# --- replace and delete -------------------------------------------------------------------------------


async def test_a_put_takes_effect_at_once_and_a_delete_stops_the_firings(sched: Cluster) -> None:
    first = await put(sched, "soon", every="1h", target="Ticks/tick")
    again = await put(sched, "soon", every="1h", target="Ticks/tick")  # the same spec: nothing moves
    assert again["next_fire_ms"] == first["next_fire_ms"] and again["updated_at"] == first["updated_at"]
    replaced = await put(sched, "soon", every="1s", target="Clock/hall/chime", overlap="queue")
    assert replaced["target"] == "Clock/hall/chime" and replaced["next_fire_ms"] < time.time() * 1000 + 2000
    await until_fired(sched, "soon", 2)

    status, answer = await sched.admin_call("DELETE", "/schedules/soon")
    assert status == 200 and answer == {"name": "soon", "deleted": True}
    deleted_at = time.time() * 1000
    await put(sched, "witness", every="1s", target="Ticks/tick")
    await until_fired(sched, "witness", 3)  # two seconds at least have passed
    late = [fire for fire in await firings(sched, "soon") if fire > deleted_at]
    assert not late, f"fired after its delete: {late}"
    assert (await sched.admin_call("GET", "/schedules/soon"))[0] == 404
    assert (await sched.admin_call("DELETE", "/schedules/soon"))[0] == 404
    _, state = await sched.admin_call("GET", "/state/Clock/hall")
    assert state["state"]["chimes"] >= 2  # each firing of the replaced target ran in the key's line


# --- the CLI ------------------------------------------------------------------------------------------


async def test_the_cli_sets_lists_and_deletes_schedules(sched: Cluster) -> None:
    done = await sched.cli("schedules", "set", "nightly", "--cron", "30 2 * * *", "--timezone", "Europe/Berlin",
                           "--target", "Ticks/tick", "--input", '"from the cli"', "--catch-up", "none")
    assert done.returncode == 0, done.stderr
    assert "nightly" in done.stdout and "next fire" in done.stdout
    done = await sched.cli("schedules", "set", "pulse", "--every", "1s", "--target", "Ticks/tick", "--overlap", "queue")
    assert done.returncode == 0, done.stderr
    await until_fired(sched, "pulse", 1)

    listed = await sched.cli("schedules", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "WHEN", "TARGET"]
    assert any(line.startswith("nightly ") and "30 2 * * * (Europe/Berlin)" in line for line in lines), lines
    assert any(line.startswith("pulse ") and "every 1s" in line and "inv_" in line for line in lines), lines
    as_json = await sched.cli("schedules", "list", "--json")
    assert as_json.returncode == 0 and '"catch_up": "none"' in as_json.stdout

    deleted = await sched.cli("schedules", "delete", "pulse")
    assert deleted.returncode == 0 and "deleted" in deleted.stdout
    missing = await sched.cli("schedules", "delete", "pulse")
    assert missing.returncode == 1 and "no schedule named 'pulse'" in missing.stderr

    both = await sched.cli("schedules", "set", "x", "--cron", "* * * * *", "--every", "1s", "--target", "Ticks/tick")
    assert both.returncode == 2 and "either --cron or --every" in both.stderr
    bad = await sched.cli("schedules", "set", "x", "--cron", "61 * * * *", "--target", "Ticks/tick")
    assert bad.returncode == 1 and "HTTP 400" in bad.stderr and "61 * * * *" in bad.stderr
    not_json = await sched.cli("schedules", "set", "x", "--every", "1s", "--target", "Ticks/tick", "--input", "{")
    assert not_json.returncode == 2 and "not valid JSON" in not_json.stderr


# --- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "reason"), [
    ({"cron": "61 * * * *", "target": "Ticks/tick"}, "out of range"),
    ({"cron": "* * *", "target": "Ticks/tick"}, "expected five fields"),
    ({"cron": "0 0 30 2 *", "target": "Ticks/tick"}, "never fires"),
    ({"cron": "R * * * *", "target": "Ticks/tick"}, "random (R) and hashed (H)"),
    ({"cron": "0 9 * * *", "timezone": "Mars/Olympus", "target": "Ticks/tick"}, "unknown timezone 'Mars/Olympus'"),
    ({"cron": "0 9 * * *", "timezone": "../../etc/passwd", "target": "Ticks/tick"}, "unknown timezone"),
    ({"every": "500ms", "target": "Ticks/tick"}, "too short: at least 1s"),
    ({"every": "soon", "target": "Ticks/tick"}, "invalid duration 'soon'"),
    ({"every": "1s", "timezone": "UTC", "target": "Ticks/tick"}, '"timezone" applies to "cron" only'),
    ({"every": "1s", "cron": "* * * * *", "target": "Ticks/tick"}, "not both or neither"),
    ({"target": "Ticks/tick"}, "not both or neither"),
    ({"every": "1s", "target": "Nope/tick"}, "unknown service 'Nope'"),
    ({"every": "1s", "target": "Ticks/nope"}, "Ticks has no handler 'nope'"),
    ({"every": "1s", "target": "Clock/chime"}, "an object or a workflow needs a key"),
    ({"every": "1s", "target": "Ticks/k/tick"}, "Ticks is a service"),
    ({"every": "1s", "target": "Ticks"}, "expected Service/handler or Object/key/handler"),
    ({"every": 1, "target": "Ticks/tick"}, "Expected `str | null`, got `int`"),
    ({"every": "1s", "target": ["Ticks", "tick"]}, "Expected `str`, got `array`"),
    ({"every": "1s", "target": "Ticks/tick", "overlap": "wait"}, "Invalid enum value 'wait'"),
    ({"every": "1s", "target": "Ticks/tick", "catch_up": True}, "at `$.catch_up`"),
    ({"every": "1s", "target": "Ticks/tick", "cadence": "daily"}, "unknown field `cadence`"),
    ({"every": "1s"}, "missing required field `target`"),
    ({"every": "1s", "target": "Ticks/tick", "input": "x" * 70_000}, "at most 65536 bytes"),
])
async def test_a_bad_schedule_is_refused_with_its_reason_and_not_stored(
        sched: Cluster, body: dict[str, Any], reason: str) -> None:
    status, answer = await sched.admin_call("PUT", "/schedules/refused", body)
    assert status == 400 and reason in answer["message"], answer
    assert answer["code"] == 400
    assert (await sched.admin_call("GET", "/schedules/refused"))[0] == 404


async def test_bad_names_and_bodies_are_refused(sched: Cluster) -> None:
    for name in ["a%2Fb", "-dash-first", "with%20space", "%C3%A9t%C3%A9", "x" * 995]:
        status, answer = await sched.admin_call("PUT", f"/schedules/{name}", {"every": "1s", "target": "Ticks/tick"})
        assert status == 400 and "schedule name" in answer["message"], (name, answer)
    async with sched.http.put(f"http://{sched.admin}/schedules/ok", data=b"{not json",
                              headers=sched.admin_headers) as response:
        assert response.status == 400 and "expected" in (await response.json())["message"]
    async with sched.http.put(f"http://{sched.admin}/schedules/ok", data=b'{"every": "1s", "target": "Ticks/tick", '
                              b'"input": 1e999}', headers=sched.admin_headers) as response:
        assert response.status == 400 and "Number out of range" in (await response.json())["message"]
    assert (await sched.admin_call("GET", "/schedules/ok"))[0] == 404
    long_name = "n" * 994
    await put(sched, long_name, cron="0 0 1 1 *", target="Ticks/tick")
    assert (await schedule(sched, long_name))["name"] == long_name


# --- fuzzing the PUT --------------------------------------------------------------------------------

_FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))


def _nested(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)


_ANY_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
                         _nested, max_leaves=6)
_FIELDS = {
    "cron": st.sampled_from(["0 9 * * MON-FRI", "* * * * *", "@daily", "61 * * * *", "0 0 30 2 *", "H * * * *",
                             "", "* * * * * *"]) | st.text(max_size=30) | _ANY_JSON,
    "every": st.sampled_from(["1s", "2s", "0.5s", "999ms", "1m30s", "PT1S", "P99999D", "1e400s", "-1s", ""])
    | st.text(max_size=12) | _ANY_JSON,
    "timezone": st.sampled_from(["UTC", "Europe/Berlin", "Mars/Olympus", "../../etc/passwd", "Europe", "", "\x00"])
    | st.text(max_size=30) | _ANY_JSON,
    "target": st.sampled_from(["Ticks/tick", "Clock/k/chime", "Report/r/run", "Ticks", "Nope/x", "Clock/chime",
                               "Ticks/%FF/tick", "Clock/%2F/chime", "Clock/" + "k" * 1100 + "/chime"])
    | st.text(max_size=30) | _ANY_JSON,
    "input": _ANY_JSON,
    "overlap": st.sampled_from(["skip", "queue", "wait"]) | _ANY_JSON,
    "catch_up": st.sampled_from(["one", "all", "none", "some"]) | _ANY_JSON,
    "cadence": _ANY_JSON,
}
_BODIES = st.one_of(
    st.fixed_dictionaries({}, optional=_FIELDS).map(msgspec.json.encode),
    st.binary(max_size=60),
    st.sampled_from([b"", b"null", b"[]", b'{"target": "Ticks/tick", "every": "1s", "input": ' + b"[" * 5000 + b"]" * 5000
                     + b"}", b'{"target": "Ticks/tick", "every": "1s", "input": "' + b"x" * 70_000 + b'"}']),
)
_NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True) | st.text(max_size=20).map(
    lambda text: quote(text, safe="")) | st.sampled_from(["%2F", "%FF", "..", "a%00b", "n" * 1000])


def _exchange(address: str, method: str, path: str, body: bytes, token_headers: dict[str, str]) -> tuple[int, Any]:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, body=body, headers={"content-type": "application/json", **token_headers})
        response = connection.getresponse()
        raw = response.read()
        assert response.getheader("content-type", "").startswith("application/json"), (method, path, raw[:300])
        return response.status, msgspec.json.decode(raw)
    finally:
        connection.close()


async def test_any_put_is_taken_or_refused_with_nothing_stored(sched: Cluster) -> None:
    accepted: set[str] = set()

    @settings(max_examples=_FUZZ_EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(_NAMES, _BODIES)
    def one(name: str, body: bytes) -> None:
        status, answer = _exchange(sched.admin, "PUT", f"/schedules/{name}", body, sched.admin_headers)
        if name == "":  # no name in the path: no schedule's route
            assert status == 404, (name, status, answer)
            return
        assert status in (200, 201, 400), (name, body[:300], status, answer)
        if status == 400:
            assert answer["code"] == 400 and isinstance(answer["message"], str)
            looked, found = _exchange(sched.admin, "GET", f"/schedules/{name}", b"", sched.admin_headers)
            assert looked == 400 or name in accepted or looked == 404, (name, found)  # nothing stored
            return
        accepted.add(name)
        assert _exchange(sched.admin, "DELETE", f"/schedules/{name}", b"", sched.admin_headers)[0] == 200

    await asyncio.to_thread(one)
    assert sched.sidecar.running
    status, listed = await sched.admin_call("GET", "/schedules")
    assert status == 200 and listed["schedules"] == []
    log = sched.sidecar.log()
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]
