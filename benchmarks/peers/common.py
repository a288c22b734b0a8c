"""What the peers' phases share (project venv only): the phase result, and the completions check."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from benchmarks.loadgen import LoadResult
from benchmarks.run import Record, Verification


class PeerResult(msgspec.Struct):
    """What a phase run in another process (``restate_ns``) hands back, as JSON."""

    records: list[Record] = []
    error: str | None = None


def completions_check(
    count: Callable[[], Awaitable[int]], before: int, what: str,
) -> Callable[[LoadResult], Awaitable[Verification]]:
    """A ``run_scenario`` check: the peer recorded exactly one completion per successful response.

    ``count()`` reads the peer's own durable record (DBOS's ``workflow_status``, Restate's
    ``sys_invocation``); ``before`` is its value as the scenario starts. The load generator counts
    successes over the whole run (warm-up and drain included); a request whose outcome it could not
    know (timeout, lost connection) widens the accepted range instead of being guessed.
    """
    async def check(result: LoadResult) -> Verification:
        got = await count() - before
        low = sum(result.per_key_ok.values())
        high = low + sum(result.per_key_indeterminate.values())
        want = str(low) if low == high else f"{low}..{high}"
        ok = low <= got <= high
        return Verification(ok=ok, keys_checked=0, mismatches=[] if ok else [f"expected {want}, got {got}"],
                            detail=f"{got} {what}, {want} successful responses")

    return check
