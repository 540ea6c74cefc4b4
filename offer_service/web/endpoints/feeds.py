"""Feeds for email and SMS tools, and the tracked links their messages carry.

`GET /v1/feeds/{feed_key}/{touchpoint}?order_id=...` is what an ESP fetches at send time: the
touchpoint's offers as JSON (with the email HTML fragment and the SMS text), or just the
fragment (`format=html`) or the text (`format=sms`). Without `order_id` it lists every order
whose touchpoint is due now, by order id, for an ESP whose web feed is one URL for everybody.
The feed key in the URL is the credential, so the URL can sit in an ESP's settings; answers are
cacheable (`Cache-Control`, `ETag`, `If-None-Match`). `GET /r/{code}` records a click and
redirects to the product.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from offer_service.domain.events import StoredEvent
from offer_service.domain.records import StoreRecord
from offer_service.domain.traffic import classify
from offer_service.exceptions import NotFound, Unauthorized, ValidationFailed
from offer_service.journeys import email as email_html
from offer_service.journeys import timeline
from offer_service.journeys import touchpoints as journeys
from offer_service.journeys.links import CODE_PATTERN, absolute_https
from offer_service.serving.engine import order_subject
from offer_service.serving.spool import record_events as spooled
from offer_service.types import DAY_MS
from offer_service.web.endpoints.common import client_address, engine
from offer_service.web.endpoints.journeys import (
    MAX_ID,
    iso,
    link_base,
    link_headers,
    now_ms,
    offer_json,
    order_of,
)

FEED_CACHE = "public, max-age=300"
# Links made from the request's Host: the ESP may cache the answer, a shared cache may not.
FEED_CACHE_PRIVATE = "private, max-age=300"
FORMATS = {"json": "application/json", "html": "text/html; charset=utf-8", "sms": "text/plain"}
UNKNOWN_FEED_KEY = "The feed key is not valid for any store."
UNKNOWN_LINK = "This link is unknown or has expired."


async def get_feed(request: Request) -> Response:
    record = await _feed_store(request, request.path_params["feed_key"])
    name: str = request.path_params["touchpoint"]
    if name not in timeline.FEED_TOUCHPOINTS:
        raise NotFound(
            f"There is no touchpoint {name!r}.",
            code="unknown_touchpoint",
            details=[
                {"field": "touchpoint", "message": "one of " + ", ".join(timeline.FEED_TOUCHPOINTS)}
            ],
        )
    fmt = request.query_params.get("format", "json")
    if fmt not in FORMATS:
        raise ValidationFailed(
            "Unknown feed format.",
            details=[{"field": "format", "message": "format is json, html or sms"}],
        )
    order_id = request.query_params.get("order_id")
    if order_id is None:
        if fmt != "json":
            raise ValidationFailed(
                "An HTML or SMS feed is one order's.",
                details=[{"field": "order_id", "message": f"format={fmt} needs an order_id"}],
            )
        body = orjson.dumps(await _store_feed(request, record, name))
    else:
        body = await _order_feed(request, record, name, order_id, fmt)
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {**link_headers(request, FEED_CACHE, FEED_CACHE_PRIVATE), "ETag": etag}
    if etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
        return Response(None, 304, headers=headers)
    return Response(body, 200, headers=headers, media_type=FORMATS[fmt])


async def _order_feed(
    request: Request, record: StoreRecord, name: str, order_id: str, fmt: str
) -> bytes:
    if not 1 <= len(order_id) <= MAX_ID:
        raise ValidationFailed(
            "The order_id is invalid.",
            details=[{"field": "order_id", "message": f"order_id is 1 to {MAX_ID} characters"}],
        )
    order = await order_of(request, record, order_id)
    now = now_ms(request)
    journey = await journeys.evaluate(engine(request), record, order, now, link_base(request))
    stop = journeys.find(journey.stops, name)
    data = _feed_json(record, journey, stop, name)
    if stop is not None and stop.offers:
        await _record(request, record, _impressions(journey, stop, now), now)
    if fmt == "html":
        return str(data["html"]).encode()
    if fmt == "sms":
        return str(data["sms"] or "").encode()
    return orjson.dumps(data)


async def _store_feed(request: Request, record: StoreRecord, name: str) -> dict[str, Any]:
    """Every order whose touchpoint is due now, by order id: for an ESP whose web feed is one
    URL fetched for all recipients (a template looks its order up by id)."""
    at_ms = now_ms(request)
    due = await journeys.due_now(engine(request), record, name, at_ms, link_base(request))
    orders: dict[str, Any] = {}
    impressions: list[StoredEvent] = []
    for journey, stop in due:
        orders[journey.order.id] = _feed_json(record, journey, stop, name)
        impressions += _impressions(journey, stop, at_ms)
    await _record(request, record, impressions, at_ms)
    return {
        "touchpoint": name,
        "channel": "sms" if name.endswith("_sms") else "email",
        "orders": orders,
    }


def _feed_json(
    record: StoreRecord, journey: journeys.Journey, stop: journeys.Stop | None, name: str
) -> dict[str, Any]:
    channel = "sms" if name.endswith("_sms") else "email"
    if stop is None:  # no consumable in the order: no replenishment touchpoint at all
        return {
            "order_id": journey.order.id,
            "touchpoint": name,
            "channel": channel,
            "status": "suppressed",
            "reason": "not_in_journey",
            "due_at": iso(journey.order.placed_at_ms),
            "offers": [],
            "html": "",
            "sms": None,
        }
    p = stop.planned
    offers = list(stop.offers)
    out: dict[str, Any] = {
        "order_id": journey.order.id,
        "touchpoint": name,
        "channel": channel,
        "status": p.status,
    }
    if stop.reason:
        out["reason"] = stop.reason
    heading = journeys.HEADINGS.get(name, "")
    out.update(
        {
            "due_at": iso(p.starts_ms),
            "offers": [offer_json(o) for o in offers],
            "html": email_html.fragment(offers, heading) if channel == "email" else "",
            "sms": stop.sms_text if channel == "sms" else None,
        }
    )
    if p.review_request and p.status != "suppressed":
        out["review_request"] = [
            {
                "product_id": product.id,
                "title": product.title,
                "url": absolute_https(product.url, record.rules.storefront_url),
                "image_url": absolute_https(product.image_url, record.rules.storefront_url) or "",
            }
            for product in journeys.review_products(journey, record.rules.storefront_url)
        ]
    return out


async def _feed_store(request: Request, feed_key: str) -> StoreRecord:
    e = engine(request)
    store_id = await e.store.store_by_feed_key(feed_key) if len(feed_key) <= 64 else None
    record = await e.store.get_store(store_id) if store_id else None
    if record is None:
        raise Unauthorized(UNKNOWN_FEED_KEY, code="unknown_feed_key")
    limits = record.rules.rate_limits
    await e.limiter.admit(record.id, "feed", limits.browser_per_second, limits.browser_burst)
    return record


def _impressions(journey: journeys.Journey, stop: journeys.Stop, now: int) -> list[StoredEvent]:
    """The stop's offers as sent with the message: an impression each, once per offer (their
    ids are stable: a feed fetched again within a day adds none)."""
    surface = stop.planned.surface.value
    return [
        StoredEvent(
            id=f"fi_{o.offer_id}",
            type="impression",
            ts_ms=now,
            received_ms=now,
            visitor_id=order_subject(journey.order),
            surface=surface,
            kind=o.kind,
            product_id=o.product_id,
            offer_id=o.offer_id,
            order_id=journey.order.id,
            arm=None,
            offer_price=o.offer_price,
            currency=o.currency,
        )
        for o in stop.offers
    ]


async def _record(
    request: Request, record: StoreRecord, events: list[StoredEvent], now: int
) -> None:
    """Stored like POST /v1/events: committed with this process's other events (its cached
    state of their visitors goes stale), or spooled while the store is unreachable."""
    spool = getattr(request.app.state, "spool", None)
    await spooled(engine(request).events, spool, record.id, events, now - DAY_MS)


async def redirect(request: Request) -> Response:
    """A tracked link: record the click, then 302 to the product."""
    code: str = request.path_params["code"]
    e = engine(request)
    link = await e.store.short_link(code) if CODE_PATTERN.match(code) else None
    record = await e.store.get_store(link.store_id) if link is not None else None
    target = absolute_https(link.url, None) if link is not None else None
    if link is None or record is None or target is None:
        raise NotFound(UNKNOWN_LINK, code="unknown_link")
    limits = record.rules.rate_limits
    await e.limiter.admit(
        record.id,
        "link:" + client_address(request.scope),
        limits.browser_per_second,
        limits.browser_burst,
    )
    now = now_ms(request)
    click = StoredEvent(
        id="clk_" + secrets.token_urlsafe(12),
        type="click",
        ts_ms=now,
        received_ms=now,
        visitor_id=link.visitor_id,
        surface=link.surface,
        kind=link.kind,
        product_id=link.product_id,
        offer_id=link.offer_id,
        order_id=link.order_id,
        arm=None,
        offer_price=link.offer_price,
        currency=link.currency,
        # Mail scanners and link previews follow links too: stored, not counted.
        flag=classify(request.scope["headers"]),
    )
    await _record(request, record, [click], now)
    return RedirectResponse(target, 302, headers={"Cache-Control": "no-store"})
