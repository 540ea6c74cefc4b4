"""PUT and GET /v1/admin/rules for bundles and the free-shipping threshold, and their answers."""

from __future__ import annotations

from typing import Any

import pytest

from offer_service.web.models import OffersResponse
from tests.conftest import LiveServer
from tests.flows import ADMIN, PK, set_rules


def test_the_demo_ships_free_from_50_dollars_and_bundles(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        rules = c.get("/v1/admin/rules", headers=ADMIN).json()
        assert rules["free_shipping_threshold"] == 5000
        assert rules["bundles"] is True
        assert rules["discounts"]["bundle"] == 10


def test_the_rules_route_accepts_and_returns_the_new_fields(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        set_rules(c, free_shipping_threshold=7500, bundles=False)
        set_rules(c, discounts={"bundle": 15, "default_cap": 15})
        answered = c.get("/v1/admin/rules", headers=ADMIN).json()
        assert answered["free_shipping_threshold"] == 7500
        assert answered["bundles"] is False
        assert answered["discounts"]["bundle"] == 15
        assert answered["discounts"]["cross_sell"] == 10  # the other discounts' defaults
        set_rules(c, free_shipping_threshold=None)
        assert c.get("/v1/admin/rules", headers=ADMIN).json()["free_shipping_threshold"] is None


@pytest.mark.parametrize(
    "change,field",
    [
        ({"free_shipping_threshold": -1}, "free_shipping_threshold"),
        ({"free_shipping_threshold": 49.99}, "free_shipping_threshold"),
        ({"free_shipping_threshold": "5000"}, "free_shipping_threshold"),
        ({"free_shipping_threshold": 10**13}, "free_shipping_threshold"),
        ({"discounts": {"bundle": 4}}, "discounts.bundle"),
        ({"discounts": {"bundle": 16}}, "discounts.bundle"),
        ({"bundles": "sometimes"}, "bundles"),
    ],
)
def test_bad_values_are_a_422_naming_the_field(
    demo_server: LiveServer, change: dict[str, Any], field: str
) -> None:
    with demo_server.client() as c:
        before = c.get("/v1/admin/rules", headers=ADMIN).json()
        r = c.put("/v1/admin/rules", json={**before, **change}, headers=ADMIN)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "validation_error"
        assert [d["field"] for d in error["details"]] == [field]
        assert error["details"][0]["message"]
        assert c.get("/v1/admin/rules", headers=ADMIN).json() == before


def test_the_demo_answers_a_bundle_and_the_free_shipping_gap(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        page = c.get(
            "/v1/offers", params={"key": PK, "surface": "product_page", "product_id": "cam-x100"}
        )
        body = OffersResponse.model_validate_json(page.content)
        (bundle,) = [o for o in body.offers if o.kind == "bundle"]
        assert bundle.items is not None and bundle.items[0].product_id == "cam-x100"
        assert sum(i.offer_price.amount for i in bundle.items) == bundle.offer_price.amount
        assert body.free_shipping is None
        cart = c.get("/v1/offers", params={"key": PK, "surface": "cart", "items": "coffee-250g"})
        body = OffersResponse.model_validate_json(cart.content)
        assert body.free_shipping is not None
        assert body.free_shipping.remaining.amount == 5000 - 1200
        assert body.free_shipping.threshold.currency == "USD"
        big = c.get("/v1/offers", params={"key": PK, "surface": "cart", "items": "cam-x100"})
        assert "free_shipping" not in big.json()


def test_openapi_describes_bundles_and_free_shipping(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        schemas = c.get("/openapi.json").json()["components"]["schemas"]
    assert "items" in schemas["Offer"]["properties"]
    assert set(schemas["BundleItem"]["required"]) >= {"product_id", "title", "price"}
    assert "free_shipping" in schemas["OffersResponse"]["properties"]
    assert set(schemas["FreeShipping"]["required"]) == {"threshold", "remaining"}
    rules = schemas["StoreRules"]["properties"]
    assert {"bundles", "free_shipping_threshold"} <= set(rules)
    assert schemas["DiscountRules"]["properties"]["bundle"]["maximum"] == 15
