"""The retention sweep keeps pace with the load: one pass purges everything past retention, page
after page, however many invocations finished in a period (the invoker over a real store)."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest

from sidecar.clock import now_ms
from sidecar.cli.config import Settings
from sidecar.ids import IdGenerator
from sidecar.invoker import Invoker
from sidecar.metrics import Metrics
from sidecar.process.partitions import PartitionMap
from sidecar.store import Changes, InvocationRecord
from sidecar.transport.registry import Registry
from tests.procs import eventually
from tests.unit.fake_links import FakeLinks
from tests.unit.held_store import HeldStore

FINISHED = 2500  # more than one page of the sweep (1,000)


def _finished(ids: IdGenerator, n: int, completed_ms: int) -> InvocationRecord:
    return InvocationRecord(
        id=ids.invocation_id(n % 16), service="Counter", handler="add", key=f"k{n}", handler_kind="exclusive",
        status="completed", deployment_id="dp_1", created_ms=completed_ms, modified_ms=completed_ms,
        completed_ms=completed_ms, output=b"1", inbox_seq=n + 1)


async def test_one_pass_of_the_sweep_purges_every_page_past_retention(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = HeldStore(tmp_path / "data")
    ids = IdGenerator()
    long_ago = now_ms() - 60_000
    changes = Changes()
    for n in range(FINISHED):
        record = _finished(ids, n, long_ago)
        changes.create(record, b"1", None)
        changes.finish(record)
    store.write_now(changes)
    assert len(store.finished_before(now_ms(), limit=FINISHED + 1)) == FINISHED
    settings = Settings(retention_s=1.0)  # a pass a second
    registry = Registry(store, ids)
    async with aiohttp.ClientSession() as http:
        invoker = Invoker(store=store, registry=registry, settings=settings, http=http, ids=ids,
                          partitions=PartitionMap.single(), metrics=Metrics(), links=FakeLinks(registry, settings))
        with caplog.at_level(logging.INFO, logger="sidecar.invoker.housekeeping"):
            invoker.start()
            try:
                async def swept() -> list[str]:
                    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("swept")]
                passes = await eventually(swept, timeout=10, what="a pass of the retention sweep")
            finally:
                await invoker.close()
                await store.close()
    assert passes[0] == f"swept {FINISHED} invocations past retention"
