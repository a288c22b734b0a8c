"""The `sidecar` CLI: clean messages and exit statuses, never a traceback.

The client commands run `asyncio.run` themselves, so the tests that need an answering server run the
CLI in a worker thread while a fake admin/ingress app answers on the test's event loop.
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import sys
import time
import types
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from click.testing import CliRunner, Result

from sidecar.cli.main import main
from sidecar.cli.config import Settings


def _cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def _assert_clean_failure(result: Result, exit_code: int, message: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit)  # handled by click, not an escaped exception
    assert message in result.stderr
    assert "Traceback" not in result.output


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("target", ["Counter", "a/b/c/d", "Counter//add", "/"])
def test_bad_target(target: str) -> None:
    result = _cli("invoke", target)
    _assert_clean_failure(result, 2, "expected Service/handler or Object/key/handler")


@pytest.mark.parametrize("argument", ["{oops", "alice", ""])
def test_invalid_json_argument(argument: str) -> None:
    _assert_clean_failure(_cli("invoke", "Counter/alice/add", argument), 2, "not valid JSON")


def test_invalid_json_for_state_set() -> None:
    _assert_clean_failure(_cli("state", "set", "Counter", "alice", "count", "{"), 2, "not valid JSON")


def test_delay_needs_send() -> None:
    _assert_clean_failure(_cli("invoke", "Greeter/greet", "--delay", "10s"), 2, "--delay needs --send")


@pytest.mark.parametrize("args", [
    ["services"], ["register", "http://127.0.0.1:9080"], ["invocations", "list"],
    ["invocations", "show", "inv_x"], ["invocations", "kill", "inv_x"], ["state", "get", "Counter", "alice"],
])
def test_unreachable_admin(closed_port: int, args: list[str]) -> None:
    result = _cli("--admin", f"127.0.0.1:{closed_port}", *args)
    expected = f"cannot reach the sidecar admin API at 127.0.0.1:{closed_port}: is `sidecar serve` running?"
    _assert_clean_failure(result, 1, expected)


def test_unreachable_ingress_from_env(closed_port: int) -> None:
    result = _cli("invoke", "Counter/alice/add", "5", env={"SIDECAR_INGRESS": f"127.0.0.1:{closed_port}"})
    _assert_clean_failure(result, 1, f"cannot reach the sidecar ingress at 127.0.0.1:{closed_port}")


def test_malformed_client_address() -> None:
    result = _cli("--admin", "nowhere", "services")
    _assert_clean_failure(result, 2, "--admin (or SIDECAR_ADMIN) must be HOST:PORT, not 'nowhere'")


def test_serve_invalid_ingress() -> None:
    result = _cli("serve", "--ingress", "localhost")
    _assert_clean_failure(result, 2, "ingress must be HOST:PORT, not 'localhost'")


def test_serve_invalid_group_address() -> None:
    _assert_clean_failure(_cli("--admin", "0.0.0.0:70000", "serve"), 2, "admin must be HOST:PORT")


def test_serve_invalid_env() -> None:
    result = _cli("serve", env={"SIDECAR_DURABILITY": "maybe"})
    _assert_clean_failure(result, 2, "durability must be 'fsync' or 'none'")


def test_serve_unreadable_config(tmp_path: Path) -> None:
    result = _cli("serve", "--config", str(tmp_path / "missing.toml"))
    _assert_clean_failure(result, 2, "cannot read config file")


def test_serve_bad_flag_type() -> None:
    _assert_clean_failure(_cli("serve", "--retention", "forever"), 2, "'forever' is not a valid float range")


@pytest.fixture
def clock_flags(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each ``test_clock`` that the fake ``run`` (``fake_server_run``) was given."""
    return []


