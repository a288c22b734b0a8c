"""The SDK driven through its real aiohttp app, with the test playing the sidecar on /connect.

Every wait has a deadline; nothing sleeps to let a race settle. Where a test must show that
something did *not* happen, it uses a barrier: a trivial invocation started on the same socket
after the event in question. The socket is ordered, so once the barrier's End is back, the SDK
has processed everything sent before it.
"""

import asyncio
import threading
from typing import Any

import msgspec

from handler_sdk import (
    Context,
    ObjectContext,
    ObjectSharedContext,
    RetryPolicy,
    Service,
    TerminalError,
    VirtualObject,
    app,
)
from handler_sdk.protocol import (
    ClearAllState,
    ClearState,
    Command,
    Discovery,
    End,
    Entry,
    GetState,
    GetStateKeys,
    Heartbeat,
    Now,
    Run,
    SetState,
    TimeoutSpec,
)
from tests.unit.fake_sidecar import DEADLINE, FAST, Connect, barrier_service

def counter_object(calls: list[int], after_run: list[int]) -> VirtualObject:
    """The benchmark's shape: one get, one run, one set per invocation."""
    counter = VirtualObject("Counter")

    def audit(n: int) -> int:
        calls.append(n)
        return n * 10

    @counter.handler()
    async def add(ctx: ObjectContext, n: int) -> int:
        total = (await ctx.get("count", type=int) or 0) + n
        await ctx.run("audit", audit, n)
        after_run.append(n)
        ctx.set("count", total)
        return total

    return counter


async def test_discover_lists_services_and_handler_options(aiohttp_client: Any) -> None:
    obj = VirtualObject("Obj")

    @obj.handler(retry=RetryPolicy(max_attempts=5, initial_interval=0.25), inactivity_timeout=30, timeout=600)
    async def write(ctx: ObjectContext) -> None: ...

    @obj.handler(kind="shared")
    async def read(ctx: ObjectSharedContext) -> None: ...

    client = await aiohttp_client(app([barrier_service, obj]))
    response = await client.get("/discover")
    assert response.status == 200
    discovery = msgspec.json.decode(await response.read(), type=Discovery)
    assert discovery.protocol == 1 and discovery.blob_refs  # it resolves blob references
    assert [(s.name, s.kind) for s in discovery.services] == [("Barrier", "service"), ("Obj", "object")]
    assert [h.kind for h in discovery.services[0].handlers] == ["shared"]
    write_spec, read_spec = discovery.services[1].handlers
    assert (write_spec.name, write_spec.kind, read_spec.kind) == ("write", "exclusive", "shared")
    assert write_spec.retry.max_attempts == 5 and write_spec.retry.initial_interval_ms == 250
    assert write_spec.retry.max_interval_ms == 10_000 and write_spec.timeouts.inactivity_ms == 30_000
    assert write_spec.timeouts.total_ms == 600_000
    assert read_spec.retry.max_attempts is None and read_spec.timeouts == TimeoutSpec()


async def test_fresh_run_pipelines_get_and_waits_for_the_ack_before_continuing(connect: Connect) -> None:
    calls: list[int] = []
    after_run: list[int] = []
    sidecar = await connect(counter_object(calls, after_run))
    inv = await sidecar.start("Counter", "add", b"5", state={"count": b"3"})

    get = await sidecar.next(inv)
    assert get == Command(invocation_id=inv, index=1, entry=GetState(name="count", value=b"3"))
    run = await sidecar.next(inv)
    assert run == Command(invocation_id=inv, index=2, entry=Run(name="audit", value=b"50"))
    assert calls == [5]
    # An ack for an earlier entry does not release the step's result.
    await sidecar.ack(inv, 1)
    await sidecar.barrier()
    assert after_run == [] and sidecar.idle(inv)

    await sidecar.ack(inv, 2)
    entries, end = await sidecar.finish(inv)
    assert entries == [SetState(name="count", value=b"8")]
    assert end == End(invocation_id=inv, output=b"8")
    assert after_run == [5]


