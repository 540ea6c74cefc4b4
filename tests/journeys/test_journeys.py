"""GET /v1/journeys/{order_id}: an order placed, shipped and delivered at given times, read at
several clock times (`?at=`), and what returns do to it. Real server, real SQLite."""

from __future__ import annotations

from typing import Any

import pytest

from offer_service.domain.records import StoreRecord
from offer_service.storage.protocols import Store
from tests.conftest import LiveServer
from tests.journey_flows import (
    PLACED,
    PUBLIC_URL,
    SHOP,
    admin,
    at,
    iso,
    journey,
    lifecycle,
    offered,
    place,
    shop,
    touchpoints,
    with_store,
)

__all__ = ["shop"]

ORDER = ["cam", "coffee"]


@pytest.fixture
def shipped_and_delivered(shop: tuple[LiveServer, StoreRecord]) -> Any:
    live, record = shop
    with live.client() as c:
        place(c, record, "o-1", ORDER)
        lifecycle(c, record, "o-1", "shipped", at(days=1))
        lifecycle(c, record, "o-1", "delivered", at(days=3))
        yield c, record


def statuses(body: dict[str, Any]) -> dict[str, str]:
    return {t["name"]: t["status"] for t in body["touchpoints"]}


def all_offers(body: dict[str, Any]) -> list[str]:
    return [pid for t in body["touchpoints"] for pid in offered(t)]


def test_ten_minutes_after_the_order_only_the_thank_you_page_is_due(
    shipped_and_delivered: Any,
) -> None:
    c, record = shipped_and_delivered
    body = journey(c, record, "o-1", at(minutes=10))
    assert body["order_id"] == "o-1"
    assert body["at"] == "2026-11-02T10:10:00Z"
    tps = touchpoints(body)
    assert statuses(body)["thank_you"] == "due"
    assert tps["thank_you"]["channel"] == "web"
    assert tps["thank_you"]["due_at"] == iso(PLACED)
    assert 1 <= len(tps["thank_you"]["offers"]) <= 2
    confirmation = tps["order_confirmation"]
    assert (confirmation["status"], confirmation["channel"]) == ("upcoming", "email")
    assert confirmation["due_at"] == "2026-11-02T11:00:00Z"
    # The shipment of day 1 has not happened yet at this clock time.
    assert tps["shipping"]["status"] == "upcoming"
    assert tps["shipping"]["reason"] == "awaiting_shipment"
    assert tps["delivery"]["reason"] == "awaiting_delivery"


def test_each_touchpoint_is_due_in_its_window(shipped_and_delivered: Any) -> None:
    c, record = shipped_and_delivered
    expected = {
        at(hours=2): "order_confirmation",
        at(days=1, hours=1): "shipping",
        at(days=4): "delivery",
        at(days=8): "post_delivery",
        at(days=21, hours=1): "replenishment",
    }
    for when, name in expected.items():
        body = journey(c, record, "o-1", when)
        due = [t["name"] for t in body["touchpoints"] if t["status"] == "due"]
        assert due == [name], (when, due)
        t = touchpoints(body)[name]
        assert t["channel"] == "email"
        assert 1 <= len(t["offers"]) <= 5, t
        for o in t["offers"]:
            assert o["url"] == f"{SHOP}/products/{o['product_id']}"
            assert o["click_url"].startswith(f"{PUBLIC_URL}/r/")
        assert statuses(body)["thank_you"] == "done"


def test_due_times_follow_the_shipment_and_the_delivery(shipped_and_delivered: Any) -> None:
    c, record = shipped_and_delivered
    tps = touchpoints(journey(c, record, "o-1", at(days=2)))
    assert tps["shipping"]["due_at"] == at(days=1)
    assert tps["shipping"]["status"] == "due"
    assert tps["delivery"]["due_at"] == at(days=3)
    assert tps["delivery"]["review_request"] is True
    assert tps["post_delivery"]["due_at"] == at(days=7)
    assert tps["replenishment"]["due_at"] == at(days=21)
    assert tps["replenishment"]["product_ids"] == ["coffee"]