@pytest.fixture
def fake_server_run(monkeypatch: pytest.MonkeyPatch, clock_flags: list[bool]) -> list[Settings]:
    """Stand in for `sidecar.process.server.run`: record the settings instead of serving."""
    calls: list[Settings] = []

    def run(settings: Settings, *, test_clock: bool = False) -> None:
        calls.append(settings)
        clock_flags.append(test_clock)

    module = types.ModuleType("sidecar.process.server")
    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sidecar.process.server", module)
    for name in ("SIDECAR_INGRESS", "SIDECAR_ADMIN", "SIDECAR_DATA_DIR", "SIDECAR_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_serve_builds_settings(fake_server_run: list[Settings], tmp_path: Path) -> None:
    config = tmp_path / "sidecar.toml"
    config.write_text('data_dir = "/from/toml"\nretention_s = 60\n')
    result = _cli(
        "--admin", "127.0.0.1:7000", "serve", "--config", str(config), "--ingress", "0.0.0.0:7001",
        "--register", "http://a:1", "--register", "http://b:2", "--durability", "none",
        "--inactivity-timeout", "2.5", env={"SIDECAR_DATA_DIR": "/from/env"},
    )
    assert result.exit_code == 0, result.output
    [settings] = fake_server_run
    assert settings.ingress == "0.0.0.0:7001"
    assert settings.admin == "127.0.0.1:7000"  # `sidecar --admin X serve` counts as a flag
    assert settings.data_dir == "/from/env"  # the environment beats the file
    assert settings.retention_s == 60.0  # the file beats the default
    assert settings.register == ["http://a:1", "http://b:2"]
    assert (settings.durability, settings.inactivity_timeout_s) == ("none", 2.5)


def test_serve_test_clock_is_a_hidden_flag_of_one_worker(
        fake_server_run: list[Settings], clock_flags: list[bool]) -> None:
    assert _cli("serve").exit_code == 0 and _cli("serve", "--test-clock", "--workers", "1").exit_code == 0
    assert clock_flags == [False, True]
    assert "test-clock" not in _cli("serve", "--help").output
    _assert_clean_failure(_cli("serve", "--test-clock", "--workers", "2"), 2,
                          "--test-clock runs one worker (an advance moves one process's clock), not --workers 2")
    assert len(fake_server_run) == 2


def test_serve_port_taken(monkeypatch: pytest.MonkeyPatch, fake_server_run: list[Settings]) -> None:
    def taken(settings: Settings, *, test_clock: bool = False) -> None:
        raise OSError(errno.EADDRINUSE, "address already in use")

    monkeypatch.setattr(sys.modules["sidecar.process.server"], "run", taken)
    _assert_clean_failure(_cli("serve"), 1, "cannot start the sidecar: address already in use")


# --- against a fake sidecar --------------------------------------------------------------------


async def _serve_fake(routes: list[web.RouteDef]) -> TestServer:
    app = web.Application()
    app.add_routes(routes)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def _cli_against(server: TestServer, *args: str) -> Result:
    address = f"127.0.0.1:{server.port}"
    return await asyncio.to_thread(_cli, "--admin", address, "--ingress", address, *args)


async def test_invoke_prints_output_and_id() -> None:
    seen: dict[str, Any] = {}

    async def add(request: web.Request) -> web.Response:
        seen.update(path=request.path, body=await request.read(), key=request.headers.get("idempotency-key"))
        return web.Response(body=b"7", content_type="application/json", headers={"x-restate-id": "inv_1"})

    server = await _serve_fake([web.post("/Counter/{key}/add", add)])
    try:
        result = await _cli_against(server, "invoke", "Counter/al ice/add", "5", "--idempotency-key", "k1")
    finally:
        await server.close()
    assert result.exit_code == 0, result.output
    assert result.stdout == "7\n"
    assert "x-restate-id: inv_1" in result.stderr
    assert seen == {"path": "/Counter/al ice/add", "body": b"5", "key": "k1"}


async def test_invoke_send_with_delay() -> None:
    seen: dict[str, Any] = {}

    async def send(request: web.Request) -> web.Response:
        seen.update(path=request.path, query=dict(request.query), body=await request.read())
        return web.json_response({"invocationId": "inv_2", "status": "Accepted"}, status=202,
                                 headers={"x-restate-id": "inv_2"})

    server = await _serve_fake([web.post("/Greeter/greet/send", send)])
    try:
        result = await _cli_against(server, "invoke", "Greeter/greet", "--send", "--delay", "10s")
    finally:
        await server.close()
    assert result.exit_code == 0, result.output
    assert '"invocationId": "inv_2"' in result.stdout
    assert seen == {"path": "/Greeter/greet/send", "query": {"delay": "10s"}, "body": b""}


async def test_invoke_error_prints_message() -> None:
    async def missing(request: web.Request) -> web.Response:
        return web.json_response({"code": 404, "message": "unknown service Nope"}, status=404)

    server = await _serve_fake([web.post("/Nope/run", missing)])
    try:
        result = await _cli_against(server, "invoke", "Nope/run")
    finally:
        await server.close()
    _assert_clean_failure(result, 1, "unknown service Nope (HTTP 404)")
    assert result.stdout == ""


async def test_services_table_and_state() -> None:
    async def services(request: web.Request) -> web.Response:
        return web.json_response({"services": [{
            "name": "Counter", "kind": "object", "deployment_id": "dp_1",
            "handlers": [{"name": "add", "kind": "exclusive"}, {"name": "get", "kind": "shared"}],
        }]})

    async def state(request: web.Request) -> web.Response:
        return web.json_response({"state": {"count": 7}})

    server = await _serve_fake([web.get("/services", services), web.get("/state/Counter/alice", state)])
    try:
        table = await _cli_against(server, "services")
        one = await _cli_against(server, "state", "get", "Counter", "alice", "count")
        missing = await _cli_against(server, "state", "get", "Counter", "alice", "nope")
    finally:
        await server.close()
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines() == [
        "NAME     KIND    DEPLOYMENT  HANDLERS", "Counter  object  dp_1        add, get (shared)"]
    assert (one.exit_code, one.stdout) == (0, "7\n")
    _assert_clean_failure(missing, 1, "Counter/alice has no state named 'nope'")


async def test_state_edits_wait_as_long_as_asked_and_say_when_they_applied() -> None:
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def edit(request: web.Request) -> web.Response:
        seen.append((request.method, dict(request.query), await request.read()))
        if request.match_info["name"] == "busy":
            return web.json_response({"code": 409, "message": "invocation inv_9 (suspended) held the key"},
                                     status=409, headers={"Retry-After": "1"})
        return web.json_response({"applied_at": "2026-12-03T08:00:00.000Z",
                                  "waited_for": "inv_1" if request.method == "PUT" else None})

    server = await _serve_fake([web.put("/state/Counter/alice/{name}", edit),
                                web.delete("/state/Counter/alice/{name}", edit)])
    try:
        put = await _cli_against(server, "state", "set", "Counter", "alice", "count", "41", "--wait", "2m")
        cleared = await _cli_against(server, "state", "clear", "Counter", "alice", "count")
        busy = await _cli_against(server, "state", "set", "Counter", "alice", "busy", "1", "--wait", "0s")
    finally:
        await server.close()
    assert (put.exit_code, put.stdout) == (0, "set Counter/alice count at 2026-12-03T08:00:00.000Z, after inv_1\n")
    assert (cleared.exit_code, cleared.stdout) == (0, "cleared Counter/alice count at 2026-12-03T08:00:00.000Z\n")
    _assert_clean_failure(busy, 1, "invocation inv_9 (suspended) held the key (HTTP 409)")
    assert seen == [("PUT", {"wait": "2m"}, b"41"), ("DELETE", {}, b""), ("PUT", {"wait": "0s"}, b"1")]


# --- conventions -------------------------------------------------------------------------------


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


def test_version() -> None:
    result = _cli("--version")
    assert result.exit_code == 0 and result.stdout == f"sidecar {version('durable-sidecar')}\n"


@pytest.mark.parametrize("path", _commands(main), ids=lambda path: " ".join(path) or "sidecar")
def test_help_is_whole_on_an_80_column_terminal(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    cut = [line for line in result.stdout.splitlines() if line.endswith("...") and not line.startswith("Usage:")]
    assert not cut, f"help lines cut off: {cut}"


def test_workers_help_says_what_0_means() -> None:
    assert "0: 1 below 4 usable cores" in " ".join(_cli("serve", "--help").stdout.split())


def test_one_verb_form_with_the_short_forms_kept() -> None:
    assert {"list", "register", "delete"} <= set(main.commands["deployments"].commands)  # type: ignore[attr-defined]
    assert "list" in main.commands["services"].commands  # type: ignore[attr-defined]
    assert main.commands["register"] is main.commands["deployments"].commands["register"]  # type: ignore[attr-defined]


_SERVICES = {"services": [{"name": "Counter", "kind": "object", "deployment_id": "dp_1",
                           "handlers": [{"name": "add", "kind": "exclusive"}]}]}
_DEPLOYMENTS = {"deployments": [{"id": "dp_1", "status": "active", "pinned_invocations": 0,
                                 "uri": "http://127.0.0.1:9080", "services": ["Counter"]}]}
_INVOCATIONS = {"invocations": [{"id": "inv_1", "service": "Counter", "handler": "add", "key": "a",
                                 "status": "completed", "attempts": 1}]}
_SHOWN = {"id": "inv_1", "status": "completed", "attempts": 1, "journal": [
    {"index": 0, "kind": "Input", "value": 5}, {"index": 1, "kind": "Output", "value": 5}]}


@pytest.mark.parametrize(("args", "answer", "table_header"), [
    (["services"], _SERVICES, "NAME"), (["services", "list"], _SERVICES, "NAME"),
    (["deployments"], _DEPLOYMENTS, "ID"), (["deployments", "list"], _DEPLOYMENTS, "ID"),
    (["invocations", "list"], _INVOCATIONS, "ID"), (["invocations", "show", "inv_1"], _SHOWN, "id: inv_1"),
])
async def test_every_list_and_show_takes_json(args: list[str], answer: dict[str, Any], table_header: str) -> None:
    async def reply(request: web.Request) -> web.Response:
        return web.json_response(answer)

    server = await _serve_fake([web.get("/services", reply), web.get("/deployments", reply),
                                web.get("/invocations", reply), web.get("/invocations/inv_1", reply)])
    try:
        as_json = await _cli_against(server, *args, "--json")
        as_text = await _cli_against(server, *args)
    finally:
        await server.close()
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == answer
    assert as_text.exit_code == 0, as_text.output
    assert as_text.stdout.startswith(table_header)


async def test_invocations_list_pages_with_a_cursor_or_follows_them_all() -> None:
    """The admin API's pages (``next_cursor``): one page and where the next starts, or ``--all``."""
    pages = {None: (["inv_3", "inv_2"], "c1"), "c1": (["inv_1"], None)}
    asked: list[dict[str, str]] = []

    async def reply(request: web.Request) -> web.Response:
        asked.append(dict(request.query))
        ids, after = pages[request.query.get("cursor")]
        page: dict[str, Any] = {"invocations": [{"id": i, "status": "completed"} for i in ids]}
        if after is not None:
            page["next_cursor"] = after
        return web.json_response(page)

    server = await _serve_fake([web.get("/invocations", reply)])
    try:
        first = await _cli_against(server, "invocations", "list", "--limit", "2", "--status", "completed")
        second = await _cli_against(server, "invocations", "list", "--cursor", "c1", "--json")
        everything = await _cli_against(server, "invocations", "list", "--limit", "2", "--all", "--json")
        table = await _cli_against(server, "invocations", "list", "--all")
        too_many = await _cli_against(server, "invocations", "list", "--limit", "1001")
    finally:
        await server.close()
    assert first.exit_code == 0, first.output
    assert [line.split()[0] for line in first.stdout.splitlines()[1:]] == ["inv_3", "inv_2"]
    assert "--cursor c1" in first.stderr
    assert json.loads(second.stdout) == {"invocations": [{"id": "inv_1", "status": "completed"}]}
    assert [i["id"] for i in json.loads(everything.stdout)["invocations"]] == ["inv_3", "inv_2", "inv_1"]
    assert [line.split()[0] for line in table.stdout.splitlines()[1:]] == ["inv_3", "inv_2", "inv_1"]
    assert "--cursor" not in table.stderr
    assert asked[:3] == [{"status": "completed", "limit": "2"}, {"cursor": "c1"}, {"limit": "2"}]
    _assert_clean_failure(too_many, 2, "1001 is not in the range 1<=x<=1000")


async def test_costs_names_its_target_as_calls_do_and_prints_the_sums() -> None:
    """Two parts are a plain service's handler or an object's key: the sidecar's services say which."""
    asked: list[dict[str, str]] = []
    sums = {"total": 3.75, "invocations": 2, "by_step": {"plan": 0.25, "llm": 3.5}}

    async def costs(request: web.Request) -> web.Response:
        asked.append(dict(request.query))
        return web.json_response(sums)

    async def service(request: web.Request) -> web.Response:
        kinds = {"Agent": "object", "Tools": "service"}
        name = request.match_info["name"]
        if name not in kinds:
            return web.json_response({"code": 404, "message": f"unknown service {name!r}"}, status=404)
        return web.json_response({"name": name, "kind": kinds[name], "handlers": []})

    server = await _serve_fake([web.get("/costs", costs), web.get("/services/{name}", service)])
    try:
        table = await _cli_against(server, "costs")
        as_json = await _cli_against(server, "costs", "Agent/al ice", "--json")
        await _cli_against(server, "costs", "Tools/quote", "--step", "llm")
        await _cli_against(server, "costs", "Agent/alice/run", "--since", "2025-01-31T09:00:00Z")
        since = await _cli_against(server, "costs", "Agent", "--since", "1h")
        unknown = await _cli_against(server, "costs", "Nope/x")
        bad = await _cli_against(server, "costs", "a/b/c/d")
    finally:
        await server.close()
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines() == ["total: 3.75 over 2 invocations", "STEP  COST", "llm   3.5", "plan  0.25"]
    assert json.loads(as_json.stdout) == sums
    assert asked[:4] == [{}, {"service": "Agent", "key": "al ice"},
                         {"service": "Tools", "handler": "quote", "step": "llm"},
                         {"service": "Agent", "key": "alice", "handler": "run", "since": "2025-01-31T09:00:00Z"}]
    assert since.exit_code == 0, since.output
    hour_ago = int(asked[4]["since"])  # a duration is a time back from now, in epoch ms
    assert abs(hour_ago - (time.time() * 1000 - 3_600_000)) < 60_000
    _assert_clean_failure(unknown, 1, "no service 'Nope' is registered")
    _assert_clean_failure(bad, 2, "expected Service, Service/handler, Object/key or Object/key/handler")
    assert len(asked) == 5
