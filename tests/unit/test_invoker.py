"""The invoker over a real store, with the test playing the handler on fake links: the order
invocations start in, retries, commits before acks, recovery, hand-over of keys, kills and
cancels at awkward moments, deployments that are down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from handler_sdk.protocol import (
    Ack, Cancel, Command, End, Failure, HandlerSpec, Input, Output, Pause, Run, ServiceSpec, SetState, Start,
)
from sidecar.clock import now_ms
from sidecar.cli.config import Settings
from sidecar.ids import IdGenerator
from sidecar.invoker import Invoker
from sidecar.metrics import Metrics
from sidecar.process.partitions import PartitionMap
from sidecar.transport.registry import Registry
from sidecar.invoker.retry import RetryPolicy
from sidecar.store import Changes, DeploymentRecord, InvocationRecord
from tests.procs import eventually
from tests.unit.fake_links import FakeLinks, FakePool, Sent
from tests.unit.held_store import HeldStore

DEADLINE = 5.0
COUNTER = ServiceSpec("Counter", "object", [HandlerSpec("add", "exclusive"), HandlerSpec("get", "shared")])
GREETER = ServiceSpec("Greeter", "service", [HandlerSpec("greet", "shared")])
#: Retries a test does not want to wait for.
QUICK = RetryPolicy(initial_interval_s=0.01, multiplier=1.0, max_interval_s=0.01, max_attempts=3)
#: Retries that do not come during a test unless something makes them.
SLOW = RetryPolicy(initial_interval_s=60.0, multiplier=1.0, max_interval_s=60.0, max_attempts=3)
FLAKY = Failure(500, "flaky", terminal=False)


class Rig:
    """An invoker over a ``HeldStore`` whose one deployment the test plays on ``links``."""

    def __init__(self, store: HeldStore, http: aiohttp.ClientSession, deployment_id: str,
                 settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.store = store
        self.deployment_id = deployment_id
        self._http = http
        self.links, self.invoker = self._build(None)

    def _build(self, retry: RetryPolicy | None) -> tuple[FakeLinks, Invoker]:
        ids = IdGenerator()
        self.registry = Registry(self.store, ids)
        settings = self.settings
        links = FakeLinks(self.registry, settings)
        if retry is not None:
            links.retry = retry
        invoker = Invoker(store=self.store, registry=self.registry, settings=settings, http=self._http, ids=ids,
                          partitions=PartitionMap.single(), metrics=Metrics(), links=links)
        invoker.start()
        return links, invoker

    async def restart(self) -> None:
        """Stop the invoker as the sidecar does when it exits (every submitted write commits),
        then start a new one over the same data: its links are new, its policy the same."""
        await self.invoker.close()
        self.store.auto = True
        self.store.commit()
        self.links, self.invoker = self._build(self.links.retry)

    @property
    def pool(self) -> FakePool:
        pool = self.links.pool(self.deployment_id)
        assert pool is not None
        return pool

    async def submit(self, service: str, handler: str, key: str | None = None, *, delay_s: float = 0.0,
                     budget: float | None = None) -> str:
        route = self.registry.route(service, handler)
        assert route is not None
        invocation_id, _ = await self.invoker.lifecycle.submit(route, key, b'"in"', {}, None, delay_s=delay_s,
                                                               budget=budget)
        return invocation_id

    async def start_of(self, invocation_id: str, timeout: float = DEADLINE) -> Sent[Start]:
        return await self.links.expect(Start, invocation_id, timeout=timeout)

    def current(self, invocation_id: str) -> InvocationRecord:
        return self.invoker.table.current(invocation_id)

    def reason(self, invocation_id: str) -> str:
        return self.invoker.queries.reason(invocation_id)

    def stored(self, invocation_id: str) -> InvocationRecord:
        record = self.store.get_invocation(invocation_id)
        assert record is not None
        return record

    async def outcome(self, invocation_id: str) -> InvocationRecord:
        return await asyncio.wait_for(self.invoker.queries.outcome(invocation_id), DEADLINE)

    async def stored_status(self, invocation_id: str, status: str) -> None:
        async def check() -> bool:
            return self.stored(invocation_id).status == status
        await eventually(check, timeout=DEADLINE, what=f"{invocation_id} to be stored {status}")


@asynccontextmanager
async def rig(tmp_path: Path, settings: Settings | None = None) -> AsyncIterator[Rig]:
    store = HeldStore(tmp_path / "data")
    deployment = DeploymentRecord(id=IdGenerator().deployment_id(), uri="http://handler.invalid",
                                  services=[COUNTER, GREETER], created_ms=now_ms(), blob_refs=True)
    changes = Changes()
    changes.put_deployment(deployment)
    store.write_now(changes)
    async with aiohttp.ClientSession() as http:
        r = Rig(store, http, deployment.id, settings)
        try:
            yield r
        finally:
            await r.invoker.close()
            await store.close()


def end(start: Sent[Start], output: bytes = b'"ok"') -> None:
    start.link.answer(End(start.frame.invocation_id, output=output))


def fail(start: Sent[Start], failure: Failure = FLAKY) -> None:
    start.link.answer(End(start.frame.invocation_id, failure=failure))


async def run_step(r: Rig, start: Sent[Start], index: int, value: bytes) -> None:
    """The handler journals a step and waits for its ack, as ``ctx.run`` does."""
    invocation_id = start.frame.invocation_id
    start.link.answer(Command(invocation_id, index, Run("step", value=value)))
    ack = await r.links.expect(Ack, invocation_id)
    assert ack.frame.index == index


# --- the order invocations start in -------------------------------------------------------------------


async def test_exclusive_invocations_on_a_key_start_one_at_a_time_in_arrival_order(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        first, second, third = [await r.submit("Counter", "add", "k") for _ in range(3)]
        running = await r.start_of(first)
        # All three are durable (submit returned) and the key's holder has started: the others wait.
        assert r.links.started() == [first]
        assert (r.current(second).status, r.current(third).status) == ("pending", "pending")
        end(running, b'"1"')
        running = await r.start_of(second)
        assert r.links.started() == [first, second]
        end(running, b'"2"')
        end(await r.start_of(third), b'"3"')
        outputs = [(await r.outcome(i)).output for i in (first, second, third)]
        assert outputs == [b'"1"', b'"2"', b'"3"']
        assert r.links.started() == [first, second, third]


async def test_a_shared_handler_does_not_wait_for_the_key(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        writer = await r.submit("Counter", "add", "k")
        holding = await r.start_of(writer)
        reader = await r.submit("Counter", "get", "k")
        end(await r.start_of(reader), b'"0"')
        assert (await r.outcome(reader)).status == "completed"
        assert r.current(writer).status == "running"  # it still holds the key
        end(holding)
        assert (await r.outcome(writer)).status == "completed"


async def test_a_delayed_invocation_does_not_hold_its_key_while_it_waits(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        delayed = await r.submit("Counter", "add", "k", delay_s=0.3)
        prompt = await r.submit("Counter", "add", "k")
        running = await r.start_of(prompt)
        assert r.current(delayed).attempts == 0
        assert r.invoker.queries.reason(delayed).startswith("delayed")
        end(running)
        assert (await r.outcome(prompt)).status == "completed"
        end(await r.start_of(delayed))
        assert (await r.outcome(delayed)).status == "completed"
        assert r.links.started() == [prompt, delayed]


# --- retries -------------------------------------------------------------------------------------


async def test_a_retried_attempt_replays_what_the_failed_one_journaled(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.links.retry = QUICK
        invocation_id = await r.submit("Counter", "add", "k")
        first = await r.start_of(invocation_id)
        assert (first.frame.attempt, first.frame.journal) == (1, [Input(b'"in"')])
        await run_step(r, first, 1, b'"charged"')
        first.link.answer(Command(invocation_id, 2, SetState("n", b"1")))  # not acked: it need not be
        fail(first)
        assert (r.current(invocation_id).status, r.current(invocation_id).last_error) == ("backing-off", "flaky")
        second = await r.start_of(invocation_id)
        assert second.frame.attempt == 2
        assert second.frame.journal == [Input(b'"in"'), Run("step", value=b'"charged"'), SetState("n", b"1")]
        assert second.frame.state == {"n": b"1"}
        end(second, b'"done"')
        record = await r.outcome(invocation_id)
        assert (record.status, record.output, record.attempts) == ("completed", b'"done"', 2)
        assert r.store.read_journal(invocation_id) == [
            Input(b'"in"'), Run("step", value=b'"charged"'), SetState("n", b"1"), Output(value=b'"done"')]


async def test_an_invocation_pauses_after_max_attempts_and_runs_again_when_resumed(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.links.retry = RetryPolicy(initial_interval_s=0.01, multiplier=1.0, max_interval_s=0.01, max_attempts=2)
        invocation_id = await r.submit("Greeter", "greet")
        fail(await r.start_of(invocation_id))
        fail(await r.start_of(invocation_id))
        assert r.current(invocation_id).status == "paused"
        await r.stored_status(invocation_id, "paused")
        assert len(r.links.frames(invocation_id, Start)) == 2  # no third try on its own
        r.invoker.operations.resume_paused(invocation_id)
        third = await r.start_of(invocation_id)
        assert third.frame.attempt == 3
        end(third)
        record = await r.outcome(invocation_id)
        assert (record.status, record.attempts) == ("completed", 3)


# --- durable before visible ------------------------------------------------------------------------


async def test_a_step_is_acked_only_once_its_batch_has_committed(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        invocation_id = await r.submit("Greeter", "greet")
        running = await r.start_of(invocation_id)
        r.store.auto = False
        running.link.answer(Command(invocation_id, 1, Run("charge", value=b'"paid"')))
        assert r.store.queued  # submitted, not committed
        assert r.links.frames(invocation_id, Ack) == []
        assert r.store.read_journal(invocation_id) == [Input(b'"in"')]
        r.store.commit()
        r.store.auto = True
        ack = await r.links.expect(Ack, invocation_id)
        assert ack.frame.index == 1
        assert r.store.read_journal(invocation_id)[1] == Run("charge", value=b'"paid"')
        end(running)
        assert (await r.outcome(invocation_id)).status == "completed"


# --- recovery ----------------------------------------------------------------------------------------


async def test_a_restart_runs_unfinished_invocations_again_with_their_journals(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        finished = await r.submit("Greeter", "greet")
        end(await r.start_of(finished))
        assert (await r.outcome(finished)).status == "completed"
        holder = await r.submit("Counter", "add", "k")
        running = await r.start_of(holder)
        await run_step(r, running, 1, b'"charged"')
        running.link.answer(Command(holder, 2, SetState("n", b"1")))
        queued = await r.submit("Counter", "add", "k")
        elsewhere = await r.submit("Counter", "add", "j")
        await r.start_of(elsewhere)

        await r.restart()
        again = await r.start_of(holder)
        assert again.frame.journal == [Input(b'"in"'), Run("step", value=b'"charged"'), SetState("n", b"1")]
        assert again.frame.state == {"n": b"1"}
        other_key = await r.start_of(elsewhere)
        assert other_key.frame.journal == [Input(b'"in"')]
        assert sorted(r.links.started()) == sorted([holder, elsewhere])  # the queued one waits its turn
        end(again)
        end(await r.start_of(queued))
        end(other_key)
        for invocation_id in (holder, queued, elsewhere):
            assert (await r.outcome(invocation_id)).status == "completed"
        assert r.links.frames(finished) == []  # finished before the restart: not run again
        assert r.links.started()[-1] == queued


async def test_a_restart_gives_the_key_back_to_the_invocation_that_held_it(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        delayed = await r.submit("Counter", "add", "k", delay_s=0.2)
        holder = await r.submit("Counter", "add", "k")
        running = await r.start_of(holder)
        running.link.answer(Command(holder, 1, SetState("n", b"half")))

        async def queued() -> bool:
            return r.invoker.queries.reason(delayed).startswith("queued behind")
        await eventually(queued, timeout=DEADLINE, what="the delayed invocation to queue behind the holder")

        await r.restart()
        assert r.links.started() == [holder]
        end(await r.start_of(holder))
        end(await r.start_of(delayed))
        assert (await r.outcome(delayed)).status == "completed"


# --- hand-over of a key ------------------------------------------------------------------------------


async def test_the_next_on_a_key_starts_before_the_end_commits_and_sees_its_writes(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        first = await r.submit("Counter", "add", "k")
        second = await r.submit("Counter", "add", "k")
        running = await r.start_of(first)
        r.store.auto = False
        running.link.answer(Command(first, 1, SetState("n", b"1")))
        end(running)
        successor = await r.start_of(second)
        # Nothing of the first one's end is durable yet, its write included...
        assert r.stored(first).status == "pending"
        assert r.store.read_state("Counter", "k") == {}
        # ... yet its successor works from the state the first one left.
        assert successor.frame.state == {"n": b"1"}
        r.store.commit()
        r.store.auto = True
        assert (await r.outcome(first)).status == "completed"
        assert r.store.read_state("Counter", "k") == {"n": b"1"}
        end(successor)
        assert (await r.outcome(second)).status == "completed"


# --- kills and cancels at awkward moments ---------------------------------------------------------


async def test_a_kill_while_the_start_is_in_flight_ignores_the_attempt_from_then_on(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        invocation_id = await r.submit("Greeter", "greet")
        running = await r.start_of(invocation_id)
        attempt = running.link.sessions[invocation_id]
        r.invoker.operations.kill(invocation_id)
        cancel = await r.links.expect(Cancel, invocation_id)
        assert cancel.frame.kill
        # The handler had not heard yet: what it sends now is dropped, on the link or at the attempt.
        late = Command(invocation_id, 1, Run("step", value=b'"late"'))
        running.link.answer(late)
        assert running.link.strays == [late]
        attempt.on_message(late)
        attempt.on_message(End(invocation_id, output=b'"done anyway"'))
        record = await r.outcome(invocation_id)
        assert (record.status, record.output, record.failure) == ("killed", None, Failure(409, "invocation killed"))
        assert r.links.frames(invocation_id, Ack) == []
        assert r.store.read_journal(invocation_id) == [Input(b'"in"'), Output(failure=record.failure)]


async def test_a_kill_before_the_creation_commits_never_launches_it(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.store.auto = False
        submitted = asyncio.ensure_future(r.submit("Counter", "add", "k"))

        async def created() -> bool:
            return bool(r.store.queued)
        await eventually(created, timeout=DEADLINE, what="the creation to be submitted")
        (killed,) = r.invoker.table.active
        r.invoker.operations.kill(killed)
        r.store.commit()
        r.store.auto = True
        assert await asyncio.wait_for(submitted, DEADLINE) == killed
        record = await r.outcome(killed)
        assert (record.status, record.attempts) == ("killed", 0)
        assert r.links.frames(killed) == []  # it would have started when its creation committed
        after = await r.submit("Counter", "add", "k")
        end(await r.start_of(after))  # the key was not left held
        assert (await r.outcome(after)).status == "completed"
        assert r.links.started() == [after]


@pytest.mark.parametrize("backoff_durable", [
    True,
    False,  # cancelled after the failed attempt, before its backing-off record commits
])
async def test_a_cancel_cuts_a_backoff_short(tmp_path: Path, backoff_durable: bool) -> None:
    async with rig(tmp_path) as r:
        r.links.retry = SLOW
        invocation_id = await r.submit("Greeter", "greet")
        live = r.invoker.table.active[invocation_id]
        if not backoff_durable:
            r.store.auto = False
        fail(await r.start_of(invocation_id))
        if backoff_durable:
            async def armed() -> bool:
                return live.retry_handle is not None
            await eventually(armed, timeout=DEADLINE, what="the retry timer")
        assert r.current(invocation_id).status == "backing-off"
        r.invoker.operations.cancel(invocation_id)
        r.store.commit()
        r.store.auto = True
        retry = await r.start_of(invocation_id, timeout=1.0)  # not a minute later
        assert retry.frame.attempt == 2
        cancel = await r.links.expect(Cancel, invocation_id)
        assert not cancel.frame.kill
        fail(retry, Failure(409, "cancelled"))  # what the handler's next await raised
        record = await r.outcome(invocation_id)
        assert (record.status, record.failure) == ("cancelled", Failure(409, "cancelled"))


async def test_killing_a_queued_invocation_takes_it_out_of_its_keys_line(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        first, killed, last = [await r.submit("Counter", "add", "k") for _ in range(3)]
        running = await r.start_of(first)
        r.invoker.operations.kill(killed)
        assert (await r.outcome(killed)).status == "killed"
        end(running)
        end(await r.start_of(last))
        assert (await r.outcome(last)).status == "completed"
        assert r.links.started() == [first, last]
        assert r.links.frames(killed) == []


# --- deployments that are down -------------------------------------------------------------------


async def test_an_invocation_waits_for_a_deployment_that_is_down_without_spending_attempts(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.links.retry = QUICK
        r.pool.go_down()
        invocation_id = await r.submit("Greeter", "greet")

        async def probed() -> bool:
            return r.pool.knocks >= 3  # its own try, then the prober's
        await eventually(probed, timeout=DEADLINE, what="the deployment to be probed")
        record = r.current(invocation_id)
        assert (record.status, record.attempts, record.failures) == ("backing-off", 0, 0)
        assert record.last_error is not None and "unreachable" in record.last_error
        await r.stored_status(invocation_id, "backing-off")
        r.pool.come_up()
        start = await r.start_of(invocation_id)
        assert start.frame.attempt == 1
        end(start)
        record = await r.outcome(invocation_id)
        assert (record.status, record.attempts) == ("completed", 1)


async def test_an_attempt_whose_link_is_lost_resumes_from_its_journal_once_the_deployment_is_back(
        tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.links.retry = QUICK
        invocation_id = await r.submit("Greeter", "greet")
        first = await r.start_of(invocation_id)
        await run_step(r, first, 1, b'"v"')
        r.pool.go_down()

        async def waiting() -> bool:
            record = r.current(invocation_id)
            return record.status == "backing-off" and "unreachable" in (record.last_error or "")
        await eventually(waiting, timeout=DEADLINE, what="the retry to wait for the deployment")
        assert (r.current(invocation_id).attempts, r.current(invocation_id).failures) == (1, 1)
        r.pool.come_up()
        second = await r.start_of(invocation_id)
        assert (second.frame.attempt, second.frame.journal) == (2, [Input(b'"in"'), Run("step", value=b'"v"')])
        end(second)
        assert (await r.outcome(invocation_id)).status == "completed"


async def test_a_handler_that_pauses_for_its_budget_goes_on_once_resumed_with_a_higher_one(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        invocation_id = await r.submit("Greeter", "greet", budget=1.5)
        first = await r.start_of(invocation_id)
        assert first.frame.budget == 1.5
        await run_step(r, first, 1, b'"spent"')
        first.link.answer(Pause(invocation_id, "budget exceeded: spent 1.5 of 1.5"))
        await r.stored_status(invocation_id, "paused")
        assert r.current(invocation_id).pause_reason == "budget exceeded: spent 1.5 of 1.5"
        assert r.reason(invocation_id) == "budget exceeded: spent 1.5 of 1.5"

        r.invoker.operations.resume_paused(invocation_id, budget=4.0)
        second = await r.start_of(invocation_id)
        assert (second.frame.budget, second.frame.journal) == (4.0, [Input(b'"in"'), Run("step", value=b'"spent"')])
        end(second)
        record = await r.outcome(invocation_id)
        assert (record.status, record.budget) == ("completed", 4.0)


async def test_a_pause_reason_is_kept_short_however_long_the_handler_sends_it(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        invocation_id = await r.submit("Greeter", "greet")
        first = await r.start_of(invocation_id)
        first.link.answer(Pause(invocation_id, "x" * 1_000_000))
        await r.stored_status(invocation_id, "paused")
        reason = r.current(invocation_id).pause_reason
        assert reason is not None and len(reason) <= 1024 and reason.endswith("(cut)")


async def test_a_budget_survives_a_restart(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        invocation_id = await r.submit("Greeter", "greet", budget=2.0)
        first = await r.start_of(invocation_id)
        first.link.answer(Pause(invocation_id, "budget exceeded: spent 2 of 2"))
        await r.stored_status(invocation_id, "paused")
        await r.restart()
        assert r.current(invocation_id).budget == 2.0
        r.invoker.operations.resume_paused(invocation_id)  # no new budget: the stored one stands
        assert (await r.start_of(invocation_id)).frame.budget == 2.0
