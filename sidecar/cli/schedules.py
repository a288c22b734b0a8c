"""``sidecar schedules list|set|delete``: durable schedules (``/schedules`` on the admin API)."""

from __future__ import annotations

from typing import Any

import click
import msgspec

from .client import admin_api, decode, echo_json, echo_table, json_argument, json_option, request


@click.group()
def schedules() -> None:
    """Cron expressions and intervals that fire invocations, durably."""


def _when(view: dict[str, Any]) -> str:
    if view.get("cron") is not None:
        return f"{view['cron']} ({view['timezone']})"
    return f"every {view.get('every')}"


@schedules.command("list")
@json_option
@click.pass_context
def list_schedules(ctx: click.Context, as_json: bool) -> None:
    """List the schedules, their next fire times and last invocations."""
    reply = decode(request(admin_api(ctx), "GET", ["schedules"]))
    if as_json:
        echo_json(reply)
        return
    rows = [(s["name"], _when(s), s["target"], s.get("next_fire_at") or "-", s.get("last_invocation_id") or "-",
             s["fired"], s["skipped"]) for s in reply.get("schedules", [])]
    echo_table(["NAME", "WHEN", "TARGET", "NEXT FIRE", "LAST INVOCATION", "FIRED", "SKIPPED"], rows)


@schedules.command("set")
@click.argument("name")
@click.option("--cron", metavar="EXPR", help='Five cron fields, e.g. "0 9 * * MON-FRI", or an alias such as @daily.')
@click.option("--timezone", metavar="ZONE", help="The IANA zone --cron is read in, e.g. Europe/Berlin [UTC].")
@click.option("--every", metavar="DURATION", help="A fixed interval instead of --cron, e.g. 30s, 1h (at least 1s).")
@click.option("--target", required=True, metavar="TARGET", help="Service/handler or Object/key/handler.")
@click.option("--input", "input_json", metavar="JSON", help="What each firing sends the handler [null].")
@click.option("--overlap", type=click.Choice(["skip", "queue"]),
              help="While the last firing's invocation runs: skip a firing, or make it anyway [skip].")
@click.option("--catch-up", "catch_up", type=click.Choice(["one", "all", "none"]),
              help="Fire times missed while the sidecar was down: fire once, each (at most 100), or none [one].")
@json_option
@click.pass_context
def set_schedule(ctx: click.Context, name: str, cron: str | None, timezone: str | None, every: str | None,
                 target: str, input_json: str | None, overlap: str | None, catch_up: str | None,
                 as_json: bool) -> None:
    """Create or replace schedule NAME; a change takes effect at once."""
    if (cron is None) == (every is None):
        raise click.UsageError("give either --cron or --every")
    if timezone is not None and cron is None:
        raise click.UsageError("--timezone applies to --cron only")
    body: dict[str, Any] = {"target": target}
    for field, value in (("cron", cron), ("timezone", timezone), ("every", every), ("overlap", overlap),
                         ("catch_up", catch_up)):
        if value is not None:
            body[field] = value
    if input_json is not None:
        body["input"] = msgspec.Raw(json_argument(input_json, "--input"))
    reply = request(admin_api(ctx), "PUT", ["schedules", name], body=msgspec.json.encode(body),
                    headers={"content-type": "application/json"})
    view = decode(reply)
    if as_json:
        echo_json(view)
        return
    click.echo(f"schedule {name} {'created' if reply.status == 201 else 'replaced'}: {_when(view)} -> "
               f"{view['target']}, next fire {view.get('next_fire_at') or 'never'}")


@schedules.command("delete")
@click.argument("name")
@click.pass_context
def delete_schedule(ctx: click.Context, name: str) -> None:
    """Stop and forget schedule NAME (invocations it made go on)."""
    request(admin_api(ctx), "DELETE", ["schedules", name])
    click.echo(f"schedule {name} deleted")
