"""Svix webhook signatures (what Resend signs its delivery webhooks with).

The signed content is `{svix-id}.{svix-timestamp}.{raw body}`, signed with HMAC-SHA256 under the
base64 key after the `whsec_` prefix. `svix-signature` holds space-separated `v1,<base64>`
entries (several while a secret is being rotated); any one matching is enough. A timestamp
further than `tolerance` seconds from now is refused, so a captured request cannot be replayed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from typing import Mapping

_PRINTABLE = re.compile(r"[\x20-\x7e]+")


class SvixError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def secret_bytes(secret: str) -> bytes:
    raw = secret[len("whsec_"):] if secret.startswith("whsec_") else secret
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return raw.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    content = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret_bytes(secret), content, hashlib.sha256).digest()).decode()


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, tolerance: int = 300,
           now: float | None = None) -> str:
    """Check the three svix-* headers against `body`; return the svix-id or raise SvixError."""
    msg_id = headers.get("svix-id", "")
    stamp = headers.get("svix-timestamp", "")
    signatures = headers.get("svix-signature", "")
    if not (msg_id and stamp and signatures):
        raise SvixError("missing_signature", "svix-id, svix-timestamp and svix-signature headers are required")
    # Svix's ids, stamps and signatures are printable ASCII; anything else (bytes that are not
    # UTF-8 arrive as lone surrogates) could neither be signed nor stored.
    if not all(_PRINTABLE.fullmatch(value) for value in (msg_id, stamp, signatures)) or len(msg_id) > 200:
        raise SvixError("malformed_signature", "svix-* headers must be printable ASCII (svix-id at most 200)")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise SvixError("malformed_signature", "svix-timestamp is not a whole number") from None
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        raise SvixError("timestamp_out_of_tolerance", "svix-timestamp is too far from now")
    expected = sign(secret, msg_id, timestamp, body).encode()
    for candidate in signatures.split():
        if candidate.startswith("v1,") and hmac.compare_digest(candidate.encode(), expected):
            return msg_id
    raise SvixError("invalid_signature", "no svix-signature matches the body")
