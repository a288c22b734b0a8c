"""Definitions fail at decoration time, options render to the discovery shapes, and the CLI loads."""

import sys
import types
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handler_sdk import (
    Context,
    ObjectContext,
    RetryPolicy,
    Service,
    VirtualObject,
    Workflow,
    WorkflowContext,
    WorkflowSharedContext,
    app,
)
from handler_sdk import __main__ as cli
from handler_sdk.__main__ import load
from handler_sdk._definition import BadInput
from handler_sdk.options import DEFAULT_STEP_RETRY
from handler_sdk.protocol import HandlerSpec, RetrySpec, ServiceSpec, TimeoutSpec


def test_decorators_return_the_function_unchanged() -> None:
    svc = Service("S")

    async def greet(ctx: Context, name: str) -> str:
        return f"hi {name}"

    assert svc.handler()(greet) is greet
    assert svc.handlers["greet"].fn is greet and svc.handlers["greet"].takes_input


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda ctx: None, "async function"),
        (None, "(ctx) or (ctx, arg)"),
        ("too_many", "at most one argument"),
        ("keyword_only", "positionally"),
        ("defaulted", "Optional type"),
    ],
)
def test_bad_handler_signatures_fail_at_definition_time(fn: Any, message: str) -> None:
    async def no_params() -> None: ...
    async def too_many(ctx: Context, a: int, b: int) -> None: ...
    async def keyword_only(ctx: Context, *, a: int) -> None: ...
    async def defaulted(ctx: Context, a: int = 1) -> None: ...

    fn = {None: no_params, "too_many": too_many, "keyword_only": keyword_only,
          "defaulted": defaulted}.get(fn, fn)
    with pytest.raises(TypeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Service("S").handler()(fn)


def test_handler_kinds_are_checked_per_service_kind() -> None:
    async def h(ctx: Context) -> None: ...

    with pytest.raises(ValueError, match="shared"):
        Service("S").handler(kind="exclusive")
    with pytest.raises(ValueError):
        VirtualObject("O").handler(kind="workflow")
    with pytest.raises(ValueError, match="main"):
        Workflow("W").handler(kind="workflow")
    svc = Service("S")
    svc.handler()(h)
    with pytest.raises(ValueError, match="already has a handler"):
        svc.handler()(h)
    with pytest.raises(ValueError, match="service name"):
        Service("a/b")


def test_workflow_has_one_main_handler_and_shared_others() -> None:
    wf = Workflow("Signup")

    @wf.main()
    async def run(ctx: WorkflowContext, email: str) -> str:
        return email

    @wf.handler()
    async def status(ctx: WorkflowSharedContext) -> str:
        return "?"

    async def other(ctx: WorkflowContext) -> None: ...

    with pytest.raises(ValueError, match="already has a main"):
        wf.main()(other)
    assert wf.spec() == ServiceSpec(
        name="Signup", kind="workflow",
        handlers=[HandlerSpec(name="run", kind="workflow"), HandlerSpec(name="status", kind="shared")],
    )


def test_handler_options_render_in_milliseconds() -> None:
    obj = VirtualObject("O")

    @obj.handler("renamed", retry=RetryPolicy(max_attempts=4, initial_interval=0.5, multiplier=3,
                                              max_interval=20), inactivity_timeout=timedelta(minutes=2))
    async def h(ctx: ObjectContext) -> None: ...

    assert obj.spec().handlers == [HandlerSpec(
        name="renamed", kind="exclusive",
        retry=RetrySpec(initial_interval_ms=500, multiplier=3.0, max_interval_ms=20_000, max_attempts=4),
        timeouts=TimeoutSpec(inactivity_ms=120_000),
    )]


def test_total_timeouts_render_in_milliseconds_and_are_validated() -> None:
    wf = Workflow("W")

    @wf.main(timeout=timedelta(hours=1), inactivity_timeout=5)
    async def run(ctx: WorkflowContext) -> None: ...

    @wf.handler(timeout=1.5)
    async def poke(ctx: WorkflowSharedContext) -> None: ...

    assert [h.timeouts for h in wf.spec().handlers] == [
        TimeoutSpec(inactivity_ms=5_000, total_ms=3_600_000), TimeoutSpec(total_ms=1_500)]
    assert msgspec.json.encode(TimeoutSpec(total_ms=1_500)) == b'{"total_ms":1500}'
    for bad in (0, -1, float("nan"), float("inf"), timedelta(0)):
        with pytest.raises(ValueError, match="timeout"):
            Service("S").handler(timeout=bad)
        with pytest.raises(ValueError, match="inactivity_timeout"):
            Service("S").handler(inactivity_timeout=bad)


def test_retry_policy_validates_and_caps_its_backoff() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(multiplier=0.5)
    with pytest.raises(TypeError):
        RetryPolicy(3)  # type: ignore[misc]  # keyword-only
    policy = RetryPolicy(max_attempts=3, initial_interval=0.1, multiplier=2, max_interval=0.3)
    assert [policy.delay_cap(n) for n in (1, 2, 3, 10_000)] == [0.1, 0.2, 0.3, 0.3]
    assert not policy.exhausted(2) and policy.exhausted(3)
    assert not RetryPolicy().exhausted(10**9)
    assert DEFAULT_STEP_RETRY.max_attempts == 3 and DEFAULT_STEP_RETRY.initial_interval == 0.1
    assert msgspec.json.decode(msgspec.json.encode(policy), type=RetryPolicy) == policy


class Point(msgspec.Struct):
    x: int
    y: int


def test_input_decoding_follows_the_annotation() -> None:
    svc = Service("S")

    @svc.handler()
    async def point(ctx: Context, p: Point) -> None: ...

    @svc.handler()
    async def optional(ctx: Context, p: Point | None) -> None: ...

    @svc.handler()
    async def untyped(ctx: Context, p) -> None: ...  # type: ignore[no-untyped-def]

    app([svc])  # resolves annotations
    assert svc.handlers["point"].decode_input(b'{"x":1,"y":2}') == (Point(1, 2),)
    with pytest.raises(BadInput, match="^S/point: p: missing input: expected JSON for Point$"):
        svc.handlers["point"].decode_input(b"")
    with pytest.raises(BadInput, match="^S/point: p.y: expected int, got str$"):
        svc.handlers["point"].decode_input(b'{"x":1,"y":"2"}')
    with pytest.raises(BadInput, match="^S/point: p: object missing required field y$"):
        svc.handlers["point"].decode_input(b'{"x":1}')
    with pytest.raises(BadInput, match="^S/point: p: expected object, got array$"):
        svc.handlers["point"].decode_input(b"[1]")
    assert svc.handlers["optional"].decode_input(b"") == (None,)
    assert svc.handlers["untyped"].decode_input(b"[1]") == ([1],)
    assert svc.handlers["untyped"].decode_input(b"") == (None,)


def test_unresolvable_annotations_fail_when_the_app_is_built() -> None:
    svc = Service("S")

    async def h(ctx: Context, p: "NoSuchType") -> None: ...  # type: ignore[name-defined]  # noqa: F821

    svc.handler()(h)
    with pytest.raises(TypeError, match="cannot resolve"):
        app([svc])


def test_app_rejects_duplicate_and_foreign_services() -> None:
    with pytest.raises(ValueError, match="two services"):
        app([Service("S"), Service("S")])
    with pytest.raises(TypeError):
        app([object()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="heartbeat"):
        app([Service("S")], heartbeat_interval=0)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="suspend_after"):
            app([Service("S")], suspend_after=bad)
    app([Service("S")], suspend_after=0)
    app([Service("S")], suspend_after=float("inf"))  # never suspend


def test_cli_loads_one_service_or_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("sdk_cli_fixture")
    module.one = Service("One")  # type: ignore[attr-defined]
    module.many = [Service("A"), VirtualObject("B")]  # type: ignore[attr-defined]
    module.junk = 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sdk_cli_fixture", module)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load() prepends the working directory
    assert load("sdk_cli_fixture:one") == [module.one]  # type: ignore[attr-defined]
    assert load("sdk_cli_fixture:many") == module.many  # type: ignore[attr-defined]
    for bad in ("sdk_cli_fixture", "sdk_cli_fixture:missing", "sdk_cli_fixture:junk"):
        with pytest.raises(ValueError):
            load(bad)


def test_cli_passes_its_options_to_serve(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    module = types.ModuleType("sdk_cli_options_fixture")
    module.svc = Service("Svc")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sdk_cli_options_fixture", module)
    monkeypatch.setattr(sys, "path", list(sys.path))
    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(cli, "serve", lambda services, **options: calls.append((services, options)))
    cli.main(["sdk_cli_options_fixture:svc", "--port", "9999", "--suspend-after", "2.5", "--reuse-port"])
    cli.main(["sdk_cli_options_fixture:svc"])
    defaults = {"host": "127.0.0.1", "port": 9080, "heartbeat_interval": 5.0, "suspend_after": 1.0,
                "reuse_port": False, "blob_cache_bytes": 256 * 1024 * 1024}
    assert calls == [
        ([module.svc], {**defaults, "port": 9999, "suspend_after": 2.5, "reuse_port": True}),  # type: ignore[attr-defined]
        ([module.svc], defaults),  # type: ignore[attr-defined]
    ]
    with pytest.raises(SystemExit):
        cli.main(["sdk_cli_options_fixture:svc", "--suspend-after", "-1"])
    assert "--suspend-after" in capsys.readouterr().err


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=40), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["x", "y", "z"]), inner, max_size=3),
    max_leaves=8).map(msgspec.json.encode)))
def test_any_bad_input_names_the_handler_and_the_parameter(raw: bytes) -> None:
    svc = Service("S")

    @svc.handler()
    async def point(ctx: Context, p: list[Point]) -> None: ...

    app([svc])
    try:
        svc.handlers["point"].decode_input(raw)
    except BadInput as exc:
        assert str(exc).startswith("S/point: p"), str(exc)
        assert "`" not in str(exc).split(": ", 2)[1]


@pytest.mark.parametrize("name", ["../../../../tmp/x", "a/b", "", " S", "S ", "1st", "h\n", "x" * 129, "naïve", "a b"])
def test_service_and_handler_names_must_be_identifiers(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid name"):
        Service(name)

    async def h(ctx: Context) -> None: ...

    if name:  # an empty handler name means the function's name
        with pytest.raises(ValueError, match="invalid handler name in S: .*not a valid name"):
            Service("S").handler(name)(h)


@pytest.mark.parametrize("name", ["Counter", "_private", "v2.Orders", "order-service", "x" * 128])
def test_identifier_names_are_accepted(name: str) -> None:
    async def h(ctx: Context) -> None: ...

    Service(name).handler(name)(h)
