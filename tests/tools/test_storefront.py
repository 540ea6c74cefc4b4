"""The demo storefront over HTTP: pages under a strict CSP, the cookie cart, placing an order,
the generated images, and the demo charge endpoint (signature, idempotency, the decline trigger)."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson

from offer_service.domain.orders import Order
from offer_service.domain.signatures import signature
from offer_service.domain.tokens import order_token
from offer_service.storage import open_store
from offer_service_tools.demo import DEMO_STORE_ID, DEMO_WEBHOOK_SECRET
from offer_service_tools.storefront import charge_url_from_env
from offer_service_tools.storefront.cart import format_cart, parse_cart
from offer_service_tools.storefront.charge import DECLINE_CUSTOMER, own_charge_url
from offer_service_tools.storefront.pages import CSP
from tests.conftest import LiveServer

ADMIN = {"Authorization": "Bearer sk_demo"}
EVIL = "<img src=x onerror=alert(1)>"


def place_order(c: httpx.Client, order_id: str, product_id: str, customer_id: str) -> str:
    order = {
        "id": order_id,
        "customer_id": customer_id,
        "placed_at": datetime.now(UTC).isoformat(),
        "currency": "USD",
        "lines": [{"product_id": product_id, "quantity": 1, "price": 3499}],
    }
    r = c.post("/v1/admin/orders", json=[order], headers=ADMIN)
    assert r.status_code == 200, r.text
    token: str = r.json()["order_tokens"][order_id]
    return token


def charge_body(order_id: str, key: str = "acc_1", product_id: str = "sd-128") -> bytes:
    return orjson.dumps(
        {
            "order_id": order_id,
            "product_id": product_id,
            "quantity": 1,
            "amount": {"amount": 2699, "currency": "USD"},
            "offer_id": "off_1",
            "idempotency_key": key,
        }
    )


def post_charge(
    c: httpx.Client, body: bytes, secret: str = DEMO_WEBHOOK_SECRET, at: int | None = None
) -> httpx.Response:
    header = signature(secret, body, int(time.time()) if at is None else at)
    return c.post(
        "/demo/charge",
        content=body,
        headers={"Content-Type": "application/json", "X-Offer-Signature": header},
    )


def assert_strict_page(r: httpx.Response) -> None:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["content-security-policy"] == CSP
    assert CSP.startswith("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'")
    html = r.text
    # The snippet exactly as a merchant embeds it, and no inline script or style anywhere.
    assert '<script src="/demo/assets/offers-stub.js"></script>' in html
    assert '<script async src="/sdk/v1/offers.js" data-key="pk_demo"></script>' in html
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert " style=" not in html and "<style" not in html


def test_every_demo_page_answers_html_under_a_strict_csp(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        assert_strict_page(c.get("/demo/"))
        product = c.get("/demo/products/cam-x100")
        assert_strict_page(product)
        assert 'data-offers="product_page" data-product-id="cam-x100"' in product.text
        c.post("/demo/cart", data={"action": "add", "product_id": "cam-x100"})
        cart = c.get("/demo/cart")
        assert_strict_page(cart)
        assert 'data-offers="cart" data-items="cam-x100"' in cart.text
        checkout = c.get("/demo/checkout")
        assert_strict_page(checkout)
        assert 'data-offers="checkout" data-items="cam-x100"' in checkout.text
        token = place_order(c, "sf-page-1", "battery-np50", "cust-1")
        thanks = c.get("/demo/thank-you", params={"order_id": "sf-page-1", "order_token": token})
        assert_strict_page(thanks)
        assert 'data-offers="thank_you" data-order-id="sf-page-1"' in thanks.text
        assert f'data-order-token="{token}"' in thanks.text


def test_home_lists_products_but_not_fee_lines(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        html = c.get("/demo/").text
    assert 'href="/demo/products/cam-x100"' in html
    assert "Camera X300 Pro" in html
    assert "gift-wrap" not in html and "Shipping protection" not in html


def test_unknown_product_page_is_a_404_page(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        r = c.get("/demo/products/no-such-thing")
    assert r.status_code == 404
    assert "Product not found" in r.text


def test_catalog_text_is_escaped_in_pages_and_images(demo_server: LiveServer) -> None:
    evil = {
        "id": "evil-1",
        "title": EVIL,
        "url": "/demo/products/evil-1",
        "image_url": "/demo/img/evil-1.svg",
        "price": 1000,
        "currency": "USD",
        "category": '"><script>x</script>',
    }
    with demo_server.client() as c:
        assert c.put("/v1/admin/catalog", json=[evil], headers=ADMIN).status_code == 200
        page = c.get("/demo/products/evil-1").text
        home = c.get("/demo/").text
        svg = c.get("/demo/img/evil-1.svg")
    escaped = "&lt;img src=x onerror=alert(1)&gt;"
    for html in (page, home):
        assert EVIL not in html
        assert escaped in html
        assert "<script>x" not in html
    assert svg.status_code == 200
    assert svg.headers["content-type"] == "image/svg+xml"
    assert EVIL not in svg.text and escaped in svg.text
    assert svg.text.startswith("<svg") and "<script" not in svg.text


def test_product_image_is_a_generated_svg_tile(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        r = c.get("/demo/img/cam-x100.svg")
        missing = c.get("/demo/img/nope.svg")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/svg+xml"
    assert 'aria-label="Camera X100"' in r.text and ">Camera X100</text>" in r.text
    assert missing.status_code == 404


def test_cart_cookie_adds_updates_and_removes_lines(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        r = c.post("/demo/cart", data={"action": "add", "product_id": "sd-128", "quantity": "2"})
        assert r.status_code == 303 and r.headers["location"] == "/demo/cart"
        c.post("/demo/cart", data={"action": "add", "product_id": "coffee-250g"})
        c.post("/demo/cart", data={"action": "add", "product_id": "sd-128"})
        assert parse_cart(c.cookies.get("demo_cart")) == {"sd-128": 3, "coffee-250g": 1}
        assert 'data-items="sd-128,coffee-250g"' in c.get("/demo/cart").text
        c.post("/demo/cart", data={"action": "set", "product_id": "sd-128", "quantity": "1"})
        c.post("/demo/cart", data={"action": "remove", "product_id": "coffee-250g"})
        assert parse_cart(c.cookies.get("demo_cart")) == {"sd-128": 1}
        # Products that cannot be bought never enter the cart.
        c.post("/demo/cart", data={"action": "add", "product_id": "kettle-gooseneck"})
        c.post("/demo/cart", data={"action": "add", "product_id": "gift-wrap"})
        c.post("/demo/cart", data={"action": "add", "product_id": "no-such-thing"})
        assert parse_cart(c.cookies.get("demo_cart")) == {"sd-128": 1}
        c.post("/demo/cart", data={"action": "set", "product_id": "sd-128", "quantity": "0"})
        assert "Your cart is empty" in c.get("/demo/cart").text


def test_checkout_with_an_empty_cart_goes_back_to_the_cart(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        r = c.get("/demo/checkout")
    assert r.status_code == 303 and r.headers["location"] == "/demo/cart"


def test_place_order_records_the_order_and_redirects_with_its_token(
    demo_server: LiveServer,
) -> None:
    with demo_server.client() as c:
        c.post("/demo/cart", data={"action": "add", "product_id": "battery-np50", "quantity": "2"})
        r = c.post("/demo/place-order", data={"email": "a@example.com"})
        assert r.status_code == 303
        location = urlsplit(r.headers["location"])
        assert location.path == "/demo/thank-you"
        query = {k: v[0] for k, v in parse_qs(location.query).items()}
        order_id = query["order_id"]
        assert query["order_token"] == order_token(DEMO_WEBHOOK_SECRET, DEMO_STORE_ID, order_id)
        assert c.cookies.get("demo_cart") is None, "the cart is emptied"
        # The service knows the order: its thank-you offers answer.
        offers = c.get(
            "/v1/offers",
            params={"key": "pk_demo", "surface": "thank_you", **query},
        )
        assert offers.status_code == 200, offers.text
        page = c.get("/demo/thank-you", params=query)
        assert "Spare battery NP-50" in page.text and "$69.98" in page.text


def test_simulate_declined_card_places_the_order_as_the_decline_customer(
    demo_server: LiveServer,
) -> None:
    with demo_server.client() as c:
        c.post("/demo/cart", data={"action": "add", "product_id": "battery-np50"})
        r = c.post("/demo/place-order", data={"simulate_decline": "1"})
        query = {k: v[0] for k, v in parse_qs(urlsplit(r.headers["location"]).query).items()}
        page = c.get("/demo/thank-you", params=query)
        declined = post_charge(c, charge_body(query["order_id"]))
    assert "simulated declined card" in page.text
    assert declined.status_code == 402
    assert declined.json()["error"]["code"] == "card_declined"


def test_thank_you_page_refuses_a_wrong_order_token(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        place_order(c, "sf-tok-1", "battery-np50", "cust-1")
        wrong = c.get("/demo/thank-you", params={"order_id": "sf-tok-1", "order_token": "0" * 64})
        non_ascii = c.get("/demo/thank-you", params={"order_id": "sf-tok-1", "order_token": "é"})
    for r in (wrong, non_ascii):
        assert r.status_code == 403
        assert "data-offers" not in r.text


def test_charge_endpoint_rejects_a_bad_or_stale_signature(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        place_order(c, "sf-sig-1", "battery-np50", "cust-1")
        body = charge_body("sf-sig-1")
        wrong_secret = post_charge(c, body, secret="whsec_other")
        stale = post_charge(c, body, at=int(time.time()) - 3600)
        unsigned = c.post("/demo/charge", content=body)
        non_ascii = c.post(
            "/demo/charge",
            content=body,
            headers={b"X-Offer-Signature": f"t={int(time.time())},v1=\u00e9".encode()},
        )
        log = c.get("/demo/charges").json()
    for r in (wrong_secret, stale, unsigned, non_ascii):
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "bad_signature"
    assert log == {"requests": 0, "declined": 0, "charges": []}


def test_charge_endpoint_approves_and_deduplicates_by_idempotency_key(
    demo_server: LiveServer,
) -> None:
    with demo_server.client() as c:
        place_order(c, "sf-ch-1", "battery-np50", "cust-1")
        first = post_charge(c, charge_body("sf-ch-1", key="acc_a"))
        again = post_charge(c, charge_body("sf-ch-1", key="acc_a"))
        other = post_charge(c, charge_body("sf-ch-1", key="acc_b", product_id="lens-cap-52"))
        log = c.get("/demo/charges", params={"order_id": "sf-ch-1"}).json()
    assert first.status_code == 200
    charge_id = first.json()["charge_id"]
    assert charge_id.startswith("ch_demo_")
    assert again.json()["charge_id"] == charge_id
    assert other.json()["charge_id"] not in (charge_id, "")
    assert log["requests"] == 3
    assert [(c["idempotency_key"], c["product_id"]) for c in log["charges"]] == [
        ("acc_a", "sd-128"),
        ("acc_b", "lens-cap-52"),
    ]
    assert log["charges"][0]["amount"] == {"amount": 2699, "currency": "USD"}


def test_charge_endpoint_declines_orders_of_the_decline_customer(
    demo_server: LiveServer,
) -> None:
    with demo_server.client() as c:
        place_order(c, "sf-dc-1", "battery-np50", DECLINE_CUSTOMER)
        r = post_charge(c, charge_body("sf-dc-1"))
        log = c.get("/demo/charges").json()
    assert r.status_code == 402
    assert log["declined"] == 1 and log["charges"] == []


def test_charge_endpoint_answers_unknown_orders_and_bad_bodies(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        unknown = post_charge(c, charge_body("never-placed"))
        malformed = post_charge(c, b'{"order_id": 3}')
    assert unknown.status_code == 404
    assert malformed.status_code == 422


def test_first_storefront_request_points_the_demo_charge_url_at_this_server(
    demo_server: LiveServer,
) -> None:
    with demo_server.client() as c:
        before = c.get("/v1/admin/rules", headers=ADMIN).json()["charge_url"]
        c.get("/demo/")
        after = c.get("/v1/admin/rules", headers=ADMIN).json()["charge_url"]
    assert before is None
    assert after == f"{demo_server.url}/demo/charge"


def test_a_charge_url_set_by_the_store_owner_is_kept(demo_server: LiveServer) -> None:
    own = "https://merchant.example/charge"
    with demo_server.client() as c:
        rules = c.get("/v1/admin/rules", headers=ADMIN).json()
        assert c.put("/v1/admin/rules", json={**rules, "charge_url": own}, headers=ADMIN).is_success
        c.get("/demo/")
        after = c.get("/v1/admin/rules", headers=ADMIN).json()["charge_url"]
    assert after == own


def test_charge_url_comes_from_the_demo_port_or_the_connection() -> None:
    assert charge_url_from_env({"OFFER_DEMO_PORT": "8000"}) == "http://127.0.0.1:8000/demo/charge"
    assert charge_url_from_env({}) is None
    assert charge_url_from_env({"OFFER_DEMO_PORT": "x"}) is None
    assert own_charge_url({"server": ("127.0.0.1", 5000)}) == "http://127.0.0.1:5000/demo/charge"
    assert own_charge_url({"server": ("::1", 5000)}) == "http://[::1]:5000/demo/charge"
    assert own_charge_url({"server": None}) is None


def test_cart_cookie_round_trips_any_product_id() -> None:
    cart = {"a:b|c": 2, "plain": 1, "ünï": 99}
    assert parse_cart(format_cart(cart)) == cart
    assert parse_cart("x:0|:3|y:abc|z:500") == {"z": 99}


def test_a_quantity_too_long_to_read_is_the_most_a_line_holds(demo_server: LiveServer) -> None:
    huge = "9" * 5000  # int() refuses past 4,300 digits
    with demo_server.client() as c:
        r = c.post("/demo/cart", data={"action": "add", "product_id": "sd-128", "quantity": huge})
        assert r.status_code == 303
        assert parse_cart(c.cookies.get("demo_cart")) == {"sd-128": 99}
        c.cookies.clear()
        c.cookies.set("demo_cart", f"sd-128:{huge}|coffee-250g:{'0' * 30}2")
        assert 'data-items="sd-128,coffee-250g"' in c.get("/demo/cart").text


def test_charge_endpoint_refuses_a_timestamp_too_long_to_read(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        place_order(c, "sf-sig-2", "battery-np50", "cust-1")
        body = charge_body("sf-sig-2")
        good = signature(DEMO_WEBHOOK_SECRET, body, int(time.time()))
        header = "t=" + "9" * 5000 + "," + good.split(",", 1)[1]
        r = c.post("/demo/charge", content=body, headers={"X-Offer-Signature": header})
    assert (r.status_code, r.json()["error"]["code"]) == (401, "bad_signature")


def _offer(c: httpx.Client, surface: str, **params: str) -> dict[str, Any]:
    """The first single-product offer of the answer (a bundle has its own test)."""
    r = c.get("/v1/offers", params={"key": "pk_demo", "surface": surface, **params})
    assert r.status_code == 200, r.text
    offers: list[dict[str, Any]] = [o for o in r.json()["offers"] if o["kind"] != "bundle"]
    assert offers, f"the demo {surface} answers offers"
    return offers[0]


def test_an_offer_taken_from_a_page_joins_the_cart_at_its_redeemed_price_and_is_credited(
    demo_server: LiveServer,
) -> None:
    with demo_server.client() as c:
        offer = _offer(c, "product_page", product_id="cam-x100", visitor_id="v-take-1")
        r = c.post("/demo/cart/offers", json={"token": offer["token"]})
        assert r.status_code == 200, r.text
        assert r.json()["cart_count"] == 1
        lines = r.json()["lines"]
        assert [ln["product_id"] for ln in lines] == [offer["product_id"]]
        # Asked twice (a double click, a retried call): one line, the same price.
        assert c.post("/demo/cart/offers", json={"token": offer["token"]}).status_code == 200
        cart = c.get("/demo/cart").text
        assert cart.count("data-offer-line") == 1
        price = offer["offer_price"]["amount"]
        assert f"${price / 100:,.2f}" in cart
        c.cookies.set("offer_vid", "v-take-1", path="/")
        r = c.post("/demo/place-order", data={"email": "a@example.com"})
        assert r.status_code == 303
        query = {k: v[0] for k, v in parse_qs(urlsplit(r.headers["location"]).query).items()}
        assert c.cookies.get("demo_offers") is None, "the cart's offers go with the order"
        report = c.get("/v1/admin/metrics", headers=ADMIN).json()
    page = next(row for row in report["breakdown"]["surface"] if row["surface"] == "product_page")
    assert page["token_purchases"] == 1
    assert report["orders"]["offer_item_revenue"]["amount"] == price
    # The order as stored: the snippet's visitor id, the line at the offer's price, credited.
    order = asyncio.run(_stored_order(demo_server.store_url, query["order_id"]))
    assert order is not None and order.visitor_id == "v-take-1"
    (line,) = order.lines
    assert (line.product_id, line.quantity, line.price) == (offer["product_id"], 1, price)
    assert line.offer is not None and line.offer.offer_id == offer["offer_id"]


async def _stored_order(store_url: str, order_id: str) -> Order | None:
    store = open_store(store_url)
    await store.open()
    try:
        return await store.get_order(DEMO_STORE_ID, order_id)
    finally:
        await store.close()


def test_a_forged_or_foreign_token_never_enters_the_demo_cart(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        offer = _offer(c, "product_page", product_id="cam-x100")
        body, _, mac = offer["token"].partition(".")
        forged = f"{body}.{mac[::-1]}"
        r = c.post("/demo/cart/offers", json={"token": forged})
        assert r.status_code == 409 and r.json()["code"] == "bad_token"
        assert c.post("/demo/cart/offers", json={"nope": 1}).status_code == 400
        assert c.post("/demo/cart/offers", content=b"{not json").status_code == 400
        assert c.cookies.get("demo_offers") is None
        assert "Your cart is empty" in c.get("/demo/cart").text


def test_a_taken_bundle_adds_every_item_and_removing_it_removes_them_all(
    demo_server: LiveServer,
) -> None:
    with demo_server.client() as c:
        r = c.get(
            "/v1/offers",
            params={"key": "pk_demo", "surface": "product_page", "product_id": "cam-x100"},
        )
        bundle = next(o for o in r.json()["offers"] if o["kind"] == "bundle")
        r = c.post("/demo/cart/offers", json={"token": bundle["token"]})
        assert r.status_code == 200, r.text
        assert len(r.json()["lines"]) == len(bundle["items"])
        assert r.json()["cart_count"] == 1
        page = c.get("/demo/cart").text
        assert page.count("data-offer-line") == len(bundle["items"])
        total = sum(item["offer_price"]["amount"] for item in bundle["items"])
        assert total == bundle["offer_price"]["amount"]
        assert f"${total / 100:,.2f}" in page
        c.post("/demo/cart", data={"action": "remove_offer", "token": bundle["token"]})
        assert "Your cart is empty" in c.get("/demo/cart").text
