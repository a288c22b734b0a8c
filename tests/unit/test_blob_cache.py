"""Large payloads between sidecar and handler: a replay sends the blobs the handler lacks, and a
handler that lacks one asks for it."""

from __future__ import annotations

import msgspec

from handler_sdk import Context, Service
from handler_sdk._blob_cache import BlobCache
from handler_sdk.protocol import (
    BlobData, BlobRef, Blobs, Command, End, FetchBlobs, Input, Payloads, Run, Start,
)
from sidecar.invoker.blob_wire import OutgoingBlobs
from sidecar.store.blob_memo import BlobMemo
from sidecar.transport.held_blobs import HeldBlobs
from tests.unit.fake_sidecar import Connect

THRESHOLD = 100

big = Service("Big")


@big.handler()
async def make(ctx: Context, n: int) -> int:
    return len(await ctx.run("make", lambda: "x" * n))


def _start(inv: str, journal: list, blobs: list[BlobData] | None = None) -> Start:
    return Start(invocation_id=inv, attempt=1, service="Big", handler="make", key=None, input=b"300", headers={},
                 journal=[Input(b"300"), *journal], state=None, seed=1,
                 payloads=Payloads(blob_threshold=THRESHOLD, blobs=blobs or [], refs=True))


VALUE = msgspec.json.encode("x" * 300)
REF = BlobRef.of(VALUE)


async def _first_run(sidecar, inv: str) -> None:
    await sidecar.send_start(_start(inv, []))
    command = await sidecar.command(inv)
    assert command.entry == Run("make", value=VALUE)
    await sidecar.ack(inv, command.index)
    end = await sidecar.next(inv)
    assert isinstance(end, End) and end.output == b"300"


async def test_a_replay_takes_what_the_handler_sent_from_its_cache(connect: Connect) -> None:
    sidecar = await connect(big)
    await _first_run(sidecar, "inv_a")
    await sidecar.send_start(_start("inv_a", [Run("make", value=REF.encode())]))  # a reference, no bytes
    end = await sidecar.next("inv_a")
    assert isinstance(end, End) and end.output == b"300"


async def test_a_handler_without_the_blob_asks_for_it(connect: Connect) -> None:
    sidecar = await connect(big, blob_cache_bytes=0)
    await _first_run(sidecar, "inv_b")
    await sidecar.send_start(_start("inv_b", [Run("make", value=REF.encode())]))
    asked = await sidecar.next("inv_b")
    assert asked == FetchBlobs(invocation_id="inv_b", sha256=[REF.sha256])
    await sidecar.send(Blobs("inv_b", [BlobData(REF.sha256, VALUE)]))
    end = await sidecar.next("inv_b")
    assert isinstance(end, End) and end.output == b"300"

    await sidecar.send_start(_start("inv_c", [Run("make", value=REF.encode())]))
    assert isinstance(await sidecar.next("inv_c"), FetchBlobs)
    await sidecar.send(Blobs("inv_c", [], missing=[REF.sha256]))  # the sidecar has not got it either
    end = await sidecar.next("inv_c")
    assert isinstance(end, End) and end.failure is not None and not end.failure.terminal


async def test_the_sidecar_sends_a_link_each_blob_once_and_answers_for_the_rest() -> None:
    held = HeldBlobs()
    memo = BlobMemo()
    first = OutgoingBlobs(THRESHOLD, held, memo.ref)
    sent = [first.entry(Run("a", value=VALUE)), first.entry(Run("b", value=VALUE)), first.entry(Run("c", value=b"1"))]
    assert [e.value for e in sent] == [REF.encode(), REF.encode(), b"1"]  # type: ignore[union-attr]
    assert first.sent == [BlobData(REF.sha256, VALUE)]
    again = OutgoingBlobs(THRESHOLD, held, memo.ref)
    assert again.entry(Run("a", value=VALUE)) == Run("a", value=REF.encode()) and again.sent == []
    assert again.answer("inv", [REF.sha256, b"\x00" * 32]) == [
        Blobs("inv", [BlobData(REF.sha256, VALUE)], missing=[b"\x00" * 32])]
    alone = OutgoingBlobs(THRESHOLD, None, memo.ref)  # request-response: every blob goes with its Start
    alone.entry(Run("a", value=VALUE))
    assert alone.sent == [BlobData(REF.sha256, VALUE)]
    older = OutgoingBlobs(0, held, memo.ref)  # an SDK whose discovery did not say blob_refs: no references
    assert older.entry(Run("a", value=VALUE)) == Run("a", value=VALUE) and older.sent == []


def test_the_cache_keeps_the_most_recently_used_within_its_bytes() -> None:
    cache = BlobCache(max_bytes=250)
    for n in range(3):
        cache.add(bytes([n]) * 32, b"x" * 100)
    assert len(cache) == 2
    start = _start("inv", [Run("make", value=BlobRef(b"\x00" * 32, 100).encode())])
    assert cache.resolve(start) == [b"\x00" * 32]  # evicted first
    cache.remember(Command("inv", 1, Run("make", value=b"y" * 200)).entry, THRESHOLD)
    resolved = cache.resolve(_start("inv", [Run("make", value=BlobRef.of(b"y" * 200).encode())]))
    assert isinstance(resolved, Start) and resolved.journal[1] == Run("make", value=b"y" * 200)


def test_the_sidecar_memo_knows_the_bytes_it_holds_and_forgets_the_oldest() -> None:
    memo = BlobMemo(max_bytes=250)
    held = b"a" * 100
    ref = memo.ref(held)
    assert memo.get(ref.sha256) is held and memo.ref(held) == ref
    equal_copy = bytes(bytearray(held))  # equal bytes, another object: hashed, same reference
    assert memo.ref(equal_copy) == ref
    for n in range(3):
        memo.put(bytes([n]) * 32, b"x" * 100)
    assert memo.get(ref.sha256) is None and memo.get(b"\x02" * 32) is not None
