"""The ledger workload and the client that drives it: adds on many ``LedgerCounter`` keys (one
after another per key) and ten-step ``Flow`` invocations, each request carrying an
``idempotency-key`` and repeated, across the ingresses given, until it is answered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from tests.cluster.ledger import Call, Evidence, Pause, read_ledger
from tests.cluster.ledger_service import flow_output

#: Statuses that mean "not now, ask again": overload, a hand-over, a restarting worker.
_RETRY_STATUSES = frozenset({429, 503})


class Client:
    """Calls the ingresses as a careful client does: an ``idempotency-key`` on every request, and
    the same request again (on the next ingress) after a connection error, a timeout or a 503,
    waiting what ``Retry-After`` asks but never more than ``retry_after_cap`` seconds."""

    def __init__(self, http: aiohttp.ClientSession, ingresses: Callable[[], list[str]], *,
                 request_timeout: float = 15.0, deadline: float = 180.0, retry_after_cap: float = 1.0) -> None:
        self._http = http
        self._ingresses = ingresses
        self._request_timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._deadline = deadline
        self._retry_after_cap = retry_after_cap
        self._turn = 0

    async def call(self, call: Call) -> None:
        """Repeat ``call`` until it is answered 200 (filled into ``call``); raise on any other
        answer, or when ``deadline`` passes."""
        give_up = time.monotonic() + self._deadline
        backoff = 0.05
        last = "no answer yet"
        body = b"" if call.argument is None else msgspec.json.encode(call.argument)
        headers = {"content-type": "application/json", "idempotency-key": call.idempotency_key}
        while time.monotonic() < give_up:
            ingresses = self._ingresses()
            self._turn += 1
            ingress = ingresses[self._turn % len(ingresses)]
            call.tries += 1
            wait = backoff
            try:
                async with self._http.post(f"http://{ingress}/{call.service}/{call.key}/{call.handler}", data=body,
                                           headers=headers, timeout=self._request_timeout) as response:
                    raw = await response.read()
                    if response.status == 200:
                        call.output = msgspec.json.decode(raw)
                        call.invocation = response.headers.get("x-restate-id")
                        call.answered = True
                        return
                    last = f"{response.status} from {ingress}: {raw[:200]!r}"
                    if response.status not in _RETRY_STATUSES:
                        raise AssertionError(f"{call.service}/{call.key}/{call.handler}: {last}")
                    wait = min(_seconds(response.headers.get("retry-after")), self._retry_after_cap)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                last = f"{type(exc).__name__} from {ingress}: {exc}"
            await asyncio.sleep(wait)
            backoff = min(backoff * 2, 0.5)
        raise AssertionError(f"{call.service}/{call.key}/{call.handler} not answered within {self._deadline} s "
                             f"({call.tries} tries; last: {last})")

    async def read_value(self, key: str) -> int:
        probe = Call(service="LedgerCounter", key=key, handler="value", argument=None,
                     idempotency_key=f"value-{key}-{time.monotonic_ns()}", expected=None)
        await self.call(probe)
        return int(probe.output)


def _seconds(retry_after: str | None) -> float:
    try:
        return max(0.0, float(retry_after)) if retry_after else 1.0
    except ValueError:
        return 1.0  # an HTTP date: this client does not bother


class Workload(msgspec.Struct, frozen=True):
    """``adds`` adds spread over ``keys`` keys, and ``flows`` ten-step flows."""

    keys: int
    adds: int
    flows: int

    def calls(self, run: str) -> list[Call]:
        """Add ``i`` adds ``i + 1`` to key ``i % keys``; each expects its key's running sum.
        ``run`` makes idempotency keys unique to this run."""
        calls = []
        totals = [0] * self.keys
        for i in range(self.adds):
            key = i % self.keys
            totals[key] += i + 1
            calls.append(Call(service="LedgerCounter", key=f"k{key}", handler="add", argument=i + 1,
                              idempotency_key=f"{run}-add-{i}", expected=totals[key]))
        for i in range(self.flows):
            calls.append(Call(service="Flow", key=f"f{i}", handler="steps", argument=None,
                              idempotency_key=f"{run}-flow-{i}", expected=flow_output(f"f{i}")))
        return calls


async def drive(client: Client, calls: list[Call]) -> None:
    """Every key's calls one after another (the next once the last is answered), keys at once."""
    by_key: dict[tuple[str, str], list[Call]] = {}
    for call in calls:
        by_key.setdefault((call.service, call.key), []).append(call)

    async def one_key(sequence: list[Call]) -> None:
        for call in sequence:
            await client.call(call)

    await asyncio.gather(*(one_key(sequence) for sequence in by_key.values()))


async def gather_evidence(http: aiohttp.ClientSession, admin: str, client: Client, calls: list[Call],
                          ledger_path: Path, *, kills: int, pauses: list[Pause] | None = None) -> Evidence:
    """The final journals of every invocation the calls and the ledger name (from the admin API
    at ``admin``), and every counter key's value, once the workload is over."""
    ledger = read_ledger(ledger_path)
    invocations = {c.invocation for c in calls if c.invocation is not None} | {line.invocation for line in ledger}

    async def journal(invocation: str) -> tuple[str, dict[str, Any]]:
        async with http.get(f"http://{admin}/invocations/{invocation}") as response:
            return invocation, await response.json() if response.status == 200 else {"status": response.status}

    journals = dict(await asyncio.gather(*(journal(i) for i in sorted(invocations))))
    keys = sorted({c.key for c in calls if c.service == "LedgerCounter"})
    values = dict(zip(keys, await asyncio.gather(*(client.read_value(k) for k in keys))))
    return Evidence(ledger=ledger, calls=calls, journals=journals, values=values, kills=kills, pauses=pauses or [])
