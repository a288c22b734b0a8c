"""What a client sends is refused with a 400 that says why, never with another exception."""

from __future__ import annotations

from urllib.parse import quote

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.http.errors import HTTPProblem
from sidecar.http.input import budget_header, json_body, json_value, path_parts, storable
from sidecar.transport.registry import RegistrationError, checked_uri

_utf8_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(st.lists(_utf8_text, min_size=1, max_size=5))
def test_path_parts_are_decoded_once_each_with_slashes_inside(parts: list[str]) -> None:
    assert path_parts("/" + "/".join(quote(p, safe="") for p in parts)) == parts


@pytest.mark.parametrize("raw", ["/Counter/%FF/add", "/a/%C3%28", "/%ED%A0%80"])
def test_escapes_that_are_not_utf8_are_refused(raw: str) -> None:
    with pytest.raises(HTTPProblem, match="not valid UTF-8") as refused:
        path_parts(raw)
    assert refused.value.status == 400


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.integers(1, 100_000).map(lambda n: b"[" * n + b"]" * n))
def test_any_body_is_json_or_a_400(body: bytes) -> None:
    try:
        json_value(body)
    except HTTPProblem as refused:
        assert refused.status == 400 and "not valid JSON" in refused.message


def test_deep_json_is_refused_as_too_deep() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(HTTPProblem, match="nested too deeply"):
        json_value(deep)

    class Shape(msgspec.Struct):
        uri: list[object]

    with pytest.raises(HTTPProblem, match='expected {"uri"}: the body is nested too deeply'):
        json_body(b'{"uri": ' + deep + b"}", Shape, '{"uri"}')


def test_header_values_that_are_not_utf8_are_refused() -> None:
    storable({"x-trace": "fine ü", "idempotency-key": "k"})
    with pytest.raises(HTTPProblem, match="header 'idempotency-key' is not valid UTF-8"):
        storable({"idempotency-key": b"\xff".decode(errors="surrogateescape")})


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), st.builds("http://{}".format, st.text(max_size=80)),
                 st.builds("https://{}:{}/{}".format, st.text(max_size=20), st.integers(-5, 70000),
                           st.text(max_size=5))))
def test_any_uri_is_taken_or_refused_with_400(uri: str) -> None:
    try:
        checked = checked_uri(uri)
    except RegistrationError as refused:
        assert refused.status == 400 and len(refused.message) < 3000
    else:
        assert checked.startswith(("http://", "https://"))


@pytest.mark.parametrize(("uri", "fragment"), [
    (f"http://{'a' * 64}", "not a valid host name"), ("http://" + "a" * 3000, "too long"), ("ftp://x", "http"),
    ("http://", "no host"), ("http://[::1", "not a valid uri"), ("http://x/?q=1", "query"),
    ("http://u:p@x", "credentials"),
])
def test_bad_deployment_uris_say_what_is_wrong(uri: str, fragment: str) -> None:
    with pytest.raises(RegistrationError, match=fragment):
        checked_uri(uri)


@pytest.mark.parametrize("uri", ["http://127.0.0.1:9080", "https://handlers.example.com/v2/", "http://[::1]:9080",
                                 "http://my_service:8080", "http://xn--4ca.example"])
def test_good_deployment_uris_are_taken(uri: str) -> None:
    assert checked_uri(uri) == uri.rstrip("/")


@pytest.mark.parametrize(("sent", "cap"), [("2.50", 2.5), ("0", 0.0), (" 7 ", 7.0), ("1e2", 100.0)])
def test_a_budget_header_is_a_number_zero_or_more(sent: str, cap: float) -> None:
    assert budget_header({"x-budget": sent}) == cap
    assert budget_header({}) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20) | st.sampled_from(["-1", "nan", "inf", "-inf", "1e999", "", "2,50", "$3"]))
def test_any_other_budget_header_is_refused_with_what_was_sent(sent: str) -> None:
    try:
        cap = budget_header({"x-budget": sent})
    except HTTPProblem as refused:
        assert refused.status == 400 and repr(sent) in refused.message
    else:
        assert cap is not None and 0 <= cap < float("inf")
