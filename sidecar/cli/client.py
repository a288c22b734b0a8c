"""How the client commands talk to a running sidecar: one HTTP round trip each, every failure a
one-line message (exit 1; 2 for a bad setting), and the shared ways of printing answers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import quote

import aiohttp
import click
import msgspec
from yarl import URL

from .config import ConfigError, parse_address

#: The admin token the client commands send, as ``sidecar serve`` reads it.
ADMIN_TOKEN_ENV = "SIDECAR_ADMIN_TOKEN"

#: Connecting is quick or broken; waiting for a handler's answer may legitimately take long.
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10)


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


class ConfigFailure(click.ClickException):
    """A setting (flag, environment or file) or the data directory is wrong: the operator must
    act before a start can work, hence exit status 2."""

    exit_code = 2


def request(
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
        raise ConfigFailure(str(exc)) from None
    path = "/" + "/".join(quote(segment, safe="") for segment in segments)
    url = URL.build(scheme="http", host=host.strip("[]"), port=port, path=path, encoded=True)
    if query:
        url = url.with_query(dict(query))

    if endpoint.name == "admin" and (token := os.environ.get(ADMIN_TOKEN_ENV)):
        headers = {**(headers or {}), "authorization": f"Bearer {token}"}

    async def round_trip() -> Reply:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
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
        raise_for_status(reply)
    return reply


def raise_for_status(reply: Reply) -> None:
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


def json_argument(raw: str, param: str) -> bytes:
    """Check client-side that ``raw`` is JSON, and pass its bytes on untouched."""
    data = raw.encode()
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc}): {raw!r}", param_hint=param) from None
    return data


def decode(reply: Reply) -> dict[str, Any]:
    try:
        decoded = msgspec.json.decode(reply.body)
    except msgspec.DecodeError:
        decoded = None
    if not isinstance(decoded, dict):
        raise click.ClickException(
            f"the sidecar answered with something that is not a JSON object: {reply.body[:200]!r}")
    return decoded


def echo_json(value: Any) -> None:
    click.echo(msgspec.json.format(msgspec.json.encode(value), indent=2))


def compact(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [list(headers)] + [["" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())




def json_option(fn: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print the sidecar's JSON answer as it is.")(fn)


def admin_api(ctx: click.Context) -> Endpoint:
    return Endpoint("admin", ctx.find_root().params["admin"])


def ingress_api(ctx: click.Context) -> Endpoint:
    return Endpoint("ingress", ctx.find_root().params["ingress"])
