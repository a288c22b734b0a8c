"""``sidecar costs``: what steps cost, in total and by step name (``GET /costs``)."""

from __future__ import annotations

from urllib.parse import unquote

import click

from .client import admin_api, decode, echo_json, echo_table, json_option, raise_for_status, request


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
    reply = request(admin_api(ctx), "GET", ["services", service], check=False)
    if reply.status == 404:
        raise click.ClickException(f"no service {service!r} is registered, so {target!r} could name a handler or "
                                   "a key: write Object/key/handler, or Service for all of it")
    raise_for_status(reply)
    return {"service": service, "handler" if decode(reply).get("kind") == "service" else "key": second}


def _since(text: str) -> str:
    """An ISO 8601 time or epoch ms as it is (the sidecar checks it); a duration, back from now."""
    from sidecar.clock import now_ms
    from sidecar.durations import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError:
        return text
    return str(now_ms() - int(seconds * 1000))


@click.command()
@click.argument("target", required=False)
@click.option("--step", metavar="NAME", help="Only the steps of this name.")
@click.option("--since", metavar="TIME",
              help="Only what was spent from TIME on: ISO 8601 (2025-01-31T09:00:00Z), epoch ms, or a duration "
                   "back from now (24h).")
@json_option
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
    reply = decode(request(admin_api(ctx), "GET", ["costs"], query=query))
    if as_json:
        echo_json(reply)
        return
    by_step = reply.get("by_step") or {}
    count = reply.get("invocations", 0)
    click.echo(f"total: {reply.get('total')} over {count} invocation{'' if count == 1 else 's'}")
    if by_step:
        echo_table(["STEP", "COST"], sorted(by_step.items(), key=lambda item: (-item[1], item[0])))
