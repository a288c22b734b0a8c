"""The web UI (``GET /ui`` on the admin port) in a real browser: Playwright driving Debian's
Chromium (``/usr/bin/chromium``, which ``make test`` installs when it is missing; ``CHROMIUM``
points elsewhere) against a real sidecar and handler service.

The hooks the tests find things by are the ones DESIGN §11 promises users: an invocation in a list
is a link whose text holds its ID, an invocation's page shows each journal entry's index, kind and
name as text and its status, and the actions are buttons named Cancel, Kill, Pause, Resume,
Restart, Purge. ``UI_SCREENSHOTS=DIR`` saves a screenshot of each page a test looked at.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest
from playwright.async_api import Browser, Dialog, Page, Request, async_playwright, expect

from tests.e2e.conftest import Cluster, running_cluster
from tests.procs import eventually

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
_HOSTILE = "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs it (apt-get install -y chromium), "
                    "or set CHROMIUM to a Chromium or Chrome binary")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    opened = await context.new_page()
    opened.set_default_timeout(20_000)
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield opened
    finally:
        await context.close()
    assert not errors, f"the page threw: {errors}"


def _ui(cluster: Cluster, route: str) -> str:
    return f"http://{cluster.admin}/ui#{route}"


async def _shot(page: Page, name: str) -> None:
    folder = os.environ.get("UI_SCREENSHOTS")
    if folder:
        await page.screenshot(path=str(Path(folder) / f"ui-{name}.png"), full_page=True)


async def _shown(cluster: Cluster, invocation_id: str) -> dict:
    return (await cluster.get(f"/invocations/{invocation_id}", admin=True))[1]


def _accept_confirmations(page: Page, asked: list[str]) -> None:
    async def accept(dialog: Dialog) -> None:
        asked.append(dialog.message)
        await dialog.accept()

    page.on("dialog", accept)


async def test_the_list_links_each_invocation_by_id_filters_by_status_and_pages(cluster: Cluster, page: Page) -> None:
    completed = [(await cluster.post("/Counter/ui-list/add", n))[2]["x-restate-id"] for n in (1, 2)]
    status, _, headers = await cluster.post("/Steps/refuse", "no thanks")
    assert status == 422
    failed = headers["x-restate-id"]

    await page.goto(_ui(cluster, "/invocations"))
    for invocation_id in [*completed, failed]:
        link = page.get_by_role("link", name=invocation_id)
        await expect(link).to_be_visible()
        assert await link.get_attribute("href") == f"#/invocations/{invocation_id}"
    row = page.locator(f'tr[data-id="{failed}"]')
    await expect(row.locator(".status")).to_have_text("failed")
    await expect(row.locator(".reason")).to_contain_text("no thanks")  # its status reason
    await _shot(page, "list")

    await page.select_option("#filter-status", "failed")
    await page.get_by_role("button", name="Filter").click()
    await expect(page).to_have_url(re.compile(r"#/invocations\?status=failed$"))
    await expect(page.get_by_role("link", name=failed)).to_be_visible()
    for invocation_id in completed:
        await expect(page.get_by_role("link", name=invocation_id)).to_have_count(0)

    await page.fill("#filter-service", "Counter")
    await page.select_option("#filter-status", "")
    await page.fill("#filter-key", "ui-list")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("#invocations tbody tr")).to_have_count(2)

    # More than a page (50): the first shows the newest 50, "Older" the rest.
    for n in range(52):
        status, _, _ = await cluster.post("/Counter/ui-pages/add/send", n)
        assert status == 202
    await page.goto(_ui(cluster, "/invocations?service=Counter&key=ui-pages"))
    await expect(page.locator("#invocations tbody tr")).to_have_count(50)
    await page.get_by_role("link", name="Older »").click()
    await expect(page.locator("#invocations tbody tr")).to_have_count(2)
    await expect(page.get_by_role("link", name="« Newest")).to_be_visible()


async def test_an_invocation_shows_its_journal_entries_and_status(cluster: Cluster, page: Page) -> None:
    _, _, headers = await cluster.post("/Counter/ui-journal/add", 7)
    invocation_id = headers["x-restate-id"]
    journal = (await _shown(cluster, invocation_id))["journal"]
    assert [e["kind"] for e in journal][-1] == "Output"

    await page.goto(_ui(cluster, "/invocations"))
    await page.get_by_role("link", name=invocation_id).click()
    await expect(page).to_have_url(re.compile(f"#/invocations/{invocation_id}$"))
    await expect(page.locator("#inv-status")).to_have_text("completed")
    entries = page.locator("#journal > li")
    await expect(entries).to_have_count(len(journal))
    for entry in journal:
        item = page.locator(f'#journal > li[data-index="{entry["index"]}"]')
        await expect(item.locator(".entry-index")).to_have_text(str(entry["index"]))
        await expect(item.locator(".entry-kind")).to_have_text(entry["kind"])
        if "name" in entry:
            await expect(item.locator(".entry-name")).to_have_text(entry["name"])
    step = page.locator("#journal > li", has_text="double-check")
    await expect(step).to_contain_text("attempts 1")
    for name in ("Cancel", "Kill", "Pause", "Resume", "Restart", "Purge"):
        await expect(page.get_by_role("button", name=name, exact=True)).to_have_count(1)
    await expect(page.locator("#tail-state")).to_have_text("ended")  # the stream replays to its end
    await expect(page.locator("#events")).to_contain_text("completed")
    await _shot(page, "invocation")


async def test_cancel_asks_first_and_the_invocation_ends_cancelled(cluster: Cluster, page: Page) -> None:
    # Streams.chat publishes, then waits on an awakeable that nobody resolves: it is held.
    _, body, _ = await cluster.post("/Streams/chat/send", "hold the line")
    invocation_id = body["invocationId"]

    async def waiting() -> bool:
        return (await _shown(cluster, invocation_id))["status"] == "suspended"

    await eventually(waiting, what="the chat to wait on its awakeable")
    asked: list[str] = []

    async def decline(dialog: Dialog) -> None:
        asked.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", decline)
    await page.goto(_ui(cluster, f"/invocations/{invocation_id}"))
    await expect(page.locator("#inv-status")).to_have_text("suspended")
    await expect(page.locator("#tail-state")).to_have_text("live")
    await expect(page.locator("#events")).to_contain_text('"stage":"review"')  # the live tail's milestones
    await page.get_by_role("button", name="Cancel", exact=True).click()

    async def asked_once() -> bool:
        return len(asked) == 1

    await eventually(asked_once, what="the confirmation")
    assert invocation_id in asked[0]
    assert (await _shown(cluster, invocation_id))["status"] == "suspended"  # declined: nothing happened

    page.remove_listener("dialog", decline)
    _accept_confirmations(page, asked)
    await page.get_by_role("button", name="Cancel", exact=True).click()
    await expect(page.locator("#inv-status")).to_have_text("cancelled")
    assert len(asked) == 2
    assert (await _shown(cluster, invocation_id))["status"] == "cancelled"
    await expect(page.locator("#tail-state")).to_have_text("ended")
    await expect(page.get_by_role("button", name="Cancel", exact=True)).to_be_disabled()
    await _shot(page, "cancelled")

    # Purge, asked first too, goes back to the list, where it is no more.
    await page.get_by_role("button", name="Purge", exact=True).click()
    await expect(page).to_have_url(re.compile(r"#/invocations$"))
    await expect(page.get_by_text(f"Purged {invocation_id}.")).to_be_visible()
    await expect(page.get_by_role("link", name=invocation_id)).to_have_count(0)
    assert len(asked) == 3
    assert (await cluster.get(f"/invocations/{invocation_id}", admin=True))[0] == 404


async def test_a_keys_state_is_edited_and_the_admin_api_sees_the_new_value(cluster: Cluster, page: Page) -> None:
    assert (await cluster.post("/Counter/ui-state/add", 5))[0] == 200
    asked: list[str] = []
    _accept_confirmations(page, asked)

    await page.goto(_ui(cluster, "/state/Counter/ui-state"))
    row = page.locator('#state tr[data-name="count"]')
    await expect(row.locator(".value")).to_have_text("5")
    await row.get_by_role("button", name="Edit").click()
    await row.locator("textarea").fill('{"edited": [1, 2]}')
    await row.get_by_role("button", name="Save").click()
    await expect(page.get_by_text("Set count.")).to_be_visible()

    async def edited() -> bool:
        return (await cluster.get("/state/Counter/ui-state", admin=True))[1]["state"]["count"] == {"edited": [1, 2]}

    await eventually(edited, what="the edit to reach the state")

    await page.fill("#new-name", "note")
    await page.fill("#new-value", "not json")
    await page.get_by_role("button", name="Set", exact=True).click()
    await expect(page.get_by_text("note: not JSON", exact=False)).to_be_visible()
    await page.fill("#new-value", '"hello"')
    await page.get_by_role("button", name="Set", exact=True).click()
    await expect(page.locator('#state tr[data-name="note"] .value')).to_have_text('"hello"')
    await _shot(page, "state")

    await page.locator('#state tr[data-name="note"]').get_by_role("button", name="Delete").click()
    await expect(page.locator('#state tr[data-name="note"]')).to_have_count(0)
    assert asked and "note" in asked[0]
    state = (await cluster.get("/state/Counter/ui-state", admin=True))[1]["state"]
    assert state == {"count": {"edited": [1, 2]}}


async def test_hostile_payloads_are_shown_as_text(cluster: Cluster, page: Page) -> None:
    status, _ = await cluster.admin_call("PUT", "/state/Counter/ui-hostile/evil", _HOSTILE)
    assert status == 200
    status, _, headers = await cluster.post("/Steps/refuse", _HOSTILE)  # its input, failure and reason
    assert status == 422
    invocation_id = headers["x-restate-id"]

    await page.goto(_ui(cluster, "/invocations"))
    await expect(page.locator(f'tr[data-id="{invocation_id}"] .reason')).to_contain_text(_HOSTILE)
    await page.goto(_ui(cluster, f"/invocations/{invocation_id}"))
    await expect(page.locator("#inv-status")).to_have_text("failed")
    await expect(page.locator(".io")).to_contain_text(_HOSTILE)
    await expect(page.locator("#journal")).to_contain_text(_HOSTILE)
    await page.goto(_ui(cluster, "/state/Counter/ui-hostile"))
    await expect(page.locator('#state tr[data-name="evil"] .value')).to_have_text(json.dumps(_HOSTILE))  # JSON
    await _shot(page, "hostile")
    assert await page.evaluate("window.__pwned") is None
    assert await page.locator("main img, main script").count() == 0


_TOKEN = "ui-token-of-the-admin-api-0123456789"


@pytest.fixture
async def guarded(tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """A sidecar whose admin API wants ``_TOKEN`` (given through SIDECAR_ADMIN_TOKEN)."""
    async with running_cluster(tmp_path, http, request, ["--durability", "none", "--workers", "2"],
                               admin_token=_TOKEN) as running:
        yield running


async def test_the_token_is_asked_once_and_sent_on_every_request(guarded: Cluster, page: Page) -> None:
    seen: list[tuple[str, str | None]] = []

    def note(request: Request) -> None:
        path = request.url.split(guarded.admin, 1)[-1]
        if not (path == "/ui" or path.startswith("/ui/") or path.startswith("/ui#")):
            seen.append((path, request.headers.get("authorization")))

    page.on("request", note)
    _, _, headers = await guarded.post("/Counter/ui-token/add", 1)
    invocation_id = headers["x-restate-id"]
    await page.goto(_ui(guarded, "/invocations"))  # the page's own files come without a token
    dialog = page.locator("#token-dialog")
    await expect(dialog).to_be_visible()
    await page.fill("#token-input", "wrong-token-of-16-chars")
    await page.get_by_role("button", name="Use token").click()
    await expect(page.locator("#token-why")).to_contain_text("refused")  # asked again, saying why
    await page.fill("#token-input", _TOKEN)
    await page.get_by_role("button", name="Use token").click()
    await expect(dialog).to_be_hidden()
    await page.get_by_role("link", name=invocation_id).click()
    await expect(page.locator("#inv-status")).to_have_text("completed")
    await expect(page.locator("#tail-state")).to_have_text("ended")
    assert await page.evaluate("sessionStorage.length") == 1
    await page.reload()  # the same tab: the token is kept, nothing is asked
    await expect(page.locator("#inv-status")).to_have_text("completed")
    await expect(dialog).to_be_hidden()
    paths = {path.split("?")[0] for path, _ in seen}
    assert {"/invocations", f"/invocations/{invocation_id}", f"/invocations/{invocation_id}/events"} <= paths
    first_right = next(i for i, (_, auth) in enumerate(seen) if auth == f"Bearer {_TOKEN}")
    assert {auth for _, auth in seen[:first_right]} == {None, "Bearer wrong-token-of-16-chars"}, seen
    assert all(auth == f"Bearer {_TOKEN}" for _, auth in seen[first_right:]), seen


async def test_services_deployments_breakers_and_costs_are_shown(cluster: Cluster, page: Page) -> None:
    await page.goto(_ui(cluster, "/services"))
    await expect(page.locator('#services tr[data-service="Counter"]')).to_contain_text("object")
    deployments = (await cluster.get("/deployments", admin=True))[1]["deployments"]
    for deployment in deployments:
        row = page.locator(f'#deployments tr[data-deployment="{deployment["id"]}"]')
        await expect(row.locator(".status")).to_have_text(deployment["status"])
    await _shot(page, "services")
    await page.get_by_role("link", name="Breakers & costs").click()
    await expect(page.locator("#cost-total")).to_have_text("$0.00")
    await expect(page.get_by_text("No breakers yet")).to_be_visible()
    await _shot(page, "breakers")


async def test_schedules_show_their_next_fire_link_their_last_invocation_and_delete_when_confirmed(
        cluster: Cluster, page: Page) -> None:
    for name, body in [("ui-tick", {"every": "1s", "target": "Counter/ui-sched/add", "input": 1}),
                       ("new-year", {"cron": "0 0 1 1 *", "timezone": "Europe/Berlin", "target": "Counter/k/get"})]:
        assert (await cluster.admin_call("PUT", f"/schedules/{name}", body))[0] == 201

    async def fired() -> bool:
        return (await cluster.admin_call("GET", "/schedules/ui-tick"))[1]["last_invocation_id"] is not None

    await eventually(fired, what="the first firing")
    new_year = (await cluster.admin_call("GET", "/schedules/new-year"))[1]
    await page.goto(_ui(cluster, "/schedules"))
    yearly = page.locator('#schedules tr[data-schedule="new-year"]')
    await expect(yearly).to_contain_text("0 0 1 1 * (Europe/Berlin)")
    next_fire = new_year["next_fire_at"].replace("T", " ").replace(".000Z", "Z")
    await expect(yearly).to_contain_text(next_fire)
    ticking = page.locator('#schedules tr[data-schedule="ui-tick"]')
    await expect(ticking).to_contain_text("every 1s")
    await expect(ticking).to_contain_text("Counter/ui-sched/add")
    await _shot(page, "schedules")

    link = ticking.get_by_role("link", name=re.compile(r"^inv_"))
    invocation_id = await link.text_content()
    await link.click()
    await expect(page).to_have_url(re.compile(f"#/invocations/{invocation_id}$"))
    await expect(page.locator("#inv-status")).to_be_visible()

    asked: list[str] = []

    async def decline(dialog: Dialog) -> None:
        asked.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", decline)
    await page.goto(_ui(cluster, "/schedules"))
    await yearly.get_by_role("button", name="Delete").click()

    async def asked_once() -> bool:
        return len(asked) == 1

    await eventually(asked_once, what="the confirmation")
    assert "new-year" in asked[0]
    assert (await cluster.admin_call("GET", "/schedules/new-year"))[0] == 200  # declined: still there
    page.remove_listener("dialog", decline)
    _accept_confirmations(page, asked)
    await yearly.get_by_role("button", name="Delete").click()
    await expect(page.get_by_text("Schedule new-year is deleted.")).to_be_visible()
    await expect(yearly).to_have_count(0)
    assert (await cluster.admin_call("GET", "/schedules/new-year"))[0] == 404
    await ticking.get_by_role("button", name="Delete").click()
    await expect(ticking).to_have_count(0)
    await expect(page.get_by_text("No schedules")).to_be_visible()


async def test_the_ui_files_are_served_without_data_and_with_a_strict_policy(cluster: Cluster) -> None:
    for path, kind in [("/ui", "text/html"), ("/ui/", "text/html"), ("/ui/app.js", "text/javascript"),
                       ("/ui/app.css", "text/css")]:
        async with cluster.http.get(f"http://{cluster.admin}{path}") as response:
            assert response.status == 200, path
            assert response.content_type == kind, path
            assert "script-src 'self'" in response.headers["Content-Security-Policy"]
            etag = response.headers["ETag"]
        async with cluster.http.get(f"http://{cluster.admin}{path}", headers={"If-None-Match": etag}) as response:
            assert response.status == 304
    status, body = await cluster.get("/ui/nothing.js", admin=True)
    assert status == 404 and body["code"] == 404


async def test_pause_resume_kill_and_restart_each_ask_first(cluster: Cluster, page: Page) -> None:
    asked: list[str] = []
    _accept_confirmations(page, asked)

    # A long step, heartbeating: running, so it can be paused, and then killed.
    _, body, _ = await cluster.post("/Steps/long_step/send", 60)
    busy = body["invocationId"]

    async def running() -> bool:
        return (await _shown(cluster, busy))["status"] == "running"

    await eventually(running, what="the long step to run")
    await page.goto(_ui(cluster, f"/invocations/{busy}"))
    await expect(page.locator("#inv-status")).to_have_text("running")
    await expect(page.get_by_role("button", name="Resume", exact=True)).to_be_disabled()
    await page.get_by_role("button", name="Pause", exact=True).click()
    await expect(page.locator("#inv-status")).to_have_text("paused")
    await page.get_by_role("button", name="Kill", exact=True).click()
    await expect(page.locator("#inv-status")).to_have_text("killed")
    assert [message.split(" invocation ")[0] for message in asked] == ["Pause", "Kill"]

    # Retries run out: paused with its reason; resumed, it gets three more attempts.
    _, body, _ = await cluster.post("/Steps/crashy/send", "ui-crashy")
    crashy = body["invocationId"]

    async def paused_after(attempts: int) -> bool:
        shown = await _shown(cluster, crashy)
        return shown["status"] == "paused" and shown["attempts"] == attempts

    await eventually(lambda: paused_after(3), what="the retries to run out")
    await page.goto(_ui(cluster, f"/invocations/{crashy}"))
    await expect(page.locator("#inv-status")).to_have_text("paused")
    await expect(page.locator("#inv-reason")).to_contain_text("bug in handler code")
    await page.get_by_role("button", name="Resume", exact=True).click()
    await expect(page.get_by_text("Resumed: it is tried again.")).to_be_visible()
    await eventually(lambda: paused_after(6), what="three more attempts")
    await page.get_by_role("button", name="Kill", exact=True).click()
    await expect(page.locator("#inv-status")).to_have_text("killed")

    # Restart from entry 1 (its input): a new invocation, linked from the message.
    await page.get_by_role("button", name="Restart", exact=True).click()
    message = page.locator(".note-ok", has_text="Restarted as")
    await expect(message).to_be_visible()
    restarted = await message.get_by_role("link").inner_text()
    assert restarted.startswith("inv_") and restarted != crashy
    await message.get_by_role("link").click()
    await expect(page.locator("#inv-id")).to_have_text(restarted)
    assert [message.split(" invocation ")[0] for message in asked] == ["Pause", "Kill", "Resume", "Kill", "Restart"]
    await cluster.admin_call("POST", f"/invocations/{restarted}/kill")


async def test_a_large_payload_shows_its_preview_and_downloads(cluster: Cluster, page: Page) -> None:
    text = "large " * 20_000  # 120,000 bytes: over the 64 KiB blob threshold
    status, length, headers = await cluster.post("/Steps/length", text)
    assert (status, length) == (200, len(text))
    invocation_id = headers["x-restate-id"]
    await page.goto(_ui(cluster, f"/invocations/{invocation_id}"))
    entry = page.locator('#journal > li[data-index="0"]')
    await expect(entry.locator(".entry-preview")).to_contain_text("large large")
    await entry.locator("summary").click()
    link = entry.get_by_role("link", name=re.compile(r"^blob [0-9a-f]{12}… \(117\.2 KiB\)$"))
    await expect(link).to_be_visible()
    async with page.expect_download() as download_info:
        await link.click()
    download = await download_info.value
    saved = Path(await download.path())
    assert saved.read_bytes() == msgspec.json.encode(text)  # the input's bytes, as they were sent
