"""Post-purchase journey routes (secret key; writes also signed): order lifecycle events, SMS
consent, the journey timeline and the store's feed key."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from offer_service.domain.lifecycle import OrderEvent, SmsConsent, consent_at
from offer_service.domain.orders import Order, ProductReturn
from offer_service.domain.records import StoreRecord
from offer_service.domain.time import ISO_EXAMPLE, MAX_MS, parse_ms
from offer_service.exceptions import NotFound, ValidationFailed
from offer_service.journeys.links import LinkedOffer
from offer_service.journeys.touchpoints import Journey, Stop, evaluate
from offer_service.types import money
from offer_service.web.endpoints.common import (
    BROWSER_BODY_LIMIT,
    engine,
    json_response,
    read_body,
    secret_store,
)
from offer_service.web.journey_models import OrderEventRequest, SmsConsentRequest
from offer_service.web.models import validation_failed

MAX_ID = 128
FEED_KEY_PREFIX = "fk_"
# An admin answer holds a credential (the feed key) or a customer's journey: cached nowhere.
NO_STORE = ("no-store", "no-store")

M = TypeVar("M", bound=BaseModel)


def iso(ms: int) -> str:
    """Epoch ms as ISO 8601 UTC, with milliseconds only when there are some."""
    dt = datetime.fromtimestamp(min(max(ms, 0), MAX_MS) / 1000, UTC)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{ms % 1000:03d}Z" if ms % 1000 else "Z")


def parse_time(text: str | None, field: str, default_ms: int) -> int:
    """An ISO 8601 time (a time without a zone is UTC) or epoch ms, as epoch ms."""
    if text is None or text == "":
        return default_ms
    problem = f"{field} must be an ISO 8601 time ({ISO_EXAMPLE}) or epoch milliseconds"
    try:
        ms = parse_ms(text)
    except ValueError:
        raise ValidationFailed(
            f"The {field} value is not a time.", details=[{"field": field, "message": problem}]
        ) from None
    if not 0 <= ms <= MAX_MS:
        raise ValidationFailed(
            f"The {field} value is out of range.",
            details=[{"field": field, "message": "the time must be between 1970 and 3000"}],
        )
    return ms


def path_id(request: Request, name: str) -> str:
    value: str = request.path_params[name]
    if not 1 <= len(value) <= MAX_ID:
        raise ValidationFailed(
            f"The {name} is invalid.",
            details=[{"field": name, "message": f"{name} must be 1 to {MAX_ID} characters"}],
        )
    return value


def link_base(request: Request) -> str:
    """Where tracked links point: the configured public URL, else this request's base URL."""
    public: str | None = request.app.state.settings.public_url
    return (public or str(request.base_url)).rstrip("/")


def link_headers(request: Request, shared: str, private: str) -> dict[str, str]:
    """The caching headers of an answer holding `link_base` URLs: Cache-Control `shared` when
    they start with the configured public URL; when they start with the request's own Host,
    `private` and `Vary: Host`, so that no cache hands an answer made for one Host to a request
    for another (a forged Host would otherwise put its links in a shared cache)."""
    if request.app.state.settings.public_url:
        return {"Cache-Control": shared}
    return {"Cache-Control": private, "Vary": "Host"}


def now_ms(request: Request) -> int:
    return int(engine(request).clock() * 1000)


async def admin_write(
    request: Request, id_name: str, model: type[M], invalid: str
) -> tuple[StoreRecord, str, M]:
    """A write's store (secret key or signed body), its path id and its body, checked in that
    order."""
    raw = await read_body(request, BROWSER_BODY_LIMIT)
    record = await secret_store(request, raw, signable=True)
    value = path_id(request, id_name)
    try:
        return record, value, model.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_failed(exc, invalid) from None


async def order_of(request: Request, record: StoreRecord, order_id: str) -> Order:
    order = await engine(request).store.get_order(record.id, order_id)
    if order is None:
        raise NotFound(f"Order {order_id!r} has not been sent to this store.", code="unknown_order")
    return order


# order lifecycle


async def post_order_event(request: Request) -> Response:
    record, order_id, req = await admin_write(
        request, "order_id", OrderEventRequest, "The order event is invalid."
    )
    at_ms = parse_time(req.at, "at", now_ms(request))
    order = await order_of(request, record, order_id)
    if at_ms < order.placed_at_ms:
        if req.at:
            placed = iso(order.placed_at_ms)
            raise ValidationFailed(
                f"The event is dated before order {order_id} was placed ({placed}).",
                details=[{"field": "at", "message": f"at must not be before {placed}"}],
            )
        # Sent without a time just after an order stamped by a clock a little ahead of ours.
        at_ms = order.placed_at_ms
    strangers = [
        {"field": f"product_ids[{i}]", "message": f"{pid} is not a line of order {order_id}"}
        for i, pid in enumerate(req.product_ids)
        if pid not in order.product_ids
    ]
    if strangers:
        raise ValidationFailed(
            "The event names products the order does not have.", details=strangers
        )
    event = OrderEvent(order_id, req.type, at_ms, tuple(sorted(set(req.product_ids))))
    store = engine(request).store
    fresh = await store.add_order_event(record.id, event)
    if fresh and req.type == "returned":
        # Returned products are never offered to the customer again: the same record as
        # POST /v1/admin/returns.
        returned = event.product_ids or tuple(sorted(order.product_ids))
        await store.add_returns(record.id, [ProductReturn(returned, at_ms, order_id)])
        await engine(request).changed(record)
    return json_response(
        {
            "order_id": order_id,
            "type": event.type,
            "at": iso(at_ms),
            "product_ids": list(event.product_ids),
            "duplicate": not fresh,
        }
    )


