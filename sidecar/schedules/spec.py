"""``PUT /schedules/{name}``'s body, checked: every refusal is a :class:`ScheduleRefused` whose
message says what is wrong, raised before anything is stored."""

from __future__ import annotations

import re
from urllib.parse import quote, unquote
from zoneinfo import ZoneInfo

import msgspec

from handler_sdk.protocol import MAX_DELAY_MS, MAX_IDENTIFIER_BYTES

from ..durations import parse_duration
from ..store.records import CatchUp, Overlap, ScheduleSpec
from ..transport.registry import Registry
from .timing import Cron, Every, Timing, cron_problem

#: ``schedule:{name}:{fire time in ms}`` is each firing's idempotency key, an identifier too.
IDEMPOTENCY_PREFIX = "schedule:"
MAX_NAME_LENGTH = MAX_IDENTIFIER_BYTES - len(IDEMPOTENCY_PREFIX) - len(":") - 20  # 20: the digits of a u64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MIN_INTERVAL_MS = 1000
#: A schedule's input is stored with it and rewritten at each firing: kept small.
MAX_INPUT_BYTES = 65_536
#: ``-`` + an ISO 8601 instant with milliseconds: what a workflow's key gets at each firing.
_FIRING_SUFFIX_LENGTH = len("-2000-01-01T00:00:00.000Z")


class ScheduleRefused(ValueError):
    """The schedule cannot be taken as given (the message says why)."""


class ScheduleBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    target: str
    cron: str | None = None
    every: str | None = None
    timezone: str | None = None
    input: msgspec.Raw = msgspec.Raw(b"null")
    overlap: Overlap = "skip"
    catch_up: CatchUp = "one"


EXPECTED = ('{"cron": "0 9 * * MON-FRI", "timezone": "Europe/Berlin" (or "every": "30s"), '
            '"target": "Service/handler" or "Object/key/handler", "input": JSON, '
            '"overlap": "skip" | "queue", "catch_up": "one" | "all" | "none"}')


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a schedule, or None."""
    if len(name) > MAX_NAME_LENGTH:
        return f"schedule name is {len(name)} characters long: at most {MAX_NAME_LENGTH}"
    if not _NAME.fullmatch(name):
        return (f"schedule name {name[:100]!r}: use letters, digits, '.', '_' and '-', "
                "starting with a letter or a digit")
    return None


def timing_of(spec: ScheduleSpec) -> Timing:
    if spec.cron is not None:
        return Cron(spec.cron, spec.timezone)
    assert spec.every_ms is not None
    return Every(spec.anchor_ms, spec.every_ms)


def parse_spec(body: ScheduleBody, registry: Registry, now_ms: int) -> ScheduleSpec:
    """The spec ``body`` asks for, set at ``now_ms``; its target must be registered."""
    if (body.cron is None) == (body.every is None):
        raise ScheduleRefused('give either "cron" (with an optional "timezone") or "every", not both or neither')
    if len(body.input) > MAX_INPUT_BYTES:
        raise ScheduleRefused(f"input is {len(body.input)} bytes: a schedule's input may be at most "
                              f"{MAX_INPUT_BYTES} bytes")
    try:  # as the ingress will decode it at each firing (msgspec.Raw skips over numbers it would refuse)
        msgspec.json.decode(body.input)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ScheduleRefused(f"input is not JSON a send can carry: {exc}") from None
    target, key_per_firing = _target(body.target, registry)
    every_ms: int | None = None
    timezone = "UTC"
    if body.every is not None:
        if body.timezone is not None:
            raise ScheduleRefused('"timezone" applies to "cron" only: an interval is the same in every zone')
        every_ms = _interval_ms(body.every)
    else:
        assert body.cron is not None
        timezone = body.timezone or timezone
        _zone(timezone)
        if (problem := cron_problem(body.cron, timezone)) is not None:
            raise ScheduleRefused(problem)
    return ScheduleSpec(cron=body.cron, timezone=timezone, every_ms=every_ms,
                        anchor_ms=now_ms if every_ms is not None else 0, target=target,
                        key_per_firing=key_per_firing, input=bytes(body.input), overlap=body.overlap,
                        catch_up=body.catch_up)


def _interval_ms(text: str) -> int:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ScheduleRefused(f"every: {exc}") from None
    interval_ms = round(seconds * 1000)
    if interval_ms < MIN_INTERVAL_MS:
        raise ScheduleRefused(f"every {text[:100]!r} is too short: at least 1s")
    if interval_ms > MAX_DELAY_MS:
        raise ScheduleRefused(f"every {text[:100]!r} is too long: at most {MAX_DELAY_MS // 86_400_000} days")
    return interval_ms


def _zone(name: str) -> None:
    if len(name) > 255:
        raise ScheduleRefused(f"timezone is {len(name)} characters long: no zone is named that")
    try:
        ZoneInfo(name)
    except Exception:  # not found (KeyError), not a zone name (ValueError), unreadable (OSError)...
        raise ScheduleRefused(f"unknown timezone {name[:100]!r}: use an IANA name such as Europe/Berlin or UTC") from None


def _target(text: str, registry: Registry) -> tuple[str, bool]:
    """``text`` as a send's path (each part percent-encoded once), and whether its handler is a
    workflow's main one (each firing then runs on a key of its own)."""
    try:
        parts = [unquote(part, errors="strict") for part in text.strip("/").split("/")]
    except UnicodeDecodeError:
        raise ScheduleRefused(f"target {text[:100]!r} is not valid UTF-8 once percent-decoded") from None
    if len(parts) not in (2, 3) or not all(parts):
        raise ScheduleRefused(f"target {text[:100]!r}: expected Service/handler or Object/key/handler")
    for part in parts:
        if len(part.encode(errors="surrogatepass")) > MAX_IDENTIFIER_BYTES:
            raise ScheduleRefused(f"target {text[:100]!r}: a part is over {MAX_IDENTIFIER_BYTES} bytes")
    service, handler = parts[0], parts[-1]
    found = registry.service(service) or registry.reload().service(service)
    if found is None:
        raise ScheduleRefused(f"unknown service {service!r}: register its deployment first")
    keyed = found[1].kind != "service"
    if keyed != (len(parts) == 3):
        shape = "Object/key/handler: an object or a workflow needs a key" if keyed else "Service/handler"
        raise ScheduleRefused(f"{service} is a {found[1].kind}: write the target as {shape}")
    route = registry.route(service, handler)
    if route is None:
        raise ScheduleRefused(f"{service} has no handler {handler!r}")
    key_per_firing = route.handler.kind == "workflow"
    if key_per_firing and len(parts[1].encode()) > MAX_IDENTIFIER_BYTES - _FIRING_SUFFIX_LENGTH:
        raise ScheduleRefused(f"workflow key is too long: each firing adds {_FIRING_SUFFIX_LENGTH} characters "
                              f"and a key may be at most {MAX_IDENTIFIER_BYTES} bytes")
    return "/".join(quote(part, safe="") for part in parts), key_per_firing
