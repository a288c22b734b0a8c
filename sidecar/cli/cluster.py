"""``sidecar cluster``: the nodes of a cluster and the partitions each serves (``GET /cluster``)."""

from __future__ import annotations

from itertools import groupby

import click

from .client import admin_api, decode, echo_json, echo_table, json_option, request


@click.command()
@json_option
@click.pass_context
def cluster(ctx: click.Context, as_json: bool) -> None:
    """The nodes of the cluster and the partitions each serves."""
    reply = decode(request(admin_api(ctx), "GET", ["cluster"]))
    if as_json:
        echo_json(reply)
        return
    rows = [[node["name"], "yes" if node["alive"] else "no", str(len(node["partitions"])),
             _ranges(node["partitions"])] for node in reply.get("nodes", [])]
    echo_table(["NODE", "ALIVE", "PARTITIONS", "WHICH"], rows)
    served = sum(len(node["partitions"]) for node in reply.get("nodes", []) if node["alive"])
    click.echo(f"{served} of {reply.get('partitions', '?')} partitions served")


def _ranges(partitions: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2,5``: consecutive numbers keep the same distance from their place."""
    spans = []
    for _, run in groupby(enumerate(partitions), key=lambda pair: pair[1] - pair[0]):
        numbers = [partition for _, partition in run]
        spans.append(str(numbers[0]) if len(numbers) == 1 else f"{numbers[0]}-{numbers[-1]}")
    return ",".join(spans)
