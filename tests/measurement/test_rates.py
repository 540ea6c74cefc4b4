"""Every rate of the report counts its numerator from its denominator's traffic: no rate above 1,
no value outside its own interval.

The filed case is replayed through the service (thank-you impressions from a headless browser,
flagged as a bot, while the accepts that follow them are charged and recorded), and a property
test builds reports from random event streams, recorded through both stores (which flag
actions without an impression) and straight from random flags.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offer_service.domain.events import StoredEvent
from offer_service.domain.orders import AcceptedOffer, OfferCredit, Order, OrderLine
from offer_service.domain.products import Product
from offer_service.measurement.exposures import exposure
from offer_service.measurement.report import ReportQuery, build
from offer_service.measurement.statistics import wilson
from offer_service.storage.protocols import Store
from offer_service.types import DAY_MS
from offer_service.web.report_models import MetricsReport
from offer_service_tools.charge_double import ChargeDouble, running_charge_double
from tests.conftest import LiveServer
from tests.redis_servers import redis_backend
from tests.storage.test_storage_contract import sqlite_backend
from tests.web.test_api_metrics import ADMIN, event, now_ms, order, visitor

T0 = 1_700_000_000_000
SINCE, UNTIL = T0, T0 + 10 * DAY_MS
WINDOW_DAYS = 7
QUERY = ReportQuery("st", SINCE, UNTIL, None, window_days=WINDOW_DAYS, holdout_share=0.1)
VISITORS = [None, "v1", "v2", "v3"]
PRODUCTS = {
    pid: Product(id=pid, title=pid, price=price, category="c", cost=cost)
    for pid, price, cost in (("p1", 1000, 400), ("p2", 2500, None), ("p3", 700, 100))
}
ORDER_IDS = ["o0", "o1", "o2"]
ACTIONS = ["impression", "impression", "impression", "click", "click", "add", "accept", "decline"]
INGEST_FLAGS = [None, None, None, "bot", "prefetch"]
EVERY_FLAG = [*INGEST_FLAGS, "no_impression"]
# An event's ts may be up to 7 days from its receipt (the report reads by receipt).
SKEWS_MS = [0, 0, 0, 1000, -1000, 3 * DAY_MS, -3 * DAY_MS, 7 * DAY_MS - 1]
HEADLESS_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/131.0.0.0 Safari/537.36"
)


# --- the filed case, through the service ---------------------------------------------------------


@pytest.fixture
def charge() -> Iterator[ChargeDouble]:
    yield from running_charge_double(["whsec_demo"])


def test_accepts_after_a_bots_impressions_do_not_lift_the_take_rate_past_one(
    demo_server: LiveServer, charge: ChargeDouble
) -> None:
    """Three buyers take their thank-you offer one-click; one of them browses with a headless
    browser, so its impression is a bot's. Two impressions count, three accepts are charged:
    the take rate is 2 of 2, and all three accepts still earn their revenue."""
    started = now_ms()
    with demo_server.client() as c, demo_server.client(headers={"User-Agent": HEADLESS_UA}) as bot:
        rules = c.get("/v1/admin/rules", headers=ADMIN).json()
        r = c.put("/v1/admin/rules", json={**rules, "charge_url": charge.url}, headers=ADMIN)
        assert r.status_code == 200, r.text
        revenue = 0
        for i, client in enumerate((c, c, bot)):
            vid = visitor(False, f"rates{i}")
            oid = f"rates-o{i}"
            token = order(c, oid, vid, [("cam-x100", 49900)])
            page = client.get(
                "/v1/offers",
                params={
                    "key": "pk_demo",
                    "surface": "thank_you",
                    "order_id": oid,
                    "order_token": token,
                    "visitor_id": vid,
                    "limit": 1,
                },
            )
            assert page.status_code == 200, page.text
            offer = page.json()["offers"][0]
            r = client.post(
                "/v1/events",
                json={"key": "pk_demo", "events": [event("impression", offer, vid)]},
            )
            assert r.status_code == 202, r.text
            r = client.post(
                "/v1/accept",
                json={"key": "pk_demo", "token": offer["token"]},
                headers={"Idempotency-Key": f"rates-accept-{i}"},
            )
            assert r.status_code == 200, r.text
            revenue += offer["offer_price"]["amount"]
        params = {"from": str(started - 60_000), "to": str(now_ms() + 60_000)}
        r = c.get("/v1/admin/metrics", params=params, headers=ADMIN)
    assert r.status_code == 200, r.text
    report = r.json()
    MetricsReport.model_validate(report)
    assert charge.charge_count == 3
    ty = next(row for row in report["breakdown"]["surface"] if row["surface"] == "thank_you")
    # Every charged accept is revenue, whoever saw the offer...
    assert (ty["accepts"], ty["one_click_accepts"]) == (3, 3)
    assert ty["attributed_revenue"]["amount"] == revenue
    # ...but the bot's impression is no shopper's view, so its accept is no taken impression.
    low, high = wilson(2, 2)
    assert ty["take_rate"] == {"value": 1.0, "ci": [round(low, 6), round(high, 6)]}
    assert (ty["impressions"], ty["taken_impressions"]) == (2, 2)
    assert report["invalid_traffic"]["by_reason"]["bot"] >= 1
    assert_rates_are_rates(report)


# --- what every report promises ------------------------------------------------------------------


def estimates(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every {"value", "ci"} of the report, with where it is."""
    if isinstance(node, Mapping):
        if "value" in node and "ci" in node:
            yield path, node
            return
        for key, child in node.items():
            yield from estimates(child, (*path, str(key)))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from estimates(child, (*path, str(i)))


