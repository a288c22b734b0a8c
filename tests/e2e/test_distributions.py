"""The two distributions, as a release builds them (``python -m build``: the sdist, then the wheel
from the sdist), hold their own package and nothing else, with the metadata users rely on; and
the SDK's wheel, installed alone beside aiohttp and msgspec (no sidecar, LMDB, click,
prometheus-client, nor any extra), serves its README's handler to a real sidecar."""

from __future__ import annotations

import email.parser
import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from email.message import Message
from importlib.metadata import Distribution, distribution
from pathlib import Path
from typing import NamedTuple

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from packaging.requirements import Requirement

from tests.e2e.conftest import START_TIMEOUT_S
from tests.procs import ROOT, Process, eventually, free_port, sidecar_cli

VERSION_FILE = ROOT / "handler_sdk" / "_version.py"
#: What the SDK may import only through an extra: the module, and the extra that provides it.
EXTRA_MODULES = {
    "handler_sdk._identity_keys": ("cryptography", "signing"),
    "handler_sdk._tracing": ("opentelemetry", "tracing"),
    "handler_sdk.otel": ("opentelemetry", "tracing"),
    "handler_sdk.otlp_json": ("opentelemetry", "tracing"),
    "handler_sdk.testing.pytest_plugin": ("pytest", "testing"),
}
#: Never imported by the SDK: the sidecar and what it alone depends on.
SIDECAR_ONLY = {"sidecar", "lmdb", "click", "prometheus_client", "zstandard"}


class Built(NamedTuple):
    sdist: Path
    wheel: Path


class Dists(NamedTuple):
    sdk: Built
    sidecar: Built


def _build(project: Path, out: Path) -> Built:
    """``python -m build`` with this environment's hatchling (no download): the sdist, then the
    wheel built from it, so a file missing from the sdist fails here as it would for a user."""
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(project)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (sdist,), (wheel,) = out.glob("*.tar.gz"), out.glob("*.whl")
    return Built(sdist, wheel)


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    out = tmp_path_factory.mktemp("dists")
    return Dists(_build(ROOT / "sdk", out / "sdk"), _build(ROOT, out / "sidecar"))


def _sdist_files(sdist: Path) -> set[str]:
    """The files in ``sdist``, relative to its top directory."""
    with tarfile.open(sdist) as archive:
        return {member.name.split("/", 1)[1] for member in archive.getmembers() if member.isfile()}


def _tree(package: str) -> set[str]:
    """The files of one of this repository's packages, as an sdist names them."""
    return {str(path.relative_to(ROOT)) for path in (ROOT / package).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts}


def _metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(name).decode())


def _requirements(metadata: Message) -> tuple[set[str], dict[str, set[str]]]:
    """The wheel's requirements without an extra, and each extra's, as written."""
    plain: set[str] = set()
    extras: dict[str, set[str]] = {extra: set() for extra in metadata.get_all("Provides-Extra", [])}
    for line in metadata.get_all("Requires-Dist", []):
        requirement = Requirement(line)
        named = [extra for extra in extras if requirement.marker and requirement.marker.evaluate({"extra": extra})]
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            plain.add(line)
        for extra in named:
            extras[extra].add(requirement.name)
    return plain, extras


def _version() -> str:
    found = re.search(r'^__version__ = "([^"]+)"$', VERSION_FILE.read_text(), re.M)
    assert found, VERSION_FILE
    return found[1]