async def test_a_journaled_run_is_never_executed_again(connect: Connect) -> None:
    calls: list[int] = []
    sidecar = await connect(counter_object(calls, []))
    first = await sidecar.start("Counter", "add", b"2", state={})
    journal, end = await sidecar.finish(first)
    assert calls == [2] and end.output == b"2"

    # Retry with the whole journal: everything replays, nothing runs, the output is the same.
    again = await sidecar.start("Counter", "add", b"2", journal=journal, state={"count": b"2"},
                                invocation_id=first, attempt=2)
    replayed, end = await sidecar.finish(again)
    assert calls == [2] and replayed == [] and end.output == b"2"

    # Retry after a crash that lost the step: it runs once more, and only then.
    partial = await sidecar.start("Counter", "add", b"2", journal=journal[:1], state={},
                                  invocation_id=first, attempt=3)
    rest, end = await sidecar.finish(partial)
    assert calls == [2, 2] and rest == journal[1:] and end.output == b"2"


async def test_a_step_records_how_long_its_tries_took(connect: Connect) -> None:
    timed = Service("Timed")
    tries: list[int] = []

    @timed.handler()
    async def slow(ctx: Context) -> int:
        async def nap() -> int:
            await asyncio.sleep(0.05)
            return 1

        async def second_time_lucky() -> int:
            tries.append(1)
            await asyncio.sleep(0.03)
            if len(tries) == 1:
                raise RuntimeError("transient")
            return 2

        backoff = RetryPolicy(max_attempts=3, initial_interval=0.1, max_interval=0.1)
        return await ctx.run("nap", nap) + await ctx.run("lucky", second_time_lucky, retry=backoff)

    sidecar = await connect(timed)
    _, end = await sidecar.finish(await sidecar.start("Timed", "slow", b"null", key=None))
    assert end.output == b"3"
    nap, lucky = sidecar.timed_runs
    assert nap.duration_ms is not None and 50 <= nap.duration_ms < 5_000
    assert lucky.attempts == 2 and lucky.duration_ms is not None and 60 <= lucky.duration_ms < 5_000  # both tries


async def test_replayed_values_come_from_the_journal_not_from_state(connect: Connect) -> None:
    calls: list[int] = []
    sidecar = await connect(counter_object(calls, []))
    journal: list[Entry] = [GetState(name="count", value=b"40"), Run(name="audit", value=b"10")]
    inv = await sidecar.start("Counter", "add", b"1", journal=journal, state={"count": b"999"})
    entries, end = await sidecar.finish(inv)
    assert entries == [SetState(name="count", value=b"41")] and end.output == b"41"
    assert calls == []


async def test_a_divergent_step_fails_the_attempt_retryably_naming_the_index(connect: Connect) -> None:
    calls: list[int] = []
    sidecar = await connect(counter_object(calls, []))
    journal: list[Entry] = [GetState(name="count"), Run(name="charge-card", value=b"1")]
    inv = await sidecar.start("Counter", "add", b"1", journal=journal)
    entries, end = await sidecar.finish(inv)
    assert entries == [] and calls == []
    assert end.failure is not None and end.failure.terminal is False and end.failure.code == 500
    message = end.failure.message
    assert message.startswith("NondeterminismError:")
    assert "journal entry 2" in message and "'charge-card'" in message and "'audit'" in message
    assert "Traceback" not in message


async def test_a_swallowed_divergence_still_fails_the_attempt(connect: Connect) -> None:
    svc = Service("Sloppy")

    @svc.handler()
    async def swallow(ctx: Context) -> str:
        try:
            await ctx.run("new-step", lambda: 1)
        except Exception:
            pass
        return "carried on"

    sidecar = await connect(svc)
    inv = await sidecar.start("Sloppy", "swallow", key=None, journal=[Run(name="old-step", value=b"1")])
    entries, end = await sidecar.finish(inv)
    assert entries == [] and end.output is None
    assert end.failure is not None and not end.failure.terminal and "'old-step'" in end.failure.message


async def test_ending_before_the_recorded_steps_is_a_divergence(connect: Connect) -> None:
    svc = Service("Shrunk")

    @svc.handler()
    async def short(ctx: Context) -> int:
        return 1

    sidecar = await connect(svc)
    inv = await sidecar.start("Shrunk", "short", key=None, journal=[Run(name="gone", value=b"1")])
    _, end = await sidecar.finish(inv)
    assert end.failure is not None and not end.failure.terminal
    assert "journal entry 1" in end.failure.message and "handler's end" in end.failure.message


