"""The invoker and large payloads, on fake links: a replay refers to what the link already
carried, and a step value over ``max_payload_bytes`` fails its step as terminal."""

from __future__ import annotations

from pathlib import Path

from handler_sdk.protocol import BlobRef, Blobs, Command, FetchBlobs, Run, Sleep, Start, Suspend
from sidecar.cli.config import Settings
from tests.unit.test_invoker import end, rig

VALUE = b'"' + b"v" * 70_000 + b'"'  # over the default blob_threshold_bytes (65,536)


async def test_a_resumed_attempt_refers_to_the_blobs_its_link_carried_and_answers_for_them(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        invocation_id = await r.submit("Greeter", "greet")
        first = await r.start_of(invocation_id)
        assert first.frame.payloads.blob_threshold == 65_536 and first.frame.payloads.blobs == []
        first.link.answer(Command(invocation_id, 1, Run("big", value=VALUE)))
        first.link.answer(Command(invocation_id, 2, Sleep(wake_at_ms=0)))
        first.link.answer(Suspend(invocation_id, waiting_on=[2]))
        resumed = await r.start_of(invocation_id)  # the timer fired: the same link, the handler holds VALUE
        ref = BlobRef.of(VALUE)
        assert resumed.link is first.link and resumed.frame.journal[1] == Run("big", value=ref.encode())
        assert resumed.frame.payloads.blobs == []
        resumed.link.answer(FetchBlobs(invocation_id, [ref.sha256]))  # it had lost them after all
        answer = await r.links.expect(Blobs, invocation_id)
        assert [(b.sha256, b.data) for b in answer.frame.blobs] == [(ref.sha256, VALUE)] and answer.frame.final
        end(resumed)
        assert (await r.outcome(invocation_id)).status == "completed"


async def test_a_step_value_over_max_payload_bytes_is_journaled_as_a_413(tmp_path: Path) -> None:
    async with rig(tmp_path, Settings(max_payload_bytes=1000)) as r:
        invocation_id = await r.submit("Greeter", "greet")
        first = await r.start_of(invocation_id)
        assert first.frame.payloads.max_payload_bytes == 1000
        first.link.answer(Command(invocation_id, 1, Run("big", value=b"x" * 1001)))  # an SDK that did not check
        again: Start = (await r.start_of(invocation_id)).frame
        refused = again.journal[1]
        assert type(refused) is Run and refused.value is None and refused.failure is not None
        assert refused.failure.code == 413 and "max_payload_bytes (1000)" in refused.failure.message
