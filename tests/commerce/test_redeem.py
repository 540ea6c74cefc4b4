"""POST /v1/offers/redeem against a real server: every refusal code, the same answer for the same
cart and token after the product changed, bundles as one line per item, keys and validation."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from offer_service.domain.records import SigningKey, StoreRecord
from offer_service.domain.tokens import BundleItem, OfferClaims, sign
from tests.conftest import LiveServer
from tests.flows import ADMIN, PK, b64, signing_keys, token_payload, unb64

PRODUCTS = [
    {"id": "cam", "title": "Camera", "price": 39900, "category": "cameras"},
    {"id": "sd", "title": "SD card", "price": 2999, "category": "storage", "inventory": 5},
    {"id": "bag", "title": "Bag", "price": 4500, "category": "bags"},
    {"id": "strap", "title": "Strap", "price": 1500, "category": "bags"},
    {"id": "gone", "title": "Old lens", "price": 9900, "category": "lenses", "active": False},
    {"id": "empty", "title": "Tripod", "price": 5900, "category": "tripods", "inventory": 0},
]
PRICE = {p["id"]: p["price"] for p in PRODUCTS}


@dataclass
class Shop:
    client: httpx.Client
    record: StoreRecord
    keys: tuple[SigningKey, ...]

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.record.secret_key}"}

    def token(
        self,
        product_id: str,
        *,
        surface: str = "product_page",
        pct: int = 10,
        price: int | None = None,
        expires_in: int = 3600,
        items: Sequence[BundleItem] = (),
        offer_price: int | None = None,
        order_id: str | None = None,
        arm: str | None = None,
    ) -> str:
        return offer_token(
            self.record.id,
            self.keys[0],
            product_id,
            price if price is not None else PRICE[product_id],
            pct=pct,
            surface=surface,
            expires_in=expires_in,
            items=items,
            offer_price=offer_price,
            order_id=order_id,
            arm=arm,
        )

    def redeem(self, cart_id: str, tokens: list[str], **kwargs: Any) -> httpx.Response:
        headers = kwargs.pop("headers", self.admin)
        return self.client.post(
            "/v1/offers/redeem", json={"cart_id": cart_id, "tokens": tokens}, headers=headers
        )

    def lines(self, cart_id: str, tokens: list[str]) -> list[dict[str, Any]]:
        r = self.redeem(cart_id, tokens)
        assert r.status_code == 200, r.text
        lines: list[dict[str, Any]] = r.json()["lines"]
        return lines


def offer_token(
    store_id: str,
    key: SigningKey,
    product_id: str,
    price: int,
    *,
    pct: int = 10,
    surface: str = "product_page",
    expires_in: int = 3600,
    items: Sequence[BundleItem] = (),
    offer_price: int | None = None,
    order_id: str | None = None,
    arm: str | None = None,
    offer_id: str | None = None,
) -> str:
    """A token signed with the store's key, as the service signs its offers."""
    now = int(time.time())
    return sign(
        OfferClaims(
            store_id=store_id,
            surface=surface,
            offer_id=offer_id or f"off_{product_id}_{now}_{expires_in}",
            product_id=product_id,
            kind="bundle" if items else "cross_sell",
            price=price,
            discount_pct=pct,
            offer_price=offer_price if offer_price is not None else price * (100 - pct) // 100,
            currency="USD",
            issued_at=now - 60,
            expires_at=now + expires_in,
            nonce=f"n{time.monotonic_ns()}",
            order_id=order_id,
            arm=arm,
            items=tuple(items),
        ),
        key,
    )