async def test_terminal_error_ends_with_its_code(connect: Connect) -> None:
    svc = Service("Teapot")

    @svc.handler()
    async def brew(ctx: Context) -> None:
        raise TerminalError("I'm a teapot", code=418)

    sidecar = await connect(svc)
    _, end = await sidecar.finish(await sidecar.start("Teapot", "brew", key=None))
    assert end.failure is not None
    assert (end.failure.code, end.failure.message, end.failure.terminal) == (418, "I'm a teapot", True)


async def test_other_exceptions_are_retryable_without_a_traceback(connect: Connect) -> None:
    svc = Service("Buggy")

    @svc.handler()
    async def crash(ctx: Context) -> None:
        raise KeyError("missing")

    sidecar = await connect(svc)
    _, end = await sidecar.finish(await sidecar.start("Buggy", "crash", key=None))
    assert end.failure is not None and end.failure.terminal is False
    assert end.failure.message == "KeyError: 'missing'"


class Order(msgspec.Struct):
    item: str
    qty: int


async def test_input_is_decoded_from_annotations_and_bad_input_is_a_400(connect: Connect) -> None:
    svc = Service("Shop")

    @svc.handler()
    async def order(ctx: Context, o: Order) -> Order:
        return Order(o.item.upper(), o.qty * 2)

    @svc.handler()
    async def maybe(ctx: Context, n: int | None) -> str:
        return repr(n)

    @svc.handler()
    async def noarg(ctx: Context) -> str:
        return "ok"

    sidecar = await connect(svc)
    _, end = await sidecar.finish(await sidecar.start("Shop", "order", b'{"item":"tea","qty":2}', key=None))
    assert end.output == b'{"item":"TEA","qty":4}'
    for body, expected in [(b'{"item":"tea","qty":"x"}', "Shop/order: o.qty: expected int, got str"),
                           (b"{not json", "Shop/order: o: not valid JSON"),
                           (b"", "Shop/order: o: missing input")]:
        _, end = await sidecar.finish(await sidecar.start("Shop", "order", body, key=None))
        assert end.failure is not None and end.failure.code == 400 and end.failure.terminal
        assert expected in end.failure.message
    _, end = await sidecar.finish(await sidecar.start("Shop", "maybe", b"", key=None))
    assert end.output == b'"None"'
    _, end = await sidecar.finish(await sidecar.start("Shop", "noarg", b"", key=None))
    assert end.output == b'"ok"'


async def test_unknown_handler_is_a_terminal_404(connect: Connect) -> None:
    sidecar = await connect()
    _, end = await sidecar.finish(await sidecar.start("Nope", "nothing", key=None))
    assert end.failure is not None and end.failure.code == 404 and end.failure.terminal


def flaky_service(tries: list[int], fail_times: int, retry: RetryPolicy | None = FAST) -> Service:
    svc = Service("Flaky")

    def sometimes() -> str:
        tries.append(1)
        if len(tries) <= fail_times:
            raise ConnectionError(f"try {len(tries)} failed")
        return "done"

    @svc.handler()
    async def go(ctx: Context) -> str:
        return await ctx.run("call", sometimes, retry=retry)

    @svc.handler()
    async def compensate(ctx: Context) -> str:
        try:
            return await ctx.run("call", sometimes, retry=retry)
        except TerminalError as exc:
            return f"compensated {exc.code}: {exc.message}"

    return svc


async def test_a_failing_step_is_retried_in_process(connect: Connect) -> None:
    tries: list[int] = []
    sidecar = await connect(flaky_service(tries, fail_times=2))
    entries, end = await sidecar.finish(await sidecar.start("Flaky", "go", key=None))
    assert len(tries) == 3
    assert entries == [Run(name="call", value=b'"done"', attempts=3)] and end.output == b'"done"'


