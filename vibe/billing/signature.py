"""Stripe webhook signatures: `Stripe-Signature: t=<unix>,v1=<hex hmac-sha256>[,v1=...]`.

The signed string is `f"{t}.{raw body}"`, HMAC-SHA256 with the endpoint's `whsec_...` secret,
compared in constant time. Several secrets are tried (rotation, several endpoints); several
`v1` entries are accepted (Stripe sends one per active secret while rolling a secret).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Iterable


class SignatureError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def parse_header(header: str | None) -> tuple[int, list[str]]:
    if not header:
        raise SignatureError("missing_signature", "The Stripe-Signature header is missing.")
    if len(header) > 4096:
        raise SignatureError("malformed_signature", "The Stripe-Signature header is too long.")
    timestamp = None
    signatures = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("malformed_signature", "The Stripe-Signature timestamp is not a number.") from None
        elif key == "v1":
            signatures.append(value.strip())
    if timestamp is None or not signatures:
        raise SignatureError(
            "malformed_signature", "The Stripe-Signature header needs a t= timestamp and a v1= signature."
        )
    return timestamp, signatures


def compute(payload: bytes, timestamp: int, secret: str) -> str:
    signed = str(timestamp).encode() + b"." + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify(payload: bytes, header: str | None, secrets: Iterable[str], tolerance: int,
           now: float | None = None) -> None:
    """Raise SignatureError unless one secret signed `payload` within `tolerance` seconds."""
    timestamp, signatures = parse_header(header)
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        raise SignatureError(
            "timestamp_out_of_tolerance",
            f"The signature's timestamp is more than {tolerance} seconds from now; "
            "a stale or replayed delivery is refused.",
        )
    for secret in secrets:
        expected = compute(payload, timestamp, secret)
        if any(hmac.compare_digest(expected, candidate) for candidate in signatures):
            return
    raise SignatureError("invalid_signature", "No configured webhook secret produced this signature.")


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe would send for `payload`."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={compute(payload, timestamp, secret)}"