def test_the_replenishment_email_offers_the_consumable_once_it_runs_out(
    shipped_and_delivered: Any,
) -> None:
    c, record = shipped_and_delivered
    tps = touchpoints(journey(c, record, "o-1", at(days=21, hours=1)))
    first = tps["replenishment"]["offers"][0]
    assert (first["product_id"], first["kind"]) == ("coffee", "replenish")
    # Before it runs out, no email offers the coffee again.
    early = journey(c, record, "o-1", at(days=8))
    for t in early["touchpoints"]:
        if t["name"] != "replenishment":
            assert "coffee" not in offered(t), t


def test_no_product_is_offered_twice_or_offered_after_it_was_bought(
    shipped_and_delivered: Any, shop: tuple[LiveServer, StoreRecord]
) -> None:
    c, record = shipped_and_delivered
    live, _ = shop
    # Bought in an earlier order, and accepted one-click on this one.
    place(c, record, "o-0", ["sd-128"], placed=PLACED.replace(month=10))

    async def accept(store: Store) -> None:
        await store.record_visitor_signal(record.id, "order:o-1", "battery", "accept", 0)

    with_store(live, accept)
    body = journey(c, record, "o-1", at(days=8))
    products = all_offers(body)
    assert len(products) == len(set(products)), products
    assert "sd-128" not in products
    assert "battery" not in products
    assert "cam" not in products
    for t in body["touchpoints"]:
        limit = {"web": 2, "email": 5, "sms": 1}[t["channel"]]
        assert len(t["offers"]) <= limit


def test_after_a_return_every_later_touchpoint_is_suppressed_with_the_reason(
    shipped_and_delivered: Any,
) -> None:
    c, record = shipped_and_delivered
    lifecycle(c, record, "o-1", "returned", at(days=5))
    after = journey(c, record, "o-1", at(days=6))
    for t in after["touchpoints"]:
        if t["channel"] == "sms":  # this customer never opted in
            assert t["status"] == "suppressed", t
            continue
        ended_before_return = t["ends_at"] <= at(days=5)
        if ended_before_return:
            assert t["status"] == "done", t
        else:
            assert t["status"] == "suppressed", t
            assert t["reason"] == "order_returned"
            assert t["offers"] == []
    assert statuses(after)["delivery"] == "suppressed"
    assert statuses(after)["replenishment"] == "suppressed"
    # Read before the return happened, the same journey still offers.
    before = touchpoints(journey(c, record, "o-1", at(days=4)))
    assert before["delivery"]["status"] == "due"
    assert before["delivery"]["offers"]


def test_a_return_through_the_returns_route_suppresses_the_journey_too(
    shop: tuple[LiveServer, StoreRecord],
) -> None:
    live, record = shop
    with live.client() as c:
        place(c, record, "o-2", ORDER)
        r = c.post(
            "/v1/admin/returns",
            json={"order_id": "o-2", "product_ids": ORDER, "at": at(days=2)},
            headers=admin(record),
        )
        assert r.status_code == 200, r.text
        body = journey(c, record, "o-2", at(days=2, hours=1))
    assert statuses(body)["order_confirmation"] == "done"
    assert {t["status"] for t in body["touchpoints"][2:]} == {"suppressed"}


def test_a_returned_product_is_never_offered_to_that_customer_again(
    shop: tuple[LiveServer, StoreRecord],
) -> None:
    live, record = shop
    with live.client() as c:
        place(c, record, "o-3", ["cam", "tripod"])
        lifecycle(c, record, "o-3", "returned", at(days=4), product_ids=["tripod"])
        later = PLACED.replace(day=20)
        place(c, record, "o-4", ["cam"], placed=later)
        place(c, record, "o-other", ["cam"], placed=later, customer_id="c-2")
        mine = journey(c, record, "o-4", iso(later.replace(hour=12)))
        theirs = journey(c, record, "o-other", iso(later.replace(hour=12)))
    assert "tripod" in all_offers(theirs)
    assert "tripod" not in all_offers(mine)
    assert all_offers(mine)


