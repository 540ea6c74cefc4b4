"""Tracked links for emails and SMS: short codes, absolute https URLs, and the offer a link
carries into an email or an SMS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

# 11 base64url characters: 66 bits, so codes of every store share one namespace safely.
CODE_LENGTH = 11
CODE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


@dataclass(frozen=True, slots=True)
class LinkedOffer:
    """An offer as an email or SMS shows it: every URL absolute, clicks through `click_url`."""

    offer_id: str
    product_id: str
    kind: str
    rank: int
    title: str
    reason: str
    url: str
    click_url: str
    image_url: str  # "" when the product has no https image
    price: int
    offer_price: int
    discount_pct: int
    currency: str


def derive(secret: bytes, *parts: str, length: int = CODE_LENGTH) -> str:
    """A short, stable, unguessable identifier of `parts` (the same inputs give the same code,
    so a feed fetched twice links the same way and caches)."""
    mac = hmac.new(secret, "\x1f".join(parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode("ascii")[:length]


def absolute_https(url: str, base: str | None) -> str | None:
    """`url` as an absolute https URL (a relative one resolved against `base`), or None when it
    cannot be one: an email client or a phone must never get a relative or plain-http link."""
    url = url.strip()
    if not url:
        return None
    if not urlsplit(url).scheme:
        if not base:
            return None
        url = urljoin(base if base.endswith("/") else base + "/", url.lstrip("/"))
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or any(c in url for c in "\"'<> \n\r\t"):
        return None
    return url
