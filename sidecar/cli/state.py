"""``sidecar state`` and ``sidecar awakeable``: a virtual object's state, and the awakeables
its handlers wait on."""

from __future__ import annotations

import click

from .client import Reply, admin_api, decode, echo_json, ingress_api, json_argument, request


@click.group()
def state() -> None:
    """Inspect and edit a virtual object's state."""


@state.command("get")
@click.argument("obj", metavar="OBJECT")
@click.argument("key")
@click.argument("name", required=False)
@click.pass_context
def get_state(ctx: click.Context, obj: str, key: str, name: str | None) -> None:
    """Print the state of OBJECT/KEY (all of it, or the value NAME)."""
    values = decode(request(admin_api(ctx), "GET", ["state", obj, key])).get("state", {})
    if name is None:
        echo_json(values)
    elif name in values:
        echo_json(values[name])
    else:
        raise click.ClickException(f"{obj}/{key} has no state named {name!r}")


_edit_wait = click.option(
    "--wait", metavar="DURATION", help="How long the edit may wait for an invocation holding the key (default 10s).")


def _edited(verb: str, obj: str, key: str, name: str, reply: Reply) -> None:
    applied = decode(reply)
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
    _edited("set", obj, key, name, request(
        admin_api(ctx), "PUT", ["state", obj, key, name], body=json_argument(value, "JSON"),
        headers={"content-type": "application/json"}, query={"wait": wait} if wait is not None else None))


@state.command("clear")
@click.argument("obj", metavar="OBJECT")
@click.argument("key")
@click.argument("name")
@_edit_wait
@click.pass_context
def clear_state(ctx: click.Context, obj: str, key: str, name: str, wait: str | None) -> None:
    """Remove the state value NAME of OBJECT/KEY, in the key's turn."""
    _edited("cleared", obj, key, name, request(
        admin_api(ctx), "DELETE", ["state", obj, key, name], query={"wait": wait} if wait is not None else None))


# --- awakeables --------------------------------------------------------------------------------


@click.group()
def awakeable() -> None:
    """Complete an awakeable a handler waits on."""


@awakeable.command("resolve")
@click.argument("awakeable_id", metavar="ID")
@click.argument("value", metavar="[JSON]", required=False)
@click.pass_context
def resolve_awakeable(ctx: click.Context, awakeable_id: str, value: str | None) -> None:
    """Resolve awakeable ID with a JSON value (default null)."""
    body = json_argument(value, "JSON") if value is not None else b"null"
    request(ingress_api(ctx), "POST", ["restate", "awakeables", awakeable_id, "resolve"], body=body,
             headers={"content-type": "application/json"})
    click.echo(f"resolved {awakeable_id}")


@awakeable.command("reject")
@click.argument("awakeable_id", metavar="ID")
@click.argument("reason", required=False, default="rejected")
@click.pass_context
def reject_awakeable(ctx: click.Context, awakeable_id: str, reason: str) -> None:
    """Reject awakeable ID; the handler gets a TerminalError(REASON)."""
    request(ingress_api(ctx), "POST", ["restate", "awakeables", awakeable_id, "reject"], body=reason.encode(),
             headers={"content-type": "text/plain"})
    click.echo(f"rejected {awakeable_id}")
