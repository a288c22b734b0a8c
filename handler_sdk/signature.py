"""The ``x-sidecar-signature`` header: what the sidecar signs and how the header spells it.

A sidecar started with ``--signing-key`` signs each of its requests to a handler service
(``GET /discover``, ``GET /connect``, ``POST /invoke``) with Ed25519 over :func:`canonical`, and
sends ``x-sidecar-signature: v1;ts=<unix ms>;sig=<base64url>``. This module is the format alone,
with no key and no crypto library, so that the signing sidecar and the verifying SDK read one
definition of it (docs/protocol.md spells it out for other SDKs).
"""

from __future__ import annotations

import base64
import hashlib
import re

import msgspec

HEADER = "x-sidecar-signature"
VERSION = "v1"
#: A signature is taken this long either side of the handler's clock: enough for a request in
#: flight and clocks a little apart, short enough that a captured request soon stops working.
MAX_SKEW_MS = 60_000
#: An Ed25519 signature is 64 bytes: 86 characters of base64url without padding.
_HEADER = re.compile(r"v1;ts=(?P<ts>0|[1-9][0-9]{0,14});sig=(?P<sig>[A-Za-z0-9_-]{86})")


class SignatureHeader(msgspec.Struct, frozen=True):
    """A parsed header: when it was signed (unix ms) and the signature."""

    ts_ms: int
    signature: bytes


def canonical(method: str, path: str, ts_ms: int, body: bytes) -> bytes:
    """What is signed: ``v1``, the method, the path as sent (percent-encoding kept, no query), the
    timestamp and the body's SHA-256 in lowercase hex (that of no bytes for a ``GET``), one per
    line. A method or path that is not ASCII raises ``UnicodeEncodeError`` (a ``ValueError``):
    the sidecar sends none, so a request that has one was not signed by it."""
    return f"{VERSION}\n{method}\n{path}\n{ts_ms}\n{hashlib.sha256(body).hexdigest()}".encode("ascii")


def format_header(ts_ms: int, signature: bytes) -> str:
    return f"{VERSION};ts={ts_ms};sig={base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def parse_header(value: str) -> SignatureHeader:
    """The header's parts; ``ValueError`` saying what is wrong with a value that is not one."""
    found = _HEADER.fullmatch(value)
    if found is None:
        version = value.split(";", 1)[0]
        if version != VERSION and re.fullmatch(r"v[0-9]{1,4}", version):
            raise ValueError(f"it is version {version}; this handler reads {VERSION}")
        raise ValueError(f"expected {VERSION};ts=<unix ms>;sig=<86 characters of base64url>, got {value[:120]!r}")
    # 86 characters always decode to 64 bytes (the last one's low bits are ignored).
    return SignatureHeader(ts_ms=int(found["ts"]), signature=base64.urlsafe_b64decode(found["sig"] + "=="))
