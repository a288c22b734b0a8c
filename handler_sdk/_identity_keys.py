"""Identity keys read and requests verified with them: Ed25519 through ``cryptography``, the
``signing`` extra's package, imported only where a handler service has identity keys
(``_identity.from_options``)."""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping

from aiohttp import web
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key

from ._identity import ENV, IdentityKeyError
from .signature import HEADER, MAX_SKEW_MS, SignatureHeader, canonical, parse_header

logger = logging.getLogger("handler_sdk")

_PEM = re.compile(r"-----BEGIN PUBLIC KEY-----(?P<body>.*?)-----END PUBLIC KEY-----", re.DOTALL)
#: Refusals are logged at most this often (a scanner knocking must not flood the log).
_LOG_PERIOD_S = 10.0


def parse_keys(text: str, source: str) -> list[Ed25519PublicKey]:
    """The Ed25519 public keys in ``text``: PEM blocks (``-----BEGIN PUBLIC KEY-----`` ...),
    one after another, with newlines, spaces or commas between them; inside a block, spaces
    may stand for the newlines, for settings that cannot hold a newline."""
    if "PRIVATE KEY-----" in text:  # said without quoting it: an error message is no place for a key
        raise IdentityKeyError(f"{source} holds a private key: give the handler service the public one "
                               "(signing.pub.pem), and keep the private one with the sidecar alone")
    keys = []
    for number, found in enumerate(_PEM.finditer(text), 1):
        try:
            der = base64.b64decode("".join(found["body"].split()), validate=True)
            key = load_der_public_key(der)
        except (binascii.Error, ValueError, UnsupportedAlgorithm) as exc:
            raise IdentityKeyError(f"{source}: key {number} is not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise IdentityKeyError(f"{source}: key {number} is {type(key).__name__}, not an Ed25519 key "
                                   "(the sidecar signs with Ed25519: see `sidecar keygen`)")
        keys.append(key)
    rest = _PEM.sub("", text).replace(",", "").strip()
    if rest:
        raise IdentityKeyError(f"{source}: {rest[:60]!r} is not part of a PEM public key "
                               "(-----BEGIN PUBLIC KEY----- ... -----END PUBLIC KEY-----)")
    if not keys:
        raise IdentityKeyError(f"{source} holds no key; leave it unset to serve unsigned requests")
    return keys


def identity_keys(given: Iterable[str] | None, environ: Mapping[str, str]) -> list[Ed25519PublicKey]:
    """``app(identity_keys=...)`` (each one PEM public key), else ``HANDLER_IDENTITY_KEYS``;
    empty: requests are not checked."""
    if given is None:
        text = environ.get(ENV, "")
        return parse_keys(text, ENV) if text.strip() else []
    keys = []
    for index, pem in enumerate(given):
        if not isinstance(pem, str):
            raise TypeError(f"identity_keys must be PEM strings, got {type(pem).__name__} at {index}")
        found = parse_keys(pem, f"identity_keys[{index}]")
        if len(found) != 1:
            raise IdentityKeyError(f"identity_keys[{index}] holds {len(found)} keys; give each its own string")
        keys += found
    return keys


class Identity:
    """Checks that a request was signed, lately, by one of the keys."""

    def __init__(self, keys: list[Ed25519PublicKey], clock: Callable[[], float] = time.time) -> None:
        self._keys = keys
        self._clock = clock
        self._logged_at = -_LOG_PERIOD_S
        self._unlogged = 0

    def refusal(self, method: str, path: str, header: str | None, body: bytes) -> str | None:
        """Why a request is refused; ``None`` if one of the keys verifies it."""
        signed = self._fresh(header)
        return signed if isinstance(signed, str) else self._verified(method, path, signed, body)

    async def check(self, request: web.Request) -> str | None:
        """:meth:`refusal` for ``request``, whose body is read only once its header is fresh."""
        signed = self._fresh(request.headers.get(HEADER))
        if isinstance(signed, str):
            return signed
        return self._verified(request.method, request.rel_url.raw_path, signed, await request.read())

    def _fresh(self, header: str | None) -> SignatureHeader | str:
        """The parsed header if it is one and was signed lately, else why not."""
        if header is None:
            return f"the request is not signed: it has no {HEADER} header, and this handler service has identity keys"
        try:
            signed = parse_header(header)
        except ValueError as exc:
            return f"{HEADER} is malformed: {exc}"
        age_ms = self._clock() * 1000 - signed.ts_ms
        if abs(age_ms) > MAX_SKEW_MS:
            when = f"{age_ms / 1000:.1f} s ago" if age_ms > 0 else f"{-age_ms / 1000:.1f} s in the future"
            return (f"{HEADER} is stale: signed {when}, and a signature holds for {MAX_SKEW_MS // 1000} s either "
                    "way (is a clock wrong, or was the request replayed?)")
        return signed

    def _verified(self, method: str, path: str, signed: SignatureHeader, body: bytes) -> str | None:
        try:
            data = canonical(method, path, signed.ts_ms, body)
        except ValueError:
            return "the request's path is not ASCII: the sidecar signs no such request"
        for key in self._keys:
            try:
                key.verify(signed.signature, data)
                return None
            except InvalidSignature:
                continue
        return (f"{HEADER} does not verify with this handler service's identity key"
                f"{'s' if len(self._keys) > 1 else ''}: signed by another key, or for another request")

    def log(self, request: web.Request, why: str) -> None:
        """Log a refusal, with how many went unlogged since the last line."""
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= _LOG_PERIOD_S:
            logger.warning("refused %d request(s) without a valid signature (latest: %s %s from %s: %s)",
                           self._unlogged, request.method, request.rel_url.raw_path[:200], request.remote, why)
            self._logged_at, self._unlogged = now, 0
