"""The ``sidecar`` command: run the server (``serve``) and talk to a running one (everything else).

Commands are ``NOUN VERB`` (``services list``, ``deployments delete``, ``invocations show``);
``sidecar services``, ``sidecar deployments`` and ``sidecar register`` are kept as short forms,
and ``sidecar costs`` is a noun that only shows.
Every list and show takes ``--json`` for the sidecar's answer as it came.

Client commands find the sidecar through ``--ingress`` / ``--admin`` (or ``SIDECAR_INGRESS`` /
``SIDECAR_ADMIN``, the same variables ``serve`` reads), make one HTTP round trip each through
:func:`request`, and turn every failure into a one-line message and a non-zero exit status:
1 for a failed request, 2 for a bad command line or configuration. Never a traceback.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import click
import msgspec
from click.core import ParameterSource

from handler_sdk.logs import FORMATS, LEVELS
from sidecar.cli.config import ConfigError, Settings, load_settings

from .client import (
    ConfigFailure, admin_api, compact, decode, echo_json, echo_table, ingress_api, json_argument, json_option,
    raise_for_status, request,
)
from .breakers import breakers
from .costs import costs
from .data import backup, check
from .limits import parse_limit_flag
from .nats_config import nats_config
from .schedules import schedules
from .cluster import cluster
from .state import awakeable, state

_DEFAULTS = Settings()


def _handlers(service: Mapping[str, Any]) -> str:
    return ", ".join(
        h["name"] if h.get("kind") in (None, "exclusive") else f"{h['name']} ({h['kind']})"
        for h in service.get("handlers", [])
    )


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
@click.option("--admin-token", metavar="TOKEN",
              help="Every admin request but GET /health must send `authorization: Bearer TOKEN` "
                   "(prefer SIDECAR_ADMIN_TOKEN: a flag shows in the process list).")
@click.option("--admin-insecure", is_flag=True, default=None,
              help="Serve the admin API without a token on an address beyond loopback.")
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
@click.option("--blob-threshold", type=click.IntRange(min=64), metavar="BYTES",
              help="Store payloads over this many bytes once per content, as blobs "
                   f"[{_DEFAULTS.blob_threshold_bytes}].")
@click.option("--max-payload", type=click.IntRange(min=1), metavar="BYTES",
              help=f"Fail a step whose value (or a state value) is larger (413) [{_DEFAULTS.max_payload_bytes}].")
@click.option("--log-level", type=click.Choice(LEVELS), help=f"The least important log lines written [{_DEFAULTS.log_level}].")
@click.option("--log-format", type=click.Choice(FORMATS),
              help=f"text, or json: one object per line [{_DEFAULTS.log_format}].")
@click.option("--limit", "limits", multiple=True, metavar="NAME=concurrency:N,rate:COUNT/PERIOD",
              help="A sidecar-wide group of steps (ctx.run(..., limit=NAME)), e.g. anthropic=concurrency:8,rate:60/min "
                   "(repeatable; wins over the config file's group of that name).")
@click.option("--signing-key", metavar="FILE",
              help="Sign every request to handler services with this Ed25519 private key (see `sidecar keygen`).")
@click.option("--webhook", "webhooks", multiple=True, metavar="URL",
              help="POST a signed message here when an invocation ends or pauses (repeatable).")
@click.option("--webhook-events", metavar="EVENT,...",
              help="Only these: completed, failed, paused, killed, cancelled, budget_exceeded [all].")
@click.option("--webhook-secret", metavar="whsec_BASE64",
              help="Sign webhooks with this key (Standard Webhooks; better: SIDECAR_WEBHOOK_SECRET).")
# Tests only (handler_sdk.testing), so hidden from --help and no setting: no file or variable of a
# deployment can turn it on. The clock then moves forward through POST /test/clock (admin API).
@click.option("--cluster", metavar="nats://HOST:PORT[,...]",
              help="Run as a node of a cluster whose log is on these NATS servers (docs/cluster.md).")
@click.option("--node", metavar="NAME", help="This node's name in the cluster (the same across restarts).")
@click.option("--mesh", metavar="HOST:PORT",
              help="Where this node takes requests other nodes hand it; an address they can reach "
                   "[127.0.0.1:0, any free port].")
@click.option("--test-clock", is_flag=True, hidden=True,
              help="TESTS ONLY: a clock that POST /test/clock advances; one worker.")
@click.pass_context
def serve(
    ctx: click.Context, config_file: str | None, data_dir: str | None, ingress: str | None,
    admin: str | None, admin_token: str | None, admin_insecure: bool | None, register: tuple[str, ...],
    durability: str | None,
    inactivity_timeout: float | None, retention: float | None, workers: int | None,
    max_queue_per_key: int | None, max_invocations: int | None, blob_threshold: int | None, max_payload: int | None,
    log_level: str | None, log_format: str | None, limits: tuple[str, ...], signing_key: str | None,
    webhooks: tuple[str, ...], webhook_events: str | None, webhook_secret: str | None,
    cluster: str | None, node: str | None, mesh: str | None, test_clock: bool,
) -> None:
    """Run the sidecar until SIGINT or SIGTERM."""
    # `sidecar --ingress X serve` means the same as `sidecar serve --ingress X`.
    root = ctx.find_root()
    if ingress is None and root.get_parameter_source("ingress") is ParameterSource.COMMANDLINE:
        ingress = root.params["ingress"]
    if admin is None and root.get_parameter_source("admin") is ParameterSource.COMMANDLINE:
        admin = root.params["admin"]
    try:
        groups = dict(parse_limit_flag(text) for text in limits)
    except ValueError as exc:
        raise ConfigFailure(f"invalid setting: {exc}") from None
    try:
        settings = load_settings(config_file=config_file, overrides={
            "data_dir": data_dir, "ingress": ingress, "admin": admin, "admin_token": admin_token,
            "admin_insecure": admin_insecure,
            "register": list(register) or None, "durability": durability,
            "inactivity_timeout_s": inactivity_timeout, "retention_s": retention, "workers": workers,
            "max_queue_per_key": max_queue_per_key, "max_invocations": max_invocations,
            "blob_threshold_bytes": blob_threshold, "max_payload_bytes": max_payload,
            "log_level": log_level, "log_format": log_format, "limits": groups or None,
            "signing_key": signing_key,
            "webhooks": list(webhooks) or None, "webhook_secret": webhook_secret,
            "webhook_events": webhook_events.split(",") if webhook_events is not None else None,
            "cluster": cluster.split(",") if cluster else None, "node": node, "mesh": mesh,
        })
    except ConfigError as exc:
        raise ConfigFailure(str(exc)) from None
    if test_clock and settings.cluster:
        raise ConfigFailure("--test-clock runs one sidecar alone, not a cluster node")
    if test_clock and settings.workers > 1:
        raise ConfigFailure(f"--test-clock runs one worker (an advance moves one process's clock), "
                            f"not --workers {settings.workers}: leave --workers unset, or give 1")
    from sidecar.process.server import run  # imported late: client commands need none of the server
    from sidecar.store import LayoutError
    from sidecar.store.check import DamagedStore
    from sidecar.time_skipping import ClockFileError
    from sidecar.transport.signing import SigningKeyError

    try:
        run(settings, test_clock=test_clock)
    except (LayoutError, DamagedStore, SigningKeyError, ClockFileError) as exc:
        raise ConfigFailure(f"cannot start the sidecar: {exc}") from None
    except OSError as exc:
        # The usual operator mistakes (port taken, no permission) deserve a line, not a traceback.
        if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise click.ClickException(f"cannot start the sidecar: {exc.strerror or exc}") from None
        raise


@main.command()
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
def keygen(directory: Path) -> None:
    """Make a key pair to sign requests to handler services.

    Writes DIR/signing.pem (the private key, for `serve --signing-key`; readable by you only)
    and DIR/signing.pub.pem (for the handler services' identity keys). Never replaces a file.
    """
    from sidecar.transport.signing import generate  # imported late: it loads the crypto library

    try:
        private, public = generate(directory)
    except OSError as exc:
        why = f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc)
        raise click.ClickException(f"cannot make a key pair: {why}") from None
    click.echo(f"wrote {private} (sidecar serve --signing-key {private})")
    click.echo(f"wrote {public} (HANDLER_IDENTITY_KEYS=\"$(cat {public})\" for handler services)")


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
    deployment = decode(request(admin_api(ctx), "POST", ["deployments"], body=body,
                                  headers={"content-type": "application/json"}))
    click.echo(f"registered deployment {deployment.get('id', '?')} at {deployment.get('uri', uri)}")
    for service in deployment.get("services", []):
        click.echo(f"  {service['name']} ({service.get('kind', '?')}): {_handlers(service)}")


def _list_services(ctx: click.Context, as_json: bool) -> None:
    reply = decode(request(admin_api(ctx), "GET", ["services"]))
    if as_json:
        echo_json(reply)
        return
    rows = [[s["name"], s.get("kind"), s.get("deployment_id"), _handlers(s)]
            for s in reply.get("services", [])]
    if not rows:
        click.echo("no services registered: see `sidecar deployments register --help`")
        return
    echo_table(["NAME", "KIND", "DEPLOYMENT", "HANDLERS"], rows)


def _list_deployments(ctx: click.Context, as_json: bool) -> None:
    reply = decode(request(admin_api(ctx), "GET", ["deployments"]))
    if as_json:
        echo_json(reply)
        return
    rows = [[d["id"], d["status"], str(d["pinned_invocations"]), d["uri"], ", ".join(d["services"])]
            for d in reply.get("deployments", [])]
    if not rows:
        click.echo("no deployments registered: see `sidecar deployments register --help`")
        return
    echo_table(["ID", "STATUS", "PINNED", "URI", "SERVICES"], rows)


def _listing_group(name: str, about: str, list_help: str,
                   lister: Callable[[click.Context, bool], None]) -> click.Group:
    """A noun whose bare form lists, as its ``list`` verb does (``sidecar services [list]``)."""

    @main.group(name, invoke_without_command=True,
                help=f"{about}\n\n`sidecar {name}` alone lists them, as `sidecar {name} list` does.")
    @json_option
    @click.pass_context
    def group(ctx: click.Context, as_json: bool) -> None:
        if ctx.invoked_subcommand is None:
            lister(ctx, as_json)

    @group.command("list", help=list_help)
    @json_option
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
    decode(request(admin_api(ctx), "DELETE", ["deployments", deployment_id]))
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
        body = json_argument(argument, "JSON")
        headers["content-type"] = "application/json"
    if idempotency_key is not None:
        headers["idempotency-key"] = idempotency_key
    reply = request(
        ingress_api(ctx), "POST", [*segments, "send"] if send else segments, body=body,
        headers=headers, query={"delay": delay} if delay is not None else None, check=False,
    )
    if invocation_id := reply.headers.get("x-restate-id"):
        click.echo(f"x-restate-id: {invocation_id}", err=True)
    raise_for_status(reply)
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
@json_option
@click.pass_context
def list_invocations(
    ctx: click.Context, status: str | None, service: str | None, key: str | None, limit: int | None,
    cursor: str | None, every_page: bool, as_json: bool,
) -> None:
    """List invocations, newest first, a page at a time.

    A page ends with the --cursor that continues it; --all follows them all."""
    filters = {"status": status, "service": service, "key": key, "limit": limit, "cursor": cursor}
    query = {name: str(value) for name, value in filters.items() if value is not None}
    reply = decode(request(admin_api(ctx), "GET", ["invocations"], query=query))
    listed = list(reply.get("invocations", []))
    while every_page and reply.get("next_cursor"):
        reply = decode(request(admin_api(ctx), "GET", ["invocations"],
                                 query={**query, "cursor": str(reply["next_cursor"])}))
        listed.extend(reply.get("invocations", []))
    if every_page:
        reply = {"invocations": listed}
    if as_json:
        echo_json(reply)
        return
    columns = ["id", "service", "handler", "key", "status", "attempts", "created_at", "modified_at"]
    rows = [[inv.get(column) for column in columns] for inv in listed]
    if rows:
        echo_table([column.upper() for column in columns], rows)
    if reply.get("next_cursor"):
        click.echo(f"more: add --cursor {reply['next_cursor']} (or --all)", err=True)
    elif not rows:
        click.echo("no invocations")


@invocations.command("show")
@click.argument("invocation_id", metavar="ID")
@json_option
@click.pass_context
def show_invocation(ctx: click.Context, invocation_id: str, as_json: bool) -> None:
    """Show an invocation and its journal.

    Status and its reason, attempts, the last failure, then one line per journal entry.
    """
    shown = decode(request(admin_api(ctx), "GET", ["invocations", invocation_id]))
    if as_json:
        echo_json(shown)
        return
    for name, value in shown.items():
        if name != "journal" and value not in (None, "", [], {}):
            click.echo(f"{name}: {value if isinstance(value, (str, int, float)) else compact(value)}")
    journal = shown.get("journal") or []
    if journal:
        click.echo("journal:")
        echo_table(["  INDEX", "KIND", "DETAIL"], [
            [f"  {entry.get('index')}", entry.get("kind"),
             compact({k: v for k, v in entry.items() if k not in ("index", "kind") and v not in (None, "", False)})]
            for entry in journal])


def _operator_action(action: str, past: str, help_text: str) -> None:
    """``sidecar invocations ACTION ID``: one admin POST, one line of output."""

    @invocations.command(action, help=help_text)
    @click.argument("invocation_id", metavar="ID")
    @click.pass_context
    def command(ctx: click.Context, invocation_id: str) -> None:
        request(admin_api(ctx), "POST", ["invocations", invocation_id, action])
        click.echo(f"{past} {invocation_id}")


_operator_action("kill", "killed", "End an invocation now (no compensation).\n\nNo more handler code runs; the "
                 "next invocation on its key starts.")
_operator_action("cancel", "cancelling", "Cancel an invocation; its handler may compensate.\n\nThe handler sees a "
                 "TerminalError (409) at its next await; calls it waits on are cancelled too.")
_operator_action("pause", "paused", "Stop retrying an invocation (resume tries again).")


@invocations.command("resume")
@click.argument("invocation_id", metavar="ID")
@click.option("--deployment", metavar="DEPLOYMENT_ID", help="Resume on this deployment (one with a fix).")
@click.option("--budget", type=click.FloatRange(min=0), metavar="AMOUNT",
              help="Its spending cap from now on (one paused for its budget goes on).")
@click.pass_context
def resume_invocation(ctx: click.Context, invocation_id: str, deployment: str | None, budget: float | None) -> None:
    """Try a paused invocation again."""
    asked: dict[str, object] = {"deployment": deployment, "budget": budget}
    body = msgspec.json.encode({name: value for name, value in asked.items() if value is not None})
    request(admin_api(ctx), "POST", ["invocations", invocation_id, "resume"], body=body,
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
    reply = decode(request(admin_api(ctx), "POST", ["invocations", invocation_id, "restart"],
                             query={"from": str(keep)}))
    click.echo(f"restarted {invocation_id} as {reply.get('id')}")


@invocations.command("purge")
@click.argument("invocation_id", metavar="ID")
@click.pass_context
def purge_invocation(ctx: click.Context, invocation_id: str) -> None:
    """Delete a finished invocation and its journal."""
    request(admin_api(ctx), "DELETE", ["invocations", invocation_id])
    click.echo(f"purged {invocation_id}")


main.add_command(costs)
main.add_command(backup)
main.add_command(check)
main.add_command(cluster)
main.add_command(breakers)
main.add_command(schedules)
main.add_command(state)
main.add_command(awakeable)
main.add_command(nats_config)

if __name__ == "__main__":
    main()
