"""Post-purchase journeys: the offers each touchpoint of an order's timeline carries.

The timeline (timeline.py) says which touchpoints exist and when; this module reads what the
choice needs from the store and runs the engine's own pipeline for the touchpoint's surface
(thank_you, email or sms: candidates, rules, ranking, the per-visitor filters), evaluated at
the touchpoint's due time. On top of the engine's rules: nothing on a suppressed touchpoint,
never a product of the order that was sent back, and never a product an earlier touchpoint of
the same order already offered. Email touchpoints carry at most 5 offers, SMS 0 or 1.

Journeys rank without the learned, sampled P(accept) of the live surfaces: a touchpoint's
offers (and so its feed, its ETag and its tracked links) are the same every time it is asked
for while the store's data stays the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from offer_service.decision import decide
from offer_service.decision.experiments import in_holdout
from offer_service.decision.rules import PricedOffer
from offer_service.domain.lifecycle import ShortLink, consent_at
from offer_service.domain.money import format_money
from offer_service.domain.orders import Order
from offer_service.domain.products import Product
from offer_service.domain.records import StoreRecord
from offer_service.domain.surfaces import Surface, clamp_limit
from offer_service.journeys import sms, timeline
from offer_service.journeys.links import LinkedOffer, absolute_https, derive
from offer_service.journeys.timeline import Planned
from offer_service.serving.engine import Engine, order_subject
from offer_service.storage.protocols import Store
from offer_service.types import DAY_MS, HOUR_MS

HOLDOUT = "holdout"
SMS_FOOTER = "Reply STOP to opt out"
SMS_SHORT_FOOTER = "STOP to end"
SMS_LEADS = {
    "shipping_sms": "Your order is on its way! Add",
    "delivery_sms": "Enjoying your order? Try",
    "replenishment_sms": "Running low? Get",
}
HEADINGS = {
    "order_confirmation": "Complete your order",
    "shipping": "While you wait",
    "delivery": "Goes well with your order",
    "post_delivery": "Picked for you",
    "replenishment": "Time to restock",
}


@dataclass(frozen=True, slots=True)
class Stop:
    """A touchpoint with its offers (and, on SMS, the message)."""

    planned: Planned
    offers: tuple[LinkedOffer, ...] = ()
    sms_text: str | None = None
    reason: str | None = None

    @property
    def key(self) -> str:
        """Unique within the order: replenishment touchpoints repeat, for other consumables."""
        p = self.planned
        return p.name + ("/" + ",".join(p.product_ids) if p.product_ids else "")


@dataclass(frozen=True, slots=True)
class Journey:
    order: Order
    at_ms: int
    stops: tuple[Stop, ...]
    products: Mapping[str, Product]  # the order's products
    sms_consent: bool


async def evaluate(
    engine: Engine, record: StoreRecord, order: Order, at_ms: int, link_base: str
) -> Journey:
    """The order's journey as seen at `at_ms`; tracked links of its offers are stored so that
    every `click_url` resolves."""
    planned = await plan(engine.store, record, order, at_ms)
    return await _with_offers(engine, record, planned, link_base)


async def plan(store: Store, record: StoreRecord, order: Order, at_ms: int) -> Journey:
    """The order's journey as seen at `at_ms` without offers: its touchpoints and their
    statuses, from three small reads."""
    events = await store.order_events(record.id, order.id)
    customer = order.customer_id
    consents = await store.sms_consents(record.id, customer) if customer else []
    found = await store.get_products(record.id, sorted(order.product_ids))
    planned = timeline.plan(
        order,
        events,
        consents,
        [found[pid] for pid in sorted(found)],
        at_ms,
        thank_you_minutes=record.rules.post_purchase_window_minutes,
    )
    current = consent_at(consents, at_ms)
    consented = current is not None and current.status == "opted_in"
    stops = tuple(Stop(p, reason=p.reason) for p in planned)
    return Journey(order, at_ms, stops, found, consented)


async def _with_offers(
    engine: Engine, record: StoreRecord, journey: Journey, link_base: str
) -> Journey:
    """`journey` (from `plan`) with the offers of every touchpoint that is not suppressed."""
    store, rules, order = engine.store, record.rules, journey.order
    live = [s.planned for s in journey.stops if s.planned.status != "suppressed"]
    holdout = bool(order.visitor_id) and in_holdout(
        record.id, order.visitor_id or "", rules.holdout_share
    )
    if holdout:
        held = tuple(dataclasses.replace(s, reason=s.reason or HOLDOUT) for s in journey.stops)
        return dataclasses.replace(journey, stops=held)
    if not live:
        return journey

    storefront = rules.storefront_url
    anchors = tuple(journey.products[pid] for pid in sorted(journey.products))
    inputs = await engine.gather(record, Surface.EMAIL, anchors, order)
    prepared: dict[Surface, list[PricedOffer]] = {}
    for surface in sorted({p.surface for p in live}):
        ranked = decide.prepare(dataclasses.replace(inputs, surface=surface), rules)
        # An email client or phone needs an absolute https link: a product without one cannot
        # be offered there (the thank-you page takes relative links).
        prepared[surface] = [
            o
            for o in ranked
            if surface == Surface.THANK_YOU
            or absolute_https(o.candidate.product.url, storefront) is not None
        ]
    since = journey.at_ms - rules.frequency_cap.window_hours * HOUR_MS
    visitor = await store.visitor_state(record.id, order_subject(order), order.customer_id, since)

    offered: set[str] = set(order.returned)
    stops: list[Stop] = []
    links: list[ShortLink] = []
    for stop in journey.stops:
        p = stop.planned
        if p.status == "suppressed":
            stops.append(stop)
            continue
        pool = prepared[p.surface]
        if p.product_ids:  # a replenishment touchpoint leads with what runs out
            pool = sorted(pool, key=lambda o: not _replenishes(o, p.product_ids))
        limit = clamp_limit(p.surface, None, rules.surface_counts.get(p.surface))
        chosen = decide.finish(
            pool,
            visitor,
            rules,
            limit=limit,
            surface=p.surface,
            exclude=offered,
            now_ms=p.starts_ms,
        )
        linked = [
            _linked(record, order, stop, pool[i], rank, link_base, storefront)
            for rank, i in enumerate(chosen, start=1)
        ]
        text = None
        if p.channel == "sms" and linked:
            text = _sms(record, p, linked[0])
            linked = linked[:1] if text is not None else []
        offered.update(o.product_id for o in linked)
        links.extend(_link(record, order, p, o) for o in linked if o.click_url)
        stops.append(dataclasses.replace(stop, offers=tuple(linked), sms_text=text))
    await store.put_short_links(record.id, links)
    return dataclasses.replace(journey, stops=tuple(stops))


def _replenishes(offer: PricedOffer, product_ids: Sequence[str]) -> bool:
    return offer.candidate.kind == "replenish" and offer.candidate.product.id in product_ids


def _linked(
    record: StoreRecord,
    order: Order,
    stop: Stop,
    offer: PricedOffer,
    rank: int,
    link_base: str,
    storefront: str | None,
) -> LinkedOffer:
    product = offer.candidate.product
    secret = record.signing_keys[0].secret
    parts = (record.id, order.id, stop.key, product.id)
    url = absolute_https(product.url, storefront)
    # Only the thank-you page takes a product without an https URL; it gets no tracked link.
    click_url = f"{link_base.rstrip('/')}/r/{derive(secret, 'link', *parts)}" if url else ""
    return LinkedOffer(
        offer_id="off_" + derive(secret, "offer", *parts, length=16),
        product_id=product.id,
        kind=offer.candidate.kind,
        rank=rank,
        title=product.title,
        reason=offer.candidate.reason,
        url=url or product.url,
        click_url=click_url,
        image_url=absolute_https(product.image_url, storefront) or "",
        price=product.price,
        offer_price=offer.offer_price,
        discount_pct=offer.discount_pct,
        currency=product.currency,
    )


def _link(record: StoreRecord, order: Order, planned: Planned, offer: LinkedOffer) -> ShortLink:
    return ShortLink(
        code=offer.click_url.rsplit("/", 1)[1],
        store_id=record.id,
        order_id=order.id,
        touchpoint=planned.name,
        surface=planned.surface.value,
        product_id=offer.product_id,
        kind=offer.kind,
        offer_id=offer.offer_id,
        offer_price=offer.offer_price,
        currency=offer.currency,
        url=offer.url,
        visitor_id=order_subject(order),
    )


def _sms(record: StoreRecord, planned: Planned, offer: LinkedOffer) -> str | None:
    price = format_money(offer.offer_price, offer.currency)
    if offer.discount_pct:
        price += f" ({offer.discount_pct}% off)"
    lead = "Time to restock" if offer.kind == "replenish" else SMS_LEADS.get(planned.name, "Try")
    return sms.offer_text(
        sender=record.name,
        lead=lead,
        title=offer.title,
        price=price,
        link=offer.click_url,
        footer=SMS_FOOTER,
        short_footer=SMS_SHORT_FOOTER,
    )


def review_products(journey: Journey, storefront: str | None) -> list[Product]:
    """The order's products a delivery email asks a review of: those kept, with a link."""
    kept = journey.order.product_ids - set(journey.order.returned)
    return [
        p
        for pid, p in sorted(journey.products.items())
        if pid in kept and absolute_https(p.url, storefront) is not None
    ]


