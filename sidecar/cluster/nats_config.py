"""The nats-server configuration cluster mode's guarantees depend on, written in one place.

An acknowledged step survives the loss of a minority of NATS servers only if every server syncs
each JetStream write to disk before it counts toward the quorum: the default (a lazy fsync every
two minutes) lost acknowledged writes in Jepsen's 2025 analysis of NATS 2.10/2.12. So
``sync_interval: always`` is not optional, and neither is file storage (the stream is created with
it, see ``nats_log.py``). ``sidecar nats-config`` prints this text for operators; the local
servers of tests, benchmarks and the dev cluster (``nats_servers.py``) are started from it, so
what is tested is what operators run.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import msgspec

#: The cluster's name in every server's ``cluster`` block: servers of one cluster must agree on it.
DEFAULT_CLUSTER_NAME = "sidecar"

#: The largest message a server takes (and so the largest log record): above the 1 MiB default,
#: since a record is a whole group commit; nats-server warns above 8 MB.
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024

#: What nats-server takes as a server or cluster name (no spaces, nothing its parser would split on).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class NatsConfigError(ValueError):
    """A setting that would give a configuration nats-server refuses, or one that breaks a guarantee."""


class NatsServerConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One nats-server of a cluster. ``cluster_port`` None: a lone server (no ``cluster`` block),
    whose streams can have only one replica."""

    name: str
    port: int
    store_dir: str
    host: str = "127.0.0.1"
    cluster_port: int | None = None
    #: The other servers' cluster listeners (``nats://host:port``); a server's own is ignored by it.
    routes: list[str] = []
    cluster_name: str = DEFAULT_CLUSTER_NAME
    #: The HTTP monitoring port (``/healthz``, ``/jsz``); None: no monitoring listener.
    monitor_port: int | None = None

    def __post_init__(self) -> None:
        for label, name in (("server name", self.name), ("cluster name", self.cluster_name)):
            if not _NAME.fullmatch(name):
                raise NatsConfigError(f"{label} {name!r}: use letters, digits, '.', '_' and '-' only")
        for label, port in (("port", self.port), ("cluster port", self.cluster_port),
                            ("monitor port", self.monitor_port)):
            if port is not None and not 1 <= port <= 65535:
                raise NatsConfigError(f"{label} {port} is not a TCP port (1-65535)")
        if not self.store_dir:
            raise NatsConfigError("the JetStream store directory must be given")
        if self.routes and self.cluster_port is None:
            raise NatsConfigError("routes need a cluster port: the servers reach each other on it")
        for route in self.routes:
            parts = urlsplit(route)
            if parts.scheme != "nats" or not parts.hostname or parts.port is None:
                raise NatsConfigError(f"route {route!r}: expected nats://HOST:PORT (a server's cluster port)")

    def render(self) -> str:
        """The configuration file's text."""
        lines = [
            f"# nats-server configuration for durable-sidecar cluster mode (server {self.name}).",
            f"server_name: {_quote(self.name)}",
            f"host: {_quote(self.host)}",
            f"port: {self.port}",
            f"max_payload: {MAX_PAYLOAD_BYTES}",
        ]
        if self.monitor_port is not None:
            lines.append(f"http: {_quote(f'{self.host}:{self.monitor_port}')}")
        lines += [
            "",
            "jetstream {",
            f"  store_dir: {_quote(self.store_dir)}",
            "  # Every write reaches the disk before it is acknowledged (the default syncs every 2 minutes",
            "  # and loses acknowledged writes when a majority of servers lose power).",
            "  sync_interval: always",
            "}",
        ]
        if self.cluster_port is not None:
            lines += [
                "",
                "cluster {",
                f"  name: {_quote(self.cluster_name)}",
                f"  host: {_quote(self.host)}",
                f"  port: {self.cluster_port}",
                "  routes: [",
                *(f"    {_quote(route)}" for route in self.routes),
                "  ]",
                "}",
            ]
        return "\n".join(lines) + "\n"


def _quote(value: str) -> str:
    """A double-quoted string in nats-server's configuration syntax (its escapes are JSON's)."""
    return json.dumps(value, ensure_ascii=False)


def parse_routes(text: str) -> list[str]:
    """``nats://h:c,nats://h:c`` as a list (empty items dropped)."""
    return [route.strip() for route in text.split(",") if route.strip()]
