"""Signed offer tokens: `base64url(payload).base64url(HMAC-SHA256)`, verified in constant time.

A token is the proof that the service made an offer: it binds the store, surface, offer, product,
price, discount and currency in minor units, the order (post-purchase), the experiment arm, the
issue and expiry times and a unique id; a bundle's token also binds each item's product, price and
offer price. Nothing in it is secret; everything in it is signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from offer_service.domain.records import SigningKey

TOKEN_VERSION = 1
MAX_BUNDLE_ITEMS = 8


@dataclass(frozen=True, slots=True)
class BundleItem:
    """One product of a bundle, at its list price and the price the bundle charges for it."""

    product_id: str
    price: int
    offer_price: int


class BadToken(Exception):
    """The token is malformed, forged, signed by an unknown key, or expired."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class OfferClaims:
    store_id: str
    surface: str
    offer_id: str
    product_id: str
    kind: str
    price: int
    discount_pct: int
    offer_price: int
    currency: str
    issued_at: int  # epoch seconds
    expires_at: int  # epoch seconds
    nonce: str
    order_id: str | None = None
    arm: str | None = None
    items: tuple[BundleItem, ...] = ()

    def to_payload(self, kid: str) -> dict[str, object]:
        payload: dict[str, object] = {
            "v": TOKEN_VERSION,
            "kid": kid,
            "st": self.store_id,
            "sf": self.surface,
            "o": self.offer_id,
            "p": self.product_id,
            "k": self.kind,
            "pr": self.price,
            "d": self.discount_pct,
            "op": self.offer_price,
            "c": self.currency,
            "iat": self.issued_at,
            "exp": self.expires_at,
            "n": self.nonce,
        }
        if self.order_id is not None:
            payload["ord"] = self.order_id
        if self.arm is not None:
            payload["x"] = self.arm
        if self.items:
            payload["it"] = [[i.product_id, i.price, i.offer_price] for i in self.items]
        return payload


def new_offer_id() -> str:
    return "off_" + secrets.token_urlsafe(12)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(claims: OfferClaims, key: SigningKey) -> str:
    """A compact token for `claims`, signed with `key`."""
    body = _b64(orjson.dumps(claims.to_payload(key.kid)))
    mac = hmac.new(key.secret, body.encode("ascii"), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


_REQUIRED_INT = ("pr", "d", "op", "iat", "exp")
_REQUIRED_STR = ("st", "sf", "o", "p", "k", "c", "n")


def verify(
    token: str, keys: Sequence[SigningKey], now_s: float, *, any_age: bool = False
) -> OfferClaims:
    """The claims of a genuine, unexpired token signed by one of `keys`; BadToken otherwise.
    With `any_age`, an expired token is genuine too (an order line that carries the token of
    an offer taken earlier is credited to it whenever the order arrives)."""
    if not isinstance(token, str) or len(token) > 2048 or token.count(".") != 1:
        raise BadToken("malformed")
    body, _, mac_text = token.partition(".")
    try:
        payload = orjson.loads(_unb64(body))
        mac = _unb64(mac_text)
    except (ValueError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise BadToken("malformed") from exc
    if not isinstance(payload, dict):
        raise BadToken("malformed")
    kid = payload.get("kid")
    key = next((k for k in keys if k.kid == kid), None)
    if key is None:
        raise BadToken("unknown_key")
    expected = hmac.new(key.secret, body.encode("ascii"), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, mac):
        raise BadToken("bad_signature")
    if payload.get("v") != TOKEN_VERSION:
        raise BadToken("malformed")
    for name in _REQUIRED_INT:
        if type(payload.get(name)) is not int:
            raise BadToken("malformed")
    for name in _REQUIRED_STR:
        if not isinstance(payload.get(name), str):
            raise BadToken("malformed")
    if payload["exp"] <= now_s and not any_age:
        raise BadToken("expired")
    order_id = payload.get("ord")
    arm = payload.get("x")
    items = _bundle_items(payload.get("it", []))
    return OfferClaims(
        store_id=payload["st"],
        surface=payload["sf"],
        offer_id=payload["o"],
        product_id=payload["p"],
        kind=payload["k"],
        price=payload["pr"],
        discount_pct=payload["d"],
        offer_price=payload["op"],
        currency=payload["c"],
        issued_at=payload["iat"],
        expires_at=payload["exp"],
        nonce=payload["n"],
        order_id=order_id if isinstance(order_id, str) else None,
        arm=arm if isinstance(arm, str) else None,
        items=items,
    )


def _bundle_items(raw: object) -> tuple[BundleItem, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_BUNDLE_ITEMS:
        raise BadToken("malformed")
    items = []
    for entry in raw:
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not isinstance(entry[0], str)
            or type(entry[1]) is not int
            or type(entry[2]) is not int
        ):
            raise BadToken("malformed")
        items.append(BundleItem(entry[0], entry[1], entry[2]))
    return tuple(items)


def order_token(webhook_secret: str, store_id: str, order_id: str) -> str:
    """The order token (docs/security.md): hex(HMAC-SHA256(key=webhook_secret,
    msg="<store_id>:<order_id>"))."""
    msg = f"{store_id}:{order_id}".encode()
    return hmac.new(webhook_secret.encode(), msg, hashlib.sha256).hexdigest()


def order_token_valid(
    webhook_secrets: Sequence[str], store_id: str, order_id: str, given: str
) -> bool:
    """Constant-time check against every valid webhook secret (two during a rotation)."""
    ok = False
    for secret in webhook_secrets:
        # Bytes: compare_digest refuses str with non-ASCII characters, which a caller may send.
        expected = order_token(secret, store_id, order_id).encode()
        ok |= hmac.compare_digest(expected, given.encode("utf-8", "replace"))
    return ok
