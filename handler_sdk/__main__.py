"""``python -m handler_sdk MODULE:NAME [MODULE:NAME ...] [--host H] [--port P] [--suspend-after S]
[--reuse-port] [--blob-cache-bytes N] [--log-level L] [--log-format text|json]``: serve services.

Each ``NAME`` is a Service, VirtualObject or Workflow defined in its ``MODULE``, or a list of them;
one process serves them all.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from ._blob_cache import DEFAULT_CACHE_BYTES
from ._definition import Definition, _Definition
from ._extras import MissingExtra
from ._identity import IdentityKeyError
from ._server import serve
from .logs import FORMATS, LEVELS, configure_logging


def load(target: str) -> list[Definition]:
    """Import ``MODULE:NAME`` and return the services it names."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected MODULE:NAME, got {target!r}")
    # Like `python -m`, resolve modules from the working directory first.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    try:
        value = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    services = list(value) if isinstance(value, (list, tuple)) else [value]
    for service in services:
        if not isinstance(service, _Definition):
            raise ValueError(f"{target} is not a Service, VirtualObject or Workflow (or a list of them)")
    return services


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m handler_sdk", description="Serve a module's handler services to the sidecar.",
        epilog="HANDLER_IDENTITY_KEYS (PEM public keys): serve only requests that a sidecar holding one of "
               "their private keys signed (sidecar serve --signing-key).",
    )
    parser.add_argument("targets", metavar="MODULE:NAME", nargs="+")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9080)
    parser.add_argument("--heartbeat-interval", type=float, default=5.0, metavar="SECONDS")
    parser.add_argument(
        "--suspend-after", type=float, default=1.0, metavar="SECONDS",
        help="how long a handler that only awaits timers or awakeables runs before it suspends",
    )
    parser.add_argument(
        "--reuse-port", action="store_true",
        help="let several copies of this service bind the same port, to use several cores",
    )
    parser.add_argument("--blob-cache-bytes", type=int, default=DEFAULT_CACHE_BYTES, metavar="BYTES",
                        help="the cache of large payloads that spares replays sending them again "
                             f"(0: none) [{DEFAULT_CACHE_BYTES}]")
    parser.add_argument("--log-level", choices=LEVELS, default="info",
                        help="the least important log lines shown (info: start and step retries) [info]")
    parser.add_argument("--log-format", choices=FORMATS, default="text",
                        help="text for people, json for one object per line [text]")
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        services = [service for target in args.targets for service in load(target)]
    except (ValueError, ImportError) as exc:
        parser.error(str(exc))
    names = [service.name for service in services]
    if twice := sorted({name for name in names if names.count(name) > 1}):
        parser.error(f"two services are named {twice[0]!r}: each name may be served once")
    if not args.suspend_after >= 0:  # NaN too
        parser.error("--suspend-after must be zero or more")
    if args.blob_cache_bytes < 0:
        parser.error("--blob-cache-bytes must be zero or more")
    try:
        serve(services, host=args.host, port=args.port, heartbeat_interval=args.heartbeat_interval,
              suspend_after=args.suspend_after, reuse_port=args.reuse_port, blob_cache_bytes=args.blob_cache_bytes)
    except (IdentityKeyError, MissingExtra) as exc:
        parser.exit(2, f"python -m handler_sdk: {exc}\n")
    except OSError as exc:  # the port is taken, or the host is not ours: say so, without a traceback
        hint = "" if args.reuse_port else " (to share the port between copies of this service, give each --reuse-port)"
        parser.exit(1, f"python -m handler_sdk: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}{hint}\n")


if __name__ == "__main__":
    main()
