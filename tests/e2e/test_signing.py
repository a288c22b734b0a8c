"""Signed requests to handler services, end to end: ``sidecar keygen``, a sidecar with
``--signing-key`` whose handler services hold its public key (``HANDLER_IDENTITY_KEYS``), over
a WebSocket and by request-response; what such a handler refuses (401 JSON), what a sidecar
whose requests it refuses is told when it registers it, and a bad key file at start."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import aiohttp
import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings, strategies as st

from handler_sdk.protocol import Input, Start, encoder
from handler_sdk.signature import HEADER, canonical, format_header
from sidecar.clock import now_ms
from sidecar.transport.signing import Signer
from tests.e2e.conftest import START_TIMEOUT_S, Cluster, running_cluster
from tests.e2e.rawhttp import exchange, request_bytes
from tests.procs import Process, eventually, free_port, python, sidecar_cli

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))


class KeyPair(NamedTuple):
    private: Path
    public: Path


def _keygen(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(sidecar_cli("keygen", str(directory)), capture_output=True, text=True, timeout=60)


def _keys(directory: Path) -> KeyPair:
    made = _keygen(directory)
    assert made.returncode == 0, made.stderr
    return KeyPair(directory / "signing.pem", directory / "signing.pub.pem")


@pytest.fixture
def keys(tmp_path: Path) -> KeyPair:
    return _keys(tmp_path / "keys")


@pytest.fixture
async def signed(tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest,
                 keys: KeyPair) -> AsyncIterator[Cluster]:
    """Two workers signing with ``keys``; the handler service trusts that key alone."""
    flags = ["--durability", "none", "--inactivity-timeout", "3", "--workers", "2", "--signing-key", str(keys.private)]
    async with running_cluster(tmp_path, http, request, flags,
                               handler_env={"HANDLER_IDENTITY_KEYS": keys.public.read_text()}) as running:
        yield running


def _handler_url(cluster: Cluster) -> str:
    return f"http://127.0.0.1:{cluster.handler_port}"


async def _refusal(response: aiohttp.ClientResponse) -> str:
    assert response.status == 401 and response.content_type == "application/json"
    body = await response.json()
    assert body["code"] == 401 and isinstance(body["message"], str)
    return str(body["message"])


# --- keygen and the key file -------------------------------------------------------------------


def test_keygen_writes_a_key_pair_and_never_overwrites_one(tmp_path: Path) -> None:
    pair = _keys(tmp_path / "new" / "dir")
    assert pair.private.stat().st_mode & 0o777 == 0o600
    assert serialization.load_pem_private_key(pair.private.read_bytes(), None).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo) == pair.public.read_bytes()
    before = pair.private.read_bytes(), pair.public.read_bytes()

    again = _keygen(tmp_path / "new" / "dir")
    assert again.returncode == 1 and "signing.pem exists; keygen never replaces a key" in again.stderr
    pair.private.unlink()  # one file left is still a key pair's half: refused too
    again = _keygen(tmp_path / "new" / "dir")
    assert again.returncode == 1 and "signing.pub.pem exists" in again.stderr
    assert pair.public.read_bytes() == before[1] and not pair.private.exists()


def _bad_key(tmp_path: Path, case: str) -> Path:
    path = tmp_path / f"{case}.pem"
    if case == "not-pem":
        path.write_text("hello")
    elif case == "rsa":
        path.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    elif case == "public":
        path = _keys(tmp_path / "pair").public
    return path


_SAYS = {
    "missing": "cannot read the signing key .*missing.pem: No such file or directory",
    "not-pem": "the signing key .*not-pem.pem is not an unencrypted PEM private key",
    "rsa": "the signing key .*rsa.pem is RSAPrivateKey, not an Ed25519 key",
    "public": "the signing key .*signing.pub.pem is not an unencrypted PEM private key",
}


@pytest.mark.parametrize("case, how", [("missing", "flag"), ("not-pem", "flag"), ("rsa", "flag"), ("public", "flag"),
                                       ("missing", "environment"), ("rsa", "config")])
def test_a_bad_signing_key_stops_the_sidecar_at_start(tmp_path: Path, case: str, how: str) -> None:
    key = _bad_key(tmp_path, case)
    args = ["serve", "--data-dir", str(tmp_path / "data"), "--ingress", f"127.0.0.1:{free_port()}",
            "--admin", f"127.0.0.1:{free_port()}", "--workers", "2"]
    env = dict(os.environ)
    if how == "flag":
        args += ["--signing-key", str(key)]
    elif how == "environment":
        env["SIDECAR_SIGNING_KEY"] = str(key)
    else:
        (tmp_path / "sidecar.toml").write_text(f"signing_key = {str(key)!r}\n")
        args += ["--config", str(tmp_path / "sidecar.toml")]
    done = subprocess.run(sidecar_cli(*args), capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2, done.stderr
    assert re.fullmatch(f"Error: cannot start the sidecar: {_SAYS[case]}.*\n", done.stderr), done.stderr


# --- a signed sidecar and its handler services -------------------------------------------------


async def test_a_handler_with_identity_keys_serves_the_signed_sidecar_over_both_transports(
        signed: Cluster, keys: KeyPair) -> None:
    assert (await signed.post("/Counter/ws/add", 5))[:2] == (200, 5)
    assert (await signed.post("/Callers/ws/relay", 3))[:2] == (200, 3)  # a call between handlers, both signed

    port = free_port()
    serverless = Process("serverless", python("-m", "handler_sdk", "tests.e2e.handlers:SERVICES", "--port", str(port)),
                         signed.tmp, {"SINK_URL": signed.sink_url,
                                      "HANDLER_IDENTITY_KEYS": keys.public.read_text()}).start()
    try:
        await eventually(lambda: signed._ok(f"http://127.0.0.1:{port}/discover", refused_ok=True),
                         timeout=START_TIMEOUT_S, what="the request-response handler service")
        registered = await signed.cli("register", f"http://127.0.0.1:{port}", "--request-response")
        assert registered.returncode == 0, registered.stderr
        _, listed = await signed.get("/deployments", admin=True)
        (deployment,) = [d for d in listed["deployments"] if d["uri"] == f"http://127.0.0.1:{port}"]
        assert deployment["transport"] == "request-response"

        status, total, headers = await signed.post("/Counter/rr/add", 7)
        assert (status, total) == (200, 7)
        shown = (await signed.get(f"/invocations/{headers['x-restate-id']}", admin=True))[1]
        assert shown["deployment_id"] == deployment["id"] and shown["attempts"] == 2  # two signed POST /invoke
    finally:
        serverless.stop()


async def test_the_handler_refuses_unsigned_foreign_stale_and_garbage_requests(
        signed: Cluster, keys: KeyPair, tmp_path: Path) -> None:
    url, http = _handler_url(signed), signed.http
    async with http.get(f"{url}/discover") as response:
        assert "not signed: it has no x-sidecar-signature header" in await _refusal(response)
    async with http.get(f"{url}/discover", headers={HEADER: "v1;ts=now;sig=trust-me"}) as response:
        assert "x-sidecar-signature is malformed: expected v1;ts=<unix ms>;sig=" in await _refusal(response)
    foreign = Signer.load(str(_keys(tmp_path / "foreign").private))
    async with http.get(f"{url}/discover", headers=foreign.headers("GET", "/discover")) as response:
        assert "does not verify with this handler service's identity key: signed by another key" in \
            await _refusal(response)

    own = Signer.load(str(keys.private))
    key = serialization.load_pem_private_key(keys.private.read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    stale_ts = now_ms() - 90_000
    stale = format_header(stale_ts, key.sign(canonical("GET", "/discover", stale_ts, b"")))
    async with http.get(f"{url}/discover", headers={HEADER: stale}) as response:
        assert re.search(r"x-sidecar-signature is stale: signed 9\d\.\d s ago", await _refusal(response))

    start = encoder.encode(Start(invocation_id="inv_x", attempt=1, service="Counter", handler="add", key="x",
                                 input=b"1", headers={}, journal=[Input(b"1")], state={}, seed=1))
    other_body = own.headers("POST", "/invoke", start.replace(b"Counter", b"Counted"))
    async with http.post(f"{url}/invoke", data=start, headers=other_body) as response:
        assert "signed by another key, or for another request" in await _refusal(response)
    async with http.get(f"{url}/connect", headers=own.headers("GET", "/invoke")) as response:  # another path's
        assert "does not verify" in await _refusal(response)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(f"{url}/connect")
    assert refused.value.status == 401

    async with http.get(f"{url}/discover", headers=own.headers("GET", "/discover")) as response:
        assert response.status == 200  # what the sidecar's key signs, the handler serves
    assert (await signed.post("/Counter/after/add", 1))[:2] == (200, 1)
    assert "refused" in signed.handlers.log() and "Traceback" not in signed.handlers.log()


async def _bare_sidecar(cluster: Cluster, name: str, *flags: str) -> tuple[Process, dict[str, str]]:
    """Another sidecar, registering nothing at start; its client environment."""
    ingress, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    process = Process(name, sidecar_cli("serve", "--data-dir", str(cluster.tmp / name), "--ingress", ingress,
                                        "--admin", admin, "--durability", "none", *flags), cluster.tmp).start()
    await eventually(lambda: cluster._ok(f"http://{admin}/health"), timeout=START_TIMEOUT_S, what=f"sidecar {name}")
    return process, {**os.environ, "SIDECAR_INGRESS": ingress, "SIDECAR_ADMIN": admin}


@pytest.mark.parametrize("signing", ["unsigned", "another-key"])
async def test_registering_a_handler_that_refuses_the_sidecar_fails_naming_the_cause(
        signed: Cluster, tmp_path: Path, signing: str) -> None:
    flags = ("--signing-key", str(_keys(tmp_path / "other").private)) if signing == "another-key" else ()
    process, env = await _bare_sidecar(signed, f"{signing}-sidecar", *flags)
    try:
        async with signed.http.post(f"http://{env['SIDECAR_ADMIN']}/deployments",
                                    json={"uri": _handler_url(signed)}) as response:
            body = await response.json()
        assert response.status == 403 and body["code"] == 403, body
        assert body["message"].startswith(f"the handler service at {_handler_url(signed)} refused the sidecar's "
                                          "signature: ")
        if signing == "unsigned":
            assert "it has no x-sidecar-signature header" in body["message"]
            assert body["message"].endswith("; this sidecar signs nothing: start it with --signing-key FILE")
        else:
            assert "signed by another key" in body["message"]

        cli = await asyncio.to_thread(subprocess.run, sidecar_cli("register", _handler_url(signed)),
                                      capture_output=True, text=True, env=env, timeout=60)
        assert cli.returncode == 1 and "refused the sidecar's signature" in cli.stderr
        async with signed.http.get(f"http://{env['SIDECAR_ADMIN']}/deployments") as response:
            assert (await response.json())["deployments"] == []
    finally:
        process.stop()


async def test_invocations_wait_on_a_handler_that_refuses_the_sidecar_and_run_once_it_accepts(
        cluster: Cluster, keys: KeyPair) -> None:
    """Identity keys turned on before the sidecar signs: its invocations wait, saying why, and
    nothing is lost; once the handler service serves it again, they run."""
    assert (await cluster.post("/Counter/early/add", 1))[:2] == (200, 1)
    cluster.handlers.stop()
    args = cluster.handlers.args
    cluster.handlers = Process("handlers-keyed", args, cluster.tmp,
                               {"SINK_URL": cluster.sink_url, "HANDLER_IDENTITY_KEYS": keys.public.read_text()})
    await cluster.restart_handlers()
    status, sent, _ = await cluster.post("/Counter/early/add/send", 2)
    assert status == 202

    async def waiting_on_the_signature() -> str:
        shown = (await cluster.get(f"/invocations/{sent['invocationId']}", admin=True))[1]
        return shown["status"] == "backing-off" and "it refused the sidecar's signature (401" in shown["reason"] \
            and str(shown["reason"])

    reason = await eventually(waiting_on_the_signature, what="the invocation to wait on the handler service")
    assert reason.startswith("backing off: deployment ") and "unreachable since" in reason

    cluster.handlers.stop()
    cluster.handlers = Process("handlers-open", args, cluster.tmp, {"SINK_URL": cluster.sink_url})
    await cluster.restart_handlers()
    status, total = await cluster.get(f"/restate/invocation/{sent['invocationId']}/attach")
    assert (status, total) == (200, 3)


# --- any header value --------------------------------------------------------------------------

def _takeable(value: bytes) -> bytes:
    """The bytes of ``value`` aiohttp's parser takes in a header (visible ASCII, space, tab, and
    0x80-0xFF as obs-text): the rest would be refused before the handler service sees them."""
    return bytes(c for c in value if c >= 0x20 and c != 0x7F or c == 9)


_HEADER_BYTES = st.binary(max_size=120).map(_takeable)
#: Values close to a signature: a version, a timestamp and 80 to 90 characters of base64url, or not.
_ALMOST = st.builds(
    "{};ts={};sig={}".format,
    st.sampled_from(["v1", "v2", "V1", "v1 ", ""]),
    st.one_of(st.integers(min_value=-10**20, max_value=10**20).map(str), st.text(max_size=20)),
    st.one_of(st.text("ABCDEFabcdef0123456789_-", min_size=80, max_size=90), st.text(max_size=100)),
).map(lambda text: _takeable(text.encode("utf-8", "surrogatepass")))


def _fuzz(address: str, signer: Signer) -> None:
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from([("GET", "/discover"), ("GET", "/connect"), ("POST", "/invoke")]),
           st.one_of(_HEADER_BYTES, _ALMOST, st.just(b"")), st.booleans(), st.binary(max_size=64))
    def one(route: tuple[str, str], value: bytes, twice: bool, body: bytes) -> None:
        method, path = route
        headers = [(HEADER.encode(), value)]
        if twice:  # a real signature next to the odd one: the first header is the one read
            headers.append((HEADER.encode(), signer.headers(method, path, body)[HEADER].encode()))
        response = asyncio.run(exchange(address, request_bytes(method, path.encode(), headers, body)))
        assert response is not None and response.status == 401, (value, response)
        answer = msgspec.json.decode(response.body)
        assert answer["code"] == response.status and isinstance(answer["message"], str), answer

    one()


async def test_the_handler_answers_any_signature_header_and_keeps_serving(signed: Cluster, keys: KeyPair) -> None:
    await asyncio.to_thread(_fuzz, f"127.0.0.1:{signed.handler_port}", Signer.load(str(keys.private)))
    assert signed.handlers.running and "Traceback" not in signed.handlers.log()
    assert (await signed.post("/Counter/fuzzed/add", 2))[:2] == (200, 2)
