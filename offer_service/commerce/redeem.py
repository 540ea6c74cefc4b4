"""Taking a pre-purchase offer: the price the store charges for each offer token of a cart.

Each token is checked on its own (a bad one never drops the good ones): its signature and
store, its surface (product page, cart or checkout), its expiry, and then the product (each
item of a bundle) as it is now: still active, in stock, and at the price the token was signed
with. A token that passes answers one line per product at the offered price; that answer is
kept per (cart, token) until a day after the token expires, so the cart asking again (a page
reload, a retried call, a checkout after the offer expired) gets the same price even if the
product changed since. A refused token is kept nowhere: it is checked afresh each time.

Pricing charges nothing; each line priced for a cart the first time is recorded as a `redeem`
event of its offer, so the report can count the offers carts took.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from offer_service.domain.events import REDEEM, StoredEvent
from offer_service.domain.products import Product
from offer_service.domain.records import StoreRecord
from offer_service.domain.surfaces import Surface
from offer_service.domain.tokens import BadToken, BundleItem, OfferClaims, verify
from offer_service.exceptions import StoreError
from offer_service.storage.protocols import Store
from offer_service.types import DAY_MS, money

# Surfaces whose offers are taken into a cart (post-purchase offers are accepted one-click).
REDEEMABLE_SURFACES = frozenset(
    (Surface.PRODUCT_PAGE.value, Surface.CART.value, Surface.CHECKOUT.value)
)
# A kept answer outlives its token by this much: the cart that took the offer may check out
# a while after the offer stopped being shown.
KEPT_AFTER_EXPIRY_MS = DAY_MS
BUNDLE = "bundle"

log = logging.getLogger(__name__)

BAD_TOKEN = "bad_token"
OFFER_EXPIRED = "offer_expired"
INACTIVE = "inactive"
OUT_OF_STOCK = "out_of_stock"
PRICE_CHANGED = "price_changed"
MESSAGES = {
    BAD_TOKEN: "The token is not an offer of this store that can be added to a cart.",
    OFFER_EXPIRED: "This offer has expired.",
    INACTIVE: "The product is no longer sold.",
    OUT_OF_STOCK: "The product is out of stock.",
    PRICE_CHANGED: "The product's price changed since the offer was made.",
}


# A line of the answer, as it goes on the wire.
Line = dict[str, Any]


def pair_key(cart_id: str, token: str) -> str:
    """The digest a (cart, token) pair's answer is kept under."""
    return hashlib.sha256(orjson.dumps([cart_id, token])).hexdigest()


def refused(code: str, claims: OfferClaims | None = None, product_id: str | None = None) -> Line:
    """A line that cannot be charged: a code, a message and, when known, the offer."""
    line: Line = {"valid": False, "code": code, "message": MESSAGES[code]}
    if claims is not None:
        line["offer_id"] = claims.offer_id
        line["product_id"] = product_id or claims.product_id
    return line


@dataclass(frozen=True, slots=True)
class _Checked:
    """A token checked: its claims (None: a bad token) and whether it has expired."""

    claims: OfferClaims | None
    expired: bool = False


def _check(token: str, record: StoreRecord, now_s: float) -> _Checked:
    try:
        claims = verify(token, record.signing_keys, now_s, any_age=True)
    except BadToken:
        return _Checked(None)
    if (
        claims.store_id != record.id
        or claims.surface not in REDEEMABLE_SURFACES
        or claims.order_id is not None
        or (claims.kind == BUNDLE and not claims.items)
    ):
        return _Checked(None)
    return _Checked(claims, expired=claims.expires_at <= now_s)


def _items(claims: OfferClaims) -> tuple[BundleItem, ...]:
    """What the offer sells: a bundle's items, or its one product at its prices."""
    if claims.items:
        return claims.items
    return (BundleItem(claims.product_id, claims.price, claims.offer_price),)


