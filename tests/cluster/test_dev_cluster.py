"""``python -m sidecar.cluster.dev`` (``make cluster``): a cluster on this machine that serves a key
through any node, and leaves nothing running once stopped."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

try:
    import sidecar.cluster.dev  # noqa: F401 - the dev cluster and the NATS servers it starts
    import sidecar.cluster.node  # noqa: F401 - the node and all it needs, membership included
except ImportError as missing:
    pytest.skip(f"cluster mode is not all there yet: {missing}", allow_module_level=True)

from tests.procs import Process, eventually, python

_NODE = re.compile(r"(node-\d+)\s+ingress http://(\S+)\s+admin http://(\S+)\s+pid (\d+)")


def _running_with(marker: bytes) -> list[int]:
    """PIDs of processes whose command line holds ``marker`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.timeout(180)
async def test_the_dev_cluster_serves_a_key_through_two_nodes_and_stops_everything(tmp_path: Path) -> None:
    base = tmp_path / "cluster"
    dev = Process("dev", python("-m", "sidecar.cluster.dev", "--nodes", "3", "--free-ports", "--base-dir", str(base)),
                  tmp_path)
    dev.start()
    try:
        async def ready_or_gone() -> bool:
            return "\nready\n" in dev.log() or not dev.running

        await eventually(ready_or_gone, timeout=120, what="the dev cluster to be ready")
        assert dev.running, f"the dev cluster exited:\n{dev.log()}"
        nodes = _NODE.findall(dev.log())
        assert [name for name, *_ in nodes] == ["node-1", "node-2", "node-3"], dev.log()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async def add(ingress: str, n: int, key: str) -> object:
                async with http.post(f"http://{ingress}/Counter/alice/add", json=n,
                                     headers={"idempotency-key": key}) as response:
                    return await response.json() if response.status == 200 else None  # 503: a hand-over

            assert await eventually(lambda: add(nodes[0][1], 5, "first"), what="an add through node-1") == 5
            assert await eventually(lambda: add(nodes[1][1], 2, "second"), what="an add through node-2") == 7
            async with http.get(f"http://{nodes[2][2]}/cluster") as response:
                view = await response.json()
            assert sorted(n["name"] for n in view["nodes"] if n["alive"]) == ["node-1", "node-2", "node-3"], view
        assert dev.stop(timeout=30) == 0, dev.log()
    finally:
        dev.stop()
    assert _running_with(str(base).encode()) == [], "a node or nats-server outlived the dev cluster"
