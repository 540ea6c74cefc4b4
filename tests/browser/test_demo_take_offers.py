"""Taking pre-purchase offers on the demo storefront in a real browser: the add button on the
product page, cart and checkout, "Add all" for a bundle, the price the order is charged, a
tampered token refused, and the free-shipping gap shown and closed.

The offers a page received are read from the service's own answers as the browser got them
(`context.route` passes each /v1/offers response through and keeps its body), so a test knows
the price every offer showed and can hold the cart and the order to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, Route
from playwright.sync_api import Error as PlaywrightError

from offer_service.domain.orders import Order
from offer_service.storage import open_store
from offer_service_tools.demo import DEMO_STORE_ID
from tests.browser.conftest import PageLog, Shop, needs_chromium, run_async, screenshot

pytestmark = needs_chromium

ADD = '[data-offer-action="add"]'


@dataclass
class OfferTap:
    """Every /v1/offers answer the browser received, by surface (optionally tampered with)."""

    answers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    tamper: bool = False

    def handle(self, route: Route) -> None:
        try:
            response = route.fetch()
            body = response.json()
        except PlaywrightError:  # the page was left (or the test ended) while it loaded
            return
        if self.tamper:
            for offer in body.get("offers", []):
                payload, _, mac = offer["token"].partition(".")
                offer["token"] = f"{payload}.{mac[::-1]}"
        self.answers.setdefault(body.get("surface", ""), []).append(body)
        route.fulfill(response=response, body=json.dumps(body))

    def offer(self, surface: str, product_id: str) -> dict[str, Any]:
        for body in reversed(self.answers.get(surface, [])):
            for offer in body["offers"]:
                if offer["product_id"] == product_id:
                    return dict(offer)
        raise AssertionError(f"no {surface} offer of {product_id} was received")

    def latest(self, surface: str) -> dict[str, Any]:
        return self.answers[surface][-1]


@pytest.fixture
def offers_tap(context: BrowserContext) -> OfferTap:
    tap = OfferTap()
    context.route("**/v1/offers?*", tap.handle)
    return tap


def _card(page: Page, surface: str, tap: OfferTap) -> Any:
    """The card of the first single-product offer the placement rendered."""
    page.locator(f'[data-offers="{surface}"] [data-offer-id]').first.wait_for(
        state="visible", timeout=10_000
    )
    first = next(o for o in tap.latest(surface)["offers"] if o["kind"] != "bundle")
    return page.locator(f'[data-offers="{surface}"] [data-offer-id="{first["offer_id"]}"]')


def _offer_lines(page: Page) -> dict[str, str]:
    """The cart's offer lines: product id -> the line total shown."""
    lines = page.locator("[data-offer-line]")
    return {
        lines.nth(i).get_attribute("data-line") or "": lines.nth(i)
        .locator(".cart-line-total")
        .inner_text()
        for i in range(lines.count())
    }


def _money(amount: int) -> str:
    return f"${amount / 100:,.2f}"


def _place_order(page: Page, shop: Shop) -> Order:
    """Check out in the page; the order as the service stored it."""
    page.goto("/demo/checkout")
    page.locator("[data-place-order]").click()
    page.wait_for_url("**/demo/thank-you?*")
    order_id = page.url.split("order_id=")[1].split("&")[0]

    async def read() -> Order | None:
        store = open_store(shop.server.store_url)
        await store.open()
        try:
            return await store.get_order(DEMO_STORE_ID, order_id)
        finally:
            await store.close()

    order = run_async(read())
    assert order is not None
    return order


def test_add_on_the_product_page_puts_the_offer_in_the_cart_at_its_price(
    shop: Shop, page: Page, offers_tap: OfferTap, page_log: PageLog
) -> None:
    page.goto("/demo/products/cam-x100")
    card = _card(page, "product_page", offers_tap)
    product_id = card.get_attribute("data-product-id") or ""
    shown = offers_tap.offer("product_page", product_id)
    card.locator(ADD).click()
    page.wait_for_url("**/demo/cart")
    lines = _offer_lines(page)
    assert lines == {product_id: _money(shown["offer_price"]["amount"])}
    screenshot(page, "cart-with-offer")
    order = _place_order(page, shop)
    charged = [ln for ln in order.lines if ln.product_id == product_id]
    assert [ln.price for ln in charged] == [shown["offer_price"]["amount"]]
    assert charged[0].offer is not None and charged[0].offer.offer_id == shown["offer_id"]
    assert shop.recorded_events("add", "product_page") == 1
    assert not page_log.errors


