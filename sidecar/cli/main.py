"""The ``sidecar`` command: run the server (``serve``) and talk to a running one (everything else).

Commands are ``NOUN VERB`` (``services list``, ``deployments delete``, ``invocations show``);
``sidecar services``, ``sidecar deployments`` and ``sidecar register`` are kept as short forms,
and ``sidecar costs`` is a noun that only shows.
Every list and show takes ``--json`` for the sidecar's answer as it came.

Client commands find the sidecar through ``--ingress`` / ``--admin`` (or ``SIDECAR_INGRESS`` /
``SIDECAR_ADMIN``, the same variables ``serve`` reads), make one HTTP round trip each through
:func:`_request`, and turn every failure into a one-line message and a non-zero exit status:
1 for a failed request, 2 for a bad command line or configuration. Never a traceback.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import quote, unquote

import aiohttp
import click
import msgspec
from click.core import ParameterSource
from yarl import URL

from handler_sdk.logs import FORMATS, LEVELS
from sidecar.cli.config import ConfigError, Settings, load_settings, parse_address

_DEFAULTS = Settings()
#: Connecting is quick or broken; waiting for a handler's answer may legitimately take long.
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10)


class Endpoint(NamedTuple):
    """One of the sidecar's two HTTP APIs."""

    name: str  # "ingress" or "admin": the option and the SIDECAR_* variable that set it
    address: str  # HOST:PORT

    @property
    def label(self) -> str:
        return "admin API" if self.name == "admin" else "ingress"


class Reply(NamedTuple):
    status: int
    body: bytes
    headers: Mapping[str, str]


class _ConfigFailure(click.ClickException):
    """A setting (flag, environment or file) or the data directory is wrong: the operator must
    act before a start can work, hence exit status 2."""

    exit_code = 2


def _request(
    endpoint: Endpoint, method: str, segments: Sequence[str], *, body: bytes | None = None,
    headers: Mapping[str, str] | None = None, query: Mapping[str, str] | None = None,
    check: bool = True,
) -> Reply:
    """One HTTP round trip to the sidecar. ``segments`` are plain path segments (encoded here).

    With ``check``, a non-2xx answer raises a :class:`click.ClickException` carrying the server's
    ``{"code", "message"}`` message; without it the caller sees the reply as it came.
    """
    try:
        source = f"--{endpoint.name} (or SIDECAR_{endpoint.name.upper()})"
        host, port = parse_address(endpoint.address, source)
    except ConfigError as exc:
        raise _ConfigFailure(str(exc)) from None
    path = "/" + "/".join(quote(segment, safe="") for segment in segments)
    url = URL.build(scheme="http", host=host.strip("[]"), port=port, path=path, encoded=True)
    if query:
        url = url.with_query(dict(query))

    async def round_trip() -> Reply:
        async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
            async with session.request(method, url, data=body, headers=headers) as response:
                return Reply(response.status, await response.read(), response.headers.copy())

    try:
        reply = asyncio.run(round_trip())
    except aiohttp.ClientConnectorError:
        raise click.ClickException(
            f"cannot reach the sidecar {endpoint.label} at {endpoint.address}: "
            "is `sidecar serve` running?"
        ) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        detail = str(exc) or type(exc).__name__
        raise click.ClickException(f"{method} {url} failed: {detail}") from None
    if check:
        _raise_for_status(reply)
    return reply


def _raise_for_status(reply: Reply) -> None:
    if 200 <= reply.status < 300:
        return
    message = reply.body[:500].decode(errors="replace").strip()
    try:
        decoded = msgspec.json.decode(reply.body)
    except msgspec.DecodeError:
        pass
    else:
        if isinstance(decoded, dict) and "message" in decoded:
            message = str(decoded["message"])
    raise click.ClickException(f"{message or 'no message'} (HTTP {reply.status})")


def _json_argument(raw: str, param: str) -> bytes:
    """Check client-side that ``raw`` is JSON, and pass its bytes on untouched."""
    data = raw.encode()
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc}): {raw!r}", param_hint=param) from None
    return data


def _decode(reply: Reply) -> dict[str, Any]:
    try:
        decoded = msgspec.json.decode(reply.body)
    except msgspec.DecodeError:
        decoded = None
    if not isinstance(decoded, dict):
        raise click.ClickException(
            f"the sidecar answered with something that is not a JSON object: {reply.body[:200]!r}")
    return decoded


def _echo_json(value: Any) -> None:
    click.echo(msgspec.json.format(msgspec.json.encode(value), indent=2))