def test_order_lifecycle_webhooks_validate_their_input(
    shop: tuple[LiveServer, StoreRecord],
) -> None:
    live, record = shop
    with live.client() as c:
        place(c, record, "o-5", ORDER)
        r = c.post(
            "/v1/admin/orders/nope/events",
            json={"type": "shipped", "at": at(days=1)},
            headers=admin(record),
        )
        assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_order")
        r = c.post(
            "/v1/admin/orders/o-5/events",
            json={"type": "lost", "at": "yesterday", "product_ids": []},
            headers=admin(record),
        )
        assert r.status_code == 422
        assert [d["field"] for d in r.json()["error"]["details"]] == ["type"]
        # "²" and "٣" pass str.isdigit, and int() refuses the first: each a 422, never a 500.
        for when in ("yesterday", "\u00b2", "\u0663\u0663"):
            r = c.post(
                "/v1/admin/orders/o-5/events",
                json={"type": "shipped", "at": when},
                headers=admin(record),
            )
            assert r.status_code == 422, (when, r.text)
            assert r.json()["error"]["details"][0]["field"] == "at"
        r = c.post(
            "/v1/admin/orders/o-5/events",
            json={"type": "returned", "at": at(days=4), "product_ids": ["coffee", "mug"]},
            headers=admin(record),
        )
        assert r.status_code == 422
        assert r.json()["error"]["details"][0]["field"] == "product_ids[1]"
        first = lifecycle(c, record, "o-5", "shipped", at(days=1))
        again = lifecycle(c, record, "o-5", "shipped", at(days=1))
        assert first == {
            "order_id": "o-5",
            "type": "shipped",
            "at": at(days=1),
            "product_ids": [],
            "duplicate": False,
        }
        assert again["duplicate"] is True
        r = c.get("/v1/journeys/o-5", params={"at": "soon"}, headers=admin(record))
        assert (r.status_code, r.json()["error"]["details"][0]["field"]) == (422, "at")
        r = c.get("/v1/journeys/o-5", params={"key": record.publishable_key})
        assert r.status_code == 401
        r = c.get("/v1/journeys/o-5", headers={"Authorization": f"Bearer {record.publishable_key}"})
        assert (r.status_code, r.json()["error"]["code"]) == (403, "secret_key_required")


def test_an_order_event_dated_before_the_order_was_placed_is_refused(
    shop: tuple[LiveServer, StoreRecord],
) -> None:
    live, record = shop
    with live.client() as c:
        place(c, record, "o-7", ORDER)
        r = c.post(
            "/v1/admin/orders/o-7/events",
            json={"type": "shipped", "at": at(hours=-1)},
            headers=admin(record),
        )
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "validation_error"
        assert (
            error["message"]
            == "The event is dated before order o-7 was placed (2026-11-02T10:00:00Z)."
        )
        assert error["details"] == [
            {"field": "at", "message": "at must not be before 2026-11-02T10:00:00Z"}
        ]
        # Nothing was recorded: the same shipment, dated right, is new.
        assert lifecycle(c, record, "o-7", "shipped", iso(PLACED))["duplicate"] is False


def test_a_signed_webhook_records_a_delivery(shop: tuple[LiveServer, StoreRecord]) -> None:
    import hashlib
    import hmac
    import time

    live, record = shop
    body = b'{"type": "delivered", "at": "2026-11-05T09:00:00Z"}'
    t = int(time.time())
    signed = f"{t}.POST./v1/admin/orders/o-6/events.".encode() + body
    mac = hmac.new(record.webhook_secret.encode(), signed, hashlib.sha256)
    with live.client() as c:
        place(c, record, "o-6", ORDER)
        headers = {
            "Content-Type": "application/json",
            "X-Offer-Store": record.id,
            "X-Offer-Signature": f"t={t},v2={mac.hexdigest()}",
        }
        r = c.post("/v1/admin/orders/o-6/events", content=body, headers=headers)
        assert r.status_code == 200, r.text
        forged = {**headers, "X-Offer-Signature": f"t={t},v2={'0' * 64}"}
        r = c.post("/v1/admin/orders/o-6/events", content=body, headers=forged)
        assert (r.status_code, r.json()["error"]["code"]) == (401, "bad_signature")
        tps = touchpoints(journey(c, record, "o-6", "2026-11-05T10:00:00Z"))
    assert tps["delivery"]["status"] == "due"
    # Delivered with no shipment on record: a shipping notice now would be wrong.
    assert tps["shipping"]["status"] == "suppressed"
