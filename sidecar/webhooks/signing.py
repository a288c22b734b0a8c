"""Standard Webhooks signatures (https://www.standardwebhooks.com): what a receiver's stock
verifier checks.

The secret is written ``whsec_`` + base64 of its bytes; the signature of a message is
``v1,`` + base64(HMAC-SHA256(those bytes, "{webhook-id}.{webhook-timestamp}.{body}")).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

PREFIX = "whsec_"
#: The spec's bounds on the secret's length, in bytes once decoded.
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64


def parse_secret(text: str) -> bytes:
    """The key bytes of ``whsec_BASE64``; ``ValueError`` saying what is wrong (never echoing it)."""
    if not text.startswith(PREFIX):
        raise ValueError(f"webhook secret must start with {PREFIX!r} followed by base64")
    try:
        key = base64.b64decode(text[len(PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"webhook secret: what follows {PREFIX!r} is not base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(f"webhook secret must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, "
                         f"not {len(key)} (e.g. whsec_ + base64 of 32 random bytes)")
    return key


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header for ``body`` sent as ``message_id`` at ``timestamp``."""
    signed = b"%s.%d.%s" % (message_id.encode(), timestamp, body)
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
