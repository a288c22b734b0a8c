"""The web UI's invocation list over a large store: how long the page it asks for takes.

    python -m benchmarks.ui_list [--invocations 100000] [--requests 200] [--browser-loads 20] [--json out.json]

Fills a data directory with ``--invocations`` finished invocations (Counter.add on 1,000 keys,
one in 20 failed, each with its input and output journaled), written straight through the store's
own batches (``Changes.create`` / ``finish``, ``Store.write_now``: what the writer would commit,
without the handler round trips), then starts the benchmark handler service and a sidecar on it
(``--durability none``, ``--retention`` long enough that nothing is swept) and times, one request
at a time, ``--requests`` of each:

- ``GET /invocations?limit=50``: the page the UI asks for, first page and a deep one (a cursor
  90 % of the way down, as "Older" gives), without a filter, with ``status=failed``, and with
  ``service=Counter&key=...`` (one key: the ``by_target`` index);
- ``key=...`` alone: no index fits, so each call reads its bounded slice of the store (1,000
  entries) and the UI asks up to 10 times to fill its page: the list's worst case;
- ``GET /ui``: the page and every file it loads (what a browser fetches on a cold load).

With ``/usr/bin/chromium`` (or ``CHROMIUM``) and Playwright installed, also ``--browser-loads``
cold loads of ``/ui#/invocations`` in headless Chromium (a fresh context each: nothing cached),
timed from Playwright's ``goto`` until the table shows its 50 rows, and as the page itself times
them: from its navigation start to the ``invocations-listed`` performance mark the list view sets
once its table is built (without Playwright's own round trips). Prints one JSON record per measurement (p50, p99, max, in ms), then a table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import msgspec

from benchmarks.procs import Procs, add_output_options, free_port, http_ok, leave_tmp, machine_info, run_cli, \
    sidecar_executable, wait_until, write_json
from handler_sdk.protocol import Failure, Output
from sidecar.clock import now_ms
from sidecar.http import ui
from sidecar.http.listing import cursor_of
from sidecar.ids import IdGenerator
from sidecar.process.partitions import PartitionMap
from sidecar.store import Changes, InvocationRecord, Store

_KEYS = 1000
_PARTITIONS = 64  # the sidecar's default
_BATCH = 5000
#: The page and every file it loads.
_UI_FILES = ["/ui", *(f"/ui/{f.name}" for f in sorted((Path(ui.__file__).parent / "ui_static").iterdir())
                      if f.name != "index.html")]
_BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class Timing(msgspec.Struct):
    name: str
    what: str
    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    #: Rows on the page measured (the API's answer, or the UI's table).
    rows: int


class Report(msgspec.Struct):
    machine: dict[str, object]
    invocations: int
    fill_s: float
    data_mdb_bytes: int
    timings: list[Timing]


def fill(data: Path, count: int) -> tuple[list[str], float]:
    """``count`` finished invocations, oldest first; their IDs in that order, and the seconds it took."""
    started = time.perf_counter()
    ids = IdGenerator()
    partitions = PartitionMap.single(_PARTITIONS)
    store = Store(data, durability="none", map_size=4 << 30)
    store.partition_count(_PARTITIONS)
    written: list[str] = []
    now = now_ms()
    changes = Changes()
    for n in range(count):
        key = f"k{n % _KEYS}"
        record = InvocationRecord(
            id=ids.invocation_id(partitions.of_key("Counter", key)), service="Counter", handler="add", key=key,
            handler_kind="exclusive", status="pending", deployment_id="dp_bench", created_ms=now, modified_ms=now,
            inbox_seq=n + 1)
        changes.create(record, b"1", None)
        record.attempts = 1
        record.completed_ms = record.modified_ms = now
        if n % 20 == 7:
            record.status, record.failure = "failed", Failure(500, f"vendor said no to #{n}")
            changes.append_entry(record, 1, Output(failure=record.failure))
        else:
            record.status, record.output = "completed", str(n).encode()
            changes.append_entry(record, 1, Output(value=record.output))
        changes.finish(record)
        written.append(record.id)
        if len(changes.ops) >= _BATCH * 8:
            store.write_now(changes)
            changes = Changes()
    store.write_now(changes)
    store.close_environment()
    return written, time.perf_counter() - started


def _summary(name: str, what: str, times: list[float], rows: int) -> Timing:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return Timing(name, what, len(times), round(statistics.median(ordered) * 1000, 2), round(p99 * 1000, 2),
                  round(ordered[-1] * 1000, 2), rows)


async def _time_list(session: aiohttp.ClientSession, admin: str, name: str, query: dict[str, str],
                     requests: int, *, fill_page: bool = False) -> Timing:
    """``requests`` sequential list calls; ``fill_page``: as the UI does, call again from the cursor
    (up to 10 calls) until the page holds 50 rows, timing the whole."""
    times: list[float] = []
    rows = 0
    for _ in range(requests):
        started = time.perf_counter()
        found, cursor, calls = 0, query.get("cursor"), 0
        while True:
            asked = {**query, "limit": str(50 - found), **({"cursor": cursor} if cursor else {})}
            async with session.get(f"{admin}/invocations", params=asked) as response:
                assert response.status == 200, (response.status, await response.text())
                page = msgspec.json.decode(await response.read())
            found += len(page["invocations"])
            cursor, calls = page.get("next_cursor"), calls + 1
            if not fill_page or found >= 50 or cursor is None or calls >= 10:
                break
        times.append(time.perf_counter() - started)
        rows = found
    shown = [f"{k}={'…' if k == 'cursor' else v}" for k, v in query.items()] + ["limit=50"]
    what = "GET /invocations?" + "&".join(shown) + (" (as the UI fills a page)" if fill_page else "")
    return _summary(name, what, times, rows)


async def _time_ui_files(session: aiohttp.ClientSession, admin: str, requests: int) -> Timing:
    times: list[float] = []
    for _ in range(requests):
        started = time.perf_counter()
        for path in _UI_FILES:
            async with session.get(f"{admin}{path}") as response:
                assert response.status == 200, path
                await response.read()
        times.append(time.perf_counter() - started)
    return _summary("ui-files", f"GET /ui and the {len(_UI_FILES) - 1} files it loads, one after another", times, 0)


async def _time_browser(admin: str, loads: int) -> list[Timing]:
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        print("no Playwright: the browser loads are skipped (pip install -e ./sdk -e '.[test]')", file=sys.stderr)
        return []
    if not Path(chromium).exists():
        print(f"no Chromium at {chromium}: the browser loads are skipped", file=sys.stderr)
        return []
    times: list[float] = []
    in_page: list[float] = []
    rows = 0
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=_BROWSER_ARGS)
        try:
            for _ in range(loads):
                context = await browser.new_context()  # a cold cache each time
                page = await context.new_page()
                started = time.perf_counter()
                await page.goto(f"{admin}/ui#/invocations")
                await page.locator("#invocations tbody tr").nth(49).wait_for()
                times.append(time.perf_counter() - started)
                # The list view marks the moment its table is on screen; marks count from navigation start.
                in_page.append(await page.evaluate(
                    "performance.getEntriesByName('invocations-listed')[0].startTime") / 1000)
                rows = await page.locator("#invocations tbody tr").count()
                await context.close()
        finally:
            await browser.close()
    return [_summary("ui-browser", "headless Chromium: /ui#/invocations, cold, until its 50 rows show "
                                   "(goto to rows, as Playwright sees it)", times, rows),
            _summary("ui-browser-in-page", "the same loads, as the page times them: navigation start to the "
                                           "list view's performance mark",
                     in_page, rows)]


async def amain(args: argparse.Namespace, argv: list[str]) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-ui-list-"))
    procs = Procs(tmp)
    try:
        data = tmp / "data"
        print(f"filling {data} with {args.invocations:,} invocations ...", flush=True)
        ids, fill_s = fill(data, args.invocations)
        size = (data / "data.mdb").stat().st_size
        print(f"  {fill_s:.1f} s, data.mdb {size / 2**20:.0f} MiB", flush=True)
        handler_port, ingress, admin_port = free_port(), free_port(), free_port()
        handler_url = f"http://127.0.0.1:{handler_port}"
        admin = f"http://127.0.0.1:{admin_port}"
        timings: list[Timing] = []
        async with aiohttp.ClientSession() as session:
            procs.start("handlers", [sys.executable, "-m", "handler_sdk", "benchmarks.scenarios:ALL",
                                     "--port", str(handler_port)])
            await wait_until("handler service /discover", http_ok(session, f"{handler_url}/discover"), procs)
            procs.start("sidecar", [
                *sidecar_executable(), "serve", "--data-dir", str(data), "--ingress", f"127.0.0.1:{ingress}",
                "--admin", f"127.0.0.1:{admin_port}", "--register", handler_url, "--durability", "none",
                "--workers", str(args.workers), "--retention", str(30 * 86400),
            ])
            await wait_until("the sidecar's admin API", http_ok(session, f"{admin}/services"), procs, timeout=120)
            deep = cursor_of(ids[len(ids) // 10])  # 90 % of the way down, newest first
            key = "k7"  # every 20th invocation of k7 is failed (n % 20 == 7): the filters all match something
            cases = [
                ("first", {}), ("deep", {"cursor": deep}),
                ("failed-first", {"status": "failed"}), ("failed-deep", {"status": "failed", "cursor": deep}),
                ("key-first", {"service": "Counter", "key": key}),
                ("key-deep", {"service": "Counter", "key": key, "cursor": deep}),
            ]
            for _ in range(20):  # warm up: the first reads fault the pages in
                await _time_list(session, admin, "warmup", {}, 1)
            for name, query in cases:
                timings.append(await _time_list(session, admin, name, query, args.requests))
            timings.append(await _time_list(session, admin, "key-without-service", {"key": key},
                                            max(10, args.requests // 10), fill_page=True))
            timings.append(await _time_ui_files(session, admin, args.requests))
            if args.browser_loads:
                timings += await _time_browser(admin, args.browser_loads)
            procs.check_alive()
        report = Report(machine_info(), args.invocations, round(fill_s, 1), size, timings)
        for timing in timings:
            print(msgspec.json.encode(timing).decode())
        print(f"\n{args.invocations:,} invocations stored, sequential requests, ms:")
        print(f"{'case':22} {'p50':>8} {'p99':>8} {'max':>8} {'rows':>5}  what")
        for t in timings:
            print(f"{t.name:22} {t.p50_ms:8.2f} {t.p99_ms:8.2f} {t.max_ms:8.2f} {t.rows:5d}  {t.what}")
        write_json(args.json, report)
        return 0
    finally:
        procs.close()
        leave_tmp(tmp, args.keep)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ui_list", description=__doc__.split("\n")[0])
    p.add_argument("--invocations", type=int, default=100_000, help="finished invocations to store")
    p.add_argument("--requests", type=int, default=200, help="timed requests of each kind")
    p.add_argument("--browser-loads", type=int, default=20, help="cold browser loads of the list (0: none)")
    p.add_argument("--workers", type=int, default=1, help="the sidecar's --workers")
    add_output_options(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_cli(amain, parse_args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