def put_catalog(client: httpx.Client, headers: dict[str, str], products: list[Any]) -> None:
    r = client.put("/v1/admin/catalog", json=products, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["rejected"] == []


@pytest.fixture
def shop(server: LiveServer) -> Iterator[Shop]:
    record = server.create_store("Redeem shop")
    with server.client() as client:
        put_catalog(client, {"Authorization": f"Bearer {record.secret_key}"}, PRODUCTS)
        yield Shop(client, record, signing_keys(server.store_url, record.id))


def money(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "USD"}


def test_a_token_redeems_at_the_price_its_offer_showed(shop: Shop) -> None:
    token = shop.token("sd", pct=10)
    [line] = shop.lines("cart-1", [token])
    payload = token_payload(token)
    assert line == {
        "valid": True,
        "token_index": 0,
        "offer_id": payload["o"],
        "product_id": "sd",
        "kind": "cross_sell",
        "surface": "product_page",
        "quantity": 1,
        "price": money(2999),
        "discount_pct": 10,
        "offer_price": money(2699),
    }


def test_a_real_offer_of_the_demo_store_redeems_at_its_offer_price(
    demo_server: LiveServer,
) -> None:
    with demo_server.client() as c:
        r = c.get(
            "/v1/offers", params={"key": PK, "surface": "product_page", "product_id": "cam-x100"}
        )
        assert r.status_code == 200, r.text
        offers = r.json()["offers"]
        assert offers, "the demo store makes product-page offers"
        r = c.post(
            "/v1/offers/redeem",
            json={"cart_id": "demo-cart", "tokens": [o["token"] for o in offers]},
            headers=ADMIN,
        )
        assert r.status_code == 200, r.text
        lines = r.json()["lines"]
    # A bundle answers a line per item, each at its share of the bundle's price.
    parts = [part for o in offers for part in (o.get("items") or [o])]
    assert any(o["kind"] == "bundle" for o in offers), "the demo shows a bundle on this page"
    assert [ln["product_id"] for ln in lines] == [p["product_id"] for p in parts]
    assert [ln["offer_price"] for ln in lines] == [p["offer_price"] for p in parts]
    assert [ln["price"] for ln in lines] == [p["price"] for p in parts]
    assert all(ln["valid"] for ln in lines)


def test_every_refusal_has_its_code_and_good_tokens_still_answer(
    server: LiveServer, shop: Shop
) -> None:
    good = shop.token("cam")
    body, _, mac = good.partition(".")
    forged = f"{body}.{b64(bytes(b ^ 1 for b in unb64(mac)))}"
    other = server.create_store("Other shop")
    foreign = offer_token(
        other.id, signing_keys(server.store_url, other.id)[0], "cam", PRICE["cam"]
    )
    tokens = [
        forged,  # 0 bad_token: the signature does not match
        foreign,  # 1 bad_token: another store's genuine token
        shop.token("cam", surface="thank_you", order_id="o-1"),  # 2 bad_token: one-click only
        "not-a-token",  # 3 bad_token: malformed
        shop.token("cam", expires_in=-60),  # 4 offer_expired
        shop.token("gone"),  # 5 inactive
        shop.token("nowhere", price=100),  # 6 inactive: no such product
        shop.token("empty"),  # 7 out_of_stock
        shop.token("bag", price=3999),  # 8 price_changed: the bag costs 4500 now
        good,  # 9 valid
    ]
    lines = shop.lines("cart-codes", tokens)
    codes = [ln.get("code") for ln in lines]
    assert codes == [
        "bad_token",
        "bad_token",
        "bad_token",
        "bad_token",
        "offer_expired",
        "inactive",
        "inactive",
        "out_of_stock",
        "price_changed",
        None,
    ]
    assert [ln["token_index"] for ln in lines] == list(range(10))
    assert [ln["valid"] for ln in lines] == [False] * 9 + [True]
    assert all(ln["message"] for ln in lines[:9])
    assert lines[8]["product_id"] == "bag"
    assert lines[9]["offer_price"] == money(PRICE["cam"] * 90 // 100)


def test_the_same_cart_and_token_answer_the_same_line_after_the_price_changed(
    shop: Shop,
) -> None:
    token = shop.token("bag", pct=15)
    first = shop.lines("cart-a", [token])
    assert first[0]["offer_price"] == money(3825)
    put_catalog(shop.client, shop.admin, [{**PRODUCTS[2], "price": 5000}])
    # The cart that took the offer keeps its price; another cart is told the price changed.
    assert shop.lines("cart-a", [token]) == first
    [other] = shop.lines("cart-b", [token])
    assert other["code"] == "price_changed"
    # Out of stock or deactivated since: still the first answer for the cart that took it.
    put_catalog(shop.client, shop.admin, [{**PRODUCTS[2], "active": False}])
    assert shop.lines("cart-a", [token]) == first


def test_a_refused_token_is_checked_afresh_each_time(shop: Shop) -> None:
    put_catalog(shop.client, shop.admin, [{**PRODUCTS[3], "inventory": 0}])
    token = shop.token("strap")
    assert shop.lines("cart-r", [token])[0]["code"] == "out_of_stock"
    put_catalog(shop.client, shop.admin, [{**PRODUCTS[3], "inventory": 3}])
    assert shop.lines("cart-r", [token])[0]["valid"] is True


def test_a_bundle_token_redeems_as_one_line_per_item_summing_to_its_price(shop: Shop) -> None:
    items = [
        BundleItem("cam", 39900, 35910),
        BundleItem("bag", 4500, 4050),
        BundleItem("strap", 1500, 1350),
    ]
    total, offered = sum(i.price for i in items), sum(i.offer_price for i in items)
    bundle = shop.token("cam", price=total, pct=10, items=items, offer_price=offered)
    single = shop.token("sd")
    lines = shop.lines("cart-bundle", [single, bundle])
    assert [(ln["token_index"], ln["product_id"]) for ln in lines] == [
        (0, "sd"),
        (1, "cam"),
        (1, "bag"),
        (1, "strap"),
    ]
    parts = lines[1:]
    assert {ln["kind"] for ln in parts} == {"bundle"}
    assert len({ln["offer_id"] for ln in parts}) == 1
    assert sum(ln["offer_price"]["amount"] for ln in parts) == offered == 41310
    assert [ln["price"]["amount"] for ln in parts] == [39900, 4500, 1500]
    # Sold whole or not at all: one item's price moved, and the bundle is refused at that item.
    put_catalog(shop.client, shop.admin, [{**PRODUCTS[3], "price": 1600}])
    [refused] = shop.lines("cart-bundle-2", [bundle])
    assert (refused["code"], refused["product_id"]) == ("price_changed", "strap")
    # The cart that took it first keeps its lines.
    assert shop.lines("cart-bundle", [single, bundle]) == lines


def test_an_expired_token_redeemed_before_keeps_its_answer(shop: Shop) -> None:
    token = shop.token("cam", expires_in=2)
    first = shop.lines("cart-late", [token])
    assert first[0]["valid"] is True
    time.sleep(2.2)
    assert shop.lines("cart-late", [token]) == first
    assert shop.lines("cart-new", [token])[0]["code"] == "offer_expired"


def test_a_publishable_key_is_refused_like_on_every_secret_route(shop: Shop) -> None:
    token = shop.token("cam")
    pk = {"Authorization": f"Bearer {shop.record.publishable_key}"}
    r = shop.redeem("cart-pk", [token], headers=pk)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "secret_key_required"
    assert r.json()["error"]["message"]
    r = shop.client.post(
        "/v1/offers/redeem",
        json={"key": shop.record.publishable_key, "cart_id": "c", "tokens": [token]},
    )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "missing_key"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tokens": ["t"]}, "cart_id"),
        ({"cart_id": "", "tokens": ["t"]}, "cart_id"),
        ({"cart_id": "c" * 256, "tokens": ["t"]}, "cart_id"),
        ({"cart_id": 7, "tokens": ["t"]}, "cart_id"),
        ({"cart_id": "c"}, "tokens"),
        ({"cart_id": "c", "tokens": []}, "tokens"),
        ({"cart_id": "c", "tokens": "t"}, "tokens"),
        ({"cart_id": "c", "tokens": ["t"] * 51}, "tokens"),
        ({"cart_id": "c", "tokens": ["t", 5]}, "tokens[1]"),
        ({"cart_id": "c", "tokens": [""]}, "tokens[0]"),
        ({"cart_id": "c", "tokens": ["t"], "price": 1}, "price"),
    ],
)
def test_a_bad_body_is_a_422_naming_the_field(shop: Shop, body: dict[str, Any], field: str) -> None:
    r = shop.client.post("/v1/offers/redeem", json=body, headers=shop.admin)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert error["message"] == "The redeem request is invalid."
    assert field in [d["field"] for d in error["details"]]


