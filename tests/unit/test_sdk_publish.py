"""``ctx.publish``: milestones are journaled once; ephemeral events are placed, and not repeated by a replay."""

from __future__ import annotations

from handler_sdk import Context, Service
from handler_sdk.protocol import Command, End, Entry, Event, Publish, Run, ToSidecar
from tests.unit.fake_sidecar import Connect, FakeSidecar


def talker(ran: list[str]) -> Service:
    service = Service("Talker")

    @service.handler()
    async def talk(ctx: Context, topic: str) -> str:
        ctx.publish({"stage": "start"})
        ctx.publish("t0", ephemeral=True)
        ctx.publish("t1", ephemeral=True)

        async def generate() -> str:
            ran.append(topic)
            ctx.publish("s0", ephemeral=True)  # token deltas from inside a step
            return f"about {topic}"

        text = await ctx.run("generate", generate)
        ctx.publish({"stage": "done", "text": text})
        return text

    return service


async def _until_end(sidecar: FakeSidecar, inv: str) -> list[ToSidecar]:
    """Every message of ``inv`` up to its End, acking each Run as the sidecar would."""
    messages: list[ToSidecar] = []
    while True:
        message = await sidecar.next(inv)
        messages.append(message)
        if isinstance(message, End):
            return messages
        if isinstance(message, Command) and isinstance(message.entry, Run):
            await sidecar.ack(inv, message.index)


def _events(messages: list[ToSidecar]) -> list[tuple[int, int, bytes]]:
    return [(m.after, m.seq, m.event) for m in messages if isinstance(m, Event)]


def _entries(messages: list[ToSidecar]) -> list[Entry]:
    return [m.entry for m in messages if isinstance(m, Command)]


async def test_milestones_are_journaled_and_ephemeral_events_are_placed_between_them(connect: Connect) -> None:
    ran: list[str] = []
    sidecar = await connect(talker(ran))
    inv = await sidecar.start("Talker", "talk", b'"tea"', key=None)
    messages = await _until_end(sidecar, inv)

    assert _entries(messages) == [
        Publish(event=b'{"stage":"start"}'), Run(name="generate", value=b'"about tea"'),
        Publish(event=b'{"stage":"done","text":"about tea"}'),
    ]
    # After the milestone at entry 1 come t0 and t1; s0 comes from inside the step at entry 2.
    assert _events(messages) == [(1, 0, b'"t0"'), (1, 1, b'"t1"'), (2, 0, b'"s0"')]
    assert messages[-1] == End(invocation_id=inv, output=b'"about tea"') and ran == ["tea"]


async def test_a_replay_publishes_nothing_again_and_a_rerun_publishes_at_the_same_places(connect: Connect) -> None:
    ran: list[str] = []
    sidecar = await connect(talker(ran))
    first = await sidecar.start("Talker", "talk", b'"tea"', key=None)
    journal = _entries(await _until_end(sidecar, first))

    replayed = await sidecar.start("Talker", "talk", b'"tea"', key=None, journal=journal,
                                   invocation_id=first, attempt=2)
    messages = await _until_end(sidecar, replayed)
    assert _entries(messages) == [] and _events(messages) == [] and ran == ["tea"]

    # A crash lost everything after the first milestone: the code after it runs again, and its
    # ephemeral events come under the places they had, so a subscriber can tell them apart.
    rerun = await sidecar.start("Talker", "talk", b'"tea"', key=None, journal=journal[:1],
                                invocation_id=first, attempt=3)
    messages = await _until_end(sidecar, rerun)
    assert _events(messages) == [(1, 0, b'"t0"'), (1, 1, b'"t1"'), (2, 0, b'"s0"')]
    assert _entries(messages) == journal[1:] and ran == ["tea", "tea"]


async def test_a_sync_step_publishes_tokens_from_its_thread(connect: Connect) -> None:
    service = Service("Talker")

    @service.handler()
    async def talk(ctx: Context, topic: str) -> str:
        def generate() -> str:  # sync: the SDK runs it in a thread
            for word in ("one", "two"):
                ctx.publish(word, ephemeral=True)
            return topic

        return await ctx.run("generate", generate)

    sidecar = await connect(service)
    inv = await sidecar.start("Talker", "talk", b'"x"', key=None)
    messages = await _until_end(sidecar, inv)
    assert _events(messages) == [(1, 0, b'"one"'), (1, 1, b'"two"')]
    assert _entries(messages) == [Run(name="generate", value=b'"x"')]