def test_each_wheel_holds_its_own_package_and_the_metadata_users_expect(dists: Dists) -> None:
    version = _version()
    with zipfile.ZipFile(dists.sdk.wheel) as archive:
        sdk_files = archive.namelist()
    with zipfile.ZipFile(dists.sidecar.wheel) as archive:
        sidecar_files = archive.namelist()
    sdk_info, sidecar_info = f"durable_handler_sdk-{version}.dist-info/", f"durable_sidecar-{version}.dist-info/"
    assert all(name.startswith(("handler_sdk/", sdk_info)) for name in sdk_files), sdk_files
    assert "handler_sdk/py.typed" in sdk_files and "handler_sdk/protocol.py" in sdk_files
    assert all(name.startswith(("sidecar/", sidecar_info)) for name in sidecar_files), sidecar_files
    ui = sorted(f"sidecar/http/ui_static/{path.name}" for path in (ROOT / "sidecar/http/ui_static").iterdir())
    assert ui and set(ui) <= set(sidecar_files)
    for files, info in ((sdk_files, sdk_info), (sidecar_files, sidecar_info)):
        assert f"{info}licenses/LICENSE" in files
    project = {"PKG-INFO", "pyproject.toml", "README.md", "LICENSE", ".gitignore"}
    assert _sdist_files(dists.sdk.sdist) == _tree("handler_sdk") | project
    assert _sdist_files(dists.sidecar.sdist) == _tree("sidecar") | project | {"hatch_build.py", "handler_sdk/_version.py"}

    sdk, sidecar = _metadata(dists.sdk.wheel), _metadata(dists.sidecar.wheel)
    for metadata, name in ((sdk, "durable-handler-sdk"), (sidecar, "durable-sidecar")):
        assert (metadata["Name"], metadata["Version"]) == (name, version)
        assert metadata["License-Expression"] == "Apache-2.0" and metadata["Requires-Python"] == ">=3.11"
        assert {url.split(",")[0] for url in metadata.get_all("Project-URL", [])} == {
            "Homepage", "Documentation", "Source", "Issues"}
        assert "Framework :: AsyncIO" in metadata.get_all("Classifier", [])
        assert metadata.get_payload()  # the readme
    assert "Typing :: Typed" in sdk.get_all("Classifier", [])

    plain, extras = _requirements(sdk)
    assert plain == {"aiohttp>=3.9", "msgspec>=0.18"}
    assert extras == {"uvloop": {"uvloop"}, "signing": {"cryptography"},
                      "tracing": {"opentelemetry-api", "opentelemetry-sdk"}, "testing": {"pytest"},
                      "otlp": {"opentelemetry-api", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http"}}
    plain, _ = _requirements(sidecar)
    assert f"durable-handler-sdk[signing,tracing,uvloop]=={version}" in plain
    assert {Requirement(line).name for line in plain} == {
        "durable-handler-sdk", "lmdb", "click", "prometheus-client", "zstandard", "croniter", "tzdata"}
    with zipfile.ZipFile(dists.sidecar.wheel) as archive:
        assert "sidecar = sidecar.cli.main:main" in archive.read(f"{sidecar_info}entry_points.txt").decode()


def _closure(names: list[str]) -> list[Distribution]:
    """The installed distributions ``names`` need, theirs included (no extras)."""
    found: dict[str, Distribution] = {}
    todo = list(names)
    while todo:
        name = Requirement(todo.pop()).name.lower().replace("_", "-")
        if name in found:
            continue
        found[name] = distribution(name)
        for line in found[name].requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(line)
    return list(found.values())


def _copy_installed(dist: Distribution, site_packages: Path) -> None:
    """Install ``dist`` into another environment by copying the files its RECORD lists."""
    for file in dist.files or []:
        source = Path(str(dist.locate_file(file)))
        if file.parts[0] == ".." or "__pycache__" in file.parts or not source.is_file():
            continue  # scripts outside site-packages and bytecode are not needed
        target = site_packages / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


class Alone(NamedTuple):
    python: Path
    site_packages: Path


@pytest.fixture(scope="module")
def sdk_alone(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> Alone:
    """A new virtual environment holding the SDK's wheel and what its Requires-Dist names, taken
    from this environment (no download), and nothing else."""
    venv = tmp_path_factory.mktemp("sdk-alone") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    (site_packages,) = (venv / "lib").glob("python3*/site-packages")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
         str(dists.sdk.wheel)], capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stderr
    plain, _ = _requirements(_metadata(dists.sdk.wheel))
    for dist in _closure(sorted(plain)):
        _copy_installed(dist, site_packages)
    checked = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "check"],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr  # every requirement met, nothing missing
    return Alone(python, site_packages)


def _alone(sdk_alone: Alone, cwd: Path, *args: str, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    """The environment's Python, isolated (``-I``: no PYTHONPATH, no user site, not the working
    directory), so nothing of this repository's tree can be imported by accident."""
    return subprocess.run([str(sdk_alone.python), "-I", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=env)


_IMPORT_ALL = """
import importlib, json, pkgutil, sys
import handler_sdk
missing = {}
for module in pkgutil.walk_packages(handler_sdk.__path__, "handler_sdk."):
    try:
        importlib.import_module(module.name)
    except ModuleNotFoundError as exc:
        missing[module.name] = exc.name
print(json.dumps({"file": handler_sdk.__file__, "version": handler_sdk.__version__, "missing": missing,
                  "imported": sorted({name.split(".")[0] for name in sys.modules})}))
"""


def test_the_sdk_alone_imports_nothing_of_the_sidecar_and_says_its_version(
    sdk_alone: Alone, tmp_path: Path,
) -> None:
    done = _alone(sdk_alone, tmp_path, "-c", _IMPORT_ALL)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert Path(found["file"]).is_relative_to(sdk_alone.site_packages)
    assert found["missing"] == {module: package for module, (package, _) in EXTRA_MODULES.items()}
    assert not SIDECAR_ONLY & set(found["imported"])
    version = subprocess.run(sidecar_cli("--version"), capture_output=True, text=True, timeout=60)
    assert version.stdout == f"sidecar {found['version']}\n" and found["version"] == _version()


def _readme_handler() -> str:
    """The SDK README's example, as a user would paste it into counter.py."""
    (code,) = re.findall(r"```python\n(.*?)```", (ROOT / "sdk" / "README.md").read_text(), re.S)
    return str(code)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """Where the user saved the README's handler: the service's working directory."""
    directory = tmp_path / "app"
    directory.mkdir()
    (directory / "counter.py").write_text(_readme_handler())
    return directory


@pytest.fixture
def served(sdk_alone: Alone, app_dir: Path, tmp_path: Path) -> Iterator[tuple[Process, int]]:
    """``python -m handler_sdk counter:counter`` from the SDK alone, with a tracing endpoint set
    (the tracing extra is absent: it must serve all the same)."""
    port = free_port()
    service = Process("handlers", [str(sdk_alone.python), "-I", "-u", "-m", "handler_sdk", "counter:counter", "--port",
                                   str(port)], tmp_path, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
                      cwd=app_dir)
    service.start()
    try:
        yield service, port
    finally:
        service.stop()
        print(service.log()[-4000:])


async def test_a_service_on_the_sdk_alone_serves_a_real_sidecar(
    served: tuple[Process, int], tmp_path: Path, http: aiohttp.ClientSession,
) -> None:
    service, port = served

    async def discovered() -> bool:
        if not service.running:
            raise RuntimeError(f"the handler service on the SDK alone exited:\n{service.log()}")
        async with http.get(f"http://127.0.0.1:{port}/discover") as response:
            return response.status == 200 and [s["name"] for s in (await response.json())["services"]] == ["Counter"]

    await eventually(discovered, timeout=START_TIMEOUT_S, what="the handler service on the SDK alone")
    ingress, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    sidecar = Process("sidecar", sidecar_cli(
        "serve", "--data-dir", str(tmp_path / "data"), "--durability", "none", "--workers", "1",
        "--ingress", ingress, "--admin", admin, "--register", f"http://127.0.0.1:{port}"), tmp_path).start()
    try:
        async def registered() -> bool:
            async with http.get(f"http://{admin}/services") as response:
                return response.status == 200 and bool((await response.json())["services"])

        await eventually(registered, timeout=START_TIMEOUT_S, what="the sidecar to register the service")
        for n, total in ((5, 5), (2, 7)):
            async with http.post(f"http://{ingress}/Counter/alice/add", json=n) as response:
                assert (response.status, await response.json()) == (200, total)
    finally:
        sidecar.stop()
    log = service.log()
    assert "alice += 5" in log and "alice += 2" in log  # the README's step, run once each
    assert "pip install 'durable-handler-sdk[tracing]'" in log  # the endpoint was set: said once, untraced


def test_identity_keys_without_the_signing_extra_stop_the_service_naming_it(
    sdk_alone: Alone, app_dir: Path,
) -> None:
    public = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    done = _alone(sdk_alone, app_dir, "-m", "handler_sdk", "counter:counter", "--port", str(free_port()),
                  env={"HANDLER_IDENTITY_KEYS": public})
    assert done.returncode == 2
    assert done.stderr == (
        "python -m handler_sdk: verifying the sidecar's signatures (identity_keys or HANDLER_IDENTITY_KEYS) needs "
        "the SDK's 'signing' extra (cryptography is not installed): pip install 'durable-handler-sdk[signing]'\n")
