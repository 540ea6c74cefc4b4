"""The event budget and the rates no shopper reaches: which events are taken, which are flagged
and why, on a clock of the test's own; and the budget shared by two limiters on a real Redis."""

from __future__ import annotations

import asyncio
import uuid

from offer_service.domain.events import StoredEvent
from offer_service.domain.policy import RateLimits
from offer_service.domain.traffic import ADDRESS_VISITORS, BOT, OFFER_IMPRESSIONS, VISITOR_RATE
from offer_service.serving.event_rates import EventRates
from offer_service.serving.ratelimit import RateLimiter
from tests.redis_servers import RELAXED, opened_redis, shared_redis

LIMITS = RateLimits()
ADDRESS = "203.0.113.7"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def event(
    visitor: str | None, offer: str = "off_1", type_: str = "impression", flag: str | None = None
) -> StoredEvent:
    return StoredEvent(
        id="e",
        type=type_,
        ts_ms=0,
        received_ms=0,
        visitor_id=visitor,
        surface="product_page",
        kind="cross_sell",
        product_id="p",
        offer_id=offer,
        order_id=None,
        arm=None,
        offer_price=100,
        currency="USD",
        flag=flag,
    )


def flags(events: list[StoredEvent]) -> dict[str | None, int]:
    counts: dict[str | None, int] = {}
    for e in events:
        counts[e.flag] = counts.get(e.flag, 0) + 1
    return counts


def test_one_token_replayed_with_a_fresh_visitor_per_event_is_flagged_past_a_minutes_worth() -> (
    None
):
    rates = EventRates(RateLimiter(clock=Clock()), clock=Clock())
    events = [event(f"v{i}") for i in range(1000)]
    assert rates.flag("st", LIMITS, ADDRESS, events) == 1000 - 120
    found = flags(events)
    assert found[None] == LIMITS.offer_impressions_per_minute
    assert found[ADDRESS_VISITORS] == 1000 - LIMITS.address_visitors_per_minute
    assert found[OFFER_IMPRESSIONS] == LIMITS.address_visitors_per_minute - 120


def test_the_same_offer_from_another_address_is_counted_apart() -> None:
    rates = EventRates(RateLimiter(), clock=Clock())
    first = [event(f"v{i % 50}") for i in range(200)]
    rates.flag("st", LIMITS, ADDRESS, first)
    other = [event("someone-else")]
    assert rates.flag("st", LIMITS, "198.51.100.1", other) == 0


def test_a_visitor_faster_than_any_shopper_is_flagged() -> None:
    rates = EventRates(RateLimiter(), clock=Clock())
    events = [event("v-fast", offer=f"off_{i}", type_="view") for i in range(400)]
    rates.flag("st", LIMITS, ADDRESS, events)
    assert flags(events) == {None: 300, VISITOR_RATE: 100}


def test_an_event_flagged_already_keeps_its_reason_and_costs_nothing() -> None:
    rates = EventRates(RateLimiter(), clock=Clock())
    events = [event(f"bot{i}", flag=BOT) for i in range(1000)]
    assert rates.flag("st", LIMITS, ADDRESS, events) == 0
    assert flags(events) == {BOT: 1000}
    assert rates.flag("st", LIMITS, ADDRESS, [event("shopper")]) == 0


def test_shoppers_behind_one_nat_for_an_hour_are_never_flagged() -> None:
    """A hundred shoppers on one address, each viewing a page every 20 s for an hour (a view, four
    impressions, a click every fifth page), their offers' tokens renewed every minute."""
    clock = Clock()
    rates = EventRates(RateLimiter(clock=clock), clock=clock)
    flagged = total = 0
    for second in range(0, 3600, 20):
        clock.now = 100.0 + second
        minute = second // 60
        batch = []
        for shopper in range(100):
            page = shopper % 10
            offers = [f"off_{minute}_{page}_{k}" for k in range(4)]
            visitor = f"v{shopper}"
            batch.append(event(visitor, offers[0], "view"))
            batch.extend(event(visitor, offer) for offer in offers)
            if (second // 20 + shopper) % 5 == 0:
                batch.append(event(visitor, offers[1], "click"))
        total += len(batch)
        flagged += rates.flag("st", LIMITS, ADDRESS, batch)
    assert flagged == 0
    assert total > 90_000


def test_two_instances_on_one_redis_take_no_more_than_one_budget() -> None:
    limits = RateLimits(events_per_second=0.01, events_burst=500)

    async def run() -> int:
        async with opened_redis(shared_redis().url + RELAXED) as store:
            a = EventRates(RateLimiter(shared=store.shared_limits))
            b = EventRates(RateLimiter(shared=store.shared_limits))
            store_id = "budget-" + uuid.uuid4().hex
            taken = 0
            for _ in range(10):
                for rates in (a, b):
                    taken += (await rates.admit(store_id, limits, ADDRESS, 100))[0]
            return taken

    assert asyncio.run(run()) == 500
