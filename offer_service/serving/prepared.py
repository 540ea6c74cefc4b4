"""Prepared offer lists: a visitor-independent list per anchor set and store version, with
the JSON of its offers cached beside it."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from offer_service.decision.experiments import Assignment
from offer_service.decision.rules import PricedOffer
from offer_service.domain.records import StoreRecord
from offer_service.domain.surfaces import Surface
from offer_service.domain.tokens import OfferClaims, new_offer_id, sign
from offer_service.exceptions import ApiError

# A prepared list lives this long before a background refresh; its tokens live `offer_ttl`.
PREPARED_TTL_S = 60.0
JOINED_MAX = 64


@dataclass(slots=True)
class Prepared:
    """A cached, visitor-independent offer list for one anchor set and store version."""

    offers: list[PricedOffer]
    # Pre-purchase only: each offer's JSON split around its rank, its token signed when an
    # answer first shows the offer (`render`): most answers show only the first few of a list.
    fragments: list[tuple[bytes, bytes] | None] = field(default_factory=list)
    tokens_expire_s: int = 0
    error: ApiError | None = None
    # Joined offers (pre-purchase only) by the chosen indices, and by ("plain", limit, explore)
    # for a visitor with no history who excludes nothing (the common answer, so `finish` runs
    # once for it, and once more for its exploring variant).
    joined: dict[object, bytes] = field(default_factory=dict)
    render: Callable[[int], tuple[bytes, bytes]] | None = None

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
    expires = now_s + record.rules.offer_ttl_seconds

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

    return Prepared(offers, [None] * len(offers), expires, render=render)


def _iso(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def offer_body(offer: PricedOffer, token: str, offer_id: str, expires_s: int) -> dict[str, object]:
    product = offer.candidate.product
    return {
        "title": product.title,
        "url": product.url,
        "image_url": product.image_url,
        "reason": offer.candidate.reason,
        "price": {"amount": product.price, "currency": product.currency},
        "discount_pct": offer.discount_pct,
        "offer_price": {"amount": offer.offer_price, "currency": product.currency},
        "token": token,
        "expires_at": _iso(expires_s),
    }


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
        price=product.price,
        discount_pct=offer.discount_pct,
        offer_price=offer.offer_price,
        currency=product.currency,
        issued_at=issued_s,
        expires_at=expires_s,
        nonce=secrets.token_urlsafe(9),
        order_id=order_id,
        arm=arm.arm if arm else None,
    )
    return sign(claims, record.signing_keys[0])
