"""Schedules' fire times and catch-up plans: pure functions, checked against brute force and
against the daylight-saving days croniter defines."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings, strategies as st

from sidecar.schedules.spec import ScheduleRefused, _zone, name_problem, MAX_NAME_LENGTH
from sidecar.schedules.timing import CATCH_UP_LIMIT, COUNT_LIMIT, Cron, Every, cron_problem, due, plan

BERLIN = ZoneInfo("Europe/Berlin")


def _ms(year: int, month: int, day: int, hour: int, minute: int) -> int:
    """An instant of Berlin's wall clock (outside the hours a change repeats)."""
    return round(datetime(year, month, day, hour, minute, tzinfo=BERLIN).timestamp() * 1000)


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _forward(timing: Cron | Every, after_ms: int, count: int) -> list[int]:
    found: list[int] = []
    while len(found) < count:
        nxt = timing.next_after(found[-1] if found else after_ms)
        assert nxt is not None
        found.append(nxt)
    return found


# --- intervals -------------------------------------------------------------------------------------

anchors = st.integers(0, 2**41)
intervals = st.integers(1000, 86_400_000)


@given(anchors, intervals, st.integers(-10**9, 10**10))
def test_an_interval_fires_at_the_anchor_plus_whole_intervals(anchor: int, interval: int, offset: int) -> None:
    every = Every(anchor, interval)
    after = anchor + offset
    nxt = every.next_after(after)
    assert nxt is not None and nxt > after and (nxt - anchor) % interval == 0 and nxt >= anchor + interval
    assert nxt - interval <= after or nxt == anchor + interval  # none skipped
    back = list(zip(range(3), every.back_from(nxt)))
    assert [fire for _, fire in back][0] == nxt
    assert all(b == a - interval for (_, a), (_, b) in zip(back, back[1:]))


# --- cron in a zone, daylight saving as croniter defines it ---------------------------------------------


def test_a_weekday_morning_in_berlin_fires_on_the_next_weekday_at_nine_local_time() -> None:
    friday_evening = _ms(2025, 3, 28, 18, 0)
    fires = _forward(Cron("0 9 * * MON-FRI", "Europe/Berlin"), friday_evening, 2)
    assert fires == [_ms(2025, 3, 31, 9, 0), _ms(2025, 4, 1, 9, 0)]  # Monday, after the change to summer time
    assert _utc(fires[0]) == "2025-03-31T07:00:00Z"


def test_a_time_the_spring_forward_skips_fires_at_the_first_instant_after_the_gap() -> None:
    fires = _forward(Cron("30 2 * * *", "Europe/Berlin"), _ms(2025, 3, 29, 12, 0), 3)
    assert [_utc(f) for f in fires] == ["2025-03-30T01:00:00Z",  # 03:00 CEST: 02:30 does not exist that day
                                        "2025-03-31T00:30:00Z", "2025-04-01T00:30:00Z"]


def test_a_time_in_the_hour_autumn_repeats_fires_at_each_of_its_offsets() -> None:
    fires = _forward(Cron("30 2 * * *", "Europe/Berlin"), _ms(2025, 10, 25, 12, 0), 3)
    assert [_utc(f) for f in fires] == ["2025-10-26T00:30:00Z",  # 02:30 CEST
                                        "2025-10-26T01:30:00Z",  # 02:30 CET, an hour later
                                        "2025-10-27T01:30:00Z"]
    hourly = _forward(Cron("0 * * * *", "Europe/Berlin"), _ms(2025, 10, 26, 1, 30), 3)
    assert [h - _ms(2025, 10, 26, 2, 0) for h in hourly] == [0, 3_600_000, 7_200_000]  # no hour lost or doubled


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["*/30 * * * *", "30 2 * * *", "0 9 * * MON-FRI", "15 1-3 * * *", "@hourly"]),
       st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC", "Asia/Kolkata"]),
       st.integers(_ms(2025, 3, 1, 0, 0), _ms(2025, 12, 1, 0, 0)))
def test_cron_fire_times_only_grow_and_read_the_same_backwards(expression: str, zone: str, after: int) -> None:
    cron = Cron(expression, zone)
    fires = _forward(cron, after, 4)
    assert fires == sorted(set(fires)) and fires[0] > after
    backwards = [f for _, f in zip(range(4), cron.back_from(fires[-1]))]
    assert backwards == fires[::-1]


