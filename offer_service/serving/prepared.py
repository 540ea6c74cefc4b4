"""Prepared offer lists: a visitor-independent list per anchor set and store version, with
the JSON of its offers cached beside it."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from offer_service.decision.experiments import Assignment
from offer_service.decision.rules import PricedOffer
from offer_service.domain.asks import AnchorItem
from offer_service.domain.records import StoreRecord
from offer_service.domain.surfaces import Surface
from offer_service.domain.tokens import BundleItem, OfferClaims, new_offer_id, sign
from offer_service.exceptions import ApiError
from offer_service.types import money

# A prepared list lives this long before a background refresh; its tokens live `offer_ttl`.
# Each refresh ranks on a fresh draw of the learned P(accept) (refreshed once a minute), so this
# is how soon what the store learns reaches a list. Under real traffic every product page's list
# is refreshed this often: at 60 s the refreshes of 3,798 lists cost 8.7 us a request (of 130).
PREPARED_TTL_S = 300.0
# Background refreshes of prepared lists take at most this share of the event loop's time.
# A process's lists are mostly prepared in its first minute and expire together a minute
# later: a few thousand refreshes of about a millisecond each, which run at once held every
# request behind them (a p99 of 100 ms and more under real traffic at half the bare maximum).
# A tenth of the loop refreshes 4,000 lists of 1.5 ms in a minute; meanwhile the stale lists
# are served (their tokens still live for most of an hour).
PREPARED_REFRESH_SHARE = 0.1
JOINED_MAX = 64


# A cart's lines as its cached answer's key holds them: (product id, quantity, unit price sent or
# None), one per product, in product order.
CartLines = tuple[tuple[str, int, int | None], ...]


def cart_lines(items: Iterable[AnchorItem]) -> CartLines:
    """The lines of a cart request, a product sent twice counted once with both quantities
    (the price sent first, if any)."""
    merged: dict[str, tuple[int, int | None]] = {}
    for item in items:
        held = merged.get(item.product_id)
        if held is None:
            merged[item.product_id] = (item.quantity, item.price)
        else:
            merged[item.product_id] = (
                held[0] + item.quantity,
                held[1] if held[1] is not None else item.price,
            )
    return tuple((pid, q, p) for pid, (q, p) in sorted(merged.items()))


@dataclass(slots=True)
class Prepared:
    """A cached, visitor-independent offer list for one anchor set and store version."""

    offers: list[PricedOffer]
    # Pre-purchase only: each offer's JSON split around its rank, its token signed when an
    # answer first shows the offer (`render`): most answers show only the first few of a list.
    fragments: list[tuple[bytes, bytes] | None] = field(default_factory=list)
    # Epoch seconds from which the list is built again before it is served (pre-purchase): its
    # tokens would expire too soon after the answer.
    renew_s: float = 0.0
    error: ApiError | None = None
    # Joined offers (pre-purchase only) by the chosen indices, and by ("plain", limit, explore)
    # for a visitor with no history who excludes nothing (the common answer, so `finish` runs
    # once for it, and once more for its exploring variant).
    joined: dict[object, bytes] = field(default_factory=dict)
    render: Callable[[int], tuple[bytes, bytes]] | None = None
    # What follows the answer's offers: its `free_shipping`, when the cart is below the
    # threshold (the cart's subtotal is in the list's key).
    tail: bytes = b""

    def fragment(self, i: int) -> tuple[bytes, bytes]:
        found = self.fragments[i]
        if found is None:
            assert self.render is not None, "a pre-purchase list renders its offers"
            found = self.fragments[i] = self.render(i)
        return found

    def join(self, chosen: list[int]) -> bytes:
        key = tuple(chosen)
        body = self.joined.get(key)
        if body is None:
            parts = []
            for rank, i in enumerate(chosen, start=1):
                head, tail = self.fragment(i)
                parts.append(head + str(rank).encode() + tail)
            body = b",".join(parts)
            if len(self.joined) < JOINED_MAX:
                self.joined[key] = body
        return body


def pre_purchase(
    record: StoreRecord,
    surface: Surface,
    offers: list[PricedOffer],
    now_s: int,
    arm: Assignment | None,
) -> Prepared:
    """A pre-purchase list: its tokens bind no visitor or order, so each offer's JSON is
    rendered (and its token signed) once, when an answer first shows it."""
    ttl = record.rules.offer_ttl_seconds
    expires = now_s + ttl

    def render(i: int) -> tuple[bytes, bytes]:
        offer = offers[i]
        offer_id = new_offer_id()
        token = sign_offer(record, surface, offer, offer_id, now_s, expires, None, arm=arm)
        ident = orjson.dumps(
            {
                "offer_id": offer_id,
                "product_id": offer.candidate.product.id,
                "kind": offer.candidate.kind,
            }
        )
        body = orjson.dumps(offer_body(offer, token, offer_id, expires))
        return ident[:-1] + b',"rank":', b"," + body[1:]

    return Prepared(offers, [None] * len(offers), renew_at(expires, ttl), render=render)


def renew_at(expires_s: int, ttl_s: int) -> float:
    """When a list whose tokens expire at `expires_s` stops being served as it is: PREPARED_TTL_S
    before, or half its tokens' life on a store whose tokens live shorter than two of those."""
    return expires_s - min(PREPARED_TTL_S, ttl_s / 2)


def _iso(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def offer_body(offer: PricedOffer, token: str, offer_id: str, expires_s: int) -> dict[str, object]:
    """An offer's fields after its id, product id, kind and rank. A bundle is titled by its
    products, shown with the viewed product's link and image, and lists its items."""
    product = offer.candidate.product
    currency = product.currency
    body: dict[str, object] = {
        "title": " + ".join(i.product.title for i in offer.items) or product.title,
        "url": product.url,
        "image_url": product.image_url,
        "reason": offer.candidate.reason,
        "price": money(offer.list_price, currency),
        "discount_pct": offer.discount_pct,
        "offer_price": money(offer.offer_price, currency),
        "token": token,
        "expires_at": _iso(expires_s),
    }
    if offer.items:
        body["items"] = [
            {
                "product_id": i.product.id,
                "title": i.product.title,
                "url": i.product.url,
                "image_url": i.product.image_url,
                "price": money(i.product.price, currency),
                "offer_price": money(i.offer_price, currency),
            }
            for i in offer.items
        ]
    return body


def free_shipping(threshold: int, remaining: int, currency: str) -> bytes:
    """The answer's `free_shipping` member, with its leading comma."""
    fields = {"threshold": money(threshold, currency), "remaining": money(remaining, currency)}
    return b',"free_shipping":' + orjson.dumps(fields)


def sign_offer(
    record: StoreRecord,
    surface: Surface,
    offer: PricedOffer,
    offer_id: str,
    issued_s: int,
    expires_s: int,
    order_id: str | None,
    *,
    arm: Assignment | None = None,
) -> str:
    """The offer's token, signed with the store's current key."""
    product = offer.candidate.product
    claims = OfferClaims(
        store_id=record.id,
        surface=surface.value,
        offer_id=offer_id,
        product_id=product.id,
        kind=offer.candidate.kind,
        price=offer.list_price,
        discount_pct=offer.discount_pct,
        offer_price=offer.offer_price,
        currency=product.currency,
        issued_at=issued_s,
        expires_at=expires_s,
        nonce=secrets.token_urlsafe(9),
        order_id=order_id,
        arm=arm.arm if arm else None,
        items=tuple(BundleItem(i.product.id, i.product.price, i.offer_price) for i in offer.items),
    )
    return sign(claims, record.signing_keys[0])
