"""Limit groups: their configuration (TOML, --limit, clear errors) and the board that counts
their slots (concurrency, rate, the line, first come first served)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from sidecar.cli.config import ConfigError, load_settings
from sidecar.cli.limits import LimitConfig, Rate, parse_limit_flag, parse_rate
from sidecar.cli.main import main
from sidecar.invoker.limits import Holder, LimitBoard, UnknownLimit
from tests.procs import eventually


def test_rates_and_flags_are_read_as_written() -> None:
    assert parse_rate("60/min") == Rate(60, 60_000)
    assert parse_rate("10/s") == Rate(10, 1000) and parse_rate("5/10s") == Rate(5, 10_000)
    assert parse_rate(" 1000 / hour ") == Rate(1000, 3_600_000)
    for bad in ("x", "60", "0/min", "60/fortnight", "-1/s", "5/0s"):
        with pytest.raises(ValueError, match="rate"):
            parse_rate(bad)
    assert parse_limit_flag("anthropic=concurrency:8,rate:60/min") == (
        "anthropic", LimitConfig(concurrency=8, rate="60/min"))
    for bad in ("anthropic", "=concurrency:1", "a=speed:3", "a=concurrency:x", "a=concurrency:1,concurrency:2"):
        with pytest.raises(ValueError, match="--limit"):
            parse_limit_flag(bad)


def test_toml_groups_and_flags_merge_by_name(tmp_path: Path) -> None:
    path = tmp_path / "sidecar.toml"
    path.write_text('[limits.anthropic]\nconcurrency = 8\nrate = "60/min"\n[limits.search]\nrate = "5/s"\n')
    flags = dict([parse_limit_flag("anthropic=concurrency:2")])
    loaded = load_settings(config_file=str(path), overrides={"limits": flags}, environ={})
    assert loaded.limits == {"anthropic": LimitConfig(concurrency=2), "search": LimitConfig(rate="5/s")}
    environ = {"SIDECAR_LIMITS": "search=concurrency:3;mail=rate:1/s"}
    assert load_settings(config_file=str(path), environ=environ).limits == {
        "anthropic": LimitConfig(concurrency=8, rate="60/min"), "search": LimitConfig(concurrency=3),
        "mail": LimitConfig(rate="1/s")}
    with pytest.raises(ConfigError, match="SIDECAR_LIMITS"):
        load_settings(environ={"SIDECAR_LIMITS": "search"})


@pytest.mark.parametrize(("toml", "message"), [
    ('[limits.a]\nrate = "x"\n', "limit group 'a': rate 'x' is not COUNT/PERIOD"),
    ("[limits.a]\nconcurrency = 0\n", "limit group 'a': concurrency must be 1 or more, not 0"),
    ("[limits.a]\n", "limit group 'a' needs concurrency, rate or both"),
    ("[limits.a]\nconcurency = 3\n", "invalid setting"),
    ('[limits."not a name"]\nconcurrency = 3\n', "limit group name"),
])
def test_a_bad_group_is_a_clear_startup_error(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "sidecar.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match="invalid setting") as raised:
        load_settings(config_file=str(path), environ={})
    assert message in str(raised.value)
    result = CliRunner().invoke(main, ["serve", "--config", str(path)])
    assert result.exit_code == 2 and message in result.output


def test_a_bad_limit_flag_stops_serve_with_exit_status_2() -> None:
    result = CliRunner().invoke(main, ["serve", "--limit", "a=concurrency:0"])
    assert result.exit_code == 2 and "concurrency must be 1 or more" in result.output
    result = CliRunner().invoke(main, ["serve", "--limit", "a=rate:often"])
    assert result.exit_code == 2 and "rate 'often'" in result.output


def _holder(n: int) -> Holder:
    return Holder(0, f"inv_{n}", 1)


async def test_concurrency_slots_go_to_the_line_in_arrival_order() -> None:
    granted: list[Holder] = []
    counts: dict[str, tuple[int, int]] = {}
    board = LimitBoard({"g": LimitConfig(concurrency=2)}, granted.append,
                       lambda name, used, waiting: counts.__setitem__(name, (used, waiting)))
    assert [await board.acquire("g", _holder(i)) for i in range(4)] == [True, True, False, False]
    assert await board.acquire("g", _holder(0)) is True  # a holder asking again keeps its slot
    assert counts["g"] == (2, 2)
    board.release("g", _holder(1))
    assert granted == [_holder(2)] and counts["g"] == (2, 1)
    board.release("g", _holder(3))  # leaves the line
    board.release("g", _holder(0))
    assert granted == [_holder(2)] and counts["g"] == (1, 0)
    [view] = board.views()
    assert (view.name, view.concurrency, view.in_use, view.waiting) == ("g", 2, 1, 0)
    with pytest.raises(UnknownLimit, match="no limit group named 'nope' \\(configured: g\\)"):
        await board.acquire("nope", _holder(9))


async def test_a_rate_lets_that_many_start_per_period_and_the_rest_later() -> None:
    granted: list[Holder] = []
    clock = [0]
    board = LimitBoard({"r": LimitConfig(rate="2/50ms")}, granted.append, lambda *_: None, lambda: clock[0])
    assert [await board.acquire("r", _holder(i)) for i in range(3)] == [True, True, False]
    board.release("r", _holder(0))  # giving a slot back does not make room in the period
    assert granted == []
    clock[0] = 50

    async def third_granted() -> bool:  # by the board's timer, armed for the end of the period
        return granted == [_holder(2)]
    await eventually(third_granted, timeout=5, what="the third holder to be granted a slot")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), max_size=40), st.integers(1, 3))
def test_never_more_than_concurrency_hold_and_nobody_waits_while_a_slot_is_free(
        events: list[tuple[bool, int]], concurrency: int) -> None:
    async def run() -> None:
        holding: set[Holder] = set()
        waiting: list[Holder] = []

        def grant(holder: Holder) -> None:
            assert holder == waiting.pop(0)  # first come, first served
            holding.add(holder)
        board = LimitBoard({"g": LimitConfig(concurrency=concurrency)}, grant, lambda *_: None)
        for acquire, n in events:
            holder = _holder(n)
            if acquire and holder not in holding and holder not in waiting:
                waiting.append(holder)
                if await board.acquire("g", holder):
                    waiting.remove(holder)
                    holding.add(holder)
            elif not acquire:
                board.release("g", holder)
                holding.discard(holder)
                if holder in waiting:
                    waiting.remove(holder)
            assert len(holding) <= concurrency
            assert not waiting or len(holding) == concurrency
    asyncio.run(run())
