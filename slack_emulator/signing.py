"""Slack's request signing (v0): HMAC-SHA256 over ``v0:{timestamp}:{raw body}``."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

MAX_AGE = 5 * 60  # Slack's advice: refuse requests older than five minutes


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """``v0=<hex digest>``, as in the ``X-Slack-Signature`` header."""
    base = f"v0:{timestamp}:".encode() + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": signature(secret, ts, body),
    }


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, max_age: int = MAX_AGE) -> bool:
    """What a receiving app checks: a fresh timestamp and a matching signature."""
    lowered = {k.lower(): v for k, v in headers.items()}
    ts = lowered.get("x-slack-request-timestamp", "")
    sig = lowered.get("x-slack-signature", "")
    if not ts.isdigit() or abs(time.time() - int(ts)) > max_age:
        return False
    return hmac.compare_digest(signature(secret, ts, body), sig)
