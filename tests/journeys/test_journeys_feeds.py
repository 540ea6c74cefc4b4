"""Feeds for email and SMS tools: the feed key, cacheable JSON / HTML / SMS answers, an
email-safe HTML fragment (no script, https links only, alt text, at most 5 offers), and tracked
links that record a click and redirect."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from offer_service.domain.records import StoreRecord
from offer_service.storage.protocols import Store
from tests.conftest import LiveServer
from tests.journey_flows import (
    SHOP,
    admin,
    consent,
    iso,
    journey,
    lifecycle,
    place,
    serve_shop,
    shop,
    with_store,
)
from tests.redis_servers import RELAXED, shared_cluster, shared_redis

__all__ = ["shop"]

BROWSER = {"User-Agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15"}


class Fragment(HTMLParser):
    """Every tag, link and image of an HTML fragment."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.handlers: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        found = dict(attrs)
        self.handlers += [name for name in found if name.startswith("on")]
        for name in ("href", "src"):
            if found.get(name) is not None:
                self.urls.append(found[name] or "")
        if tag == "img":
            self.images.append(found)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Fragment:
    f = Fragment()
    f.feed(html)
    return f


@pytest.fixture
def live_order(shop: tuple[LiveServer, StoreRecord]) -> Any:
    """An order placed two days ago and shipped 12 hours ago, with the store's feed key."""
    live, record = shop
    now = datetime.now(UTC)
    with live.client() as c:
        place(c, record, "o-1", ["cam", "coffee"], placed=now - timedelta(days=2))
        lifecycle(c, record, "o-1", "shipped", iso(now - timedelta(hours=12)))
        r = c.get("/v1/admin/feed-key", headers=admin(record))
        assert r.status_code == 200, r.text
        yield live, c, record, r.json()["feed_key"]


def feed(c: httpx.Client, key: str, touchpoint: str, **params: str) -> httpx.Response:
    return c.get(f"/v1/feeds/{key}/{touchpoint}", params={"order_id": "o-1", **params})


def test_the_feed_key_is_made_once_and_rotates_with_one_previous_key(live_order: Any) -> None:
    _, c, record, key = live_order
    again = c.get("/v1/admin/feed-key", headers=admin(record)).json()
    assert again["feed_key"] == key and again["previous"] is None
    assert key.startswith("fk_") and key not in (record.secret_key, record.publishable_key)
    assert again["feed_url"] == (
        f"https://offers.test/v1/feeds/{key}/{{touchpoint}}?order_id={{order_id}}"
    )
    first = c.post("/v1/admin/feed-key/rotate", headers=admin(record)).json()
    assert (first["previous"], first["feed_key"] != key) == (key, True)
    assert feed(c, key, "shipping").status_code == 200  # the previous key still works
    second = c.post("/v1/admin/feed-key/rotate", headers=admin(record)).json()
    assert second["previous"] == first["feed_key"]
    r = feed(c, key, "shipping")
    assert (r.status_code, r.json()["error"]["code"]) == (401, "unknown_feed_key")
    assert feed(c, second["feed_key"], "shipping").status_code == 200


def test_a_json_feed_is_cacheable_and_answers_304_when_unchanged(live_order: Any) -> None:
    _, c, _, key = live_order
    r = feed(c, key, "shipping")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "public, max-age=300"
    body = r.json()
    assert (body["touchpoint"], body["channel"], body["status"]) == ("shipping", "email", "due")
    assert 1 <= len(body["offers"]) <= 5
    assert body["sms"] is None
    again = feed(c, key, "shipping")
    assert again.content == r.content and again.headers["etag"] == r.headers["etag"]
    cached = c.get(
        f"/v1/feeds/{key}/shipping",
        params={"order_id": "o-1"},
        headers={"If-None-Match": r.headers["etag"]},
    )
    assert cached.status_code == 304 and cached.content == b""


