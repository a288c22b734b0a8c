"""Sidecar settings: one typed Struct, filled from flags, environment variables or a TOML file.

Precedence is flags > environment (``SIDECAR_*``) > TOML file > defaults, so an operator can pin
a file in the image and still override one value per run.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from handler_sdk.logs import FORMATS, LEVELS

from ..ids import MAX_PARTITIONS
from ..webhooks.messages import webhook_problem
from .limits import LimitConfig, limit_problem, parse_limit_flag


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    data_dir: str = "./data"
    ingress: str = "127.0.0.1:8080"
    admin: str = "127.0.0.1:9070"
    #: Every admin request but ``GET /health`` must carry ``authorization: Bearer TOKEN``.
    admin_token: str | None = None
    #: Serve the admin API without a token on an address beyond loopback (refused otherwise).
    admin_insecure: bool = False
    register: list[str] = []
    #: "fsync": every group commit is synced before anything is acknowledged; "none": the OS
    #: decides when pages reach the disk (a crash of the machine, not of the process, may lose them).
    durability: str = "fsync"
    #: Request bodies over this many bytes are refused with 413.
    max_body_bytes: int = 10 * 1024 * 1024
    #: No message from the handler for this long aborts the attempt and retries it.
    inactivity_timeout_s: float = 60.0
    #: Every invocation fails terminally (408) after this long, waits included (0: never);
    #: a handler's own ``timeout`` wins.
    invocation_timeout_s: float = 0.0
    #: Finished invocations and idempotency keys are kept this long, then swept.
    retention_s: float = 24 * 3600.0
    #: Invocation-level retry defaults, used where a handler's discovery leaves a field unset.
    retry_initial_interval_s: float = 0.1
    retry_multiplier: float = 2.0
    retry_max_interval_s: float = 10.0
    retry_max_attempts: int = 50
    #: WebSockets held open to each deployment; invocations are multiplexed over them.
    connections_per_deployment: int = 2
    #: LMDB map size: address space reserved, not disk used.
    map_size_bytes: int = 64 * 1024**3
    #: Worker processes sharing the ingress port, each owning a share of the partitions
    #: (0: 1 below 4 usable cores, else half of them; see ``server.default_workers``).
    workers: int = 0
    #: Partitions of the key space; fixed when a data directory is created, read from it after.
    partitions: int = 64
    #: A client's call or send to an object key that already has this many invocations waiting
    #: in its line is refused with 429 and ``Retry-After`` (0: no limit).
    max_queue_per_key: int = 10_000
    #: A worker that holds this many unfinished invocations (in line, delayed, running or
    #: waiting) refuses new ones from clients with 503 and ``Retry-After`` (0: no limit).
    max_invocations: int = 100_000
    #: Payloads over this many bytes (inputs, step and state values, call inputs and results,
    #: promise and awakeable values, events, outputs) are stored once per content, as blobs.
    blob_threshold_bytes: int = 65_536
    #: The largest step or state value kept: a larger one fails its step as terminal (413).
    max_payload_bytes: int = 64 * 1024 * 1024
    #: An invocation whose journal, or a key whose state, grows past this many bytes gets a
    #: ``warning`` event, a field in its admin detail and a metric.
    warn_journal_bytes: int = 16 * 1024 * 1024
    warn_state_bytes: int = 16 * 1024 * 1024
    #: The least important log lines written: debug, info (attempts, backoffs, recoveries), warning, error.
    log_level: str = "info"
    #: "text" for people; "json": one object per line, with the invocation ID as a field.
    log_format: str = "text"
    #: Sidecar-wide groups of steps (``ctx.run(..., limit=NAME)``): ``[limits.NAME]`` in TOML.
    limits: dict[str, LimitConfig] = {}
    #: An Ed25519 private key (PEM) that signs every request to a handler service ("": none).
    signing_key: str = ""
    #: Receivers of a signed POST for each invocation that ends or pauses (docs/operations.md#webhooks),
    #: the events they get (none listed: all), the ``whsec_`` secret that signs them, and how long
    #: one delivery may take before it counts as failed and is retried.
    webhooks: list[str] = []
    webhook_events: list[str] = []
    webhook_secret: str | None = None
    webhook_timeout_s: float = 10.0
    #: Cluster mode (docs/cluster.md): the NATS servers of the cluster's log (none: one machine,
    #: LMDB alone), this node's name (unique and the same across its restarts), and where it
    #: listens for requests other nodes hand it (port 0: any free one, told to the others).
    cluster: list[str] = []
    node: str | None = None
    mesh: str = "127.0.0.1:0"
    #: How often a node snapshots its store into the log's object store and trims the log below
    #: the oldest snapshot (docs/cluster.md#snapshots-and-trimming).
    snapshot_interval_s: float = 300.0


#: A shorter admin token is guessable.
MIN_TOKEN_LENGTH = 16


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be the admin token (``None``: it can)."""
    if len(token) < MIN_TOKEN_LENGTH:
        return f"admin_token must be at least {MIN_TOKEN_LENGTH} characters (e.g. `openssl rand -hex 32`)"
    if not all("!" <= ch <= "~" for ch in token):
        return "admin_token must be printable ASCII without spaces (it travels in an HTTP header)"
    return None


class ConfigError(ValueError):
    """A setting could not be read: the message names the source and the field."""


ENV_PREFIX = "SIDECAR_"
#: Settings whose environment variable is a comma-separated list.
_LISTS = ("register", "webhooks", "webhook_events", "cluster")

