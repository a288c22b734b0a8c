"""The ``x-sidecar-signature`` header: its codec, the sidecar's signer, the SDK's check of it,
the identity keys as a handler service reads them, and ``app(identity_keys=...)`` answering."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, strategies as st

from handler_sdk import app
from handler_sdk._identity import ENV, IdentityKeyError
from handler_sdk._identity_keys import Identity, identity_keys, parse_keys
from handler_sdk.protocol import Input, Start, ToSidecar, encoder
from handler_sdk.signature import HEADER, MAX_SKEW_MS, canonical, format_header, parse_header
from sidecar.clock import now_ms
from sidecar.transport.signing import Signer, SigningKeyError, generate
from tests.unit.test_sdk import counter_object

_KEY = Ed25519PrivateKey.generate()
_OTHER = Ed25519PrivateKey.generate()
_PATHS = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60).map(lambda p: "/" + p)
_METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE"])


def _pem(key: Ed25519PrivateKey | Any) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _identity(*keys: Ed25519PrivateKey, offset_s: float = 0.0) -> Identity:
    return Identity(parse_keys("".join(_pem(k) for k in keys), "test"), clock=lambda: now_ms() / 1000 + offset_s)


# --- the header's text -------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=10**15 - 1), st.binary(min_size=64, max_size=64))
def test_a_header_reads_back_as_it_was_written(ts_ms: int, signature: bytes) -> None:
    text = format_header(ts_ms, signature)
    assert text.startswith(f"v1;ts={ts_ms};sig=") and len(text.rsplit("=", 1)[1]) == 86 and "=" not in text[-86:]
    parsed = parse_header(text)
    assert (parsed.ts_ms, parsed.signature) == (ts_ms, signature)


@given(st.text(max_size=200))
def test_any_other_text_is_a_value_error_that_says_what_is_wrong(value: str) -> None:
    try:
        parse_header(value)
    except ValueError as exc:
        assert str(exc)
    else:  # only a well-formed header parses
        assert value == format_header(parse_header(value).ts_ms, parse_header(value).signature)


@pytest.mark.parametrize("value, says", [
    ("", "expected v1;ts=<unix ms>;sig="),
    ("v2;ts=1;sig=" + "A" * 86, "version v2; this handler reads v1"),
    ("v1;ts=-5;sig=" + "A" * 86, "expected"),
    ("v1;ts=01;sig=" + "A" * 86, "expected"),  # one value, one spelling: the canonical string has it as written
    ("v1;ts=1;sig=" + "A" * 85, "expected"),
    ("v1;ts=1;sig=" + "A" * 84 + "==", "expected"),
    ("v1;sig=" + "A" * 86 + ";ts=1", "expected"),
    ("v1;ts=\u0661;sig=" + "A" * 86, "expected"),  # an Arabic-Indic digit is no timestamp
])
def test_malformed_headers_are_named(value: str, says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("?", r"\?")):
        parse_header(value)


def test_the_canonical_string_is_five_lines_ending_in_the_body_hash() -> None:
    assert canonical("POST", "/base/invoke", 1700000000123, b"abc") == (
        b"v1\nPOST\n/base/invoke\n1700000000123\nba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    assert canonical("GET", "/discover", 1, b"").endswith(
        b"\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    with pytest.raises(ValueError):
        canonical("GET", "/caf\u00e9", 1, b"")


def test_the_documented_example_signs_as_docs_protocol_md_says() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    assert _pem(key) == ("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAA6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=\n"
                         "-----END PUBLIC KEY-----\n")
    ts = 1764756000000
    assert format_header(ts, key.sign(canonical("GET", "/discover", ts, b""))) == (
        "v1;ts=1764756000000;sig=3KGegwA9WO78KqpNIXv9TX4jOTM_jFv-lDi1RLsYKGqSZAKwF1J5CSLB-o7L5wqfQSLW6VswZnicNQPuUTW6CQ")
    assert format_header(ts, key.sign(canonical("POST", "/invoke", ts, b"hello"))) == (
        "v1;ts=1764756000000;sig=HbuKpeLeGubQh9pPENSphRLRa9NMG8KfndIbW0tXLg_trLjwKux04t2Lt7NeG4a2-OCYDtjWFcU5PH2Oq11jAw")
    documented = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    assert "sig=3KGegwA9WO78KqpNIXv9TX4jOTM_jFv" in documented and "sig=HbuKpeLeGubQh9pPENSphRLRa9NMG8" in documented


# --- signing and verifying ---------------------------------------------------------------------


@given(_METHODS, _PATHS, st.binary(max_size=300))
def test_what_the_sidecar_signs_a_handler_with_its_key_accepts(method: str, path: str, body: bytes) -> None:
    header = Signer(_KEY).headers(method, path, body)[HEADER]
    assert _identity(_OTHER, _KEY).refusal(method, path, header, body) is None


@given(_METHODS, _PATHS, st.binary(max_size=100), st.data())
def test_any_change_to_what_was_signed_is_refused(method: str, path: str, body: bytes, data: st.DataObject) -> None:
    header = Signer(_KEY).headers(method, path, body)[HEADER]
    changed = data.draw(st.sampled_from(["method", "path", "body", "ts"]))
    signed = parse_header(header)
    if changed == "method":
        method = data.draw(_METHODS.filter(lambda m: m != method))
    elif changed == "path":
        path = data.draw(_PATHS.filter(lambda p: p != path))
    elif changed == "body":
        body = data.draw(st.binary(max_size=100).filter(lambda b: b != body))
    else:
        header = format_header(signed.ts_ms + data.draw(st.sampled_from([-1, 1, 1000])), signed.signature)
    why = _identity(_KEY).refusal(method, path, header, body)
    assert why is not None and "does not verify" in why


def test_refusals_name_their_cause() -> None:
    identity = _identity(_KEY)
    assert "not signed: it has no x-sidecar-signature header" in str(identity.refusal("GET", "/discover", None, b""))
    assert "malformed" in str(identity.refusal("GET", "/discover", "garbage", b""))
    foreign = Signer(_OTHER).headers("GET", "/discover")[HEADER]
    assert "signed by another key" in str(identity.refusal("GET", "/discover", foreign, b""))
    signed = Signer(_KEY).headers("GET", "/discover")[HEADER]
    late, early = _identity(_KEY, offset_s=61), _identity(_KEY, offset_s=-61)
    assert re.search(r"stale: signed 6\d\.\d s ago", str(late.refusal("GET", "/discover", signed, b"")))
    assert "s in the future" in str(early.refusal("GET", "/discover", signed, b""))
    assert _identity(_KEY, offset_s=MAX_SKEW_MS / 1000 - 2).refusal("GET", "/discover", signed, b"") is None
    assert "not ASCII" in str(identity.refusal("GET", "/d\u00e9couvrir", signed, b""))


@given(st.text(max_size=300), _PATHS)
def test_any_header_value_is_refused_with_a_reason_never_an_exception(value: str, path: str) -> None:
    why = _identity(_KEY).refusal("GET", path, value, b"")
    assert isinstance(why, str) and why


# --- identity keys -----------------------------------------------------------------------------


def test_identity_keys_are_pem_blocks_however_they_are_separated() -> None:
    one, two = _pem(_KEY), _pem(_OTHER)
    for text in (one + two, f"{one.strip()},{two.strip()}", f"{one}\n\n , {two}",
                 " ".join(one.split("\n")) + " " + " ".join(two.split("\n"))):
        keys = parse_keys(text, ENV)
        assert [k.public_bytes_raw() for k in keys] == [_KEY.public_key().public_bytes_raw(),
                                                       _OTHER.public_key().public_bytes_raw()]


@pytest.mark.parametrize("text, says", [
    ("", "holds no key"),
    ("not a key", "'not a key' is not part of a PEM public key"),
    ("-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----", "key 1 is not a PEM public key"),
    ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "key 1 is not a PEM public key"),
])
def test_unreadable_identity_keys_are_named(text: str, says: str) -> None:
    with pytest.raises(IdentityKeyError, match=says):
        parse_keys(text, ENV)


def test_a_private_key_given_as_an_identity_key_is_refused_without_being_quoted() -> None:
    private = _KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()
    with pytest.raises(IdentityKeyError, match="holds a private key: give the handler service the public one") as refused:
        parse_keys(private, ENV)
    assert private.splitlines()[1][:20] not in str(refused.value)


def test_an_identity_key_of_another_kind_is_refused() -> None:
    for other in (rsa.generate_private_key(public_exponent=65537, key_size=1024), ec.generate_private_key(ec.SECP256R1())):
        with pytest.raises(IdentityKeyError, match="key 2 is .*, not an Ed25519 key"):
            parse_keys(_pem(_KEY) + _pem(other), ENV)


def test_given_keys_win_over_the_environment_and_each_is_one_key() -> None:
    environ = {ENV: _pem(_OTHER)}
    assert [k.public_bytes_raw() for k in identity_keys([_pem(_KEY)], environ)] == [
        _KEY.public_key().public_bytes_raw()]
    assert len(identity_keys(None, environ)) == 1
    assert identity_keys(None, {}) == [] and identity_keys([], environ) == []
    with pytest.raises(IdentityKeyError, match=r"identity_keys\[0\] holds 2 keys"):
        identity_keys([_pem(_KEY) + _pem(_OTHER)], {})
    with pytest.raises(TypeError, match="PEM strings"):
        identity_keys([_pem(_KEY).encode()], {})  # type: ignore[list-item]


def test_python_m_handler_sdk_refuses_unreadable_identity_keys_at_start() -> None:
    env = {**os.environ, ENV: "nonsense"}
    done = subprocess.run([sys.executable, "-m", "handler_sdk", "tests.e2e.handlers:SERVICES", "--port", "1"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "HANDLER_IDENTITY_KEYS: 'nonsense' is not part of a PEM public key" in done.stderr
    assert "Traceback" not in done.stderr


# --- the sidecar's key -------------------------------------------------------------------------


def test_keygen_writes_a_pair_the_signer_loads_and_never_replaces_one(tmp_path: Path) -> None:
    private, public = generate(tmp_path / "keys")
    assert private.stat().st_mode & 0o777 == 0o600
    before = private.read_bytes(), public.read_bytes()
    signer = Signer.load(str(private))
    header = signer.headers("GET", "/discover")[HEADER]
    assert Identity(parse_keys(public.read_text(), "test")).refusal("GET", "/discover", header, b"") is None
    with pytest.raises(FileExistsError, match="never replaces a key"):
        generate(tmp_path / "keys")
    assert (private.read_bytes(), public.read_bytes()) == before


def test_without_a_key_nothing_is_signed() -> None:
    assert Signer.load("").headers("POST", "/invoke", b"x") == {} and not Signer.load("").signs


def test_a_bad_signing_key_is_named(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    files = {
        "garbage.pem": b"not a key",
        "rsa.pem": rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()),
        "locked.pem": _KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"pw")),
        "public.pem": _pem(_KEY).encode(),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    for name, says in [("missing.pem", "cannot read the signing key .*missing.pem: No such file"),
                       ("garbage.pem", "is not an unencrypted PEM private key"),
                       ("locked.pem", "is not an unencrypted PEM private key"),
                       ("public.pem", "is not an unencrypted PEM private key"),
                       ("rsa.pem", "is RSAPrivateKey, not an Ed25519 key")]:
        with pytest.raises(SigningKeyError, match=says):
            Signer.load(str(tmp_path / name))


# --- app(identity_keys=...) --------------------------------------------------------------------


_answers = msgspec.msgpack.Decoder(list[ToSidecar])


async def test_an_app_with_identity_keys_serves_signed_requests_and_refuses_others(aiohttp_client: Any) -> None:
    client = await aiohttp_client(app([counter_object([], [])], identity_keys=[_pem(_KEY)]))
    signer = Signer(_KEY)
    response = await client.get("/discover")
    assert response.status == 401 and "not signed" in (await response.json())["message"]
    response = await client.get("/discover", headers=signer.headers("GET", "/discover"))
    assert response.status == 200 and (await response.json())["services"][0]["name"] == "Counter"

    start = encoder.encode(Start(invocation_id="inv_1", attempt=1, service="Counter", handler="add", key="k",
                                 input=b"1", headers={}, journal=[Input(b"1")], state={}, seed=1))
    response = await client.post("/invoke", data=start, headers=signer.headers("POST", "/invoke", start + b" "))
    assert response.status == 401 and "does not verify" in (await response.json())["message"]
    response = await client.post("/invoke", data=start, headers=signer.headers("POST", "/invoke", start))
    assert response.status == 200 and _answers.decode(await response.read())[0].invocation_id == "inv_1"

    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:  # refused before the upgrade
        await client.ws_connect("/connect")
    assert refused.value.status == 401
    ws = await client.ws_connect("/connect", headers=signer.headers("GET", "/connect"))
    await ws.close()


async def test_an_app_reads_its_identity_keys_from_the_environment(aiohttp_client: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, _pem(_KEY))
    client = await aiohttp_client(app([counter_object([], [])]))
    assert (await client.get("/discover")).status == 401
    assert (await client.get("/discover", headers=Signer(_KEY).headers("GET", "/discover"))).status == 200
