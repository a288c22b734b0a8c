"""Hypothesis-driven requests to every ingress and admin route against one running sidecar.

Each example is one HTTP request over a plain socket: a method, a path built from the route table
with random parts (known names, percent-escapes, ``%2F``, unicode, long ones), odd header values,
a query string and a body (empty, garbage, deep JSON, huge numbers). Whatever it is, the sidecar
must answer it as the contract says: never a ``5xx`` of its own but ``502/503/504``, never a
traceback, every error a JSON ``{code, message}``; and after the run it is alive (no worker
stopped or restarted), a counter set before (on a key the fuzzer never names) still holds its
value, and its log has no traceback and no ``unhandled error``.

The run is bounded for ``make test`` (300 examples); set ``FUZZ_EXAMPLES=5000`` for the long form.
Calls and attaches may wait for their invocation: a timeout on those routes is an answer too.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from urllib.parse import quote

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import Cluster
from tests.e2e.rawhttp import RawResponse, exchange, request_bytes

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
_RESERVED_KEY = "fuzz-reserved-key"
_TIMEOUT_S = 2.0
#: The longest path part or header value the fuzzer sends: past the 1,024-byte identifier limit
#: (and LMDB's 511-byte keys), while a request line stays under aiohttp's 8 KiB.
_LONGEST = 1500

_SERVICES = ["Counter", "Steps", "Waits", "Callers", "Pongs", "Signup", "Streams"]
_HANDLERS = ["add", "get", "typed", "refuse", "run", "status", "approve", "relay", "ping", "chat", "twenty"]
_ACTIONS = ["attach", "output", "events", "kill", "cancel", "pause", "resume", "restart", "resolve", "reject",
            "send"]


@dataclass(frozen=True)
class Known:
    """Names the fuzzer mixes into its paths: a real invocation ID and a real deployment ID."""

    invocation_id: str
    deployment_id: str


def _escaped(raw: bytes) -> str:
    return "".join(f"%{b:02X}" for b in raw)


def _segments(known: Known) -> st.SearchStrategy[str]:
    """One path part, still percent-encoded as it goes on the wire."""
    plain = st.sampled_from([*_SERVICES, *_HANDLERS, *_ACTIONS, known.invocation_id, known.deployment_id,
                             "restate", "call", "invocation", "awakeables", "workflow", "k", "..", ".", ""])
    text = st.text(max_size=40).filter(lambda s: s != _RESERVED_KEY).map(lambda s: quote(s, safe=""))
    escapes = st.binary(min_size=1, max_size=12).map(_escaped)
    odd = st.sampled_from(["%2F", "a%2Fb", "%25", "%", "%G0", "%FF", "%C3%28", "%00", "%ED%A0%80", ";x", "a:b",
                           f"awk_{known.invocation_id}_4294967296_x", f"awk_{known.invocation_id}_1_00"])
    long = st.integers(min_value=100, max_value=_LONGEST).map(lambda n: "k" * n)
    return st.one_of(plain, plain, text, escapes, odd, long)


def _routes(known: Known) -> st.SearchStrategy[tuple[str, str, str]]:
    """(port: "ingress" | "admin", method, path) from the route table, with random parts."""
    seg = _segments(known)
    key = st.one_of(st.just("k"), seg)
    # (service, keyed, handler, whether a call waits for long): those that wait are sent, one-way.
    call = st.sampled_from([("Counter", True, "add", False), ("Counter", True, "get", False),
                            ("Steps", False, "typed", False), ("Steps", False, "refuse", False),
                            ("Signup", True, "status", False), ("Callers", True, "relay", False),
                            ("Signup", True, "run", True), ("Streams", False, "chat", True)])
    real_call = st.builds(lambda target, k, send: "/" + "/".join(
        [target[0], *([k] if target[1] else []), target[2], *(["send"] if send or target[3] else [])]),
        call, key, st.booleans())

    def at(port: str, method: str, path: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[str, str, str]]:
        return st.tuples(st.just(port), st.just(method), path)

    get = "GET"
    return st.one_of(
        at("ingress", "POST", real_call), at("ingress", "POST", real_call),
        at("ingress", "POST", st.builds("/restate/{}/{}".format, st.sampled_from(["call", "send"]),
                                        real_call.map(lambda p: p.lstrip("/")))),
        at("ingress", get, st.just("/restate/health")),
        at("ingress", get, st.builds("/restate/invocation/{}/{}".format, st.just(known.invocation_id) | seg,
                                     st.sampled_from(["attach", "output", "events"]) | seg)),
        at("ingress", get, st.builds("/restate/invocation/{}/{}/{}/{}/{}".format, st.just("Counter") | seg, key,
                                     st.just("add") | seg, seg, st.sampled_from(["attach", "output"]) | seg)),
        at("ingress", get, st.builds("/restate/invocation/{}/{}/{}/{}".format, st.just("Steps") | seg,
                                     st.just("typed") | seg, seg, st.sampled_from(["attach", "output"]))),
        at("ingress", "POST", st.builds("/restate/awakeables/{}/{}".format, seg,
                                        st.sampled_from(["resolve", "reject"]) | seg)),
        at("ingress", get, st.builds("/restate/workflow/{}/{}/{}".format, st.sampled_from(["Signup", "Counter"]) | seg,
                                     key, st.sampled_from(["attach", "output"]) | seg)),
        at("ingress", "POST", st.lists(seg, max_size=6).map(lambda parts: "/" + "/".join(parts))),
        at("admin", get, st.sampled_from(["/health", "/metrics", "/deployments", "/services", "/invocations",
                                          "/costs", "/breakers", "/webhooks", "/schedules"])),
        at("admin", "POST", st.builds("/breakers/{}/reset".format, st.just("llm") | seg)),
        at("admin", "POST", st.just("/deployments")),
        at("admin", get, st.builds("/schedules/{}".format, seg)),
        at("admin", "PUT", st.builds("/schedules/{}".format, st.just("fuzzed") | seg)),
        at("admin", "DELETE", st.builds("/schedules/{}".format, st.just("fuzzed") | seg)),
        at("admin", "DELETE", st.builds("/deployments/{}".format, st.just(known.deployment_id) | seg)),
        at("admin", get, st.builds("/services/{}".format, st.sampled_from(_SERVICES) | seg)),
        at("admin", get, st.builds("/invocations/{}".format, st.just(known.invocation_id) | seg)),
        at("admin", get, st.builds("/invocations/{}/events".format, st.just(known.invocation_id) | seg)),
        at("admin", get, st.just("/ui") | st.builds("/ui/{}".format, st.sampled_from(["", "app.js", "index.html"]) | seg)),
        at("admin", "DELETE", st.builds("/invocations/{}".format, st.just(known.invocation_id) | seg)),
        at("admin", "POST", st.builds("/invocations/{}/{}".format, st.just(known.invocation_id) | seg,
                                      st.sampled_from(["kill", "cancel", "pause", "resume", "restart"]) | seg)),
        at("admin", get, st.builds("/state/{}/{}".format, st.sampled_from(["Counter", "Signup"]) | seg, key)),
        at("admin", "PUT", st.builds("/state/{}/{}/{}".format, st.sampled_from(["Counter", "Signup"]) | seg, key, seg)),
        at("admin", "DELETE", st.builds("/state/{}/{}/{}".format, st.sampled_from(["Counter", "Signup"]) | seg, key,
                                        seg)),
        at("admin", get, st.builds("/blobs/{}".format, st.binary(min_size=32, max_size=32).map(bytes.hex)
                                   | st.text("0123456789abcdefABCDEF", max_size=70) | seg)),
        at("admin", get, st.lists(seg, max_size=6).map(lambda parts: "/" + "/".join(parts))),
    )


#: Header bytes aiohttp's parser takes (visible ASCII, space, tab, and 0x80-0xFF as obs-text).
_HEADER_BYTES = st.binary(max_size=60).map(lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F or c == 9))
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def _deep(levels: int, open_: bytes, close: bytes) -> bytes:
    return open_ * levels + close * levels


_BODIES = st.one_of(
    st.just(b""),
    st.integers().map(lambda n: str(n).encode()),
    st.text(max_size=20).map(msgspec.json.encode),
    st.binary(max_size=200),
    _JSON_VALUES.map(msgspec.json.encode),
    st.integers(min_value=1, max_value=200_000).map(lambda n: _deep(n, b"[", b"]")),
    st.integers(min_value=1, max_value=50_000).map(lambda n: _deep(n, b'{"a":', b"}")[:-1] + b"1" + b"}" * n),
    st.sampled_from([b"9" * 5000, b"1e999", b"-1e999", b"NaN", b'"\\ud800"', b"\xff\xfe", b"[1,", b'{"uri": 1}',
                     b'{"uri": "http://' + b"a" * 64 + b'"}', b'{"uri": "http://[::1"}', b'{"deployment": "dp_x"}']),
    st.builds(lambda uri: msgspec.json.encode({"uri": uri}), st.text(max_size=80)),
)
_QUERY_VALUES = st.one_of(
    st.sampled_from(["10s", "0s", "9" * 400 + "s", "P99999999999D", "P" + "9" * 30 + "D", "1e400s", "-1s", "PT",
                     "running", "completed", "0", "-1", "99999999999999999999", "%FF", "%00", "nan",
                     "2025-01-31T09:00:00Z", "9999-12-31T23:59:59-23:59", "0001-01-01", "Counter", "add"]),
    st.text(max_size=30).map(lambda s: quote(s, safe="")),
)
_QUERIES = st.lists(
    st.tuples(st.sampled_from(["delay", "limit", "cursor", "status", "from", "service", "key", "x", "%FF", "handler",
                               "step", "since"]), _QUERY_VALUES),
    max_size=3,
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))
_HEADERS = st.lists(st.tuples(
    st.sampled_from([b"content-type"] * 3 + [b"idempotency-key"] * 3 + [b"x-trace", b"accept", b"last-event-id",
                                                                       b"expect"]),
    st.one_of(_HEADER_BYTES, st.sampled_from([b"application/json", b"text/plain", b"100-continue", b"\xff",
                                              b"\xed\xa0\x80", b"k" * _LONGEST]))),
    max_size=4, unique_by=lambda header: header[0])  # a repeated Content-Type: refused by the parser, as text
_METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"])


@dataclass(frozen=True)
class Request:
    port: str
    method: str
    path: str
    query: str
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def target(self) -> bytes:
        return (self.path + ("?" + self.query if self.query else "")).encode()

    def may_wait(self) -> bool:
        """Calls, attaches and event streams wait for their invocation; registration for discovery;
        state edits for their key."""
        if self.port == "admin":
            return self.path.startswith("/deployments") or self.path.endswith("/events") or (
                self.path.startswith("/state/") and self.method in ("PUT", "DELETE"))
        return not self.path.startswith(("/restate/health", "/restate/awakeables"))


def _requests(known: Known) -> st.SearchStrategy[Request]:
    def build(route: tuple[str, str, str], other_method: str | None, query: str, headers: list[tuple[bytes, bytes]],
              body: bytes) -> Request:
        port, method, path = route
        return Request(port, other_method or method, path, query, headers, body)

    # Mostly the method the route takes, so that requests get past the router.
    methods = st.one_of(st.none(), st.none(), st.none(), _METHODS)
    return st.builds(build, _routes(known), methods, _QUERIES, _HEADERS, _BODIES)


_TRACEBACK = re.compile(rb"Traceback|File \".*\", line \d+")


def _check(request: Request, response: RawResponse | None) -> None:
    """What the contract says of any answer."""
    assert response is not None, f"no answer to {request}"
    assert not _TRACEBACK.search(response.body), (request, response.body[:2000])
    own_outcome = "x-restate-id" in response.headers  # an invocation's own failure, e.g. a handler's 500
    assert response.status < 500 or response.status in (502, 503, 504) or own_outcome, (request, response)
    if response.status >= 400 and request.method != "HEAD":
        assert response.headers.get("content-type", "").startswith("application/json"), (request, response)
        body = msgspec.json.decode(response.body)
        assert isinstance(body, dict) and body.get("code") == response.status, (request, body)
        assert isinstance(body.get("message"), str), (request, body)


def _fuzz(cluster: Cluster, known: Known) -> list[Request]:
    """Run the hypothesis examples (in this thread, each request on its own short event loop);
    the requests that timed out on a route that may wait."""
    waited: list[Request] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(_requests(known))
    def one(request: Request) -> None:
        address = cluster.ingress if request.port == "ingress" else cluster.admin
        data = request_bytes(request.method, request.target(), request.headers, request.body)
        try:
            response = asyncio.run(exchange(address, data, timeout=_TIMEOUT_S))
        except TimeoutError:
            assert request.may_wait(), f"no answer within {_TIMEOUT_S} s to {request}"
            waited.append(request)
            return
        _check(request, response)

    one()
    return waited


async def test_every_route_answers_any_request_as_the_contract_says(cluster: Cluster) -> None:
    assert (await cluster.post(f"/Counter/{_RESERVED_KEY}/add", 7))[:2] == (200, 7)
    status, sent, _ = await cluster.post("/Counter/fuzz-target/add/send", 1)
    assert status == 202
    _, deployments = await cluster.get("/deployments", admin=True)
    known = Known(sent["invocationId"], deployments["deployments"][0]["id"])
    before = len(cluster.sidecar.log().splitlines())

    waited = await asyncio.to_thread(_fuzz, cluster, known)

    assert cluster.sidecar.running, cluster.sidecar.log()[-3000:]
    assert (await cluster.get("/restate/health"))[0] == 200
    assert (await cluster.post(f"/Counter/{_RESERVED_KEY}/get"))[:2] == (200, 7)
    status, state = await cluster.get(f"/state/Counter/{_RESERVED_KEY}", admin=True)
    assert status == 200 and 7 in state["state"].values(), state
    log = cluster.sidecar.log().splitlines()[before:]
    # The supervisor outlives a worker that stopped: its log says so.
    bad = [line for line in log if any(sign in line for sign in ("Traceback", "unhandled error", "CRITICAL",
                                                                   "a worker died"))]
    assert not bad, "\n".join(log[-200:])
    assert len(waited) < EXAMPLES // 2, f"{len(waited)} of {EXAMPLES} requests timed out"