async def test_an_exhausted_step_is_journaled_as_a_terminal_failure(connect: Connect) -> None:
    tries: list[int] = []
    sidecar = await connect(flaky_service(tries, fail_times=100))
    inv = await sidecar.start("Flaky", "compensate", key=None)
    entries, end = await sidecar.finish(inv)
    assert len(tries) == 3
    [run] = entries
    assert isinstance(run, Run) and run.value is None and run.failure is not None
    assert run.failure.terminal and run.failure.code == 500
    assert "ConnectionError: try 3 failed" in run.failure.message
    assert end.output is not None and b"compensated 500" in end.output

    # On replay the recorded failure is raised again; the step does not run.
    again = await sidecar.start("Flaky", "compensate", key=None, journal=entries, invocation_id=inv)
    _, replayed_end = await sidecar.finish(again)
    assert replayed_end.output == end.output and len(tries) == 3


async def test_a_terminal_error_in_a_step_is_not_retried(connect: Connect) -> None:
    svc = Service("Refuse")
    tries: list[int] = []

    def refuse() -> None:
        tries.append(1)
        raise TerminalError("card declined", code=402)

    @svc.handler()
    async def pay(ctx: Context) -> None:
        await ctx.run("charge", refuse, retry=FAST)

    sidecar = await connect(svc)
    entries, end = await sidecar.finish(await sidecar.start("Refuse", "pay", key=None))
    assert tries == [1]
    assert entries == [Run(name="charge", failure=entries[0].failure)]  # type: ignore[union-attr]
    assert end.failure is not None and (end.failure.code, end.failure.message) == (402, "card declined")
    assert end.failure.terminal


async def test_step_results_are_decoded_with_the_functions_return_type(connect: Connect) -> None:
    svc = Service("Typed")

    async def fetch() -> Order:
        return Order("tea", 1)

    @svc.handler()
    async def get_order(ctx: Context) -> str:
        order = await ctx.run("fetch", fetch)
        return type(order).__name__

    sidecar = await connect(svc)
    journal, end = await sidecar.finish(await sidecar.start("Typed", "get_order", key=None))
    assert end.output == b'"Order"'
    _, end = await sidecar.finish(await sidecar.start("Typed", "get_order", key=None, journal=journal))
    assert end.output == b'"Order"'


def keys_service(seen: list[tuple[str, ...]]) -> Service:
    svc = Service("Keys")

    def inside(ctx: Context) -> str:
        return ctx.idempotency_key()

    @svc.handler()
    async def keys(ctx: Context) -> list[str]:
        before = ctx.idempotency_key()
        in_step = await ctx.run("k", inside, ctx)
        after = ctx.idempotency_key()
        seen.append((before, in_step, after))
        return [before, in_step, after]

    return svc


async def test_idempotency_keys_are_stable_across_replays(connect: Connect) -> None:
    seen: list[tuple[str, ...]] = []
    sidecar = await connect(keys_service(seen))
    inv = await sidecar.start("Keys", "keys", key=None)
    journal, end = await sidecar.finish(inv)
    assert msgspec.json.decode(end.output or b"") == [f"{inv}:1", f"{inv}:1", f"{inv}:2"]
    again = await sidecar.start("Keys", "keys", key=None, journal=journal, invocation_id=inv)
    _, end_again = await sidecar.finish(again)
    assert end_again.output == end.output and seen[0] == seen[1]


async def test_random_and_uuid_are_deterministic_per_seed(connect: Connect) -> None:
    svc = Service("Dice")

    @svc.handler()
    async def roll(ctx: Context) -> list[Any]:
        first, an_id, second = ctx.random(), ctx.uuid(), ctx.random()
        assert 0.0 <= first < 1.0 and an_id.version == 4
        return [first, str(an_id), second]

    sidecar = await connect(svc)
    outputs = []
    for seed in (1, 1, 2):
        _, end = await sidecar.finish(await sidecar.start("Dice", "roll", key=None, seed=seed))
        outputs.append(end.output)
    assert outputs[0] == outputs[1] != outputs[2]


async def test_now_is_journaled_and_replayed(connect: Connect) -> None:
    svc = Service("Clock")

    @svc.handler()
    async def when(ctx: Context) -> str:
        return (await ctx.now()).isoformat()

    sidecar = await connect(svc)
    journal, end = await sidecar.finish(await sidecar.start("Clock", "when", key=None))
    assert isinstance(journal[0], Now) and journal[0].ms > 1_600_000_000_000
    _, end = await sidecar.finish(await sidecar.start(
        "Clock", "when", key=None, journal=[Now(ms=1_700_000_000_123)]))
    assert end.output == b'"2023-11-14T22:13:20.123000+00:00"'


