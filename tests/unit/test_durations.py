import pytest

from sidecar.durations import parse_duration


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