def _lines(claims: OfferClaims, products: Mapping[str, Product]) -> list[Line]:
    """One line per product at its offered price, or one refused line naming the first
    product at fault: a bundle is sold whole or not at all."""
    out: list[Line] = []
    for item in _items(claims):
        product = products.get(item.product_id)
        if product is None or not product.active:
            return [refused(INACTIVE, claims, item.product_id)]
        if not product.in_stock:
            return [refused(OUT_OF_STOCK, claims, item.product_id)]
        if product.price != item.price or product.currency != claims.currency:
            return [refused(PRICE_CHANGED, claims, item.product_id)]
        out.append(
            {
                "valid": True,
                "offer_id": claims.offer_id,
                "product_id": item.product_id,
                "kind": claims.kind,
                "surface": claims.surface,
                "quantity": 1,
                "price": money(item.price, claims.currency),
                "discount_pct": claims.discount_pct,
                "offer_price": money(item.offer_price, claims.currency),
            }
        )
    return out


async def redeem(
    store: Store,
    record: StoreRecord,
    cart_id: str,
    tokens: Sequence[str],
    *,
    now_s: float | None = None,
) -> list[Line]:
    """The lines of `tokens`, in their order (a bundle's items in its order), each marked with
    the index of the token it answers."""
    now_s = time.time() if now_s is None else now_s
    now_ms = int(now_s * 1000)
    checked = [_check(token, record, now_s) for token in tokens]
    wanted = {
        item.product_id
        for c in checked
        if c.claims is not None and not c.expired
        for item in _items(c.claims)
    }
    products = await store.get_products(record.id, wanted) if wanted else {}
    keys = [pair_key(cart_id, token) for token in tokens]
    fresh: dict[int, list[Line]] = {}
    offered: dict[str, tuple[bytes, int] | None] = {}
    for i, (key, c) in enumerate(zip(keys, checked, strict=True)):
        if c.claims is None:
            fresh[i] = [refused(BAD_TOKEN)]
            continue
        if c.expired:
            fresh[i] = [refused(OFFER_EXPIRED, c.claims)]
            offered.setdefault(key, None)  # an answer kept while it was valid still holds
            continue
        fresh[i] = _lines(c.claims, products)
        if fresh[i][0]["valid"]:
            keep_until = c.claims.expires_at * 1000 + KEPT_AFTER_EXPIRY_MS
            offered[key] = (orjson.dumps(fresh[i]), keep_until)
        else:
            offered.setdefault(key, None)
    kept = await store.remember_redemptions(record.id, offered, now_ms) if offered else {}
    out: list[Line] = []
    for i, key in enumerate(keys):
        found = kept.get(key)
        lines: list[Line] = orjson.loads(found[0]) if found is not None else fresh[i]
        out.extend({**line, "token_index": i} for line in lines)
    # The answers this call kept first: what a cart took, recorded once.
    first = {
        key: c.claims
        for key, c in zip(keys, checked, strict=True)
        if c.claims is not None and key in kept and kept[key][1]
    }
    await _record(store, record, first, kept, now_ms)
    return out


async def _record(
    store: Store,
    record: StoreRecord,
    claims: Mapping[str, OfferClaims],
    kept: Mapping[str, tuple[bytes, bool]],
    now_ms: int,
) -> None:
    """A `redeem` event per line of each answer in `claims` (an id per cart, token and line).
    The answer stands whether or not this is written."""
    events = [
        StoredEvent(
            f"r_{key[:40]}_{n}",
            REDEEM,
            now_ms,
            now_ms,
            None,
            c.surface,
            c.kind,
            line["product_id"],
            c.offer_id,
            None,
            c.arm,
            line["offer_price"]["amount"],
            c.currency,
        )
        for key, c in claims.items()
        for n, line in enumerate(orjson.loads(kept[key][0]))
    ]
    if not events:
        return
    try:
        await store.record_events(record.id, events, now_ms - DAY_MS)
    except StoreError as exc:
        log.warning("redeemed offers of store %s were not recorded: %s", record.id, exc)