def test_the_email_fragment_is_email_safe(live_order: Any) -> None:
    _, c, _, key = live_order
    body = feed(c, key, "shipping").json()
    html = body["html"]
    assert html.startswith("<table") and html.endswith("</table>")
    f = parse(html)
    assert "script" not in f.tags and "style" not in f.tags and not f.handlers
    assert f.urls and all(u.startswith("https://") for u in f.urls)
    assert f.images and all(img.get("alt") for img in f.images)
    offers = body["offers"]
    assert sum(1 for u in f.urls if u.startswith("https://offers.test/r/")) == 3 * len(offers)
    for o in offers:
        assert o["title"] in "".join(f.text)
    only_html = feed(c, key, "shipping", format="html")
    assert only_html.headers["content-type"].startswith("text/html")
    assert only_html.text == html


def test_catalog_data_cannot_inject_markup_or_unsafe_links(
    shop: tuple[LiveServer, StoreRecord],
) -> None:
    live, record = shop
    hostile = [
        {
            "id": "cam",
            "title": "Camera X100",
            "price": 50000,
            "url": "/products/cam",
            "complements": ["top", "xss", "plain-http", "no-image", *[f"a{i}" for i in range(8)]],
        },
        # Ranked first: the thank-you page takes it.
        {"id": "top", "title": "Top", "price": 9990, "url": "/products/top"},
        {
            "id": "xss",
            "title": '<script>alert(1)</script><img src=x onerror=alert(2)>"',
            "price": 9900,
            "url": "/products/xss",
            "image_url": "https://shop.example/img/x.jpg?a=1&b=\"'",
        },
        {"id": "plain-http", "title": "Plain", "price": 9700, "url": "http://shop.example/p"},
        {"id": "no-image", "title": "No image", "price": 9800, "url": "/products/no-image"},
        *[
            {"id": f"a{i}", "title": f"Accessory {i}", "price": 9000 + i, "url": f"/p/a{i}"}
            for i in range(8)
        ],
    ]
    with live.client() as c:
        assert c.put("/v1/admin/catalog", json=hostile, headers=admin(record)).status_code == 200
        rules = c.get("/v1/admin/rules", headers=admin(record)).json()
        rules["surface_counts"] = {"email": 5}
        assert c.put("/v1/admin/rules", json=rules, headers=admin(record)).status_code == 200
        now = datetime.now(UTC)
        place(c, record, "o-1", ["cam"], placed=now - timedelta(hours=3))
        key = c.get("/v1/admin/feed-key", headers=admin(record)).json()["feed_key"]
        body = feed(c, key, "order_confirmation").json()
    products = [o["product_id"] for o in body["offers"]]
    assert len(products) == 5
    assert "plain-http" not in products  # no https link: never in an email
    assert "xss" in products and "no-image" in products
    f = parse(body["html"])
    assert "script" not in f.tags and not f.handlers
    assert f.tags.count("img") == sum(1 for o in body["offers"] if o["image_url"])
    assert all(u.startswith("https://") for u in f.urls)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body["html"]
    assert all(img.get("alt") for img in f.images)
    assert len([t for t in f.tags if t == "tr"]) == 5 + 1  # the heading row, then 5 offers


def test_a_tracked_link_records_the_click_and_redirects(
    live_order: Any, shop: tuple[LiveServer, StoreRecord]
) -> None:
    live, c, record, key = live_order
    offer = feed(c, key, "shipping").json()["offers"][0]
    code = offer["click_url"].rsplit("/", 1)[1]
    r = c.get(f"/r/{code}", headers=BROWSER)
    assert r.status_code == 302
    assert r.headers["location"] == f"{SHOP}/products/{offer['product_id']}"

    async def events(store: Store) -> list[Any]:
        return [e async for e in store.iter_events(record.id, 0, 2**62)]

    stored = with_store(live, events)
    clicks = [e for e in stored if e.type == "click"]
    assert len(clicks) == 1
    click = clicks[0]
    assert (click.surface, click.product_id, click.order_id) == (
        "email",
        offer["product_id"],
        "o-1",
    )
    assert click.offer_id == offer["offer_id"]
    assert getattr(click, "flag", None) is None  # the feed's impression of the offer matches
    impressions = [e for e in stored if e.type == "impression"]
    assert {e.product_id for e in impressions} >= {offer["product_id"]}
    r = c.get("/r/unknown00000")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_link")
    assert "message" in r.json()["error"]


