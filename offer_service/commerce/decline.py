"""POST /v1/decline: remember the shopper's "no" and, on thank-you, offer one cheaper sibling."""

from __future__ import annotations

import time
from typing import Any

import orjson

from offer_service.decision import candidates, rules
from offer_service.decision.experiments import assign, variant_rules
from offer_service.domain.records import StoreRecord, bundle_signal
from offer_service.domain.surfaces import Surface
from offer_service.domain.tokens import BadToken, new_offer_id, verify
from offer_service.exceptions import ApiError, Forbidden
from offer_service.serving.engine import Engine, offer_body, order_subject
from offer_service.types import HOUR_MS


async def decline(
    engine: Engine, record: StoreRecord, token: str, visitor_id: str | None
) -> dict[str, Any] | None:
    """Record the decline; return the downsell offer (thank_you only) or None."""
    now_s = time.time()
    now_ms = int(now_s * 1000)
    try:
        claims = verify(token, record.signing_keys, now_s)
    except BadToken as exc:
        if exc.reason == "expired":
            raise ApiError(
                "This offer has expired.", code="offer_expired", status_code=410
            ) from None
        raise Forbidden("The offer token is not valid for this store.", code="bad_token") from None
    if claims.store_id != record.id:
        raise Forbidden("The offer token is not valid for this store.", code="bad_token")
    store = engine.store
    order = await store.get_order(record.id, claims.order_id) if claims.order_id else None
    subjects = {s for s in (visitor_id, order_subject(order) if order else None) if s}
    # A bundle's "no thanks" declines the set, not the viewed product it is keyed by.
    declined_id = bundle_signal(claims.product_id) if claims.items else claims.product_id
    for subject in sorted(subjects):
        await store.record_visitor_signal(record.id, subject, declined_id, "decline", now_ms)
    engine.forget_visitors(record.id, subjects)
    if claims.surface != Surface.THANK_YOU.value or order is None:
        return None
    declined = (await store.get_products(record.id, [claims.product_id])).get(claims.product_id)
    if declined is None or declined.family is None:
        return None
    members = await store.family_products(record.id, declined.family)
    candidate = candidates.downsell(declined, members)
    if candidate is None:
        return None
    # The downsell belongs to the same arm as the offer declined: priced by its rules, and
    # signed with it, so its events and accept count for that arm.
    arm = assign(record.id, record.rules, Surface.THANK_YOU, visitor_id or order.visitor_id)
    store_rules = variant_rules(record.rules, arm.variant) if arm else record.rules
    priced = rules.price(
        [candidate], Surface.THANK_YOU, order.product_ids, order.total, store_rules
    )
    if not priced:
        return None
    since = now_ms - store_rules.frequency_cap.window_hours * HOUR_MS
    visitor = await store.visitor_state(record.id, order_subject(order), order.customer_id, since)
    offer = priced[0]
    if not rules.visitor_allows(offer, visitor, store_rules, now_ms):
        return None
    offer_id = new_offer_id()
    expires = int(now_s) + store_rules.offer_ttl_seconds
    signed = engine.sign(
        record, Surface.THANK_YOU, offer, offer_id, int(now_s), expires, order.id, arm=arm
    )
    body: dict[str, Any] = {
        "offer_id": offer_id,
        "product_id": offer.candidate.product.id,
        "kind": offer.candidate.kind,
        "rank": 1,
        **offer_body(offer, signed, offer_id, expires),
    }
    # Round-trip through orjson so the answer is exactly what the offers route would send.
    result: dict[str, Any] = orjson.loads(orjson.dumps(body))
    return result
