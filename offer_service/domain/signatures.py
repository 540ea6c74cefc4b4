"""`X-Offer-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`: signing and verification.

Used both ways: the service signs what it POSTs to a store's charge endpoint, and verifies
signed admin writes (order and return webhooks). Several secrets may be valid at once so a
merchant can rotate without downtime.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from offer_service.types import is_whole

TOLERANCE_S = 300


def signature(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    header: str, body: bytes, secrets: Sequence[str], now_s: float, tolerance_s: int = TOLERANCE_S
) -> bool:
    """True when `header` signs `body` with one of `secrets` within the tolerance, both ways."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and is_whole(value) and len(value) <= 12:
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now_s - timestamp) > tolerance_s:
        return False
    ok = False
    for secret in secrets:
        expected = signature(secret, body, timestamp).rpartition("v1=")[2]
        for given in candidates:
            ok |= hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))
    return ok
