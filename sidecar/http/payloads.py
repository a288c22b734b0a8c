"""Payloads as the admin API shows them, and ``GET /blobs/{sha256}``.

A payload over ``blob_threshold_bytes`` is shown in an invocation's detail as ``{"blob": sha256,
"size": n, "preview": first 256 bytes}`` (the store holds it once, under that hash), so that a
detail stays small whatever its steps returned; ``GET /blobs/{sha256}`` gives the bytes.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgspec
from aiohttp import web

from handler_sdk.protocol import needs_blob

from ..store import Store
from .errors import HTTPProblem

#: How much of a large payload its view shows.
PREVIEW_BYTES = 256
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def payload(raw: bytes | None) -> Any:
    """A payload as JSON if it is JSON, else as text: the journal view is for people."""
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):  # not JSON, or nested too deep to show as such
        return raw.decode(errors="replace")


class PayloadViews:
    """Shows payloads, large ones as their blob; serves blobs from the store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def view(self, raw: bytes | None) -> Any:
        if raw is None or not needs_blob(raw, self._store.blob_threshold):
            return payload(raw)
        return {"blob": hashlib.sha256(raw).hexdigest(), "size": len(raw),
                "preview": raw[:PREVIEW_BYTES].decode(errors="replace")}

    async def blob(self, request: web.Request) -> web.Response:
        """``GET /blobs/{sha256}``: the bytes, as they were written (404 unknown, 400 malformed)."""
        text = request.match_info["sha256"]
        if not _SHA256_HEX.fullmatch(text):
            raise HTTPProblem(400, f"{text[:80]!r} is not a SHA-256: 64 lowercase hexadecimal digits")
        data = self._store.read_blob(bytes.fromhex(text))
        if data is None:
            raise HTTPProblem(404, f"no blob {text}")
        return web.Response(body=data, content_type="application/octet-stream")
