import pytest

from sidecar.durations import MAX_DELAY_MS, delay_problem, parse_delay, parse_duration, wake_problem


@pytest.mark.parametrize(("text", "seconds"), [
    ("10s", 10), ("250ms", 0.25), ("1m30s", 90), ("2h", 7200), ("1d", 86400), ("0s", 0),
    ("PT10S", 10), ("PT1M30S", 90), ("P1DT1H", 90000), ("pt0.5s", 0.5),
])
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "s", "ten seconds", "10x", "-5s", "P", "PT", "1s2"])
def test_bad_durations_name_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="write it like"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["9" * 400 + "s", "P" + "9" * 400 + "D", "9" * 400 + "d"])
def test_durations_too_large_to_be_finite_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="at most 3650 days"):
        parse_duration(text)


def test_delays_are_at_most_ten_years() -> None:
    assert parse_delay("3650d") == 3650 * 86400
    assert parse_delay("PT10S") == 10
    for text in ["P99999999999D", "3651d", "P3650DT1S"]:
        with pytest.raises(ValueError, match="at most 3650 days"):
            parse_delay(text)


def test_handler_delays_and_timers_are_checked_against_the_same_maximum() -> None:
    now = 1_700_000_000_000
    assert delay_problem(0) is None and delay_problem(MAX_DELAY_MS) is None and delay_problem(-2**63) is None
    assert wake_problem(now - 5, now) is None and wake_problem(now + MAX_DELAY_MS, now) is None
    for problem in [delay_problem(MAX_DELAY_MS + 1), delay_problem(2**70),
                    wake_problem(-1, now), wake_problem(now + MAX_DELAY_MS + 1, now), wake_problem(2**64, now)]:
        assert problem is not None and "3650 days" in problem