def test_a_body_that_is_no_json_object_is_a_422(shop: Shop) -> None:
    for content in (b"{", b"[]", b"null"):
        r = shop.client.post("/v1/offers/redeem", content=content, headers=shop.admin)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "validation_error"


def test_the_order_carrying_redeemed_tokens_is_credited_in_every_report(shop: Shop) -> None:
    sd, bag = shop.token("sd", surface="cart"), shop.token("bag", surface="checkout")
    lines = shop.lines("cart-flow", [sd, bag])
    now = int(time.time() * 1000)
    events = [
        {"id": f"ev-{i}", "type": kind, "token": token, "ts": now, "visitor_id": "v-flow"}
        for i, (kind, token) in enumerate(
            [("impression", sd), ("add", sd), ("impression", bag), ("add", bag)]
        )
    ]
    r = shop.client.post("/v1/events", json={"key": shop.record.publishable_key, "events": events})
    assert r.status_code == 202 and r.json()["accepted"] == 4, r.text
    order = {
        "id": "flow-1",
        "visitor_id": "v-flow",
        "placed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1000 - 60)),
        "currency": "USD",
        "lines": [
            {"product_id": "cam", "quantity": 1, "price": 39900},
            *(
                {
                    "product_id": ln["product_id"],
                    "quantity": ln["quantity"],
                    "price": ln["offer_price"]["amount"],
                    "offer_token": token,
                }
                for ln, token in zip(lines, [sd, bag], strict=True)
            ),
            {"product_id": "strap", "quantity": 1, "price": 1500, "offer_token": "forged"},
        ],
    }
    r = shop.client.post("/v1/admin/orders", json=[order], headers=shop.admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["imported"] == 1 and body["rejected"] == []
    assert body["refused_tokens"] == [
        {
            "order_id": "flow-1",
            "field": "lines[3].offer_token",
            "code": "bad_token",
            "message": "The offer token is not a valid offer token of this store; the line is "
            "kept without credit.",
        }
    ]
    report = shop.client.get("/v1/admin/metrics", headers=shop.admin).json()
    surfaces = {row["surface"]: row for row in report["breakdown"]["surface"]}
    assert set(surfaces) == {"cart", "checkout"}
    assert surfaces["cart"]["token_revenue"]["amount"] == 2699
    assert surfaces["checkout"]["token_revenue"]["amount"] == 4050  # 10% off 4500
    for row in surfaces.values():
        assert (row["adds"], row["token_purchases"], row["token_orders"]) == (1, 1, 1)
        assert row["redeemed_lines"] == 1
        assert row["take_rate"]["value"] == 1.0
    assert report["totals"]["token_purchases"] == 2
    assert report["orders"]["offer_item_revenue"]["amount"] == 2699 + 4050
    csv = shop.client.get("/v1/admin/metrics", params={"format": "csv"}, headers=shop.admin).text
    assert "breakdown,surface,cart,adds,1,,," in csv
    assert "breakdown,surface,checkout,token_revenue,4050,,,USD" in csv
    assert "totals,,,token_orders,1,,," in csv
    assert "totals,,,redeemed_lines,2,,," in csv
    html = shop.client.get("/dashboard", headers=shop.admin).text
    assert 'data-table="taken"' in html and "Token revenue" in html and "$40.50" in html


def test_a_body_over_the_routes_limit_is_a_413(shop: Shop) -> None:
    body = {"cart_id": "c", "tokens": ["t" * 2048] * 60}
    r = shop.client.post("/v1/offers/redeem", json=body, headers=shop.admin)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