def find(stops: Sequence[Stop], name: str) -> Stop | None:
    """The stop a feed of touchpoint `name` serves (see timeline.pick)."""
    chosen = timeline.pick([s.planned for s in stops], name)
    return next((s for s in stops if s.planned is chosen), None)


# How far back a store-wide feed looks for orders whose touchpoint may be due, in days.
LOOKBACK_DAYS = {
    "order_confirmation": 2,
    "shipping": 21,
    "shipping_sms": 21,
    "delivery": 35,
    "delivery_sms": 35,
    "post_delivery": 60,
    "replenishment": 400,
    "replenishment_sms": 400,
}
# A store-wide feed holds at most this many orders (the most recent first).
FEED_ORDERS_MAX = 1000


async def due_now(
    engine: Engine, record: StoreRecord, name: str, at_ms: int, link_base: str
) -> list[tuple[Journey, Stop]]:
    """Every recent order whose touchpoint `name` is due at `at_ms`, with its stop: what a
    store-wide feed lists, for an ESP that fetches one feed for every recipient."""
    since = at_ms - LOOKBACK_DAYS[name] * DAY_MS
    orders = [o async for o in engine.store.iter_orders(record.id, since, at_ms + 1)]
    out: list[tuple[Journey, Stop]] = []
    for order in reversed(orders):
        # The timeline alone first; offers only for orders that are due.
        planned = await plan(engine.store, record, order, at_ms)
        if not any(s.planned.name == name and s.planned.status == "due" for s in planned.stops):
            continue
        journey = await _with_offers(engine, record, planned, link_base)
        stop = find(journey.stops, name)
        if stop is not None and stop.planned.status == "due":
            out.append((journey, stop))
            if len(out) >= FEED_ORDERS_MAX:
                break
    return out
