"""``sidecar nats-config``: the printed configuration runs a JetStream cluster with the settings
the guarantees need, and bad flags are one-line errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import aiohttp
import nats

from tests.procs import Process, eventually, free_port, sidecar_cli


def _nats_config(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(sidecar_cli("nats-config", *args), capture_output=True, text=True, timeout=60)


async def test_printed_configs_start_a_cluster_that_syncs_every_write(tmp_path: Path) -> None:
    from sidecar.cluster.nats_servers import nats_server_binary

    ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
    routes = ",".join(f"nats://127.0.0.1:{cluster}" for _, cluster, _ in ports)
    servers = []
    for i, (client, cluster, monitor) in enumerate(ports):
        printed = _nats_config("--name", f"s{i}", "--host", "127.0.0.1", "--port", str(client),
                               "--cluster-port", str(cluster), "--routes", routes,
                               "--store", str(tmp_path / f"s{i}"), "--monitor-port", str(monitor))
        assert printed.returncode == 0, printed.stderr
        (tmp_path / f"s{i}.conf").write_text(printed.stdout)
        servers.append(Process(f"s{i}", [nats_server_binary(), "-c", str(tmp_path / f"s{i}.conf")], tmp_path).start())
    try:
        async with aiohttp.ClientSession() as http:
            async def meta_leader() -> str:
                async with http.get(f"http://127.0.0.1:{ports[0][2]}/jsz") as answer:
                    return str((await answer.json()).get("meta_cluster", {}).get("leader") or "")
            await eventually(meta_leader, what="a JetStream meta leader")
            async with http.get(f"http://127.0.0.1:{ports[1][2]}/varz") as answer:
                varz = await answer.json()
        assert varz["jetstream"]["config"]["sync_always"] is True
        assert varz["cluster"]["name"] == "sidecar" and varz["server_name"] == "s1"

        client = await nats.connect([f"nats://127.0.0.1:{p}" for p, _, _ in ports])
        try:
            js = client.jetstream()
            info = await eventually(lambda: js.add_stream(name="R3", subjects=["r3"], num_replicas=3),
                                    what="a 3-replica stream")
            assert info.config.num_replicas == 3
            assert (await js.publish("r3", b"x")).seq == 1
        finally:
            await client.close()
    finally:
        for server in servers:
            server.stop()


def test_bad_flags_are_one_line_errors() -> None:
    for args, message in [
        (["--name", "a b", "--store", "/s"], "server name 'a b'"),
        (["--name", "a", "--store", "/s", "--routes", "nats://b:6222"], "routes need a cluster port"),
        (["--name", "a", "--store", "/s", "--cluster-port", "6222", "--routes", "b:6222"], "expected nats://HOST:PORT"),
        (["--name", "a", "--store", "/s", "--port", "0"], "0 is not in the range"),
        (["--store", "/s"], "Missing option '--name'"),
    ]:
        done = _nats_config(*args)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
