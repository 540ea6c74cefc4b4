"""An order's post-purchase timeline: which touchpoint is due when, on which channel, and why
one is held back. Pure: the order, its lifecycle events, the customer's SMS consent and the
clock go in; planned touchpoints come out (the offers are chosen in journeys.py).

Windows follow the order's life: the thank-you page in the store's post-purchase window
(60 min by default), the confirmation email 1-24 h after the order, the shipping email when it
ships (expected day 1-3), the delivery email with a review request when it arrives (expected
day 3-7), the post-delivery email from day 7 (at least 4 days after delivery) for a week, and a
replenishment email when each consumable runs out. SMS touchpoints shadow shipping, delivery and
replenishment for customers whose opt-in was in force at the time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from offer_service.domain.lifecycle import OrderEvent, SmsConsent, consent_at
from offer_service.domain.orders import Order
from offer_service.domain.products import Product
from offer_service.domain.surfaces import Surface
from offer_service.types import DAY_MS, HOUR_MS, MINUTE_MS

Channel = Literal["web", "email", "sms"]
Status = Literal["due", "upcoming", "done", "suppressed"]

# Touchpoint names, in the order they are listed when two start together.
NAMES: tuple[str, ...] = (
    "thank_you",
    "order_confirmation",
    "shipping",
    "shipping_sms",
    "delivery",
    "delivery_sms",
    "post_delivery",
    "replenishment",
    "replenishment_sms",
)
# What an email or SMS tool can fetch as a feed (the thank-you page uses /v1/offers).
FEED_TOUCHPOINTS: tuple[str, ...] = NAMES[1:]

CONFIRMATION = (1 * HOUR_MS, 24 * HOUR_MS)
# Before the carrier's event arrives, when the shipping and delivery emails are expected.
EXPECTED_SHIPPING = (1 * DAY_MS, 3 * DAY_MS)
EXPECTED_DELIVERY = (3 * DAY_MS, 7 * DAY_MS)
SHIPPING_MS = 2 * DAY_MS
DELIVERY_MS = 4 * DAY_MS
POST_DELIVERY_FROM_ORDER_MS = 7 * DAY_MS
POST_DELIVERY_MS = 7 * DAY_MS
REPLENISHMENT_MS = 7 * DAY_MS
# An SMS is timely or not at all.
SMS_MS = 1 * DAY_MS

ORDER_RETURNED = "order_returned"
AWAITING_SHIPMENT = "awaiting_shipment"
AWAITING_DELIVERY = "awaiting_delivery"
DELIVERED_UNSHIPPED = "delivered_without_shipping_event"
NO_CUSTOMER = "no_customer_id"
NO_CONSENT = "no_sms_consent"
OPTED_OUT = "sms_opted_out"


@dataclass(frozen=True, slots=True)
class Planned:
    """One touchpoint of the timeline, before offers. `starts_ms` is when it is due (an
    estimate while its trigger has not happened), `ends_ms` when its moment has passed."""

    name: str
    channel: Channel
    surface: Surface
    starts_ms: int
    ends_ms: int
    status: Status
    reason: str | None = None
    # Replenishment: the consumables that run out at this touchpoint.
    product_ids: tuple[str, ...] = ()
    review_request: bool = False


@dataclass(frozen=True, slots=True)
class Milestones:
    """The lifecycle as known at the evaluation time."""

    placed_ms: int
    shipped_ms: int | None
    delivered_ms: int | None
    returned_ms: int | None


def milestones(order: Order, events: Iterable[OrderEvent], at_ms: int) -> Milestones:
    """The first shipment, delivery and return known at `at_ms`. An order that was returned
    without a timed event (an imported cancellation) counts as returned from the start."""
    events = [e for e in events if e.order_id == order.id]
    known = [e for e in events if e.at_ms <= at_ms]

    def first(kind: str) -> int | None:
        return min((e.at_ms for e in known if e.type == kind), default=None)

    returned = first("returned")
    untimed = not any(e.type == "returned" for e in events)
    if returned is None and untimed and (order.status == "returned" or order.returned):
        returned = order.placed_at_ms
    return Milestones(order.placed_at_ms, first("shipped"), first("delivered"), returned)


def plan(
    order: Order,
    events: Iterable[OrderEvent],
    consents: Sequence[SmsConsent],
    products: Sequence[Product],
    at_ms: int,
    *,
    thank_you_minutes: int = 60,
) -> list[Planned]:
    """Every touchpoint of the order as seen at `at_ms`, soonest first. `products` are the
    order's products (their flags and `replenish_days` place the replenishment touchpoints)."""
    m = milestones(order, events, at_ms)
    placed = m.placed_ms
    out: list[Planned] = []

    def add(
        name: str,
        channel: Channel,
        surface: Surface,
        window: tuple[int, int],
        *,
        waiting: str | None = None,
        product_ids: tuple[str, ...] = (),
        review: bool = False,
    ) -> None:
        start, end = window
        status, reason = _status(start, end, at_ms, m.returned_ms, waiting)
        if channel == "sms" and status != "suppressed":
            refusal = _sms_refusal(order.customer_id, consents, min(at_ms, end - 1))
            if refusal is not None:
                status, reason = "suppressed", refusal
        out.append(Planned(name, channel, surface, start, end, status, reason, product_ids, review))

    minutes = thank_you_minutes * MINUTE_MS
    add("thank_you", "web", Surface.THANK_YOU, (placed, placed + minutes))
    add("order_confirmation", "email", Surface.EMAIL, _after(placed, CONFIRMATION))
    if m.shipped_ms is not None:
        shipped = m.shipped_ms
        add("shipping", "email", Surface.EMAIL, (shipped, shipped + SHIPPING_MS))
        add("shipping_sms", "sms", Surface.SMS, (shipped, shipped + SMS_MS))
    elif m.delivered_ms is not None:
        # Delivered before anyone said it shipped: a shipping notice now would be wrong.
        window = (m.delivered_ms, m.delivered_ms + SMS_MS)
        out.append(
            Planned("shipping", "email", Surface.EMAIL, *window, "suppressed", DELIVERED_UNSHIPPED)
        )
        out.append(
            Planned("shipping_sms", "sms", Surface.SMS, *window, "suppressed", DELIVERED_UNSHIPPED)
        )
    else:
        expected = _after(placed, EXPECTED_SHIPPING)
        add("shipping", "email", Surface.EMAIL, expected, waiting=AWAITING_SHIPMENT)
        sms = (expected[0], expected[0] + SMS_MS)
        add("shipping_sms", "sms", Surface.SMS, sms, waiting=AWAITING_SHIPMENT)
    if m.delivered_ms is not None:
        delivered = m.delivered_ms
        add("delivery", "email", Surface.EMAIL, (delivered, delivered + DELIVERY_MS), review=True)
        add("delivery_sms", "sms", Surface.SMS, (delivered, delivered + SMS_MS))
        start = max(placed + POST_DELIVERY_FROM_ORDER_MS, delivered + DELIVERY_MS)
        add("post_delivery", "email", Surface.EMAIL, (start, start + POST_DELIVERY_MS))
    else:
        expected = _after(placed, EXPECTED_DELIVERY)
        add("delivery", "email", Surface.EMAIL, expected, waiting=AWAITING_DELIVERY, review=True)
        sms = (expected[0], expected[0] + SMS_MS)
        add("delivery_sms", "sms", Surface.SMS, sms, waiting=AWAITING_DELIVERY)
        start = placed + POST_DELIVERY_FROM_ORDER_MS
        window = (start, start + POST_DELIVERY_MS)
        add("post_delivery", "email", Surface.EMAIL, window, waiting=AWAITING_DELIVERY)
    for due, ids in replenish_dates(order, products):
        add("replenishment", "email", Surface.EMAIL, (due, due + REPLENISHMENT_MS), product_ids=ids)
        add("replenishment_sms", "sms", Surface.SMS, (due, due + SMS_MS), product_ids=ids)
    return sorted(out, key=lambda p: (p.starts_ms, NAMES.index(p.name), p.product_ids))


