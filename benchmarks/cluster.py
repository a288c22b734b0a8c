"""The scenarios through a cluster: 3 NATS servers and 3 sidecar nodes on this machine, the
load sent to the first node's ingress (which forwards each request whose partition another
node owns). ``python -m benchmarks.run --systems cluster`` (see ``run.py``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from sidecar.cluster.nats_servers import NatsServers

if TYPE_CHECKING:
    from .run import Record

from .procs import Procs, free_port, http_ok, sidecar_executable, wait_until


async def bench_cluster(args: argparse.Namespace, log_dir: Path, session: aiohttp.ClientSession) -> list[Record]:
    from .run import SCENARIOS, commit_counts, run_scenario, services_listed

    procs = Procs(log_dir)
    servers = NatsServers(log_dir / "nats", 3)
    await servers.start()
    try:
        handler_port = free_port()
        handler_url = f"http://127.0.0.1:{handler_port}"
        procs.start("handlers", [sys.executable, "-m", "handler_sdk", "benchmarks.scenarios:ALL",
                                 "--port", str(handler_port)])
        await wait_until("handler service /discover", http_ok(session, f"{handler_url}/discover"), procs)
        nodes = []
        for i in range(3):
            ingress, admin = free_port(), free_port()
            procs.start(f"node-{i + 1}", [
                *sidecar_executable(), "serve", "--cluster", ",".join(servers.urls), "--node", f"node-{i + 1}",
                "--data-dir", str(log_dir / f"node-{i + 1}"), "--ingress", f"127.0.0.1:{ingress}",
                "--admin", f"127.0.0.1:{admin}", "--register", handler_url])
            nodes.append((ingress, admin))
        for ingress, admin in nodes:
            await wait_until("Counter and Steps in GET /services",
                             services_listed(session, f"http://127.0.0.1:{admin}/services", {"Counter", "Steps"}),
                             procs)
        base = f"http://127.0.0.1:{nodes[0][0]}"
        admin_url = f"http://127.0.0.1:{nodes[0][1]}"
        records = []
        for name in args.scenarios:
            before = await commit_counts(session, admin_url)
            record = await run_scenario(SCENARIOS[name], "cluster", base, procs, args, session)
            commits, batches = (a - b for a, b in zip(await commit_counts(session, admin_url), before))
            record.group_commit_mean = round(batches / commits, 1) if commits else None
            records.append(record)
        return records
    finally:
        procs.close()
        servers.stop()