async def test_state_reads_see_the_snapshot_and_own_writes(connect: Connect) -> None:
    obj = VirtualObject("Box")

    @obj.handler()
    async def shuffle(ctx: ObjectContext) -> list[Any]:
        seen: list[Any] = [await ctx.get("a"), await ctx.state_keys()]
        ctx.set("c", {"x": 1})
        ctx.clear("a")
        seen += [await ctx.get("c"), await ctx.get("a"), await ctx.state_keys()]
        ctx.clear_all()
        seen.append(await ctx.state_keys())
        return seen

    sidecar = await connect(obj)
    inv = await sidecar.start("Box", "shuffle", state={"a": b"1", "b": b"2"})
    entries, end = await sidecar.finish(inv)
    assert msgspec.json.decode(end.output or b"") == [1, ["a", "b"], {"x": 1}, None, ["b", "c"], []]
    assert [type(e) for e in entries] == [
        GetState, GetStateKeys, SetState, ClearState, GetState, GetState, GetStateKeys, ClearAllState,
        GetStateKeys]


async def test_shared_and_service_contexts_offer_only_what_they_may_do(connect: Connect) -> None:
    obj = VirtualObject("Reader")
    svc = Service("Plain")
    seen: dict[str, Any] = {}

    @obj.handler(kind="shared")
    async def peek(ctx: ObjectSharedContext) -> Any:
        seen["shared"] = (isinstance(ctx, ObjectContext), hasattr(ctx, "set"), ctx.key)
        return await ctx.get("v")

    @svc.handler()
    async def hello(ctx: Context) -> str:
        seen["service"] = (isinstance(ctx, ObjectSharedContext), hasattr(ctx, "get"), dict(ctx.headers))
        return ctx.invocation_id

    sidecar = await connect(obj, svc)
    _, end = await sidecar.finish(await sidecar.start("Reader", "peek", key="k1", state={"v": b"[1]"}))
    assert end.output == b"[1]" and seen["shared"] == (False, False, "k1")
    inv = await sidecar.start("Plain", "hello", key=None)
    _, end = await sidecar.finish(inv)
    assert end.output == f'"{inv}"'.encode() and seen["service"] == (False, False, {"x-test": "1"})


async def test_sync_steps_run_off_the_loop_and_heartbeat_meanwhile(connect: Connect) -> None:
    svc = Service("Slow")
    release = threading.Event()
    threads: list[int] = []

    def slow() -> int:
        threads.append(threading.get_ident())
        release.wait(DEADLINE)
        return 1

    @svc.handler()
    async def work(ctx: Context) -> int:
        return await ctx.run("slow", slow)

    sidecar = await connect(svc, heartbeat_interval=0.01)
    inv = await sidecar.start("Slow", "work", key=None)
    try:
        assert await sidecar.next(inv) == Heartbeat(invocation_id=inv)
        assert await sidecar.next(inv) == Heartbeat(invocation_id=inv)
    finally:
        release.set()
    while isinstance(message := await sidecar.next(inv), Heartbeat):
        pass
    assert message == Command(invocation_id=inv, index=1, entry=Run(name="slow", value=b"1"))
    await sidecar.ack(inv, 1)
    entries, end = await sidecar.finish(inv)
    assert entries == []
    assert end.output == b"1" and threads[0] != threading.get_ident()


def blocking_service(entered: asyncio.Event, cancelled: asyncio.Event) -> Service:
    svc = Service("Blocked")

    async def wait_forever() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    @svc.handler()
    async def hang(ctx: Context) -> None:
        await ctx.run("forever", wait_forever)

    return svc


async def test_kill_stops_the_attempt_and_sends_nothing_more(connect: Connect) -> None:
    entered, cancelled = asyncio.Event(), asyncio.Event()
    sidecar = await connect(blocking_service(entered, cancelled))
    inv = await sidecar.start("Blocked", "hang", key=None)
    await asyncio.wait_for(entered.wait(), DEADLINE)
    await sidecar.kill(inv)
    await asyncio.wait_for(cancelled.wait(), DEADLINE)
    await sidecar.barrier()
    assert sidecar.idle(inv)


