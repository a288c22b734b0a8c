"""Install the benchmark's peers into a scratch directory, and record what is usable and why not.

    python -m benchmarks.peers.install [--dir .bench/peers] [--force] [--strict]

Idempotent: each part is redone only when its pinned versions changed or it does not work.
- ``DIR/venv``: a venv of its own (never the project's) with the Python packages pinned in
  ``benchmarks/peers/requirements.txt``: Restate's (restate-sdk, hypercorn, uvloop) and DBOS's
  (dbos, uvicorn, uvloop, httptools), installed as two separate pip runs, so that a failure of one
  leaves the other usable.
- ``DIR/npm``: ``@restatedev/restate-server`` at the version in ``benchmarks/peers/package.json``,
  installed with ``SCARF_ANALYTICS=false npm install --ignore-scripts`` (the package ships its
  binary per platform as an optional dependency; no install script is needed, and none runs).
- ``DIR/status.json``: per peer, ``available`` and otherwise the ``reason``, the versions found, and
  what the Restate server needs at run time (``unshare -n`` and ``ip``, because it tries to reach
  the internet when it starts and must only ever run in a loopback-only network namespace).

Exit status 0 even when a peer is unavailable (``benchmarks.run --peers`` reports it in its table);
``--strict`` makes that an exit status of 1. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
DEFAULT_DIR = REPO_ROOT / ".bench" / "peers"
REQUIREMENTS = HERE / "requirements.txt"
PACKAGE_JSON = HERE / "package.json"

#: per peer: the packages pip installs (at the versions in requirements.txt) and the modules that
#: must then import
PY_GROUPS = {
    "restate": (["restate-sdk", "hypercorn", "uvloop"], ["restate", "hypercorn", "uvloop"]),
    "dbos": (["dbos", "uvicorn", "uvloop", "httptools"], ["dbos", "uvicorn", "uvloop", "httptools"]),
}
RESTATE_NPM = "@restatedev/restate-server"
_NPM_PLATFORMS = {("Linux", "x86_64"): "linux-x64", ("Linux", "aarch64"): "linux-arm64",
                  ("Darwin", "x86_64"): "darwin-x64", ("Darwin", "arm64"): "darwin-arm64"}


def venv_python(scratch: Path) -> Path:
    return scratch / "venv" / "bin" / "python"


def restate_binary(scratch: Path) -> Path | None:
    plat = _NPM_PLATFORMS.get((platform.system(), platform.machine()))
    if plat is None:
        return None
    return scratch / "npm" / "node_modules" / "@restatedev" / f"restate-server-{plat}" / "bin" / "restate-server"


def pinned_restate_version() -> str:
    return json.loads(PACKAGE_JSON.read_text())["dependencies"][RESTATE_NPM]


def netns_problem() -> str | None:
    """Why a loopback-only network namespace cannot be made here, or None when it can.

    The Restate server is only ever started inside one (``unshare -n``, then ``ip link set lo up``).
    """
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"'{tool}' not found (needed to run the Restate server in a loopback-only network namespace)"
    try:
        probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True,
                               text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"'unshare -n' failed: {type(exc).__name__}: {exc}"
    if probe.returncode != 0:
        why = (probe.stderr or probe.stdout).strip().splitlines()
        return ("'unshare -n ip link set lo up' failed (a network namespace needs root or "
                f"CAP_SYS_ADMIN): {why[-1] if why else f'exit {probe.returncode}'}")
    return None


def _tail(text: str, lines: int = 3) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip() and "is ignored: it is neither" not in line]
    return " | ".join(kept[-lines:])[-400:]


def _run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float = 900) -> tuple[bool, str]:
    print("  $ " + " ".join(argv), flush=True)
    try:
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    if done.returncode != 0:
        return False, f"exit {done.returncode}: {_tail(done.stderr + done.stdout)}"
    return True, ""


def _py_versions(scratch: Path, modules: list[str], dists: list[str]) -> tuple[dict[str, str], str]:
    """Import ``modules`` in the peers' venv; the versions of ``dists``, or why it failed."""
    code = (
        "import importlib, importlib.metadata as m, json, sys\n"
        f"for mod in {modules!r}: importlib.import_module(mod)\n"
        f"print(json.dumps({{d: m.version(d) for d in {dists!r}}}))\n"
    )
    try:
        done = subprocess.run([str(venv_python(scratch)), "-c", code], capture_output=True, text=True,
                              timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {}, f"{type(exc).__name__}: {exc}"
    if done.returncode != 0:
        return {}, f"import failed: {_tail(done.stderr)}"
    return json.loads(done.stdout.strip().splitlines()[-1]), ""


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def install_venv(scratch: Path, force: bool) -> dict[str, dict[str, object]]:
    """The peers' venv and both pip groups; per peer ``{"ok", "reason", "versions"}``."""
    out: dict[str, dict[str, object]] = {}
    py = venv_python(scratch)
    if force and (scratch / "venv").exists():
        shutil.rmtree(scratch / "venv")
    if not py.exists():
        # Built from the interpreter running this (a venv's python builds one on its base interpreter).
        ok, why = _run([sys.executable, "-m", "venv", str(scratch / "venv")])
        if not ok:
            return {peer: {"ok": False, "reason": f"could not create the venv: {why}", "versions": {}}
                    for peer in PY_GROUPS}
    for peer, (dists, modules) in PY_GROUPS.items():
        stamp = scratch / "venv" / f".installed-{peer}"
        want = _digest(REQUIREMENTS.read_text(), dists)
        versions, why = ({}, "not installed")
        if stamp.exists() and stamp.read_text() == want:
            versions, why = _py_versions(scratch, modules, dists)
        if why:
            print(f"{peer}: pip install {' '.join(dists)} (pinned in {REQUIREMENTS.relative_to(REPO_ROOT)})")
            ok, why = _run([str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                            "-c", str(REQUIREMENTS), *dists])
            if ok:
                versions, why = _py_versions(scratch, modules, dists)
            else:
                why = f"pip install {' '.join(dists)} failed: {why}"
            if not why:
                stamp.write_text(want)
        out[peer] = {"ok": not why, "reason": why, "versions": versions}
    return out


def install_npm(scratch: Path, force: bool) -> dict[str, object]:
    """The Restate server from npm: ``{"ok", "reason", "version", "binary"}``."""
    want = pinned_restate_version()
    binary = restate_binary(scratch)
    if binary is None:
        return {"ok": False, "reason": f"no {RESTATE_NPM} binary for {platform.system()} {platform.machine()}",
                "version": "", "binary": ""}
    version = _binary_version(binary)
    if force or version != want:
        npm = shutil.which("npm")
        if npm is None:
            return {"ok": False, "reason": "'npm' not found (install Node.js and npm)", "version": "", "binary": ""}
        npm_dir = scratch / "npm"
        npm_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PACKAGE_JSON, npm_dir / "package.json")
        print(f"restate: npm install {RESTATE_NPM}@{want}")
        # --ignore-scripts: the binary arrives as an optional per-platform package and needs no
        # install script; SCARF_ANALYTICS=false: no install analytics call.
        env = dict(os.environ, SCARF_ANALYTICS="false")
        ok, why = _run([npm, "install", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=npm_dir, env=env)
        if not ok:
            return {"ok": False, "reason": f"npm install {RESTATE_NPM} failed: {why}", "version": "", "binary": ""}
        version = _binary_version(binary)
        if version != want:
            return {"ok": False, "version": version, "binary": str(binary),
                    "reason": f"after npm install, {binary} reports {version or 'nothing'} (wanted {want})"}
    return {"ok": True, "reason": "", "version": version, "binary": str(binary)}


def _binary_version(binary: Path) -> str:
    """``restate-server --version`` (it only prints; it does not start a server or reach out)."""
    if not binary.exists():
        return ""
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    words = done.stdout.split()
    return words[-1] if done.returncode == 0 and words else ""


def install(scratch: Path = DEFAULT_DIR, *, force: bool = False) -> dict[str, object]:
    """Install (or check) everything; write and return the status document."""
    scratch = scratch.resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    py = install_venv(scratch, force)
    npm = install_npm(scratch, force)
    netns = netns_problem()
    reasons = [str(py["restate"]["reason"]), str(npm["reason"]), netns or ""]
    restate = {
        "available": not any(reasons),
        "reason": "; ".join(r for r in reasons if r),
        "versions": {**py["restate"]["versions"], "restate-server": npm["version"]},  # type: ignore[dict-item]
        "binary": npm["binary"],
    }
    dbos = {"available": bool(py["dbos"]["ok"]), "reason": py["dbos"]["reason"], "versions": py["dbos"]["versions"]}
    status = {
        "scratch": str(scratch),
        "python": str(venv_python(scratch)),
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.monotonic() - started, 1),
        "peers": {"restate": restate, "dbos": dbos},
    }
    (scratch / "status.json").write_text(json.dumps(status, indent=2) + "\n")
    return status


def print_status(status: dict[str, object]) -> None:
    for name, peer in status["peers"].items():  # type: ignore[union-attr]
        versions = ", ".join(f"{k} {v}" for k, v in peer["versions"].items() if v)
        if peer["available"]:
            print(f"{name}: available ({versions})")
        else:
            print(f"{name}: UNAVAILABLE: {peer['reason']}")
    print(f"status: {Path(str(status['scratch'])) / 'status.json'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peers.install", description=__doc__.split("\n")[0])
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the scratch directory (default: .bench/peers)")
    p.add_argument("--force", action="store_true", help="reinstall everything from scratch")
    p.add_argument("--strict", action="store_true", help="exit 1 when a peer is unavailable")
    args = p.parse_args(argv)
    status = install(args.dir, force=args.force)
    print_status(status)
    unavailable = [n for n, peer in status["peers"].items() if not peer["available"]]  # type: ignore[union-attr]
    return 1 if args.strict and unavailable else 0


if __name__ == "__main__":
    sys.exit(main())
