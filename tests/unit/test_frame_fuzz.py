"""Whatever frames an attempt's handler sends, handling them raises nothing and leaves the
invoker serving: the attempt goes on, fails or ends, and a new invocation still completes."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handler_sdk import Context, Service
from handler_sdk.protocol import (
    AskLeave, BreakerSpec, FetchBlobs, StepReport,
    Awakeable, Call, ClearAllState, Command, CompleteAwakeable, CompletePromise, End, Event, Failure, GetPromise,
    GetState, Heartbeat, Input, Now, Output, Pause, PeekPromise, Publish, Run, Send, SetState, Sleep, Suspend,
)
from tests.procs import eventually
from tests.unit.held_store import rig

svc = Service("Fuzzed")


@svc.handler()
async def wait(ctx: Context) -> str:
    _, value = ctx.awakeable()
    return await value


@svc.handler()
async def quick(ctx: Context) -> str:
    return "done"


_ints = st.integers(min_value=-2**63, max_value=2**64 - 1) | st.integers(min_value=-3, max_value=5)
_bytes = st.binary(max_size=8)
_names = st.sampled_from(["", "x", "Fuzzed", "quick", "wait", "Nobody"])
_failure = st.builds(Failure, code=_ints, message=st.text(max_size=5), terminal=st.booleans())
_entries = st.one_of(
    st.builds(Input, value=_bytes), st.builds(Output, value=_bytes),
    st.builds(Run, name=_names, value=st.none() | _bytes, failure=st.none() | _failure, cost=st.none() | st.floats(),
              attempts=_ints, variant=st.text(max_size=5)),
    st.builds(GetState, name=_names, value=st.none() | _bytes), st.builds(SetState, name=_names, value=_bytes),
    st.builds(ClearAllState), st.builds(Now, ms=_ints),
    st.builds(Sleep, wake_at_ms=_ints, done=st.booleans()),
    st.builds(Awakeable, id=st.text(max_size=40), done=st.booleans()),
    st.builds(CompleteAwakeable, id=st.text(max_size=40), value=st.none() | _bytes),
    st.builds(Call, service=_names, handler=_names, key=st.none() | _names, input=_bytes,
              invocation_id=st.text(max_size=8), done=st.booleans()),
    st.builds(Send, service=_names, handler=_names, key=st.none() | _names, input=_bytes, delay_ms=_ints),
    st.builds(GetPromise, name=_names), st.builds(PeekPromise, name=_names),
    st.builds(CompletePromise, name=_names, value=st.none() | _bytes), st.builds(Publish, event=_bytes),
)
_breakers = st.builds(BreakerSpec, name=_names | st.text(max_size=5), failure_threshold=_ints, cool_down_ms=_ints)
_frames = st.lists(st.one_of(
    # Mostly at the next index (-1 here), where an entry gets past the index check.
    st.builds(lambda index, entry: Command("", index=index, entry=entry),
              st.one_of(st.just(-1), st.just(-1), st.just(-1), _ints), _entries),
    st.builds(lambda waiting: Suspend("", waiting_on=waiting), st.lists(_ints, max_size=3)),
    st.builds(lambda output, failure: End("", output=output, failure=failure), st.none() | _bytes,
              st.none() | _failure),
    st.builds(lambda after, seq, event: Event("", after=after, seq=seq, event=event), _ints, _ints, _bytes),
    st.just(Heartbeat("")),
    st.builds(lambda reason: Pause("", reason=reason), st.text(max_size=20)),
    st.builds(lambda wanted: FetchBlobs("", sha256=wanted), st.lists(st.binary(max_size=40), max_size=3)),
    st.builds(lambda index, spec, fallback, limit, wait: AskLeave("", index=index, breaker=spec, fallback=fallback,
                                                                  limit=limit, wait_ms=wait),
              _ints, st.none() | _breakers, st.booleans(), st.none() | _names, _ints),
    st.builds(lambda spec, failed: StepReport("", breaker=spec, failed=failed), _breakers, st.booleans()),
), min_size=1, max_size=4)


async def _feed(frames: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with rig(Path(tmp), svc) as r:
            invocation_id = await r.submit("Fuzzed", "wait")
            live = r.invoker.table.active[invocation_id]

            async def waiting() -> bool:
                return live.journal is not None and len(live.journal) == 2 and not r.store.queued
            await eventually(waiting, timeout=5, what="the awakeable to be journaled")
            for frame in frames:
                attempt = live.attempt
                if attempt is None:
                    break
                if type(frame) is Command and frame.index == -1:
                    frame = Command(invocation_id, index=len(live.journal or ()), entry=frame.entry)
                attempt.on_message(msgspec.structs.replace(frame, invocation_id=invocation_id))
            quick = await r.submit("Fuzzed", "quick")
            record = await asyncio.wait_for(r.invoker.queries.outcome(quick), 5)
            assert (record.status, record.output) == ("completed", b'"done"')
            assert r.invoker.table.current(invocation_id).status in (
                "running", "backing-off", "paused", "suspended", "completed", "failed")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_frames)
def test_no_frame_makes_handling_raise_or_stops_the_invoker(frames: list[Any]) -> None:
    asyncio.run(_feed(frames))