@pytest.mark.parametrize(("expression", "problem"), [
    ("0 9 * * MON-FRI", None), ("@daily", None), ("0 0 29 2 *", None),
    ("61 * * * *", "out of range"), ("* * * * * *", "expected five fields"), ("@reboot", "@reboot"),
    ("0 0 30 2 *", "never fires"), ("H * * * *", "hashed (H)"), ("R(1-5) * * * *", "random (R)"),
    ("", "expected five fields"), ("a b c d e", "cron 'a b c d e'"),
])
def test_cron_expressions_are_checked_with_a_reason(expression: str, problem: str | None) -> None:
    found = cron_problem(expression, "UTC")
    assert found is None if problem is None else found is not None and problem in found


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40) | st.lists(st.sampled_from(["*", "1", "-", "/", ",", "L", "#", "W", "?", "MON",
                                                          "60", "0", "*/0", " "]), max_size=12).map("".join))
def test_no_expression_makes_the_check_raise(expression: str) -> None:
    problem = cron_problem(expression, "UTC")
    assert problem is None or problem.startswith("cron ")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60) | st.sampled_from(["", ".", "..", "/", "/etc/passwd", "Europe", "Europe/", "UTC\x00",
                                               "../zoneinfo/UTC", "\udc80"]))
def test_a_time_zone_is_an_iana_name_or_a_refusal(name: str) -> None:
    try:
        _zone(name)
    except ScheduleRefused as refused:
        assert "timezone" in str(refused)


def test_names_are_identifiers_that_leave_room_for_the_firings_idempotency_keys() -> None:
    assert name_problem("nightly-report.v2_1") is None and name_problem("n" * MAX_NAME_LENGTH) is None
    for bad in ["", "-x", ".x", "a/b", "a b", "été", "a:b", "n" * (MAX_NAME_LENGTH + 1)]:
        assert name_problem(bad) is not None, bad
    assert len(f"schedule:{'n' * MAX_NAME_LENGTH}:{2**64 - 1}".encode()) <= 1024


# --- catch-up plans ---------------------------------------------------------------------------------


def _brute(anchor: int, interval: int, first: int, now: int) -> list[int]:
    return [f for f in range(anchor + interval, now + 1, interval) if f >= first]


@settings(max_examples=500)
@given(anchors, st.integers(1000, 10_000), st.integers(0, 200_000), st.integers(0, 2_000_000),
       st.sampled_from(["one", "all", "none"]), st.booleans())
def test_a_plan_makes_what_its_policy_says_of_the_due_fire_times(
        anchor: int, interval: int, first_offset: int, span: int, policy: str, on_time: bool) -> None:
    first, now = anchor + first_offset, anchor + first_offset + span
    every = Every(anchor, interval)
    expected_due = _brute(anchor, interval, first, now)
    chosen = plan(every, policy, first, now, on_time=on_time)  # type: ignore[arg-type]
    assert chosen.due == min(len(expected_due), COUNT_LIMIT)
    if not expected_due:
        assert chosen.fire == []
    elif policy == "all":
        assert chosen.fire == expected_due[-CATCH_UP_LIMIT:]
    elif policy == "one" or on_time:
        assert chosen.fire == expected_due[-1:]  # the latest: for "none" the regular firing just due
    else:
        assert chosen.fire == []
    assert chosen.missed == chosen.due - len(chosen.fire)


def test_a_regular_firing_is_never_missed_and_a_long_outage_is_counted_up_to_the_limit() -> None:
    every = Every(0, 1000)
    assert plan(every, "none", 5000, 5003, on_time=True).fire == [5000]
    assert plan(every, "none", 5000, 5003, on_time=False).fire == []
    long = plan(every, "all", 1000, 10_000_000, on_time=False)
    assert long.due == COUNT_LIMIT and long.fire == list(range(10_000_000 - 99_000, 10_000_001, 1000))
    assert due(Cron("* * * * *", "UTC"), 60_000, 600_000, 2) == ([540_000, 600_000], 10)
