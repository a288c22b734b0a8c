"""The invoker's side of circuit breakers, the test playing the handler on fake links: leases and
their revocation, an open breaker backing its invocation off without spending anything, the trial."""

from __future__ import annotations

from pathlib import Path

from handler_sdk.protocol import AskLeave, BreakerSpec, Cancel, End, Leave, Revoke, StepReport
from sidecar.clock import iso_ms, now_ms
from tests.unit.test_invoker import rig

LLM = BreakerSpec("llm", failure_threshold=2, cool_down_ms=300)


async def test_an_open_breaker_revokes_leases_backs_off_its_steps_and_lets_one_trial_through(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        first = await r.submit("Greeter", "greet")
        start = await r.start_of(first)
        start.link.answer(AskLeave(first, 1, breaker=LLM))
        assert (await r.links.expect(Leave, first)).frame == Leave(first, 1, lease=True)
        start.link.answer(StepReport(first, LLM, failed=True))
        assert r.invoker.board is not None and r.invoker.board.views()[0].failures == 1
        start.link.answer(StepReport(first, LLM, failed=True))  # the threshold: it opens
        revoked = await r.links.expect(Revoke, "")
        assert revoked.frame.breaker == "llm" and revoked.link is start.link
        [view] = r.invoker.board.views()
        assert (view.state, view.failures) == ("open", 2)
        assert view.open_until_ms is not None

        second = await r.submit("Greeter", "greet")
        other = await r.start_of(second)
        other.link.answer(AskLeave(second, 1, breaker=LLM))  # no fallback: backed off, nothing run
        await r.links.expect(Cancel, second)
        record = r.current(second)
        assert record.status == "backing-off" and record.failures == 0
        assert record.last_error == f"breaker llm open until {iso_ms(view.open_until_ms)}"
        assert r.reason(second).endswith(record.last_error) and record.next_retry_ms is not None
        assert abs(record.next_retry_ms - view.open_until_ms) < 50
        retried = await r.start_of(second)  # once the cool-down is over: the trial
        assert now_ms() >= view.open_until_ms - 5
        retried.link.answer(AskLeave(second, 1, breaker=LLM))
        assert (await r.links.expect(Leave, second)).frame == Leave(second, 1)  # a trial holds no lease
        retried.link.answer(StepReport(second, LLM, failed=False))
        assert [(v.state, v.failures) for v in r.invoker.board.views()] == [("closed", 0)]
        retried.link.answer(End(second, output=b'"ok"'))
        assert (await r.outcome(second)).failures == 0

        start.link.answer(AskLeave(first, 2, breaker=LLM))
        assert (await r.links.expect(Leave, first)).frame.lease  # closed again: a new lease


async def test_a_step_with_a_fallback_is_told_the_breaker_is_open(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        invocation = await r.submit("Greeter", "greet")
        start = await r.start_of(invocation)
        for _ in range(2):
            start.link.answer(StepReport(invocation, LLM, failed=True))
        start.link.answer(AskLeave(invocation, 1, breaker=LLM, fallback=True))
        told = (await r.links.expect(Leave, invocation)).frame
        assert not told.granted and told.open_until_ms > now_ms()
        assert r.current(invocation).status == "running"  # the attempt goes on, with its fallback
        assert r.invoker.board is not None and r.invoker.board.reset("llm")
        start.link.answer(AskLeave(invocation, 1, breaker=LLM, fallback=True))
        assert (await r.links.expect(Leave, invocation)).frame.lease