#: A reference takes 48 bytes: a smaller threshold would store references bigger than payloads.
MIN_BLOB_THRESHOLD = 64


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in Settings.__struct_fields__:
        raw = environ.get(ENV_PREFIX + field.upper())
        if raw is None:
            continue
        if field == "limits":  # as --limit, groups separated by ";"
            try:
                values[field] = dict(parse_limit_flag(group) for group in raw.split(";") if group.strip())
            except ValueError as exc:
                raise ConfigError(f"invalid setting: {ENV_PREFIX}LIMITS: {exc}") from None
        else:
            values[field] = raw.split(",") if field in _LISTS else raw
    return values


def load_settings(
    *, config_file: str | None = None, overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Merge defaults, TOML file, environment and explicit overrides (``None`` values ignored)."""
    merged: dict[str, Any] = {}
    if config_file:
        try:
            merged.update(tomllib.loads(Path(config_file).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from None
    for source in (_from_env(dict(os.environ) if environ is None else environ),
                   {k: v for k, v in (overrides or {}).items() if v is not None and v != ()}):
        if "limits" in source:  # a group replaces the one of the same name, not all of them
            source["limits"] = {**(merged.get("limits") or {}), **source["limits"]}
        merged.update(source)
    try:
        settings = msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid setting: {exc}") from None
    if not 1 <= settings.partitions <= MAX_PARTITIONS:
        raise ConfigError(
            f"invalid setting: partitions must be between 1 and {MAX_PARTITIONS}, not {settings.partitions}")
    for name in ("max_queue_per_key", "max_invocations"):
        if getattr(settings, name) < 0:
            raise ConfigError(f"invalid setting: {name} must be 0 (no limit) or more, not {getattr(settings, name)}")
    if settings.blob_threshold_bytes < MIN_BLOB_THRESHOLD:
        raise ConfigError(f"invalid setting: blob_threshold_bytes must be {MIN_BLOB_THRESHOLD} or more, "
                          f"not {settings.blob_threshold_bytes}")
    for name in ("max_payload_bytes", "warn_journal_bytes", "warn_state_bytes"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"invalid setting: {name} must be 1 or more, not {getattr(settings, name)}")
    if settings.durability not in ("fsync", "none"):
        raise ConfigError(f"invalid setting: durability must be 'fsync' or 'none', not {settings.durability!r}")
    if settings.log_level not in LEVELS:
        raise ConfigError(f"invalid setting: log_level must be one of {', '.join(LEVELS)}, not {settings.log_level!r}")
    if settings.log_format not in FORMATS:
        raise ConfigError(f"invalid setting: log_format must be one of {', '.join(FORMATS)}, not {settings.log_format!r}")
    for name in ("ingress", "admin", "mesh"):
        parse_address(getattr(settings, name), name, any_port=name == "mesh")
    if (problem := cluster_problem(settings)) is not None:
        raise ConfigError(f"invalid setting: {problem}")
    if settings.admin_token is not None and (problem := token_problem(settings.admin_token)) is not None:
        raise ConfigError(f"invalid setting: {problem}")
    if settings.admin_token is None and not settings.admin_insecure and not is_loopback(settings.admin):
        raise ConfigError(
            f"the admin API at {settings.admin} would be reachable beyond this machine without a token: "
            "give it --admin-token (or SIDECAR_ADMIN_TOKEN), or --admin-insecure to serve it open")
    if (problem := webhook_problem(settings.webhooks, settings.webhook_events, settings.webhook_secret)) is not None:
        raise ConfigError(f"invalid setting: {problem}")
    if not settings.webhook_timeout_s > 0:
        raise ConfigError(f"invalid setting: webhook_timeout_s must be more than 0, not {settings.webhook_timeout_s}")
    for name, limit in settings.limits.items():
        if (problem := limit_problem(name, limit)) is not None:
            raise ConfigError(f"invalid setting: {problem}")
    return settings


def cluster_problem(settings: Settings) -> str | None:
    """Why the cluster settings cannot run a node (``None``: they can, or there is no cluster)."""
    if not settings.cluster:
        return "node is given without cluster (the NATS servers' URLs)" if settings.node else None
    if not settings.node:
        return "a cluster node needs a name: give --node NAME (the same across its restarts)"
    if not all(ch.isalnum() or ch in "-_" for ch in settings.node) or len(settings.node) > 64:
        return f"node must be letters, digits, - and _ (at most 64), not {settings.node!r}"
    for url in settings.cluster:
        if not url.startswith(("nats://", "tls://")):
            return f"cluster URLs must start with nats:// or tls://, not {url!r}"
    if settings.workers > 1:
        return f"a cluster node runs one worker, not workers = {settings.workers}"
    if not settings.snapshot_interval_s > 0:
        return f"snapshot_interval_s must be more than 0, not {settings.snapshot_interval_s}"
    return None


def is_loopback(address: str) -> bool:
    """Whether ``HOST:PORT`` listens on this machine only (a name other than localhost may
    resolve anywhere, so it counts as beyond)."""
    host = parse_address(address)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_address(value: str, name: str = "address", *, any_port: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port), with a message that names the setting when malformed.
    ``any_port``: port 0 (any free one) is allowed too."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not (0 if any_port else 1) <= int(port) < 65536:
        raise ConfigError(f"invalid setting: {name} must be HOST:PORT, not {value!r}")
    return host, int(port)
