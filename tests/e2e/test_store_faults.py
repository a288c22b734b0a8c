"""The store's failure modes: a killed writer process, a full map or disk, a damaged data directory.

Every case runs the real sidecar; crashes are SIGKILLs of the real process.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import Cluster, running_cluster
from tests.procs import ROOT, children, eventually, free_port, sidecar_cli

SLOW_STEPS = 5


def _writer_of(cluster: Cluster) -> int:
    assert cluster.sidecar.proc is not None
    writers = children(cluster.sidecar.proc.pid, b"sidecar.store.writer")
    assert len(writers) == 1, writers
    return writers[0]


async def _start_slow_job(cluster: Cluster, name: str) -> str:
    """A job of five one-second steps, killed into once its first step's effect arrived."""
    status, body, _ = await cluster.post("/Steps/slow_steps/send", name)
    assert status == 202, body

    async def first_step_done() -> bool:
        return (await cluster.sink_counts()).get(f"{name}-0", 0) >= 1

    await eventually(first_step_done, what="the first step")
    return body["invocationId"]


async def _attach(cluster: Cluster, invocation_id: str) -> tuple[int, object]:
    status, body = await cluster.get(f"/restate/invocation/{invocation_id}/attach")
    assert status != 503, body
    return status, body


async def _assert_steps_ran_at_most_twice(cluster: Cluster, name: str) -> None:
    counts = await cluster.sink_counts()
    steps = {i: counts.get(f"{name}-{i}", 0) for i in range(SLOW_STEPS)}
    assert all(1 <= n <= 2 for n in steps.values()), steps


@pytest.mark.timeout(120)
async def test_one_worker_exits_at_once_when_its_writer_is_killed(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest,
) -> None:
    async with running_cluster(tmp_path, http, request, ["--inactivity-timeout", "3", "--workers", "1"]) as cluster:
        invocation_id = await _start_slow_job(cluster, "solo")
        # A caller waiting on the job keeps a request open: it must not hold up the exit.
        waiting = asyncio.ensure_future(cluster.get(f"/restate/invocation/{invocation_id}/attach"))
        await asyncio.sleep(0)
        os.kill(_writer_of(cluster), signal.SIGKILL)
        assert cluster.sidecar.proc is not None
        killed = time.monotonic()
        code = await asyncio.to_thread(cluster.sidecar.proc.wait, 10)
        assert time.monotonic() - killed < 5
        assert code == 1
        lines = [line for line in cluster.sidecar.log().splitlines() if "writer process" in line]
        assert lines and "CRITICAL" in lines[-1], cluster.sidecar.log()[-2000:]
        await asyncio.gather(waiting, return_exceptions=True)

        await cluster.start_sidecar()
        assert await eventually(lambda: _attach(cluster, invocation_id), timeout=60, what="the result") \
            == (200, list(range(SLOW_STEPS)))
        await _assert_steps_ran_at_most_twice(cluster, "solo")


@pytest.mark.timeout(120)
async def test_the_supervisor_restarts_the_workers_when_the_writer_is_killed(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest,
) -> None:
    async with running_cluster(tmp_path, http, request, ["--inactivity-timeout", "3", "--workers", "2"]) as cluster:
        invocation_id = await _start_slow_job(cluster, "group")
        # Callers waiting on the job, over several connections: both workers hold a request open.
        waiting = asyncio.gather(*(cluster.get(f"/restate/invocation/{invocation_id}/attach") for _ in range(6)),
                                 return_exceptions=True)
        await asyncio.sleep(0.2)
        killed_writer = _writer_of(cluster)
        assert cluster.sidecar.proc is not None
        old_workers = set(children(cluster.sidecar.proc.pid, b"sidecar.process.worker"))
        os.kill(killed_writer, signal.SIGKILL)

        async def new_generation() -> bool:
            assert cluster.sidecar.proc is not None
            writers = children(cluster.sidecar.proc.pid, b"sidecar.store.writer")
            workers = set(children(cluster.sidecar.proc.pid, b"sidecar.process.worker"))
            return bool(writers) and writers != [killed_writer] and len(workers) == 2 and not workers & old_workers

        await eventually(new_generation, timeout=5, what="a new writer and new workers")
        assert cluster.sidecar.running
        await waiting
        assert await eventually(lambda: _attach(cluster, invocation_id), timeout=30, what="the result") \
            == (200, list(range(SLOW_STEPS)))
        await _assert_steps_ran_at_most_twice(cluster, "group")
        assert "writer process" in cluster.sidecar.log()


# --- a damaged data directory ---------------------------------------------------------------------

PAGE = 4096


