"""The sidecar's signature on its requests to handler services (``--signing-key``), and the key
pair ``sidecar keygen`` makes.

A handler service given the public key (``identity_keys``) serves only requests that carry the
signature, so that nobody else who can reach its port can run its handlers or read its
discovery. The format is ``handler_sdk.signature``'s.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from handler_sdk.signature import HEADER, canonical, format_header

from ..clock import now_ms

PRIVATE_FILE = "signing.pem"
PUBLIC_FILE = "signing.pub.pem"


class SigningKeyError(ValueError):
    """The signing key cannot be used: the message names the file and what is wrong."""


class Signer:
    """Signs requests with one Ed25519 key; without a key (:data:`UNSIGNED`), adds nothing."""

    def __init__(self, key: Ed25519PrivateKey | None) -> None:
        self._key = key

    @classmethod
    def load(cls, path: str) -> Signer:
        """The signer of the key in ``path`` (a PEM private key); ``""``: :data:`UNSIGNED`."""
        if not path:
            return UNSIGNED
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise SigningKeyError(f"cannot read the signing key {path}: {exc.strerror or exc}") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:  # TypeError: it is encrypted
            raise SigningKeyError(f"the signing key {path} is not an unencrypted PEM private key: {exc} "
                                  "(make one with `sidecar keygen DIR`)") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"the signing key {path} is {type(key).__name__}, not an Ed25519 "
                                  "key (make one with `sidecar keygen DIR`)")
        return cls(key)

    @property
    def signs(self) -> bool:
        return self._key is not None

    def headers(self, method: str, path: str, body: bytes = b"") -> dict[str, str]:
        """The header that signs a request for ``path`` (as sent: percent-encoded, no query)."""
        if self._key is None:
            return {}
        ts_ms = now_ms()
        return {HEADER: format_header(ts_ms, self._key.sign(canonical(method, path, ts_ms, body)))}


UNSIGNED = Signer(None)


def generate(directory: Path) -> tuple[Path, Path]:
    """Write a new key pair into ``directory`` (made if missing): the private key readable by its
    owner only. Refuses (``FileExistsError``) to replace either file, since a replaced key
    locks the sidecar out of every handler service that trusts the old one."""
    private, public = directory / PRIVATE_FILE, directory / PUBLIC_FILE
    for path in (private, public):
        if path.exists():
            raise FileExistsError(f"{path} exists; keygen never replaces a key (remove it first if that is meant)")
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    _write_new(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()), 0o600)
    _write_new(public, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
    return private, public


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (never readable by others, even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
