"""`make run` ends with everything it started, however it is stopped (real processes, real signals)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.procs import ROOT, eventually, free_port

_MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(_MAKE is None or not sys.platform.startswith("linux"),
                                reason="needs make and Linux (/proc, PR_SET_PDEATHSIG)")


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent, state, start time) of a live process, None if there is none by that PID."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """Every process below ``root``: PID -> start time (a reused PID is another process)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            children.setdefault(stat[0], []).append(int(entry))
    found: dict[int, int] = {}

    def walk(pid: int) -> Iterator[int]:
        for child in children.get(pid, []):
            yield child
            yield from walk(child)

    for pid in walk(root):
        if (stat := _stat(pid)) is not None:
            found[pid] = stat[2]
    return found


def _alive(processes: dict[int, int]) -> list[int]:
    """Those of ``processes`` still running (a zombie has ended: only its exit status is left)."""
    return [pid for pid, started in processes.items()
            if (stat := _stat(pid)) is not None and stat[2] == started and stat[1] != "Z"]


@pytest.mark.parametrize("stop", ["SIGTERM make", "SIGKILL make", "Ctrl-C", "SIGKILL the script"])
async def test_stopping_make_run_ends_every_process_it_started(
    tmp_path: Path, http: aiohttp.ClientSession, stop: str,
) -> None:
    admin = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "SIDECAR_DATA_DIR": str(tmp_path / "data"), "SIDECAR_INGRESS": f"127.0.0.1:{free_port()}",
           "SIDECAR_ADMIN": admin, "HANDLER_PORT": str(free_port()), "SIDECAR_WORKERS": "2",
           "PYTHONUNBUFFERED": "1"}
    env.pop("RUN_EXAMPLE_GUARDED", None)
    log = (tmp_path / "make-run.log").open("wb")
    # -o: the venv is there already (the one running this test); do not reinstall it.
    venv = Path(sys.prefix)
    make = subprocess.Popen([_MAKE or "make", "-s", "-o", f"{venv}/.installed-test", "run", f"VENV={venv}"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    tree: dict[int, int] = {}
    try:
        async def serving() -> dict[int, int]:
            assert make.poll() is None, (tmp_path / "make-run.log").read_text()
            async with http.get(f"http://{admin}/services") as response:
                registered = response.status == 200 and bool((await response.json())["services"])
            tree = _descendants(make.pid)
            # the script, the handler service, the supervisor, the writer and two workers
            return tree if registered and len(tree) >= 6 else {}

        tree = await eventually(serving, timeout=60, what="make run to serve the counter example")
        tree[make.pid] = _stat(make.pid)[2]  # type: ignore[index]
        script = next(pid for pid in tree if _stat(pid)[0] == make.pid)  # type: ignore[index]
        if stop == "SIGTERM make":
            make.send_signal(signal.SIGTERM)
        elif stop == "SIGKILL make":
            make.send_signal(signal.SIGKILL)
        elif stop == "Ctrl-C":  # what a terminal sends: SIGINT to its foreground process group
            os.killpg(make.pid, signal.SIGINT)
        else:
            os.kill(script, signal.SIGKILL)

        async def all_gone() -> bool:
            make.poll()  # reap it: our own child stays a zombie until we do
            left = _alive(tree)
            assert not left, f"still running: {left}"
            return True

        await eventually(all_gone, timeout=20, what=f"every process of make run to end after {stop}")
    finally:
        for pid in _alive(tree) or _alive(_descendants(make.pid)):  # whatever a failure left behind
            if pid != make.pid:
                os.kill(pid, signal.SIGKILL)
        if make.poll() is None:
            make.kill()
        make.wait()