# SMS consent


async def post_sms_consent(request: Request) -> Response:
    record, customer_id, req = await admin_write(
        request, "customer_id", SmsConsentRequest, "The SMS consent is invalid."
    )
    at_ms = parse_time(req.at, "at", now_ms(request))
    consent = SmsConsent(customer_id, req.status, at_ms, req.source or "")
    await engine(request).store.add_sms_consent(record.id, consent)
    return await _consent(request, record, customer_id)


async def get_sms_consent(request: Request) -> Response:
    record = await secret_store(request)
    return await _consent(request, record, path_id(request, "customer_id"))


async def _consent(request: Request, record: StoreRecord, customer_id: str) -> Response:
    history = await engine(request).store.sms_consents(record.id, customer_id)
    current = consent_at(history, now_ms(request))
    return json_response(
        {
            "customer_id": customer_id,
            "status": current.status if current else "none",
            "since": iso(current.at_ms) if current else None,
            "source": current.source or None if current else None,
            "history": [
                {"status": c.status, "at": iso(c.at_ms), "source": c.source or None}
                for c in history
            ],
        }
    )


# the journey


async def get_journey(request: Request) -> Response:
    record = await secret_store(request)
    order_id = path_id(request, "order_id")
    at_ms = parse_time(request.query_params.get("at"), "at", now_ms(request))
    order = await order_of(request, record, order_id)
    journey = await evaluate(engine(request), record, order, at_ms, link_base(request))
    return json_response(journey_json(journey), headers=link_headers(request, *NO_STORE))


def journey_json(journey: Journey) -> dict[str, Any]:
    return {
        "order_id": journey.order.id,
        "at": iso(journey.at_ms),
        "customer_id": journey.order.customer_id,
        "sms_consent": journey.sms_consent,
        "touchpoints": [stop_json(journey.order, s) for s in journey.stops],
    }


def stop_json(order: Order, stop: Stop) -> dict[str, Any]:
    p = stop.planned
    out: dict[str, Any] = {
        "name": p.name,
        "channel": p.channel,
        "surface": p.surface.value,
        "due_at": iso(p.starts_ms),
        "ends_at": iso(p.ends_ms),
        "status": p.status,
    }
    if stop.reason:
        out["reason"] = stop.reason
    out["offers"] = [offer_json(o) for o in stop.offers]
    if p.channel == "sms":
        out["sms"] = stop.sms_text
    if p.product_ids:
        out["product_ids"] = list(p.product_ids)
    if p.review_request:
        out["review_request"] = True
    if p.channel != "web":
        out["feed_path"] = f"/{p.name}?order_id={quote(order.id, safe='')}"
    return out


def offer_json(o: LinkedOffer) -> dict[str, Any]:
    return {
        "offer_id": o.offer_id,
        "product_id": o.product_id,
        "kind": o.kind,
        "rank": o.rank,
        "title": o.title,
        "reason": o.reason,
        "url": o.url,
        "click_url": o.click_url,
        "image_url": o.image_url,
        "price": money(o.price, o.currency),
        "discount_pct": o.discount_pct,
        "offer_price": money(o.offer_price, o.currency),
    }


# the feed key


async def get_feed_key(request: Request) -> Response:
    """The store's feed key, made on first use."""
    record = await secret_store(request)
    store = engine(request).store
    keys = await store.feed_keys(record.id)
    if not keys:
        keys = await store.rotate_feed_key(record.id, new_feed_key())
    return json_response(feed_key_json(request, keys), headers=link_headers(request, *NO_STORE))


async def rotate_feed_key(request: Request) -> Response:
    """A new feed key; the previous one keeps working until the next rotation, so feed URLs in
    the ESP can be switched without a gap."""
    raw = await read_body(request, BROWSER_BODY_LIMIT)
    record = await secret_store(request, raw)
    keys = await engine(request).store.rotate_feed_key(record.id, new_feed_key())
    return json_response(feed_key_json(request, keys), headers=link_headers(request, *NO_STORE))


def new_feed_key() -> str:
    return FEED_KEY_PREFIX + secrets.token_urlsafe(24)


def feed_key_json(request: Request, keys: tuple[str, ...]) -> dict[str, Any]:
    return {
        "feed_key": keys[0],
        "previous": keys[1] if len(keys) > 1 else None,
        "feed_url": f"{link_base(request)}/v1/feeds/{keys[0]}/{{touchpoint}}?order_id={{order_id}}",
    }
