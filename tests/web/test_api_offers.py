"""GET and POST /v1/offers against a real server with the demo store."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from offer_service.domain.surfaces import SURFACES, Surface
from offer_service.web.models import OffersResponse
from tests.conftest import LiveServer

ADMIN = {"Authorization": "Bearer sk_demo"}


def place_order(
    client: httpx.Client, order_id: str, lines: list[tuple[str, int]], **extra: object
) -> str:
    order = {
        "id": order_id,
        "placed_at": datetime.now(UTC).isoformat(),
        "currency": "USD",
        "lines": [{"product_id": p, "quantity": 1, "price": price} for p, price in lines],
        **extra,
    }
    r = client.post("/v1/admin/orders", json=[order], headers=ADMIN)
    assert r.status_code == 200, r.text
    token: str = r.json()["order_tokens"][order_id]
    return token


def offers(client: httpx.Client, **params: object) -> httpx.Response:
    return client.get("/v1/offers", params={"key": "pk_demo", **params})


def test_every_surface_answers_within_its_hard_limit(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        token = place_order(c, "o-every", [("cam-x100", 49900)], customer_id="new-customer")
        queries = {
            Surface.PRODUCT_PAGE: {"product_id": "cam-x100"},
            Surface.CART: {"items": "cam-x100,coffee-250g"},
            Surface.CHECKOUT: {"items": "serum-30ml"},
            Surface.THANK_YOU: {"order_id": "o-every", "order_token": token},
            Surface.EMAIL: {"order_id": "o-every", "order_token": token},
            Surface.SMS: {"order_id": "o-every", "order_token": token},
        }
        for surface, query in queries.items():
            for limit in (None, 1, 99):
                params = {"surface": surface.value, **query}
                if limit is not None:
                    params["limit"] = limit
                r = offers(c, **params)
                assert r.status_code == 200, (surface, r.text)
                body = OffersResponse.model_validate_json(r.content)
                hard_max = SURFACES[surface].hard_max
                assert body.limit <= hard_max
                assert len(body.offers) <= body.limit
                assert len(body.offers) >= 1, (surface, r.text)
                assert [o.rank for o in body.offers] == list(range(1, len(body.offers) + 1))
                assert {o.kind for o in body.offers} <= set(SURFACES[surface].kinds)


def test_limit_above_the_hard_max_is_clamped_and_reported(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        body = offers(c, surface="cart", items="cam-x100", limit=10).json()
        assert body["limit"] == 2
        assert len(body["offers"]) == 2
        assert (
            offers(c, surface="product_page", product_id="cam-x100", limit=50).json()["limit"] == 5
        )


def test_limit_below_one_is_a_422_naming_the_field(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        r = offers(c, surface="cart", items="cam-x100", limit=0)
        assert r.status_code == 422
        assert r.json()["error"]["code"] == "validation_error"
        assert {"field": "limit", "message": "Input should be greater than or equal to 1"} in [
            {k: d[k] for k in ("field", "message")} for d in r.json()["error"]["details"]
        ]


def test_product_page_offers_the_upsell_ladder_and_complements(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        # Offers rank by relevance first: the camera's four merchandised complements (0.9) lead
        # its upgrade (0.8), which the page's fifth slot shows.
        body = offers(c, surface="product_page", product_id="cam-x100", limit=5).json()
        by_product = {o["product_id"]: o for o in body["offers"]}
        assert by_product["cam-x200"]["kind"] == "upsell"
        assert by_product["cam-x200"]["discount_pct"] == 0
        assert "sd-128" in by_product
        assert by_product["sd-128"]["kind"] == "cross_sell"
        price = by_product["sd-128"]["price"]["amount"]
        pct = by_product["sd-128"]["discount_pct"]
        assert by_product["sd-128"]["offer_price"]["amount"] == (price * (100 - pct) + 50) // 100


def test_cart_never_offers_an_item_already_in_the_cart(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        items = ["cam-x100", "sd-128", "lens-cap-52", "bag-small"]
        body = offers(c, surface="cart", items=",".join(items)).json()
        assert body["offers"]
        assert not {o["product_id"] for o in body["offers"]} & set(items)


def test_post_with_a_json_body_gives_the_same_offers_as_get(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        got = offers(c, surface="cart", items="coffee-500g").json()
        posted = c.post(
            "/v1/offers",
            json={
                "key": "pk_demo",
                "surface": "cart",
                "items": [{"product_id": "coffee-500g", "quantity": 2}],
            },
        ).json()
        assert [o["product_id"] for o in got["offers"]] == [
            o["product_id"] for o in posted["offers"]
        ]


def test_exclude_removes_products(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        first = offers(c, surface="product_page", product_id="cam-x100").json()["offers"]
        gone = first[0]["product_id"]
        again = offers(c, surface="product_page", product_id="cam-x100", exclude=gone).json()
        assert gone not in {o["product_id"] for o in again["offers"]}


def test_unknown_product_and_item_are_404(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        r = offers(c, surface="product_page", product_id="nope")
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_product"
        r = offers(c, surface="cart", items="cam-x100,nope")
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_product"


def test_post_purchase_needs_the_orders_token(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        token = place_order(c, "o-token", [("coffee-500g", 2100)])
        r = offers(c, surface="thank_you", order_id="o-token")
        assert r.status_code == 422
        assert r.json()["error"]["details"][0]["field"] == "order_token"
        r = offers(c, surface="thank_you", order_id="o-token", order_token="0" * 64)
        assert r.status_code == 403 and r.json()["error"]["code"] == "bad_order_token"
        # A token for another order id does not open this one.
        r = offers(c, surface="thank_you", order_id="o-other", order_token=token)
        assert r.status_code == 403
        r = offers(c, surface="thank_you", order_id="o-token", order_token=token)
        assert r.status_code == 200 and r.json()["offers"]


def test_a_correct_token_for_an_order_not_sent_yet_is_404(demo_server: LiveServer) -> None:
    from offer_service.domain.tokens import order_token
    from offer_service_tools.demo import DEMO_WEBHOOK_SECRET

    with demo_server.client() as c:
        token = order_token(DEMO_WEBHOOK_SECRET, "demo", "o-future")
        r = offers(c, surface="thank_you", order_id="o-future", order_token=token)
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_order"


def test_thank_you_never_offers_what_the_order_holds(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        lines = [("cam-x200", 74900), ("sd-128", 2999)]
        token = place_order(c, "o-holds", lines)
        for surface in ("thank_you", "email"):
            body = offers(c, surface=surface, order_id="o-holds", order_token=token, limit=5).json()
            assert body["offers"]
            assert not {o["product_id"] for o in body["offers"]} & {"cam-x200", "sd-128"}


def test_a_returned_order_gets_no_post_purchase_offers(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        token = place_order(c, "o-ret", [("serum-30ml", 4800)])
        assert offers(c, surface="thank_you", order_id="o-ret", order_token=token).json()["offers"]
        r = c.post(
            "/v1/admin/returns",
            json={"order_id": "o-ret", "product_ids": ["serum-30ml"]},
            headers=ADMIN,
        )
        assert r.status_code == 200, r.text
        assert (
            offers(c, surface="thank_you", order_id="o-ret", order_token=token).json()["offers"]
            == []
        )


def test_a_customer_is_not_offered_what_they_bought_before(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        first = offers(c, surface="product_page", product_id="cam-x100").json()["offers"]
        bought = first[0]["product_id"]
        place_order(c, "o-bought", [(bought, 100)], customer_id="cust-bought")
        again = offers(
            c, surface="product_page", product_id="cam-x100", customer_id="cust-bought"
        ).json()
        assert bought not in {o["product_id"] for o in again["offers"]}


def test_a_catalog_change_is_served_on_the_next_request(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        before = offers(c, surface="product_page", product_id="cam-x100", limit=5).json()["offers"]
        assert "cam-x200" in {o["product_id"] for o in before}
        r = c.get("/v1/admin/catalog", params={"limit": 1000}, headers=ADMIN)
        x200 = next(p for p in r.json()["products"] if p["id"] == "cam-x200")
        x200["active"] = False
        assert c.put("/v1/admin/catalog", json=[x200], headers=ADMIN).json()["upserted"] == 1
        after = offers(c, surface="product_page", product_id="cam-x100", limit=5).json()["offers"]
        assert "cam-x200" not in {o["product_id"] for o in after}


def test_holdout_visitors_get_no_offers_deterministically(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        results = {}
        for i in range(200):
            body = offers(c, surface="cart", items="cam-x100", visitor_id=f"v{i}").json()
            results[f"v{i}"] = body["holdout"]
            if body["holdout"]:
                assert body["offers"] == []
        share = sum(results.values()) / len(results)
        assert 0.03 < share < 0.2
        for vid, held in list(results.items())[:20]:
            assert (
                offers(c, surface="cart", items="cam-x100", visitor_id=vid).json()["holdout"]
                == held
            )


def test_tokens_in_offers_verify_and_bind_the_offer(demo_server: LiveServer) -> None:
    import time

    from offer_service.domain.tokens import verify

    with demo_server.client() as c:
        body = offers(c, surface="cart", items="cam-x100").json()
    import asyncio

    from offer_service.storage import open_store

    async def keys() -> object:
        store = open_store(demo_server.store_url)
        await store.open()
        rec = await store.get_store("demo")
        await store.close()
        assert rec is not None
        return rec.signing_keys

    signing = asyncio.run(keys())
    for offer in body["offers"]:
        claims = verify(offer["token"], signing, time.time())  # type: ignore[arg-type]
        assert claims.product_id == offer["product_id"]
        assert claims.offer_price == offer["offer_price"]["amount"]
        assert claims.discount_pct == offer["discount_pct"]
        assert claims.store_id == "demo" and claims.surface == "cart"


@pytest.mark.parametrize(
    "origin,allowed",
    [
        ("http://localhost:3000", True),
        ("http://127.0.0.1:8080", True),
        ("https://evil.example", False),
        ("null", False),
    ],
)
def test_cors_answers_only_the_stores_origins(
    demo_server: LiveServer, origin: str, allowed: bool
) -> None:
    with demo_server.client() as c:
        r = c.get(
            "/v1/offers",
            params={"key": "pk_demo", "surface": "cart", "items": "cam-x100"},
            headers={"Origin": origin},
        )
        assert r.headers.get("vary") == "Origin"
        assert (r.headers.get("access-control-allow-origin") == origin) is allowed


@pytest.mark.parametrize("path", ["/v1/offers", "/v1/events", "/v1/accept", "/v1/decline"])
def test_preflight_allows_only_the_stores_origins(demo_server: LiveServer, path: str) -> None:
    with demo_server.client() as c:
        ok = c.options(
            path,
            params={"key": "pk_demo"},
            headers={
                "Origin": "http://localhost:5173",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,idempotency-key",
            },
        )
        assert ok.status_code == 204
        assert ok.headers["access-control-allow-origin"] == "http://localhost:5173"
        assert "Idempotency-Key" in ok.headers["access-control-allow-headers"]
        assert ok.headers["vary"] == "Origin"
        evil = c.options(
            path, params={"key": "pk_demo"}, headers={"Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in evil.headers
        no_key = c.options(path, headers={"Origin": "http://localhost:5173"})
        assert "access-control-allow-origin" not in no_key.headers
