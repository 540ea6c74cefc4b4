"""The SMS layer of a journey: only while a recorded opt-in is in force, never after an opt-out,
exactly 0 or 1 offer, and every text within its limit (160 GSM-7 characters, 70 in UCS-2),
names with non-GSM characters included."""

from __future__ import annotations

from typing import Any

import pytest

from offer_service.domain.policy import RateLimits, StoreRules
from offer_service.domain.records import StoreRecord
from offer_service.journeys.sms import measure
from tests.conftest import LiveServer
from tests.journey_flows import (
    SHOP,
    admin,
    at,
    consent,
    journey,
    lifecycle,
    place,
    product,
    shop,
    touchpoints,
)

__all__ = ["shop"]


@pytest.fixture
def order(shop: tuple[LiveServer, StoreRecord]) -> Any:
    live, record = shop
    with live.client() as c:
        place(c, record, "o-1", ["cam", "coffee"])
        lifecycle(c, record, "o-1", "shipped", at(days=1))
        lifecycle(c, record, "o-1", "delivered", at(days=3))
        yield c, record


def sms_touchpoints(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in body["touchpoints"] if t["channel"] == "sms"]


def test_without_an_opt_in_no_sms_touchpoint_offers_anything(order: Any) -> None:
    c, record = order
    body = journey(c, record, "o-1", at(days=1, hours=1))
    assert body["sms_consent"] is False
    sms = sms_touchpoints(body)
    assert {t["name"] for t in sms} == {"shipping_sms", "delivery_sms", "replenishment_sms"}
    for t in sms:
        assert (t["status"], t["reason"], t["offers"], t["sms"]) == (
            "suppressed",
            "no_sms_consent",
            [],
            None,
        )


def test_an_opt_in_allows_one_offer_per_sms_until_the_opt_out(order: Any) -> None:
    c, record = order
    r = consent(c, record, "c-1", "opted_in", at(hours=12), source="checkout_checkbox")
    assert r.status_code == 200, r.text
    assert r.json()["history"] == [
        {"status": "opted_in", "at": at(hours=12), "source": "checkout_checkbox"}
    ]
    # Before the opt-in was given, no SMS.
    early = touchpoints(journey(c, record, "o-1", at(hours=6)))
    assert early["shipping_sms"]["reason"] == "no_sms_consent"

    shipped = journey(c, record, "o-1", at(days=1, hours=1))
    assert shipped["sms_consent"] is True
    sms = touchpoints(shipped)["shipping_sms"]
    assert sms["status"] == "due" and len(sms["offers"]) == 1
    assert sms["offers"][0]["click_url"] in sms["sms"]
    assert sms["sms"].startswith("Field & Kettle: Your order is on its way! Add ")

    assert consent(c, record, "c-1", "opted_out", at(days=3, hours=2)).status_code == 200
    before = touchpoints(journey(c, record, "o-1", at(days=3, hours=1)))
    assert before["delivery_sms"]["status"] == "due"
    assert len(before["delivery_sms"]["offers"]) == 1
    after = journey(c, record, "o-1", at(days=3, hours=3))
    tps = touchpoints(after)
    assert after["sms_consent"] is False
    assert (tps["delivery_sms"]["status"], tps["delivery_sms"]["reason"]) == (
        "suppressed",
        "sms_opted_out",
    )
    assert tps["delivery_sms"]["offers"] == []
    assert tps["shipping_sms"]["status"] == "done"  # it went out while the opt-in held
    late = touchpoints(journey(c, record, "o-1", at(days=21, hours=1)))
    assert late["replenishment_sms"]["reason"] == "sms_opted_out"
    # Email is not SMS: the replenishment email still goes out.
    assert late["replenishment"]["status"] == "due" and late["replenishment"]["offers"]

    current = c.get("/v1/admin/customers/c-1/sms-consent", headers=admin(record)).json()
    assert current["status"] == "opted_out"
    assert [h["status"] for h in current["history"]] == ["opted_in", "opted_out"]


def test_every_sms_carries_zero_or_one_offer(order: Any) -> None:
    c, record = order
    consent(c, record, "c-1", "opted_in", at(), source="keyword:JOIN")
    for when in (at(days=1, hours=1), at(days=3, hours=1), at(days=21, hours=1)):
        for t in sms_touchpoints(journey(c, record, "o-1", when)):
            assert len(t["offers"]) in (0, 1)
            assert (t["sms"] is None) == (not t["offers"])


def test_an_opt_in_needs_its_source_and_a_guest_gets_no_sms(order: Any) -> None:
    c, record = order
    r = consent(c, record, "c-1", "opted_in", at())
    assert r.status_code == 422
    assert r.json()["error"]["details"] == [
        {"field": "source", "message": "source is required with an opt-in"}
    ]
    r = consent(c, record, "c-1", "maybe", at(), source="x")
    assert (r.status_code, r.json()["error"]["details"][0]["field"]) == (422, "status")
    place(c, record, "guest", ["cam"], customer_id=None)
    for t in sms_touchpoints(journey(c, record, "guest", at(days=1))):
        assert t["reason"] == "no_customer_id"


TITLES = {
    "greek": "Φίλτρο φακού πολωτικό κυκλικό για κάμερα X100 με θήκη",  # noqa: RUF001
    "cjk": "埃塞俄比亚 耶加雪菲 手工烘焙 咖啡豆 一公斤装 特级",
    "emoji": "Camera strap 📷 with “quick” release — extra long edition",
    "curly": "Photographer\u2019s \u201cpro\u201d strap \u2013 extra long",
}


@pytest.mark.parametrize(
    ("name", "script"),
    [
        ("Field & Kettle", "greek"),
        ("Café Ürün ☕ Łódź", "cjk"),
        ("商店", "emoji"),
        ("Field & Kettle", "curly"),
    ],
)
def test_every_sms_text_fits_its_encoding_even_with_non_gsm_names(
    name: str, script: str, shop: tuple[LiveServer, StoreRecord]
) -> None:
    live, _ = shop
    rules = StoreRules(
        storefront_url=SHOP,
        holdout_share=0,
        rate_limits=RateLimits(browser_per_second=1e6, browser_burst=10**6),
    )
    record = live.create_store(name, rules=rules)
    ids = [f"u{i}" for i in range(16)]
    catalog = [
        product("cam", "Camera X100", 50000, category="cameras", complements=ids),
        *(product(pid, f"{TITLES[script]} {i}", 9000 + i) for i, pid in enumerate(ids)),
    ]
    with live.client() as c:
        r = c.put("/v1/admin/catalog", json=catalog, headers=admin(record))
        assert r.status_code == 200 and r.json()["rejected"] == [], r.text
        consent(c, record, "c-1", "opted_in", at(), source="popup")
        place(c, record, "u-1", ["cam"])
        lifecycle(c, record, "u-1", "shipped", at(days=1))
        lifecycle(c, record, "u-1", "delivered", at(days=3))
        texts = [
            t["sms"]
            for when in (at(days=1, hours=1), at(days=3, hours=1))
            for t in journey(c, record, "u-1", when)["touchpoints"]
            if t["channel"] == "sms" and t["status"] == "due"
        ]
    assert len(texts) == 2 and all(texts), texts
    for text in texts:
        encoding, length, limit = measure(text)
        assert length <= limit, (encoding, length, text)
        assert "https://offers.test/r/" in text
        if script == "cjk":  # no GSM-7 look-alike, even shortened
            assert encoding == "ucs2" and length <= 70, text
        if script == "curly":  # folded to GSM-7 look-alikes: the 160 limit, whole title
            assert encoding == "gsm7" and 'Photographer\'s "pro" strap - extra long' in text