async def test_a_new_start_replaces_the_running_attempt(connect: Connect) -> None:
    entered, cancelled = asyncio.Event(), asyncio.Event()
    svc = blocking_service(entered, cancelled)

    @svc.handler()
    async def quick(ctx: Context) -> str:
        return "second"

    sidecar = await connect(svc)
    inv = await sidecar.start("Blocked", "hang", key=None)
    await asyncio.wait_for(entered.wait(), DEADLINE)
    await sidecar.start("Blocked", "quick", key=None, invocation_id=inv, attempt=2)
    _, end = await sidecar.finish(inv)
    assert end.output == b'"second"' and cancelled.is_set()


async def test_closing_the_socket_kills_its_invocations(connect: Connect) -> None:
    entered, cancelled = asyncio.Event(), asyncio.Event()
    sidecar = await connect(blocking_service(entered, cancelled))
    await sidecar.start("Blocked", "hang", key=None)
    await asyncio.wait_for(entered.wait(), DEADLINE)
    await sidecar.ws.close()
    await asyncio.wait_for(cancelled.wait(), DEADLINE)


async def test_many_invocations_share_one_socket(connect: Connect) -> None:
    calls: list[int] = []
    sidecar = await connect(counter_object(calls, []))
    invs = [await sidecar.start("Counter", "add", str(n).encode(), key=f"k{n}") for n in range(50)]
    results = await asyncio.gather(*(sidecar.finish(inv) for inv in invs))
    assert [end.output for _, end in results] == [str(n).encode() for n in range(50)]
    assert sorted(calls) == list(range(50))


async def test_a_text_frame_closes_the_socket(connect: Connect) -> None:
    sidecar = await connect()
    await sidecar.ws.send_str("hello")
    await asyncio.wait_for(sidecar.closed.wait(), DEADLINE)


async def test_concurrent_steps_are_journaled_in_index_order(connect: Connect) -> None:
    svc = Service("Fanout")
    first_may_finish = asyncio.Event()

    async def slow() -> str:
        await first_may_finish.wait()
        return "slow"

    async def fast() -> str:
        first_may_finish.set()  # the second step finishes first
        return "fast"

    @svc.handler()
    async def both(ctx: Context) -> list[str]:
        return list(await asyncio.gather(ctx.run("slow", slow), ctx.run("fast", fast)))

    sidecar = await connect(svc)
    inv = await sidecar.start("Fanout", "both", key=None)
    entries, end = await sidecar.finish(inv)  # finish() checks that indices arrive in order
    assert entries == [Run(name="slow", value=b'"slow"'), Run(name="fast", value=b'"fast"')]
    assert end.output == b'["slow","fast"]'


async def test_context_calls_inside_a_step_fail_the_step(connect: Connect) -> None:
    svc = Service("Nested")

    @svc.handler()
    async def nest(ctx: Context) -> None:
        async def inner() -> int:
            return await ctx.run("inner", lambda: 1)

        await ctx.run("outer", inner, retry=RetryPolicy(max_attempts=1))

    sidecar = await connect(svc)
    entries, end = await sidecar.finish(await sidecar.start("Nested", "nest", key=None))
    [run] = entries
    assert isinstance(run, Run) and run.failure is not None and "inside a ctx.run" in run.failure.message
    assert end.failure is not None and end.failure.terminal


async def test_a_step_cancelled_by_user_code_fails_the_attempt_retryably(connect: Connect) -> None:
    svc = Service("Impatient")

    @svc.handler()
    async def wait(ctx: Context) -> str:
        try:
            await asyncio.wait_for(ctx.run("forever", asyncio.Event().wait), 0.001)
        except TimeoutError:
            pass
        return "gave up"

    sidecar = await connect(svc)
    entries, end = await sidecar.finish(await sidecar.start("Impatient", "wait", key=None))
    assert entries == [] and end.output is None
    assert end.failure is not None and not end.failure.terminal and "was cancelled" in end.failure.message