def replenish_dates(order: Order, products: Sequence[Product]) -> list[tuple[int, tuple[str, ...]]]:
    """(due ms, consumables due then) for the order's consumables, by due time; consumables
    running out the same day share one touchpoint."""
    in_order = order.product_ids
    by_due: defaultdict[int, list[str]] = defaultdict(list)
    for p in products:
        if p.id in in_order and "consumable" in p.flags and p.replenish_days:
            by_due[order.placed_at_ms + p.replenish_days * DAY_MS].append(p.id)
    return [(due, tuple(sorted(ids))) for due, ids in sorted(by_due.items())]


def pick(planned: Sequence[Planned], name: str) -> Planned | None:
    """The touchpoint a feed of `name` serves now: the due one, else the one that ended last,
    else the next one (replenishment touchpoints can repeat; the others occur once)."""
    same = [p for p in planned if p.name == name]
    due = [p for p in same if p.status == "due"]
    if due:
        return due[0]
    done = [p for p in same if p.status == "done"]
    if done:
        return max(done, key=lambda p: p.ends_ms)
    return same[0] if same else None


def _after(placed: int, window: tuple[int, int]) -> tuple[int, int]:
    return placed + window[0], placed + window[1]


def _status(
    start: int, end: int, at_ms: int, returned_ms: int | None, waiting: str | None
) -> tuple[Status, str | None]:
    if returned_ms is not None and returned_ms < end:
        return "suppressed", ORDER_RETURNED
    if waiting is not None:
        return "upcoming", waiting
    if at_ms < start:
        return "upcoming", None
    if at_ms < end:
        return "due", None
    return "done", None


def _sms_refusal(customer_id: str | None, consents: Sequence[SmsConsent], at_ms: int) -> str | None:
    """Why no SMS may be sent at `at_ms`, or None when the customer's opt-in is in force."""
    if not customer_id:
        return NO_CUSTOMER
    consent = consent_at((c for c in consents if c.customer_id == customer_id), at_ms)
    if consent is None:
        return NO_CONSENT
    return OPTED_OUT if consent.status == "opted_out" else None
