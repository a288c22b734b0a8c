"""One worker of ``sidecar serve --workers N``, started by the supervisor (not by hand)."""

from __future__ import annotations

import argparse
import os

import msgspec

from ..cli.config import Settings
from .server import WorkerSpec, configure_logging, run_loop, serve

#: The supervisor passes the sidecar's settings, as JSON, in this environment variable.
SETTINGS_ENV = "SIDECAR_WORKER_SETTINGS"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sidecar.process.worker")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--writer-fd", type=int, required=True)
    args = parser.parse_args()
    settings = msgspec.json.decode(os.environ[SETTINGS_ENV], type=Settings)
    configure_logging(settings)
    spec = WorkerSpec(index=args.index, workers=args.workers, partitions=args.partitions, writer_fd=args.writer_fd)
    raise SystemExit(run_loop(serve(settings, spec)))


if __name__ == "__main__":
    main()
