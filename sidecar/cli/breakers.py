"""``sidecar breakers list`` and ``sidecar breakers reset NAME``: the circuit breakers (``GET /breakers``)."""

from __future__ import annotations

import click

from sidecar.clock import iso_ms

from .client import admin_api, decode, echo_json, echo_table, json_option, request


@click.group()
def breakers() -> None:
    """Circuit breakers shared by the steps that name them."""


@breakers.command("list")
@json_option
@click.pass_context
def list_breakers(ctx: click.Context, as_json: bool) -> None:
    """List the breakers, their state and failures.

    The breakers are those the steps have named since the sidecar started; FAILURES counts
    consecutive transient failures."""
    reply = decode(request(admin_api(ctx), "GET", ["breakers"]))
    if as_json:
        echo_json(reply)
        return
    rows = [(b["name"], b["state"], b["failures"], "-" if b["open_until_ms"] is None else iso_ms(b["open_until_ms"]))
            for b in reply.get("breakers", [])]
    echo_table(["NAME", "STATE", "FAILURES", "OPEN UNTIL"], rows)


@breakers.command("reset")
@click.argument("name")
@json_option
@click.pass_context
def reset_breaker(ctx: click.Context, name: str, as_json: bool) -> None:
    """Close breaker NAME now: its steps run again."""
    reply = decode(request(admin_api(ctx), "POST", ["breakers", name, "reset"]))
    if as_json:
        echo_json(reply)
        return
    click.echo(f"breaker {name} closed")
