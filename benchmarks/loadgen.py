"""Closed-loop HTTP load generator: N workers, each sends its next request when the last returns.

    python -m benchmarks.loadgen --url-template 'http://127.0.0.1:8080/Counter/{key}/add' \\
        --body 1 --concurrency 32 --keys 1000 --duration 10 --warmup 2

What counts, and why:
- Only requests that *complete* inside the measured window (after ``warmup``, before
  ``warmup + duration``) enter the throughput and the percentiles. Throughput and latency are of
  successful (2xx) requests; every non-2xx and every transport failure is an error, counted and
  broken down by status, never dropped.
- When the window closes, workers stop sending, and the requests still in flight are awaited (not
  cancelled), so that ``per_key_ok`` is the exact number of successful requests per key over the
  whole run (warmup included). A caller can then check the server's state against it. A request
  that timed out or lost its connection may or may not have taken effect: it is counted in
  ``per_key_indeterminate``, not guessed.
- One ``ClientSession`` with a connector limit >= concurrency and keep-alive, so the load
  generator measures the server, not connection setup.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import random
import sys
import time
from collections import Counter as Tally
from collections.abc import Callable

import aiohttp
import msgspec
import uvloop

KEY_MODES = ("round-robin", "random")


class LoadResult(msgspec.Struct, kw_only=True):
    url_template: str
    concurrency: int
    keys: int
    key_mode: str
    duration_s: float  # the measured window actually observed
    warmup_s: float
    requests: int  # successful requests completed in the measured window
    errors: int  # failed requests completed in the measured window
    error_kinds: dict[str, int]  # "http 503", "TimeoutError", "unexpected body", ... (window)
    warmup_requests: int
    warmup_errors: int
    drained: int  # requests in flight at the end of the window, awaited after it
    throughput_rps: float  # successful requests / window
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    #: successful requests per key over the whole run (warmup and drain included)
    per_key_ok: dict[str, int] = {}
    #: requests per key whose effect is unknown (timeout, connection lost) over the whole run
    per_key_indeterminate: dict[str, int] = {}

    def summary(self) -> str:
        line = (
            f"{self.requests} ok, {self.errors} errors in {self.duration_s:.1f}s: "
            f"{self.throughput_rps:,.0f} req/s, p50 {self.p50_ms:.2f} ms, p90 {self.p90_ms:.2f} ms, "
            f"p99 {self.p99_ms:.2f} ms, max {self.max_ms:.2f} ms"
        )
        if self.error_kinds:
            line += "  errors: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.error_kinds.items()))
        if self.warmup_errors:
            line += f"  (warmup: {self.warmup_errors} errors)"
        return line


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def run_load(
    url_template: str,
    *,
    body: bytes = b"null",
    concurrency: int = 32,
    keys: int = 1000,
    key_mode: str = "round-robin",
    duration: float = 10.0,
    warmup: float = 2.0,
    request_timeout: float = 30.0,
    expect: object = msgspec.UNSET,
    seed: int = 0,
    on_phase: Callable[[str], None] | None = None,
) -> LoadResult:
    """Drive ``url_template`` (``{key}`` is replaced by ``k0``..``k{keys-1}``) and measure it.

    ``body`` is sent as ``application/json`` with every request. ``expect``, when given, is the
    decoded JSON every 2xx response must equal; another body counts as an error.
    ``on_phase("measure")`` and ``on_phase("drain")`` are called (synchronously) as the measured
    window opens and closes, so a caller can sample CPU counters over exactly that window.
    """
    if key_mode not in KEY_MODES:
        raise ValueError(f"key_mode must be one of {KEY_MODES}, not {key_mode!r}")
    if concurrency < 1 or keys < 1 or duration <= 0 or warmup < 0:
        raise ValueError("concurrency and keys must be >= 1, duration > 0, warmup >= 0")
    keyed = "{key}" in url_template
    key_names = [f"k{i}" for i in range(keys)] if keyed else [""]
    urls = [url_template.replace("{key}", k) for k in key_names]
    rr = itertools.cycle(range(len(urls)))
    rng = random.Random(seed)
    headers = {"content-type": "application/json"}
    check = expect is not msgspec.UNSET

    ok_per_key = [0] * len(urls)
    unknown_per_key = [0] * len(urls)
    latencies: list[float] = []  # seconds, successful, in window
    kinds: Tally[str] = Tally()
    counts = {"errors": 0, "warmup_ok": 0, "warmup_errors": 0, "drained": 0}

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    t_measure = t0 + warmup
    t_end = t_measure + duration
    stop = False

    async def worker(session: aiohttp.ClientSession) -> None:
        clock = time.perf_counter
        while not stop:
            i = next(rr) if key_mode == "round-robin" else rng.randrange(len(urls))
            start = clock()
            failure: str | None = None
            try:
                async with session.post(urls[i], data=body, headers=headers) as resp:
                    payload = await resp.read()
                    if not 200 <= resp.status < 300:
                        failure = f"http {resp.status}"
                    elif check and _decode(payload) != expect:
                        failure = "unexpected body"
                    else:
                        ok_per_key[i] += 1
            except aiohttp.ClientConnectorError as exc:  # never connected: certainly not applied
                failure = type(exc).__name__
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                failure = type(exc).__name__
                unknown_per_key[i] += 1
            elapsed = clock() - start
            now = loop.time()
            if stop:  # sent before the window closed, completed after it
                counts["drained"] += 1
            elif now < t_measure:
                counts["warmup_ok" if failure is None else "warmup_errors"] += 1
            elif failure is None:
                latencies.append(elapsed)
            else:
                counts["errors"] += 1
                kinds[failure] += 1

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=request_timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        try:
            if warmup > 0:
                await asyncio.sleep(max(0.0, t_measure - loop.time()))
            if on_phase:
                on_phase("measure")
            measure_start = loop.time()
            await asyncio.sleep(max(0.0, t_end - loop.time()))
            stop = True
            measured = loop.time() - measure_start
            if on_phase:
                on_phase("drain")
            await asyncio.gather(*tasks)
        finally:
            stop = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    latencies.sort()
    ms = [v * 1000.0 for v in latencies]
    return LoadResult(
        url_template=url_template,
        concurrency=concurrency,
        keys=len(urls) if keyed else 0,
        key_mode=key_mode,
        duration_s=round(measured, 3),
        warmup_s=warmup,
        requests=len(ms),
        errors=counts["errors"],
        error_kinds=dict(kinds),
        warmup_requests=counts["warmup_ok"],
        warmup_errors=counts["warmup_errors"],
        drained=counts["drained"],
        throughput_rps=round(len(ms) / measured, 1) if measured > 0 else 0.0,
        p50_ms=round(percentile(ms, 50), 3),
        p90_ms=round(percentile(ms, 90), 3),
        p99_ms=round(percentile(ms, 99), 3),
        max_ms=round(ms[-1], 3) if ms else 0.0,
        mean_ms=round(sum(ms) / len(ms), 3) if ms else 0.0,
        per_key_ok={k: c for k, c in zip(key_names, ok_per_key) if c},
        per_key_indeterminate={k: c for k, c in zip(key_names, unknown_per_key) if c},
    )


_json_any = msgspec.json.Decoder()


def _decode(payload: bytes) -> object:
    try:
        return _json_any.decode(payload)
    except msgspec.DecodeError:
        return msgspec.UNSET


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.loadgen", description=__doc__.split("\n")[0])
    p.add_argument("--url-template", required=True, help="URL; '{key}' is replaced by a key per request")
    p.add_argument("--body", default="null", help="JSON body sent with every request (default: null)")
    p.add_argument("--expect", default=None, help="JSON every 2xx response must equal (else an error)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--key-mode", choices=KEY_MODES, default="round-robin")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    p.add_argument("--seed", type=int, default=0, help="for --key-mode random")
    p.add_argument("--json", action="store_true", help="print the result as JSON (with per-key counts)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        body = msgspec.json.encode(msgspec.json.decode(args.body))
        expect = msgspec.UNSET if args.expect is None else msgspec.json.decode(args.expect)
    except msgspec.DecodeError as exc:
        print(f"--body/--expect must be JSON: {exc}", file=sys.stderr)
        return 2
    result = uvloop.run(
        run_load(
            args.url_template, body=body, concurrency=args.concurrency, keys=args.keys,
            key_mode=args.key_mode, duration=args.duration, warmup=args.warmup,
            request_timeout=args.timeout, expect=expect, seed=args.seed,
        )
    )
    if args.json:
        print(msgspec.json.encode(result).decode())
    else:
        print(result.summary())
    return 1 if result.errors or result.requests == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
