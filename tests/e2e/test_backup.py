"""`sidecar backup` under load, and `sidecar check` on good and damaged directories."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import aiohttp
import lmdb
import pytest

from tests.e2e.conftest import Cluster, running_cluster
from tests.procs import Process, eventually, sidecar_cli

#: Payloads over 64 bytes are stored as blobs, so that small tests have references to check.
_BLOBBY = ["--durability", "none", "--workers", "2", "--blob-threshold", "64"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(sidecar_cli(*args), capture_output=True, text=True, timeout=120)


async def test_a_backup_taken_under_load_serves_everything_committed_before_it(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest,
) -> None:
    (tmp_path / "live").mkdir()
    async with running_cluster(tmp_path / "live", http, request, _BLOBBY) as cluster:
        before: dict[str, str] = {}
        for n in range(20):
            status, body, headers = await cluster.post(f"/Counter/b{n % 5}/append", f"item {n} " + "x" * 100)
            assert status == 200, body
            before[headers["x-restate-id"]] = f"b{n % 5}"
        stop = asyncio.Event()
        during = 0

        async def load(worker: int) -> None:
            nonlocal during
            while not stop.is_set():
                status, _, _ = await cluster.post(f"/Counter/load{worker}-{during % 7}/add", 1)
                assert status == 200
                during += 1

        loaders = [asyncio.create_task(load(worker)) for worker in range(4)]
        await eventually(lambda: asyncio.sleep(0, during > 20), what="load to run")
        destination = tmp_path / "backups" / "first"
        destination.parent.mkdir()
        taken = await asyncio.to_thread(_cli, "backup", str(destination), "--data-dir", str(cluster.data_dir))
        load_at_backup = during
        await eventually(lambda: asyncio.sleep(0, during > load_at_backup + 20), what="load to go on after it")
        stop.set()
        await asyncio.gather(*loaders)
        assert taken.returncode == 0 and "backed up" in taken.stdout, taken.stderr
        assert sorted(p.name for p in destination.parent.iterdir()) == ["first"]  # no partial copy left
        checked = _cli("check", "--data-dir", str(destination))
        assert checked.returncode == 0 and checked.stdout.strip().endswith("ok"), checked.stdout

        (tmp_path / "restored").mkdir()
        restored = Cluster(tmp_path / "restored", http, handlers="tests.e2e.handlers:SERVICES", sidecar_flags=_BLOBBY)
        restored.data_dir = destination
        restored.sidecar = Process("sidecar", sidecar_cli(
            "serve", "--data-dir", str(destination), "--ingress", restored.ingress, "--admin", restored.admin,
            "--register", f"http://127.0.0.1:{cluster.handler_port}", *_BLOBBY), tmp_path / "restored")
        try:
            await restored.start_sidecar()
            for invocation_id, key in before.items():
                status, detail = await restored.get(f"/invocations/{invocation_id}", admin=True)
                assert status == 200 and detail["status"] == "completed" and detail["key"] == key, detail
            for n in range(5):
                status, state = await restored.get(f"/state/Counter/b{n}", admin=True)
                assert status == 200 and len(state["state"]["items"]) == 4, state
            assert (await restored.post("/Counter/b0/append", "after"))[0] == 200
            status, state = await restored.get("/state/Counter/b0", admin=True)
            assert state["state"]["items"][-1] == "after"
        finally:
            restored.sidecar.stop()
            if getattr(request.node, "rep_call_failed", False):
                print(restored.sidecar.log()[-6000:])
        # The original went on serving throughout, and still does.
        assert (await cluster.post("/Counter/b0/add", 1))[0] == 200


@pytest.mark.parametrize("where, says", [
    ("exists", "already exists"), ("file-parent", "is not a directory"), ("missing-parent", "create it first"),
    ("proc", "cannot write the backup"),
])
def test_a_backup_destination_that_cannot_be_written_is_a_clear_error(
    tmp_path: Path, where: str, says: str, filled: Path,
) -> None:
    destination = {
        "exists": tmp_path / "there", "file-parent": tmp_path / "a-file" / "backup",
        "missing-parent": tmp_path / "nowhere" / "backup", "proc": Path("/proc/sidecar-backup"),
    }[where]
    (tmp_path / "there").mkdir()
    (tmp_path / "a-file").write_text("")
    refused = _cli("backup", str(destination), "--data-dir", str(filled))
    assert refused.returncode == 2 and says in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    assert "no backup taken" in refused.stderr
    if destination.parent.is_dir():
        assert not list(destination.parent.glob(".*.partial"))


def test_a_backup_of_what_is_not_a_data_directory_is_refused(tmp_path: Path) -> None:
    refused = _cli("backup", str(tmp_path / "copy"), "--data-dir", str(tmp_path))
    assert refused.returncode == 2 and "no data directory" in refused.stderr, refused.stderr
    assert not (tmp_path / "copy").exists()


@pytest.fixture
async def filled(tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest) -> Path:
    """A stopped sidecar's data directory holding journals, state, blobs and a schedule."""
    (tmp_path / "filled").mkdir()
    async with running_cluster(tmp_path / "filled", http, request, _BLOBBY) as cluster:
        for n in range(6):
            assert (await cluster.post(f"/Counter/c{n % 3}/append", f"entry {n} " + "y" * 200))[0] == 200
        assert (await cluster.post("/Steps/twenty/send", "check"))[0] == 202
        status, _ = await cluster.admin_call("PUT", "/schedules/new-year", {"cron": "0 0 1 1 *", "target": "Steps/twenty"})
        assert status == 201
        await eventually(lambda: _finished(cluster), what="the steps to finish")
    return cluster.data_dir


