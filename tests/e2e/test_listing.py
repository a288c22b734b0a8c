"""The invocation list end to end, with two workers: filters, pages followed from cursor to
cursor (every invocation once, newest first), live statuses from both workers, bad parameters."""

from __future__ import annotations

import json
from typing import Any

from sidecar.ids import partition_of_id
from sidecar.process.partitions import DEFAULT_PARTITIONS, PartitionMap
from tests.e2e.conftest import Cluster
from tests.procs import eventually


async def _pages(cluster: Cluster, query: str) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        status, page = await cluster.get(f"/invocations?{query}" + (f"&cursor={cursor}" if cursor else ""),
                                         admin=True)
        assert status == 200, page
        pages.append(page["invocations"])
        cursor = page.get("next_cursor")
        if cursor is None:
            return pages
        assert len(pages) < 100, "the cursors go round in circles"


def _keys_on_each_worker(count: int) -> list[str]:
    """``count`` Counter keys that each of the two workers owns (the default 64 partitions)."""
    partitions = PartitionMap(partitions=DEFAULT_PARTITIONS, workers=2, index=0)
    chosen: dict[int, list[str]] = {0: [], 1: []}
    for n in range(100):
        owner = partitions.owner(partitions.of_key("Counter", f"held-{n}"))
        if len(chosen[owner]) < count:
            chosen[owner].append(f"held-{n}")
    return chosen[0] + chosen[1]


def _ids(pages: list[list[dict[str, Any]]]) -> list[str]:
    return [i["id"] for page in pages for i in page]


async def test_lists_are_filtered_and_paged_newest_first_across_workers(cluster: Cluster) -> None:
    added: dict[str, list[str]] = {}
    for n in range(12):  # four keys: both workers own some of them
        status, _, headers = await cluster.post(f"/Counter/listing-{n % 4}/add", 1)
        assert status == 200
        added.setdefault(f"listing-{n % 4}", []).append(headers["x-restate-id"])
    held = []
    for key in _keys_on_each_worker(2):
        status, body, _ = await cluster.post(f"/Counter/{key}/hold/send", 60_000)
        assert status == 202
        held.append(body["invocationId"])
    assert sorted((partition_of_id(i) or 0) % 2 for i in held) == [0, 0, 1, 1]

    async def all_running() -> bool:
        shown = [(await cluster.get(f"/invocations/{i}", admin=True))[1]["status"] for i in held]
        return shown == ["running"] * len(held)

    await eventually(all_running, what="every hold to run")
    every = sorted([i for ids in added.values() for i in ids] + held, reverse=True)

    pages = await _pages(cluster, "service=Counter&limit=4")
    assert _ids(pages) == every and all(len(page) <= 4 for page in pages) and len(pages) == 4  # 16 of them
    assert _ids(await _pages(cluster, "status=completed&limit=5")) == sorted(
        [i for ids in added.values() for i in ids], reverse=True)
    running = await _pages(cluster, "status=running&service=Counter&limit=2")  # the store says otherwise
    assert _ids(running) == sorted(held, reverse=True)
    assert all(i["status"] == "running" for page in running for i in page)
    assert _ids(await _pages(cluster, "service=Counter&key=listing-1&limit=2")) == sorted(
        added["listing-1"], reverse=True)
    assert _ids(await _pages(cluster, "key=listing-2")) == sorted(added["listing-2"], reverse=True)
    assert _ids(await _pages(cluster, "status=paused")) == []

    listed = await cluster.cli("invocations", "list", "--service", "Counter", "--limit", "5", "--all", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [i["id"] for i in json.loads(listed.stdout)["invocations"]] == every
    first = await cluster.cli("invocations", "list", "--service", "Counter", "--limit", "5")
    assert [line.split()[0] for line in first.stdout.splitlines()[1:]] == every[:5]
    cursor = first.stderr.split("--cursor ")[1].split()[0]
    rest = await cluster.cli("invocations", "list", "--service", "Counter", "--limit", "5", "--cursor", cursor)
    assert [line.split()[0] for line in rest.stdout.splitlines()[1:]] == every[5:10]
    for invocation_id in held:
        assert (await cluster.admin_call("POST", f"/invocations/{invocation_id}/kill"))[0] == 202


async def test_bad_limits_and_cursors_are_refused_with_a_reason(cluster: Cluster) -> None:
    for query, message in [("limit=0", "limit must be between 1 and 1000"),
                           ("limit=1001", "limit must be between 1 and 1000"),
                           ("limit=many", "limit must be an integer"),
                           ("cursor=inv_0123456789ABCDEFGHJKMNPQRS", "is not a cursor"),
                           ("cursor=%FF%FE", "is not a cursor"),
                           ("status=paused&cursor=", "is not a cursor")]:
        status, body = await cluster.get(f"/invocations?{query}", admin=True)
        assert (status, body["code"]) == (400, 400) and message in body["message"], (query, body)
    assert (await cluster.get("/health", admin=True))[0] == 200