def test_feed_requests_are_validated(live_order: Any) -> None:
    _, c, _, key = live_order
    r = feed(c, key, "billboard")
    assert (r.status_code, r.json()["error"]["details"][0]["field"]) == (404, "touchpoint")
    r = c.get(f"/v1/feeds/{key}/shipping", params={"format": "html"})
    assert (r.status_code, r.json()["error"]["details"][0]["field"]) == (422, "order_id")
    r = feed(c, key, "shipping", format="pdf")
    assert (r.status_code, r.json()["error"]["details"][0]["field"]) == (422, "format")
    r = c.get(f"/v1/feeds/{key}/shipping", params={"order_id": "nope"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_order")
    r = feed(c, "fk_guess", "shipping")
    assert (r.status_code, r.json()["error"]["code"]) == (401, "unknown_feed_key")


def test_an_sms_feed_answers_one_text_for_an_opted_in_customer(live_order: Any) -> None:
    _, c, record, key = live_order
    body = feed(c, key, "shipping_sms").json()
    assert (body["status"], body["reason"], body["offers"], body["sms"]) == (
        "suppressed",
        "no_sms_consent",
        [],
        None,
    )
    now = datetime.now(UTC)
    r = consent(c, record, "c-1", "opted_in", iso(now - timedelta(days=3)), source="checkout")
    assert r.status_code == 200, r.text
    body = feed(c, key, "shipping_sms").json()
    assert body["status"] == "due" and len(body["offers"]) == 1
    assert body["html"] == ""
    assert body["sms"].startswith("Field & Kettle: ")
    assert body["offers"][0]["click_url"] in body["sms"]
    text = feed(c, key, "shipping_sms", format="sms")
    assert text.headers["content-type"].startswith("text/plain")
    assert text.text == body["sms"]


def test_a_store_wide_feed_lists_every_order_whose_touchpoint_is_due(live_order: Any) -> None:
    _, c, record, key = live_order
    now = datetime.now(UTC)
    place(c, record, "o-2", ["cam"], placed=now - timedelta(days=3), customer_id="c-2")
    lifecycle(c, record, "o-2", "shipped", iso(now - timedelta(hours=2)))
    place(c, record, "o-3", ["cam"], placed=now - timedelta(hours=1), customer_id="c-3")
    r = c.get(f"/v1/feeds/{key}/shipping")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "public, max-age=300"
    body = r.json()
    assert (body["touchpoint"], body["channel"]) == ("shipping", "email")
    assert sorted(body["orders"]) == ["o-1", "o-2"]  # o-3 has not shipped
    one = feed(c, key, "shipping").json()
    assert body["orders"]["o-1"] == one
    again = c.get(f"/v1/feeds/{key}/shipping", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
def any_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/offers.db"
    elif request.param == "redis":
        url = shared_redis().url + RELAXED
    else:
        url = shared_cluster().url + RELAXED
    yield from serve_shop(url)


def test_a_journey_its_feeds_and_links_work_on_every_backend(any_backend: Any) -> None:
    live, record = any_backend
    now = datetime.now(UTC)
    with live.client() as c:
        place(c, record, "o-1", ["cam", "coffee"], placed=now - timedelta(days=2))
        lifecycle(c, record, "o-1", "shipped", iso(now - timedelta(hours=12)))
        assert lifecycle(c, record, "o-1", "shipped", iso(now - timedelta(hours=12)))["duplicate"]
        consent(c, record, "c-1", "opted_in", iso(now - timedelta(days=3)), source="checkout")
        key = c.get("/v1/admin/feed-key", headers=admin(record)).json()["feed_key"]
        email = feed(c, key, "shipping").json()
        sms = feed(c, key, "shipping_sms").json()
        assert email["status"] == "due" and 1 <= len(email["offers"]) <= 5
        assert len(sms["offers"]) == 1 and sms["sms"]
        code = sms["offers"][0]["click_url"].rsplit("/", 1)[1]
        r = c.get(f"/r/{code}", headers=BROWSER)
        assert r.status_code == 302
        assert r.headers["location"] == f"{SHOP}/products/{sms['offers'][0]['product_id']}"
        lifecycle(c, record, "o-1", "returned", iso(now - timedelta(hours=1)))
        body = journey(c, record, "o-1", iso(now))
        assert {t["status"] for t in body["touchpoints"][2:]} == {"suppressed"}
        assert feed(c, key, "shipping").json()["offers"] == []