def _damage_half(data: Path) -> Path:
    size = (data / "data.mdb").stat().st_size
    os.truncate(data / "data.mdb", size // 2 // PAGE * PAGE)
    return data / "data.mdb"


def _damage_odd(data: Path) -> Path:
    os.truncate(data / "data.mdb", (data / "data.mdb").stat().st_size - 1001)
    return data / "data.mdb"


def _damage_empty(data: Path) -> Path:
    os.truncate(data / "data.mdb", 0)
    return data / "data.mdb"


def _damage_to_meta_pages(data: Path) -> Path:
    os.truncate(data / "data.mdb", 2 * PAGE)
    return data / "data.mdb"


def _damage_first_pages(data: Path) -> Path:
    with (data / "data.mdb").open("r+b") as file:
        file.write(random.Random(7).randbytes(3 * PAGE))
    return data / "data.mdb"


def _damage_meta_one(data: Path) -> Path:
    with (data / "data.mdb").open("r+b") as file:
        file.seek(PAGE + 16)
        file.write(b"\0" * 8)
    return data / "data.mdb"


def _regular_file(data: Path) -> Path:
    shutil.rmtree(data)
    data.write_bytes(b"not a directory\n")
    return data


DAMAGE = {
    "half": (_damage_half, "truncated"), "odd-length": (_damage_odd, "whole number"),
    "empty": (_damage_empty, "empty"), "meta-pages-only": (_damage_to_meta_pages, "truncated"),
    "random-first-pages": (_damage_first_pages, "not an LMDB file"), "meta-page-1": (_damage_meta_one, "meta page 1"),
    "regular-file": (_regular_file, "not a directory"),
}


@pytest.fixture(scope="module")
def stored_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory the sidecar wrote: 100 invocations on as many keys, then a clean stop."""
    tmp = tmp_path_factory.mktemp("stored")

    async def fill() -> None:
        async with aiohttp.ClientSession() as http:
            cluster = Cluster(tmp, http, handlers="tests.e2e.handlers:SERVICES",
                              sidecar_flags=["--workers", "1", "--durability", "none"])
            try:
                await cluster.start()
                for n in range(100):
                    assert (await cluster.post(f"/Counter/k{n}/add", n))[0] == 200
            finally:
                cluster.stop()

    asyncio.run(fill())
    return tmp / "data"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_data_directory_is_refused_untouched(
    stored_data: Path, tmp_path: Path, damage: str, workers: str,
) -> None:
    data = tmp_path / "data"
    shutil.copytree(stored_data, data)
    spoil, what = DAMAGE[damage]
    damaged = spoil(data)
    before = _digest(damaged)
    result = subprocess.run(
        sidecar_cli("serve", "--data-dir", str(data), "--ingress", f"127.0.0.1:{free_port()}",
                    "--admin", f"127.0.0.1:{free_port()}", "--workers", workers),
        capture_output=True, text=True, timeout=30, cwd=ROOT)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, output
    assert len(output.splitlines()) == 1, output
    assert str(damaged) in output and what in output, output
    assert "Traceback" not in output
    assert _digest(damaged) == before


# --- a full map or disk ---------------------------------------------------------------------------

#: Random text (it compresses to 3/4 only): a large payload is stored as a compressed blob, once.
BIG = base64.b64encode(random.Random(0).randbytes(150 * 1024)).decode()


async def _fill(cluster: Cluster, text: str = BIG) -> list[str]:
    """Calls with ``text``, each made distinct (blobs store equal payloads once), until one is
    refused for want of room; the IDs of those that completed."""
    done = []
    for n in range(1000):
        status, body, headers = await cluster.post("/Steps/length", f"{n:06d}{text[6:]}")
        if status == 503:
            assert headers.get("Retry-After"), headers
            assert "cannot take writes" in body["message"], body
            return done
        assert status == 200, body
        assert body == len(text)
        done.append(headers["x-restate-id"])
    raise AssertionError("the store never filled up")


async def _reads_and_room(cluster: Cluster, done: list[str]) -> list[str]:
    """While full: reads answer, writes get 503; purging makes room without a restart. Returns
    the IDs of the completed invocations still stored."""
    assert cluster.sidecar.running
    assert (await cluster.get("/restate/health"))[0] == 200
    assert (await cluster.get("/health", admin=True))[0] == 200
    assert await cluster.get(f"/restate/invocation/{done[-1]}/output") == (200, len(BIG))
    status, listed = await cluster.get("/invocations?limit=1000", admin=True)
    assert status == 200 and {i["id"] for i in listed["invocations"]} >= set(done)
    status, _, headers = await cluster.post("/Steps/length", BIG, headers={"idempotency-key": "while-full"})
    assert status == 503 and headers.get("Retry-After")

    purged = done[:8]
    for invocation_id in purged:
        status, body = await cluster.admin_call("DELETE", f"/invocations/{invocation_id}")
        assert status == 200, body

    async def written_again() -> str:
        status, _, headers = await cluster.post("/Steps/length", BIG)
        return headers["x-restate-id"] if status == 200 else ""

    added = await eventually(written_again, timeout=15, what="a write to succeed after the purge")
    # The refused invocation left nothing behind: its idempotency key is free.
    status, body, headers = await cluster.post("/Steps/length", BIG, headers={"idempotency-key": "while-full"})
    assert status == 200 and body == len(BIG), body
    return done[len(purged):] + [added, headers["x-restate-id"]]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_full_map_refuses_writes_serves_reads_and_writes_again_after_a_purge(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
    workers: str,
) -> None:
    monkeypatch.setenv("SIDECAR_MAP_SIZE_BYTES", str(8 << 20))
    async with running_cluster(tmp_path, http, request, ["--workers", workers, "--durability", "none"]) as cluster:
        done = await _fill(cluster)
        assert len(done) >= 10
        kept = await _reads_and_room(cluster, done)
        assert cluster.sidecar.stop() == 0
        await cluster.start_sidecar()
        await eventually(lambda: cluster.get("/restate/health"), what="the ingress")  # bound after the admin
        for invocation_id in kept:  # nothing acknowledged was lost
            assert await cluster.get(f"/restate/invocation/{invocation_id}/output") == (200, len(BIG))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["websocket", "request-response"])
async def test_a_job_caught_by_a_full_map_waits_without_rerunning_its_step_and_completes_after_a_purge(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
    transport: str,
) -> None:
    monkeypatch.setenv("SIDECAR_MAP_SIZE_BYTES", str(8 << 20))
    flags = ["--workers", "1", "--durability", "none", "--inactivity-timeout", "3"]
    async with running_cluster(tmp_path, http, request, flags) as cluster:
        if transport == "request-response":
            registered = await cluster.cli("register", f"http://127.0.0.1:{cluster.handler_port}", "--force",
                                           "--request-response")
            assert registered.returncode == 0, registered.stderr
        invocation_id = await _start_slow_job(cluster, "caught")
        done = await _fill(cluster)
        await _fill(cluster, "y" * (16 * 1024))  # down to less than the room writes resume at

        async def waiting_for_room() -> bool:
            _, shown = await cluster.get(f"/invocations/{invocation_id}", admin=True)
            return shown["status"] == "backing-off" and "write" in (shown["last_error"] or "")

        await eventually(waiting_for_room, what="the job's attempt to fail at a write")
        before = await cluster.sink_counts()
        await asyncio.sleep(3)  # a window in which nothing may happen: no attempt while full
        assert await cluster.sink_counts() == before

        for purged in done[:10]:
            assert (await cluster.admin_call("DELETE", f"/invocations/{purged}"))[0] == 200
        assert await eventually(lambda: _attach(cluster, invocation_id), timeout=30, what="the result") \
            == (200, list(range(SLOW_STEPS)))
        await _assert_steps_ran_at_most_twice(cluster, "caught")


@pytest.mark.timeout(120)
async def test_a_timer_that_fires_while_the_map_is_full_fires_again_once_there_is_room(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SIDECAR_MAP_SIZE_BYTES", str(8 << 20))
    async with running_cluster(tmp_path, http, request, ["--workers", "1", "--durability", "none"]) as cluster:
        status, body, _ = await cluster.post("/Waits/park/send", 8.0)
        assert status == 202, body
        invocation_id = body["invocationId"]
        due = time.monotonic() + 8.0

        async def suspended() -> bool:
            return (await cluster.get(f"/invocations/{invocation_id}", admin=True))[1]["status"] == "suspended"

        await eventually(suspended, what="the sleep to suspend the invocation")
        done = await _fill(cluster)
        await _fill(cluster, "y" * (16 * 1024))
        assert time.monotonic() < due, "the map filled only after the timer was due"

        async def overdue() -> bool:
            return time.monotonic() > due + 1.5

        await eventually(overdue, timeout=15, what="the timer to fire into a full map")
        assert await suspended()  # its completion could not be written
        for purged in done[:10]:
            assert (await cluster.admin_call("DELETE", f"/invocations/{purged}"))[0] == 200
        assert await eventually(lambda: _attach(cluster, invocation_id), timeout=15, what="the result") \
            == (200, "back")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/data`` on a 16 MiB tmpfs of its own (needs the right to mount: root)."""
    data = tmp_path / "data"
    data.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(data)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield data
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_full_disk_refuses_writes_serves_reads_and_writes_again_after_a_purge(
    small_disk: Path, tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest, workers: str,
) -> None:
    async with running_cluster(tmp_path, http, request, ["--workers", workers, "--durability", "none"]) as cluster:
        assert cluster.data_dir == small_disk
        done = await _fill(cluster)
        assert len(done) >= 10
        kept = await _reads_and_room(cluster, done)
        assert cluster.sidecar.stop() == 0
        await cluster.start_sidecar()
        await eventually(lambda: cluster.get("/restate/health"), what="the ingress")
        for invocation_id in kept:
            assert await cluster.get(f"/restate/invocation/{invocation_id}/output") == (200, len(BIG))
