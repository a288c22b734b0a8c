"""The examples work as their README lines say, against real vendors, and survive a crash."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import Cluster

ORDER = {"customer": "alice", "amount_cents": 4200, "email": "alice@example.com"}


@pytest.fixture
async def shop(tmp_path: Path, http: aiohttp.ClientSession) -> AsyncIterator[Cluster]:
    cluster = Cluster(tmp_path, http, handlers="examples.checkout:checkout", sidecar_flags=["--durability", "none"],
                      sink="examples.vendors", sink_env="VENDORS_URL", sink_ready="/stats")
    try:
        await cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def _vendor_stats(cluster: Cluster) -> dict:
    async with cluster.http.get(f"{cluster.sink_url}/stats") as response:
        return await response.json()


async def test_checkout_charges_once_and_mails_once(shop: Cluster) -> None:
    status, receipt, headers = await shop.post("/Checkout/order-1/place", ORDER)
    assert status == 200, receipt
    assert receipt["order_id"] == "order-1" and receipt["emailed_to"] == "alice@example.com"
    stats = await _vendor_stats(shop)
    assert (stats["charges"], stats["emails"]) == (1, 1)
    assert (await shop.post("/Checkout/order-1/status"))[1] == ORDER
    status, body, _ = await shop.post("/Checkout/order-1/place", ORDER)
    assert status == 409 and "already placed" in body["message"]
    assert ((await _vendor_stats(shop))["charges"], (await _vendor_stats(shop))["emails"]) == (1, 1)


async def test_checkout_after_a_handler_crash_still_charges_once(shop: Cluster) -> None:
    _, accepted, _ = await shop.post("/Checkout/order-2/place/send", ORDER)
    shop.handlers.kill()  # likely mid-flight; wherever it lands, the retry must not double-charge
    await shop.restart_handlers()
    status, receipt = await shop.get(f"/restate/invocation/{accepted['invocationId']}/attach")
    assert status == 200 and receipt["charge_id"]
    stats = await _vendor_stats(shop)
    assert (stats["charges"], stats["emails"]) == (1, 1)