async def _finished(cluster: Cluster) -> bool:
    status, page = await cluster.get("/invocations?status=running", admin=True)
    return status == 200 and not page["invocations"]


def _damage(data: Path, what: str) -> None:
    env = lmdb.open(str(data), max_dbs=30)
    journal, blobs, schedules = env.open_db(b"journal"), env.open_db(b"blobs"), env.open_db(b"schedules")
    with env.begin(write=True) as txn:
        if what == "schedule":
            txn.put(b"new-year", b"\x91\xc1", db=schedules)
        elif what == "journal":
            with txn.cursor(db=journal) as cursor:
                keys = [bytes(k) for k in cursor.iternext(values=False)]
            owner = keys[0][:-5]
            txn.delete([k for k in keys if k[:-5] == owner][1], db=journal)
        else:
            with txn.cursor(db=blobs) as cursor:
                assert cursor.first()
                txn.delete(bytes(cursor.key()), db=blobs)
    env.close()


def test_check_passes_a_good_directory(filled: Path) -> None:
    checked = _cli("check", "--data-dir", str(filled))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "layout " in checked.stdout and "blobs" in checked.stdout and checked.stdout.strip().endswith("ok")
    verdict = json.loads(_cli("check", "--data-dir", str(filled), "--json").stdout)
    assert verdict["ok"] and verdict["invocations"] == 7 and verdict["blobs"] >= 6 and verdict["journal_entries"] > 20
    assert verdict["schedules"] == 1


@pytest.mark.parametrize("what, says", [("journal", "lacks entry 1"), ("blob", "but it is not stored"),
                                        ("schedule", "schedule new-year: its record cannot be read")])
def test_check_finds_a_damaged_directory(filled: Path, what: str, says: str) -> None:
    _damage(filled, what)
    checked = _cli("check", "--data-dir", str(filled))
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert says in checked.stdout and "problems found" in checked.stdout and "Traceback" not in checked.stderr


def test_check_refuses_a_truncated_file_or_a_newer_layout(filled: Path) -> None:
    env = lmdb.open(str(filled), max_dbs=30)
    with env.begin(write=True, db=env.open_db(b"meta")) as txn:
        txn.put(b"format", b"99")
    env.close()
    newer = _cli("check", "--data-dir", str(filled))
    assert newer.returncode == 2 and "layout 99 is newer" in newer.stderr, newer.stderr
    data = filled / "data.mdb"
    data.write_bytes(data.read_bytes()[:-4096 * 3 - 100])
    cut = _cli("check", "--data-dir", str(filled))
    assert cut.returncode == 2 and "data.mdb" in cut.stderr and "Traceback" not in cut.stderr, cut.stderr
