"""The circuit breaker's state machine (driven by a clock of the test's), and its board."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from handler_sdk.protocol import BreakerSpec
from sidecar.invoker.breakers import Breaker, BreakerBoard, Decision

LLM = BreakerSpec("llm", failure_threshold=3, cool_down_ms=1000)


def test_it_opens_after_threshold_consecutive_failures_and_a_success_starts_the_count_over() -> None:
    breaker = Breaker(LLM)
    assert breaker.ask(0) == Decision(True, lease=True)
    assert not breaker.report(0, True) and not breaker.report(0, True)
    assert not breaker.report(0, False)  # a success: the count starts over
    assert not breaker.report(0, True) and not breaker.report(0, True)
    assert breaker.state(0) == "closed" and breaker.failures == 2
    assert breaker.report(10, True)  # the third in a row opens it
    assert breaker.view(10).state == "open" and breaker.open_until_ms == 1010
    assert breaker.ask(500) == Decision(False, open_until_ms=1010, epoch=1)


def test_after_the_cool_down_one_trial_runs_and_its_success_closes_it() -> None:
    breaker = Breaker(LLM)
    for _ in range(3):
        breaker.report(0, True)
    assert breaker.state(1000) == "half-open"
    assert breaker.ask(1000) == Decision(True, epoch=1)  # the trial: no lease
    refused = breaker.ask(1001)  # the others wait for the trial
    assert not refused.granted and 1001 < refused.open_until_ms <= 2001
    breaker.report(1100, False)
    assert breaker.state(1100) == "closed" and breaker.failures == 0
    assert breaker.ask(1100) == Decision(True, lease=True, epoch=1)


def test_a_failed_trial_opens_it_again_and_a_lost_trial_is_replaced() -> None:
    breaker = Breaker(LLM)
    for _ in range(3):
        breaker.report(0, True)
    assert breaker.ask(1000).granted
    assert breaker.report(1200, True)  # the trial failed: open again, for a whole cool-down
    assert breaker.state(1200) == "open" and breaker.open_until_ms == 2200 and breaker.epoch == 2
    assert breaker.ask(2200).granted  # a trial that never reports...
    assert not breaker.ask(2300).granted
    assert breaker.ask(3200).granted  # ...is replaced once a cool-down has passed


def test_late_outcomes_of_steps_from_before_it_opened_change_nothing() -> None:
    breaker = Breaker(LLM)
    for _ in range(3):
        breaker.report(0, True)
    assert not breaker.report(5, True) and not breaker.report(5, False)
    assert breaker.state(5) == "open" and breaker.open_until_ms == 1000


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ask", "fail", "ok", "reset"]), st.integers(0, 700)), max_size=60))
def test_it_never_lets_a_step_through_while_open_and_counts_as_a_model_does(
        events: list[tuple[str, int]]) -> None:
    breaker, now = Breaker(LLM), 0
    streak = 0  # consecutive failures while closed, as the model counts them
    for event, step in events:
        now += step
        state = breaker.state(now)
        if event == "ask":
            decision = breaker.ask(now)
            assert decision.granted == (state == "closed" or (state == "half-open" and decision.granted))
            assert decision.lease == (state == "closed")
            if state == "open":
                assert not decision.granted and decision.open_until_ms > now
        elif event == "reset":
            breaker.reset()
            streak = 0
        else:
            opened = breaker.report(now, event == "fail")
            if state == "closed":
                streak = streak + 1 if event == "fail" else 0
                assert opened == (streak == LLM.failure_threshold)
                if opened:
                    streak = 0
            if breaker.state(now) == "closed":
                assert breaker.failures == streak
        if breaker.state(now) != "closed":
            assert breaker.open_until_ms is not None
        else:
            assert breaker.failures < LLM.failure_threshold


def test_the_board_keeps_the_gauge_lists_resets_and_says_when_one_opened() -> None:
    gauge: dict[str, bool] = {}
    opened: list[tuple[str, int]] = []
    clock = [0]
    board = BreakerBoard(gauge.__setitem__, lambda name, epoch: opened.append((name, epoch)), lambda: clock[0])
    for _ in range(3):
        board.report(LLM, True)
    board.report(BreakerSpec("search"), False)
    assert opened == [("llm", 1)] and gauge == {"llm": True, "search": False}
    assert [(v.name, v.state, v.failures, v.open_until_ms) for v in board.views()] == [
        ("llm", "open", 3, 1000), ("search", "closed", 0, None)]
    assert board.reset("llm") and gauge["llm"] is False
    assert not board.reset("nobody")
    clock[0] = 5000
    assert [(v.state, v.failures) for v in board.views()] == [("closed", 0), ("closed", 0)]