def _compact(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _echo_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [list(headers)] + [["" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _handlers(service: Mapping[str, Any]) -> str:
    return ", ".join(
        h["name"] if h.get("kind") in (None, "exclusive") else f"{h['name']} ({h['kind']})"
        for h in service.get("handlers", [])
    )


def _json_option(fn: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print the sidecar's JSON answer as it is.")(fn)


def _admin(ctx: click.Context) -> Endpoint:
    return Endpoint("admin", ctx.find_root().params["admin"])


def _ingress(ctx: click.Context) -> Endpoint:
    return Endpoint("ingress", ctx.find_root().params["ingress"])


# --- the group and `serve` -------------------------------------------------------------------


#: Wide terminals get whole lines; command listings rely on short first sentences, not truncation.
_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 120}


@click.group(context_settings=_CONTEXT)
@click.version_option(package_name="durable-sidecar", prog_name="sidecar", message="%(prog)s %(version)s")
@click.option("--ingress", envvar="SIDECAR_INGRESS", default=_DEFAULTS.ingress, show_default=True,
              metavar="HOST:PORT", help="Where client commands reach the ingress API.")
@click.option("--admin", envvar="SIDECAR_ADMIN", default=_DEFAULTS.admin, show_default=True,
              metavar="HOST:PORT", help="Where client commands reach the admin API.")
def main(ingress: str, admin: str) -> None:
    """A durable-execution sidecar: journaled, exactly-once handler invocations."""


@main.command()
@click.option("--config", "config_file", envvar="SIDECAR_CONFIG", metavar="FILE",
              help="A TOML file of settings (flags and SIDECAR_* variables override it).")
@click.option("--data-dir", metavar="DIR", help=f"Where the LMDB store lives [{_DEFAULTS.data_dir}].")
@click.option("--ingress", metavar="HOST:PORT", help=f"Ingress API address [{_DEFAULTS.ingress}].")
@click.option("--admin", metavar="HOST:PORT", help=f"Admin API address [{_DEFAULTS.admin}].")
@click.option("--register", multiple=True, metavar="URI",
              help="A handler service to register at start (repeatable).")
@click.option("--durability", type=click.Choice(["fsync", "none"]),
              help=f"Sync each commit to disk, or leave it to the OS [{_DEFAULTS.durability}].")
@click.option("--inactivity-timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Abort an attempt whose handler is silent this long "
                   f"[{_DEFAULTS.inactivity_timeout_s:g}].")
@click.option("--retention", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help=f"Keep finished invocations and idempotency keys this long [{_DEFAULTS.retention_s:g}].")
@click.option("--workers", type=click.IntRange(min=0), metavar="N",
              help="Worker processes sharing the ingress port; 0: 1 below 4 usable cores, else half "
                   "of them [0].")
@click.option("--max-queue-per-key", type=click.IntRange(min=0), metavar="N",
              help="Refuse a client's call or send (429) to a key with this many waiting in line; 0: no "
                   f"limit [{_DEFAULTS.max_queue_per_key}].")
@click.option("--max-invocations", type=click.IntRange(min=0), metavar="N",
              help="Refuse clients' new invocations (503) while a worker holds this many unfinished; 0: no "
                   f"limit [{_DEFAULTS.max_invocations}].")
@click.option("--log-level", type=click.Choice(LEVELS), help=f"The least important log lines written [{_DEFAULTS.log_level}].")
@click.option("--log-format", type=click.Choice(FORMATS),
              help=f"text, or json: one object per line [{_DEFAULTS.log_format}].")
@click.pass_context
def serve(
    ctx: click.Context, config_file: str | None, data_dir: str | None, ingress: str | None,
    admin: str | None, register: tuple[str, ...], durability: str | None,
    inactivity_timeout: float | None, retention: float | None, workers: int | None,
    max_queue_per_key: int | None, max_invocations: int | None, log_level: str | None, log_format: str | None,
) -> None:
    """Run the sidecar until SIGINT or SIGTERM."""
    # `sidecar --ingress X serve` means the same as `sidecar serve --ingress X`.
    root = ctx.find_root()
    if ingress is None and root.get_parameter_source("ingress") is ParameterSource.COMMANDLINE:
        ingress = root.params["ingress"]
    if admin is None and root.get_parameter_source("admin") is ParameterSource.COMMANDLINE:
        admin = root.params["admin"]
    try:
        settings = load_settings(config_file=config_file, overrides={
            "data_dir": data_dir, "ingress": ingress, "admin": admin,
            "register": list(register) or None, "durability": durability,
            "inactivity_timeout_s": inactivity_timeout, "retention_s": retention, "workers": workers,
            "max_queue_per_key": max_queue_per_key, "max_invocations": max_invocations,
            "log_level": log_level, "log_format": log_format,
        })
    except ConfigError as exc:
        raise _ConfigFailure(str(exc)) from None
    from sidecar.process.server import run  # imported late: client commands need none of the server
    from sidecar.store import LayoutError
    from sidecar.store.check import DamagedStore

    try:
        run(settings)
    except (LayoutError, DamagedStore) as exc:
        raise _ConfigFailure(f"cannot start the sidecar: {exc}") from None
    except OSError as exc:
        # The usual operator mistakes (port taken, no permission) deserve a line, not a traceback.
        if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise click.ClickException(f"cannot start the sidecar: {exc.strerror or exc}") from None
        raise


# --- deployments and services ----------------------------------------------------------------


@click.command()
@click.argument("uri")
@click.option("--force", is_flag=True, help="Replace an existing deployment at the same URI.")
@click.option("--request-response", is_flag=True,
              help="Reach it with one POST /invoke per step, for hosts that cannot hold a WebSocket.")
@click.pass_context
def register(ctx: click.Context, uri: str, force: bool, request_response: bool) -> None:
    """Register the handler service at URI.

    The sidecar asks URI/discover what it serves; `--force` replaces a deployment at that URI.
    """
    body = msgspec.json.encode(
        {"uri": uri, "force": force, "transport": "request-response" if request_response else "websocket"})
    deployment = _decode(_request(_admin(ctx), "POST", ["deployments"], body=body,
                                  headers={"content-type": "application/json"}))
    click.echo(f"registered deployment {deployment.get('id', '?')} at {deployment.get('uri', uri)}")
    for service in deployment.get("services", []):
        click.echo(f"  {service['name']} ({service.get('kind', '?')}): {_handlers(service)}")


def _list_services(ctx: click.Context, as_json: bool) -> None:
    reply = _decode(_request(_admin(ctx), "GET", ["services"]))
    if as_json:
        _echo_json(reply)
        return
    rows = [[s["name"], s.get("kind"), s.get("deployment_id"), _handlers(s)]
            for s in reply.get("services", [])]
    if not rows:
        click.echo("no services registered: see `sidecar deployments register --help`")
        return
    _echo_table(["NAME", "KIND", "DEPLOYMENT", "HANDLERS"], rows)


def _list_deployments(ctx: click.Context, as_json: bool) -> None:
    reply = _decode(_request(_admin(ctx), "GET", ["deployments"]))
    if as_json:
        _echo_json(reply)
        return
    rows = [[d["id"], d["status"], str(d["pinned_invocations"]), d["uri"], ", ".join(d["services"])]
            for d in reply.get("deployments", [])]
    if not rows:
        click.echo("no deployments registered: see `sidecar deployments register --help`")
        return
    _echo_table(["ID", "STATUS", "PINNED", "URI", "SERVICES"], rows)


def _listing_group(name: str, about: str, list_help: str,
                   lister: Callable[[click.Context, bool], None]) -> click.Group:
    """A noun whose bare form lists, as its ``list`` verb does (``sidecar services [list]``)."""

    @main.group(name, invoke_without_command=True,
                help=f"{about}\n\n`sidecar {name}` alone lists them, as `sidecar {name} list` does.")
    @_json_option
    @click.pass_context
    def group(ctx: click.Context, as_json: bool) -> None:
        if ctx.invoked_subcommand is None:
            lister(ctx, as_json)

    @group.command("list", help=list_help)
    @_json_option
    @click.pass_context
    def list_them(ctx: click.Context, as_json: bool) -> None:
        lister(ctx, as_json)

    return group


services = _listing_group("services", "The services the deployments serve.",
                          "List the registered services and their handlers.", _list_services)
deployments = _listing_group(
    "deployments", "Handler services the sidecar reaches.",
    "List deployments and their status.\n\nactive: new invocations go there; draining: invocations are still "
    "pinned to it; drained: safe to stop and delete.", _list_deployments)


deployments.add_command(register)
main.add_command(register)  # the short form: `sidecar register URI`


@deployments.command("delete")
@click.argument("deployment_id", metavar="ID")
@click.pass_context
def delete_deployment(ctx: click.Context, deployment_id: str) -> None:
    """Forget a drained deployment."""
    _decode(_request(_admin(ctx), "DELETE", ["deployments", deployment_id]))
    click.echo(f"deleted deployment {deployment_id}")


# --- invoke ------------------------------------------------------------------------------------


@main.command()
@click.argument("target")
@click.argument("argument", metavar="[JSON]", required=False)
@click.option("--send", is_flag=True, help="Enqueue and return at once with the invocation ID.")
@click.option("--idempotency-key", metavar="KEY", help="The same TARGET and KEY run only once.")
@click.option("--delay", metavar="DURATION", help="With --send: start later (e.g. 10s, PT10S).")
@click.pass_context
def invoke(
    ctx: click.Context, target: str, argument: str | None, send: bool,
    idempotency_key: str | None, delay: str | None,
) -> None:
    """Call a handler. TARGET is the URL path: Service/handler or Object/key/handler."""
    segments = [unquote(segment) for segment in target.strip("/").split("/")]
    if len(segments) not in (2, 3) or not all(segments):
        raise click.BadParameter(
            f"{target!r}: expected Service/handler or Object/key/handler", param_hint="TARGET")
    if delay is not None and not send:
        raise click.UsageError("--delay needs --send: only a one-way call can start later")
    headers: dict[str, str] = {}
    body = None
    if argument is not None:
        body = _json_argument(argument, "JSON")
        headers["content-type"] = "application/json"
    if idempotency_key is not None:
        headers["idempotency-key"] = idempotency_key
    reply = _request(
        _ingress(ctx), "POST", [*segments, "send"] if send else segments, body=body,
        headers=headers, query={"delay": delay} if delay is not None else None, check=False,
    )
    if invocation_id := reply.headers.get("x-restate-id"):
        click.echo(f"x-restate-id: {invocation_id}", err=True)
    _raise_for_status(reply)
    click.echo(reply.body)  # bytes: the handler's output, passed through untouched


# --- invocations -------------------------------------------------------------------------------


@main.group()
def invocations() -> None:
    """Inspect and manage invocations."""


@invocations.command("list")
@click.option("--status", help="Only this status (pending, running, suspended, ...).")
@click.option("--service", help="Only this service or object.")
@click.option("--key", help="Only this object key.")
@click.option("--limit", type=click.IntRange(1, 1000), help="At most this many per page, newest first [100].")
@click.option("--cursor", help="Start where a page ended (the cursor it printed).")
@click.option("--all", "every_page", is_flag=True, help="Follow the pages to the last one.")
@_json_option
@click.pass_context
def list_invocations(
    ctx: click.Context, status: str | None, service: str | None, key: str | None, limit: int | None,
    cursor: str | None, every_page: bool, as_json: bool,
) -> None:
    """List invocations, newest first, a page at a time.

    A page ends with the --cursor that continues it; --all follows them all."""
    filters = {"status": status, "service": service, "key": key, "limit": limit, "cursor": cursor}
    query = {name: str(value) for name, value in filters.items() if value is not None}
    reply = _decode(_request(_admin(ctx), "GET", ["invocations"], query=query))
    listed = list(reply.get("invocations", []))
    while every_page and reply.get("next_cursor"):
        reply = _decode(_request(_admin(ctx), "GET", ["invocations"],
                                 query={**query, "cursor": str(reply["next_cursor"])}))
        listed.extend(reply.get("invocations", []))
    if every_page:
        reply = {"invocations": listed}
    if as_json:
        _echo_json(reply)
        return
    columns = ["id", "service", "handler", "key", "status", "attempts", "created_at", "modified_at"]
    rows = [[inv.get(column) for column in columns] for inv in listed]
    if rows:
        _echo_table([column.upper() for column in columns], rows)
    if reply.get("next_cursor"):
        click.echo(f"more: add --cursor {reply['next_cursor']} (or --all)", err=True)
    elif not rows:
        click.echo("no invocations")


@invocations.command("show")
@click.argument("invocation_id", metavar="ID")
@_json_option
@click.pass_context
def show_invocation(ctx: click.Context, invocation_id: str, as_json: bool) -> None:
    """Show an invocation and its journal.

    Status and its reason, attempts, the last failure, then one line per journal entry.
    """
    shown = _decode(_request(_admin(ctx), "GET", ["invocations", invocation_id]))
    if as_json:
        _echo_json(shown)
        return
    for name, value in shown.items():
        if name != "journal" and value not in (None, "", [], {}):
            click.echo(f"{name}: {value if isinstance(value, (str, int, float)) else _compact(value)}")
    journal = shown.get("journal") or []
    if journal:
        click.echo("journal:")
        _echo_table(["  INDEX", "KIND", "DETAIL"], [
            [f"  {entry.get('index')}", entry.get("kind"),
             _compact({k: v for k, v in entry.items() if k not in ("index", "kind") and v not in (None, "", False)})]
            for entry in journal])


def _operator_action(action: str, past: str, help_text: str) -> None:
    """``sidecar invocations ACTION ID``: one admin POST, one line of output."""

    @invocations.command(action, help=help_text)
    @click.argument("invocation_id", metavar="ID")
    @click.pass_context
    def command(ctx: click.Context, invocation_id: str) -> None:
        _request(_admin(ctx), "POST", ["invocations", invocation_id, action])
        click.echo(f"{past} {invocation_id}")


_operator_action("kill", "killed", "End an invocation now (no compensation).\n\nNo more handler code runs; the "
                 "next invocation on its key starts.")
_operator_action("cancel", "cancelling", "Cancel an invocation; its handler may compensate.\n\nThe handler sees a "
                 "TerminalError (409) at its next await; calls it waits on are cancelled too.")
_operator_action("pause", "paused", "Stop retrying an invocation (resume tries again).")


@invocations.command("resume")
@click.argument("invocation_id", metavar="ID")
@click.option("--deployment", metavar="DEPLOYMENT_ID", help="Resume on this deployment (one with a fix).")
@click.pass_context
def resume_invocation(ctx: click.Context, invocation_id: str, deployment: str | None) -> None:
    """Try a paused invocation again."""
    body = msgspec.json.encode({"deployment": deployment} if deployment else {})
    _request(_admin(ctx), "POST", ["invocations", invocation_id, "resume"], body=body,
             headers={"content-type": "application/json"})
    click.echo(f"resumed {invocation_id}")


@invocations.command("restart")
@click.argument("invocation_id", metavar="ID")
@click.option("--from", "keep", type=click.IntRange(min=1), default=1, show_default=True,
              help="Journal entries to keep (1: just the input).")
@click.pass_context
def restart_invocation(ctx: click.Context, invocation_id: str, keep: int) -> None:
    """Run a finished invocation again, as a new one.

    The new invocation gets the same input and the first --from journal entries.
    """
    reply = _decode(_request(_admin(ctx), "POST", ["invocations", invocation_id, "restart"],
                             query={"from": str(keep)}))
    click.echo(f"restarted {invocation_id} as {reply.get('id')}")


@invocations.command("purge")
@click.argument("invocation_id", metavar="ID")
@click.pass_context
def purge_invocation(ctx: click.Context, invocation_id: str) -> None:
    """Delete a finished invocation and its journal."""
    _request(_admin(ctx), "DELETE", ["invocations", invocation_id])
    click.echo(f"purged {invocation_id}")


# --- costs -------------------------------------------------------------------------------------


def _cost_target(ctx: click.Context, target: str) -> dict[str, str]:
    """The ``GET /costs`` filter TARGET names. Two parts are a plain service's handler or an
    object's key, as the URL paths of calls are: the sidecar says which kind the service is."""
    segments = [unquote(segment) for segment in target.strip("/").split("/")]
    if not 1 <= len(segments) <= 3 or not all(segments):
        raise click.BadParameter(f"{target!r}: expected Service, Service/handler, Object/key or Object/key/handler",
                                 param_hint="TARGET")
    if len(segments) != 2:
        return dict(zip(("service", "key", "handler"), segments))
    service, second = segments
    reply = _request(_admin(ctx), "GET", ["services", service], check=False)
    if reply.status == 404:
        raise click.ClickException(f"no service {service!r} is registered, so {target!r} could name a handler or "
                                   "a key: write Object/key/handler, or Service for all of it")
    _raise_for_status(reply)
    return {"service": service, "handler" if _decode(reply).get("kind") == "service" else "key": second}


def _since(text: str) -> str:
    """An ISO 8601 time or epoch ms as it is (the sidecar checks it); a duration, back from now."""
    from sidecar.clock import now_ms
    from sidecar.durations import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError:
        return text
    return str(now_ms() - int(seconds * 1000))


@main.command()
@click.argument("target", required=False)
@click.option("--step", metavar="NAME", help="Only the steps of this name.")
@click.option("--since", metavar="TIME",
              help="Only what was spent from TIME on: ISO 8601 (2025-01-31T09:00:00Z), epoch ms, or a duration "
                   "back from now (24h).")
@_json_option
@click.pass_context
def costs(ctx: click.Context, target: str | None, step: str | None, since: str | None, as_json: bool) -> None:
    """What steps cost, in total and by step name.

    TARGET narrows it down: Service, Service/handler, Object/key or Object/key/handler. Costs are kept
    as long as their invocations (--retention).
    """
    query = _cost_target(ctx, target) if target is not None else {}
    if step is not None:
        query["step"] = step
    if since is not None:
        query["since"] = _since(since)
    reply = _decode(_request(_admin(ctx), "GET", ["costs"], query=query))
    if as_json:
        _echo_json(reply)
        return
    by_step = reply.get("by_step") or {}
    count = reply.get("invocations", 0)
    click.echo(f"total: {reply.get('total')} over {count} invocation{'' if count == 1 else 's'}")
    if by_step:
        _echo_table(["STEP", "COST"], sorted(by_step.items(), key=lambda item: (-item[1], item[0])))


# --- state -------------------------------------------------------------------------------------


@main.group()
def state() -> None:
    """Inspect and edit a virtual object's state."""


@state.command("get")
@click.argument("obj", metavar="OBJECT")
@click.argument("key")
@click.argument("name", required=False)
@click.pass_context
def get_state(ctx: click.Context, obj: str, key: str, name: str | None) -> None:
    """Print the state of OBJECT/KEY (all of it, or the value NAME)."""
    values = _decode(_request(_admin(ctx), "GET", ["state", obj, key])).get("state", {})
    if name is None:
        _echo_json(values)
    elif name in values:
        _echo_json(values[name])
    else:
        raise click.ClickException(f"{obj}/{key} has no state named {name!r}")


_edit_wait = click.option(
    "--wait", metavar="DURATION", help="How long the edit may wait for an invocation holding the key (default 10s).")


def _edited(verb: str, obj: str, key: str, name: str, reply: Reply) -> None:
    applied = _decode(reply)
    after = f", after {applied['waited_for']}" if applied.get("waited_for") else ""
    click.echo(f"{verb} {obj}/{key} {name} at {applied.get('applied_at')}{after}")


@state.command("set")
@click.argument("obj", metavar="OBJECT")
@click.argument("key")
@click.argument("name")
@click.argument("value", metavar="JSON")
@_edit_wait
@click.pass_context
def set_state(ctx: click.Context, obj: str, key: str, name: str, value: str, wait: str | None) -> None:
    """Set the state value NAME of OBJECT/KEY to JSON, in the key's turn."""
    _edited("set", obj, key, name, _request(
        _admin(ctx), "PUT", ["state", obj, key, name], body=_json_argument(value, "JSON"),
        headers={"content-type": "application/json"}, query={"wait": wait} if wait is not None else None))


@state.command("clear")
@click.argument("obj", metavar="OBJECT")
@click.argument("key")
@click.argument("name")
@_edit_wait
@click.pass_context
def clear_state(ctx: click.Context, obj: str, key: str, name: str, wait: str | None) -> None:
    """Remove the state value NAME of OBJECT/KEY, in the key's turn."""
    _edited("cleared", obj, key, name, _request(
        _admin(ctx), "DELETE", ["state", obj, key, name], query={"wait": wait} if wait is not None else None))


# --- awakeables --------------------------------------------------------------------------------


@main.group()
def awakeable() -> None:
    """Complete an awakeable a handler waits on."""


@awakeable.command("resolve")
@click.argument("awakeable_id", metavar="ID")
@click.argument("value", metavar="[JSON]", required=False)
@click.pass_context
def resolve_awakeable(ctx: click.Context, awakeable_id: str, value: str | None) -> None:
    """Resolve awakeable ID with a JSON value (default null)."""
    body = _json_argument(value, "JSON") if value is not None else b"null"
    _request(_ingress(ctx), "POST", ["restate", "awakeables", awakeable_id, "resolve"], body=body,
             headers={"content-type": "application/json"})
    click.echo(f"resolved {awakeable_id}")


@awakeable.command("reject")
@click.argument("awakeable_id", metavar="ID")
@click.argument("reason", required=False, default="rejected")
@click.pass_context
def reject_awakeable(ctx: click.Context, awakeable_id: str, reason: str) -> None:
    """Reject awakeable ID; the handler gets a TerminalError(REASON)."""
    _request(_ingress(ctx), "POST", ["restate", "awakeables", awakeable_id, "reject"], body=reason.encode(),
             headers={"content-type": "text/plain"})
    click.echo(f"rejected {awakeable_id}")


if __name__ == "__main__":
    main()
