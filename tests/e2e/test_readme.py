"""The README's handler is a complete program: pasted into a file as it stands, it serves, a real
sidecar registers it, and its handlers answer as the README says."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import running_cluster
from tests.procs import ROOT


def _readme_handler() -> tuple[str, str]:
    """The README's Python block under "A handler", and the command line it says serves it."""
    section = (ROOT / "README.md").read_text().split("## A handler\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    (command,) = re.findall(r"`\.venv/bin/python (-m handler_sdk [^`]*)`", section)
    return code, command


async def test_the_readme_handler_runs_as_pasted_under_a_real_sidecar(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, command = _readme_handler()
    args = command.split()
    assert args[:2] == ["-m", "handler_sdk"] and args[3:] == ["--port", "9080"], command
    module, _, _ = args[2].partition(":")
    (tmp_path / f"{module}.py").write_text(code)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the directory the user saved it in
    async with running_cluster(tmp_path, http, request, ["--durability", "none", "--workers", "1"],
                               handlers=args[2]) as cluster:
        assert (await cluster.post("/Counter/alice/add", 5))[:2] == (200, 5)
        assert (await cluster.post("/Counter/alice/add", 2))[:2] == (200, 7)
        assert (await cluster.post("/Counter/alice/get"))[:2] == (200, 7)
        status, error, _ = await cluster.post("/Counter/alice/add", "five")
        assert status == 400 and "Counter/add: n: expected int, got str" in error["message"]
        audits = [line for line in cluster.handlers.log().splitlines() if line.startswith("audit:")]
        assert audits == ["audit: Counter/alice += 5", "audit: Counter/alice += 2"]