def offer_rows(report: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield report["totals"]
    for table in report["breakdown"].values():
        yield from table


def assert_rates_are_rates(report: Mapping[str, Any]) -> None:
    """Each estimate lies inside its own interval; each rate and its interval inside [0, 1]; a
    rate's numerator counts units of its denominator."""
    for path, e in estimates(report):
        value, ci = e["value"], e["ci"]
        if value is None:
            assert ci is None, path
            continue
        assert ci is not None, path
        assert ci[0] <= value <= ci[1], (path, e)
        if path[-1].endswith("_rate"):
            assert ci[0] >= 0.0 and ci[1] <= 1.0, (path, e)
    for row in offer_rows(report):
        n = row["impressions"]
        assert row["clicks"] <= n and row["taken_impressions"] <= n, row
        assert row["adds"] <= row["taken_impressions"], row  # an add takes its impression
        if n:
            assert row["take_rate"]["value"] == round(row["taken_impressions"] / n, 6)
            assert row["click_through_rate"]["value"] == round(row["clicks"] / n, 6)
            assert row["add_rate"]["value"] == round(row["adds"] / n, 6)
        assert row["returned_items"] <= row["accepts"]
        assert row["token_purchases"] <= row["accepts"], row
        assert row["token_orders"] <= row["orders_with_offer_items"], row


# --- what each figure counts, by hand ------------------------------------------------------------


def stored(
    kind: str, offer: str, visitor_id: str | None, at_day: float, product_id: str, **kw: Any
) -> StoredEvent:
    at = T0 + int(at_day * DAY_MS)
    return StoredEvent(
        id=f"{kind}-{offer}-{visitor_id}-{at_day}", type=kind, ts_ms=at, received_ms=at,
        visitor_id=visitor_id, surface=kw.get("surface", "product_page"), kind="cross_sell",
        product_id=product_id, offer_id=offer, order_id=kw.get("order_id"), arm=None,
        offer_price=PRODUCTS[product_id].price, currency="USD", flag=kw.get("flag"),
    )  # fmt: skip


def bought(oid: str, visitor_id: str, at_day: float, *products: str) -> Order:
    lines = tuple(OrderLine(p, 1, PRODUCTS[p].price) for p in products)
    return Order(oid, T0 + int(at_day * DAY_MS), "USD", lines, visitor_id=visitor_id)


def test_numerators_count_only_what_followed_a_counted_impression() -> None:
    thank_you = {"surface": "thank_you", "order_id": "o3"}
    events = [
        # v1 sees and clicks A, then buys its product twice: two purchases, one impression.
        stored("impression", "A", "v1", 1, "p1"),
        stored("click", "A", "v1", 1.1, "p1"),
        # v2's impression of B is before the period; the click after it, in the period.
        stored("impression", "B", "v2", -0.5, "p2"),
        stored("click", "B", "v2", 0.2, "p2"),
        # Two anonymous impressions of C and three anonymous clicks.
        stored("impression", "C", None, 2, "p3"),
        stored("impression", "C", None, 2.1, "p3"),
        *(stored("click", "C", None, 2.2 + i / 10, "p3") for i in range(3)),
        # A headless browser's impression of D on v3's thank-you page, then D accepted.
        stored("impression", "D", "v3", 4, "p3", flag="bot", **thank_you),
    ]
    orders = [
        bought("o0", "v1", 2, "p1"),
        bought("o1", "v1", 3, "p1"),
        bought("o2", "v2", 1, "p2"),
        bought("o3", "v3", 4, "p1", "p3"),
    ]
    accepts = [AcceptedOffer("o3", "p3", "ch_1", T0 + 4 * DAY_MS + 60_000)]
    report = build(QUERY, events, accepts, orders, PRODUCTS, UNTIL)
    MetricsReport.model_validate(report)
    t = report["totals"]
    # Impressions (A, v1), (C, anonymous) twice; clicks of them: A's and two of C's three.
    assert (t["impressions"], t["clicks"]) == (3, 3)
    # Every credited line is an accept and earns its revenue...
    assert (t["accepts"], t["one_click_accepts"], t["click_attributed_purchases"]) == (4, 1, 3)
    assert t["attributed_revenue"]["amount"] == 1000 + 1000 + 2500 + 700
    # ...but only (A, v1) is a counted impression that one followed.
    assert t["taken_impressions"] == 1
    assert t["take_rate"]["value"] == round(1 / 3, 6)
    assert t["click_through_rate"]["value"] == 1.0
    ty = next(row for row in report["breakdown"]["surface"] if row["surface"] == "thank_you")
    assert (ty["impressions"], ty["accepts"]) == (0, 1)
    assert ty["take_rate"] == {"value": None, "ci": None}
    assert_rates_are_rates(report)


# --- random event streams ------------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    offer_id: str
    surface: str
    kind: str
    product_id: str
    arm: str | None
    order_id: str | None


@dataclass(frozen=True)
class Stream:
    events: list[StoredEvent]
    orders: list[Order]
    accepts: list[AcceptedOffer]


def day_ms(draw: st.DrawFn, low: float, high: float) -> int:
    return T0 + int(draw(st.floats(low, high, allow_nan=False)) * DAY_MS)


@st.composite
def offers(draw: st.DrawFn) -> Offer:
    surface = draw(st.sampled_from(["product_page", "cart", "thank_you", "email"]))
    post_purchase = surface in ("thank_you", "email")
    return Offer(
        offer_id="",
        surface=surface,
        kind=draw(st.sampled_from(["cross_sell", "upsell"])),
        product_id=draw(st.sampled_from(sorted(PRODUCTS))),
        arm=draw(st.sampled_from([None, "x:a", "x:b"])),
        order_id=draw(st.sampled_from(ORDER_IDS)) if post_purchase else None,
    )


@st.composite
def streams(draw: st.DrawFn, flags: Sequence[str | None]) -> Stream:
    """Offers shown, clicked, added, accepted and declined by a few visitors (some anonymous),
    with retried events, skewed clocks, invalid traffic, exposures, orders (some lines bought
    with an offer's token) and one-click accepts."""
    shown = [
        replace(o, offer_id=f"f{i}")
        for i, o in enumerate(draw(st.lists(offers(), min_size=1, max_size=5)))
    ]
    events: list[StoredEvent] = []
    for i in range(draw(st.integers(0, 40))):
        if events and draw(st.integers(0, 9)) == 0:  # a retried batch: the same event again
            events.append(draw(st.sampled_from(events)))
            continue
        flag = draw(st.sampled_from(flags))
        ts = day_ms(draw, -2, 11)
        who = draw(st.sampled_from(VISITORS))
        if draw(st.integers(0, 5)) == 0:
            e = exposure(
                who or "v1",
                draw(st.sampled_from(["product_page", "cart", "thank_you"])),
                holdout=draw(st.booleans()),
                arm=draw(st.sampled_from([None, "x:a"])),
                at_ms=ts,
                flag=None if flag == "no_impression" else flag,
            )
            events.append(e)
            continue
        o = draw(st.sampled_from(shown))
        events.append(
            StoredEvent(
                id=f"e{i}",
                type=draw(st.sampled_from(ACTIONS)),
                ts_ms=ts,
                received_ms=ts + draw(st.sampled_from(SKEWS_MS)),
                visitor_id=who,
                surface=o.surface,
                kind=o.kind,
                product_id=o.product_id,
                offer_id=o.offer_id,
                order_id=o.order_id,
                arm=o.arm,
                offer_price=PRODUCTS[o.product_id].price,
                currency="USD",
                flag=flag,
            )
        )
    orders, accepts = [], []

    def taken(product_id: str) -> st.SearchStrategy[OfferCredit | None]:
        """No offer, or a pre-purchase offer of the product that the line was bought from."""
        found = [
            OfferCredit(o.offer_id, o.surface, o.kind, o.arm)
            for o in shown
            if o.product_id == product_id and o.order_id is None
        ]
        return st.sampled_from([None, None, *found])

    for oid in ORDER_IDS[: draw(st.integers(0, len(ORDER_IDS)))]:
        bought = draw(st.lists(st.sampled_from(sorted(PRODUCTS)), min_size=1, max_size=3))
        placed = day_ms(draw, -0.5, 10.5)
        orders.append(
            Order(
                id=oid,
                placed_at_ms=placed,
                currency=draw(st.sampled_from(["USD", "USD", "USD", "EUR"])),
                lines=tuple(
                    OrderLine(p, draw(st.integers(1, 2)), PRODUCTS[p].price, offer=draw(taken(p)))
                    for p in bought
                ),
                visitor_id=draw(st.sampled_from(VISITORS)),
                status=draw(st.sampled_from(["placed", "placed", "returned"])),
                returned=tuple(draw(st.lists(st.sampled_from(bought), max_size=2))),
            )
        )
        for pid in draw(st.lists(st.sampled_from(bought), unique=True)):
            accepts.append(AcceptedOffer(oid, pid, f"ch-{oid}-{pid}", placed + 60_000))
    return Stream(events, orders, accepts)


def report_of(
    stream: Stream, events: Sequence[StoredEvent], surface: str | None = None
) -> dict[str, Any]:
    in_period = [o for o in stream.orders if SINCE <= o.placed_at_ms < UNTIL]
    q = replace(QUERY, surface=surface)
    data = build(q, events, stream.accepts, in_period, PRODUCTS, UNTIL)
    MetricsReport.model_validate(data)
    return data


@settings(max_examples=200, deadline=None)
@given(streams(EVERY_FLAG), st.sampled_from([None, "thank_you", "cart"]))
def test_every_rate_of_any_event_stream_is_a_rate_inside_its_interval(
    stream: Stream, surface: str | None
) -> None:
    """Events as a store could hold them: any flag on any event, clocks off by days; the whole
    report or one surface's."""
    assert_rates_are_rates(report_of(stream, stream.events, surface))


# --- the same, recorded through each store -------------------------------------------------------


BACKENDS: dict[str, Callable[[Path], AbstractAsyncContextManager[Store]]] = {
    "sqlite": sqlite_backend,
    "redis": redis_backend,
}


@dataclass
class OpenStore:
    """A store opened on an event loop of its own, shared by every example of a test."""

    loop: asyncio.AbstractEventLoop
    store: Store

    def run(self, stream: Stream) -> dict[str, Any]:
        return self.loop.run_until_complete(self._record_and_report(stream))

    async def _record_and_report(self, stream: Stream) -> dict[str, Any]:
        record = await self.store.create_store("Rates")
        # In two batches, as the snippet's beacons come.
        half = len(stream.events) // 2
        for batch in (stream.events[:half], stream.events[half:]):
            if batch:
                await self.store.record_events(record.id, batch, SINCE - 30 * DAY_MS)
        skew = 7 * DAY_MS
        events = [
            e
            async for e in self.store.iter_events(
                record.id, SINCE - WINDOW_DAYS * DAY_MS - skew, UNTIL + skew
            )
        ]
        return report_of(stream, events)


@pytest.fixture(params=sorted(BACKENDS))
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    loop = asyncio.new_event_loop()
    opened = BACKENDS[request.param](tmp_path)
    try:
        store = loop.run_until_complete(opened.__aenter__())
        try:
            yield OpenStore(loop, store)
        finally:
            loop.run_until_complete(opened.__aexit__(None, None, None))
    finally:
        loop.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stream=streams(INGEST_FLAGS))
def test_every_rate_of_events_recorded_by_the_store_is_a_rate_inside_its_interval(
    open_store: OpenStore, stream: Stream
) -> None:
    """The store dedupes retried events and flags actions without an impression itself."""
    assert_rates_are_rates(open_store.run(stream))
