"""``sidecar nats-config``: print the nats-server configuration cluster mode needs.

Operators run their own NATS servers; this writes the settings the sidecar's guarantees depend
on (file storage synced on every write, the cluster's routes) so that nobody has to remember
them. A bad flag is a one-line message and exit status 2, as for every setting.
"""

from __future__ import annotations

import click

from sidecar.cluster.nats_config import DEFAULT_CLUSTER_NAME

from .client import ConfigFailure


@click.command("nats-config")
@click.option("--name", required=True, metavar="NAME", help="This server's name (unique in the cluster).")
@click.option("--port", type=click.IntRange(1, 65535), default=4222, show_default=True, metavar="PORT",
              help="Client port: the sidecars' --cluster URLs name it.")
@click.option("--cluster-port", type=click.IntRange(1, 65535), metavar="PORT",
              help="Port the NATS servers reach each other on (none: a lone server, one replica only).")
@click.option("--routes", default="", metavar="nats://HOST:PORT,...",
              help="The other servers' cluster ports, comma-separated.")
@click.option("--store", "store_dir", required=True, metavar="DIR", help="Where JetStream keeps its files.")
@click.option("--host", default="0.0.0.0", show_default=True, metavar="HOST",
              help="Address the client and cluster listeners bind.")
@click.option("--monitor-port", type=click.IntRange(1, 65535), metavar="PORT",
              help="HTTP monitoring port (/healthz, /jsz); none by default.")
@click.option("--cluster-name", default=DEFAULT_CLUSTER_NAME, show_default=True, metavar="NAME",
              help="The NATS cluster's name: the same on every server.")
def nats_config(name: str, port: int, cluster_port: int | None, routes: str, store_dir: str, host: str,
                monitor_port: int | None, cluster_name: str) -> None:
    """Print a nats-server configuration for a cluster of sidecars.

    It stores JetStream in files synced on every write (`sync_interval: always`): without that,
    a power loss on a majority of servers can lose acknowledged steps. Save the output and run
    `nats-server -c FILE` on each server, each with its own --name and --store.
    """
    from sidecar.cluster.nats_config import NatsConfigError, NatsServerConfig, parse_routes

    try:
        config = NatsServerConfig(name=name, port=port, cluster_port=cluster_port, routes=parse_routes(routes),
                                  store_dir=store_dir, host=host, monitor_port=monitor_port,
                                  cluster_name=cluster_name)
    except NatsConfigError as exc:
        raise ConfigFailure(str(exc)) from None
    click.echo(config.render(), nl=False)