def test_add_all_puts_every_item_of_the_bundle_in_the_cart_at_the_bundle_price(
    shop: Shop, page: Page, offers_tap: OfferTap
) -> None:
    page.goto("/demo/products/cam-x100")
    _card(page, "product_page", offers_tap)
    bundle = next(o for o in offers_tap.latest("product_page")["offers"] if o["kind"] == "bundle")
    button = page.locator(f'[data-offer-id="{bundle["offer_id"]}"] {ADD}')
    assert button.inner_text() == "Add all"
    button.click()
    page.wait_for_url("**/demo/cart")
    lines = _offer_lines(page)
    assert sorted(lines) == sorted(item["product_id"] for item in bundle["items"])
    for item in bundle["items"]:
        assert lines[item["product_id"]] == _money(item["offer_price"]["amount"])
    order = _place_order(page, shop)
    total = sum(ln.price * ln.quantity for ln in order.lines)
    assert total == bundle["offer_price"]["amount"]


def test_add_on_the_cart_and_the_checkout_takes_each_offer_at_its_price(
    shop: Shop, page: Page, offers_tap: OfferTap
) -> None:
    page.goto("/demo/products/battery-np50")
    page.locator("[data-add-to-cart]").click()
    page.wait_for_url("**/demo/cart")
    card = _card(page, "cart", offers_tap)
    from_cart = card.get_attribute("data-product-id") or ""
    shown_cart = offers_tap.offer("cart", from_cart)
    card.locator(ADD).click()
    page.wait_for_function(
        "id => document.querySelector(`[data-offer-line][data-line='${id}']`)", arg=from_cart
    )
    page.goto("/demo/checkout")
    card = _card(page, "checkout", offers_tap)
    from_checkout = card.get_attribute("data-product-id") or ""
    shown_checkout = offers_tap.offer("checkout", from_checkout)
    card.locator(ADD).click()
    page.wait_for_function("n => document.querySelectorAll('.summary-lines li').length >= n", arg=3)
    order = _place_order(page, shop)
    prices = {ln.product_id: ln.price for ln in order.lines if ln.offer is not None}
    assert prices == {
        from_cart: shown_cart["offer_price"]["amount"],
        from_checkout: shown_checkout["offer_price"]["amount"],
    }
    assert shop.recorded_events("add", "cart") == 1
    assert shop.recorded_events("add", "checkout") == 1


def test_a_tampered_token_is_refused_and_nothing_enters_the_cart(
    shop: Shop, page: Page, offers_tap: OfferTap
) -> None:
    offers_tap.tamper = True
    page.goto("/demo/products/cam-x100")
    card = _card(page, "product_page", offers_tap)
    card.locator(ADD).click()
    log = page.locator("[data-activity-log]")
    page.wait_for_function(
        "() => /not added: .*bad_token/.test("
        "document.querySelector('[data-activity-log]').textContent)"
    )
    assert "bad_token" in (log.text_content() or "")
    page.goto("/demo/cart")
    assert page.locator("[data-offer-line]").count() == 0


def test_the_free_shipping_gap_is_shown_and_an_offer_that_closes_it_closes_it(
    shop: Shop, page: Page, offers_tap: OfferTap
) -> None:
    page.goto("/demo/products/battery-np50")
    page.locator("[data-add-to-cart]").click()
    page.wait_for_url("**/demo/cart")
    _card(page, "cart", offers_tap)
    answer = offers_tap.latest("cart")
    gap = answer["free_shipping"]["remaining"]["amount"]
    shown = page.locator("[data-offer-free-shipping]")
    assert _money(gap) in shown.inner_text()
    closing = next(o for o in answer["offers"] if o["offer_price"]["amount"] >= gap)
    assert "free shipping" in closing["reason"].lower()
    assert answer["offers"][0]["product_id"] == closing["product_id"], "it ranks first"
    page.locator(f'[data-offer-id="{closing["offer_id"]}"] {ADD}').click()
    page.wait_for_function("() => document.querySelectorAll('[data-offer-line]').length == 1")
    _card(page, "cart", offers_tap)
    assert "free_shipping" not in offers_tap.latest("cart")
    assert page.locator("[data-offer-free-shipping]").count() == 0
