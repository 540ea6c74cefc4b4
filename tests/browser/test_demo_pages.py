"""The demo storefront in a real browser: every surface shows offers within its limit, under a
strict Content-Security-Policy, and catalog text never becomes markup."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect

from offer_service.decision.bundles import BUNDLE_REASON
from offer_service_tools.demo import CATALOG
from tests.browser.conftest import (
    PageLog,
    Shop,
    csp_violations,
    find_visitor,
    needs_chromium,
    pin_visitor_script,
    screenshot,
)

pytestmark = needs_chromium

SURFACE_LIMITS = {"product_page": 5, "cart": 2, "checkout": 1, "thank_you": 2}
STRICT_CSP = "default-src 'self'; script-src 'self'; style-src 'self'"
EVIL_TITLE = "<img src=x onerror=alert(1)>"


def offers_in(page: Page, surface: str) -> list[str]:
    """Product ids of the offers the snippet rendered into the surface's placement."""
    cards = page.locator(f'[data-offers="{surface}"] [data-offer-id]')
    cards.first.wait_for(state="attached", timeout=10_000)
    return [cards.nth(i).get_attribute("data-product-id") or "" for i in range(cards.count())]


def add_to_cart(page: Page, product_id: str) -> None:
    page.goto(f"/demo/products/{product_id}")
    page.click("[data-add-to-cart]")
    page.wait_for_url("**/demo/cart")


def go_to(page: Page, surface: str) -> set[str]:
    """Walk the shop as a shopper does up to the page of `surface`; returns what is bought."""
    if surface == "product_page":
        page.goto("/demo/products/cam-x100")
        return {"cam-x100"}
    add_to_cart(page, "cam-x100")
    if surface == "cart":
        return {"cam-x100"}
    page.click("text=Checkout")
    page.wait_for_url("**/demo/checkout")
    if surface == "checkout":
        return {"cam-x100"}
    page.click("[data-place-order]")
    page.wait_for_url("**/demo/thank-you?**")
    return {"cam-x100"}


@pytest.mark.parametrize("surface", list(SURFACE_LIMITS))
def test_demo_page_shows_between_one_offer_and_its_surface_limit(
    shop: Shop, page: Page, page_log: PageLog, surface: str
) -> None:
    bought = go_to(page, surface)
    shown = offers_in(page, surface)
    assert 1 <= len(shown) <= SURFACE_LIMITS[surface], shown
    assert len(set(shown)) == len(shown), "an offer is repeated"
    # A bundle carries the viewed product's id (its first item): the one card allowed to.
    bundles = page.locator(
        f'[data-offers="{surface}"] [data-offer-id]', has_text=BUNDLE_REASON
    ).all()
    bundled = {b.get_attribute("data-product-id") for b in bundles}
    assert len(bundles) <= (1 if surface == "product_page" else 0)
    assert not bought & (set(shown) - bundled), "a product in the cart or order is offered"
    if surface == "thank_you":
        expect(page.locator('[data-offer-action="accept"]')).to_have_count(len(shown))
    # Every offer card renders its generated image, through the page's own origin.
    images = page.locator(f'[data-offers="{surface}"] img.offers-image')
    for i in range(images.count()):
        expect(images.nth(i)).to_have_js_property("complete", True)
        assert images.nth(i).evaluate("img => img.naturalWidth") > 0
    screenshot(page, surface)
    assert csp_violations(page) == []
    assert page_log.errors == []


def test_home_lists_every_catalog_product_except_fees(shop: Shop, page: Page) -> None:
    page.goto("/demo/")
    shown = page.locator(".card .card-title").all_text_contents()
    expected = [p.title for p in CATALOG if not p.is_fee]
    assert sorted(shown) == sorted(expected)
    assert "Gift wrap" not in shown
    expect(page.locator('a[href="/demo/products/cam-x100"]')).to_have_count(1)
    screenshot(page, "home")
    assert csp_violations(page) == []


def test_strict_csp_host_page_shows_offers_with_zero_violations(
    shop: Shop, page: Page, page_log: PageLog
) -> None:
    token = shop.place_order("csp-1", ["battery-np50"], "cust-csp")
    response = page.goto(shop.thank_you_url("csp-1", token))
    assert response is not None
    assert response.headers["content-security-policy"].startswith(STRICT_CSP)
    shown = offers_in(page, "thank_you")
    assert shown
    # The snippet's stylesheet was allowed to load and applies (its grid and buttons).
    assert page.locator(".offers-list").evaluate("e => getComputedStyle(e).display") == "grid"
    assert csp_violations(page) == []
    assert page_log.csp_messages() == []
    # The recorder does see a violation when one happens: an inline style attribute.
    page.evaluate("document.body.setAttribute('style', 'color: red')")
    page.wait_for_timeout(200)
    assert [v.split()[0] for v in csp_violations(page)] == ["style-src-attr"]


def test_product_title_with_markup_renders_as_text_and_runs_nothing(
    shop: Shop, page: Page, page_log: PageLog
) -> None:
    catalog = shop.admin("GET", "/v1/admin/catalog?limit=100").json()["products"]
    anchor = next(p for p in catalog if p["id"] == "lens-cap-52")
    evil = {
        "id": "xss-title",
        "title": EVIL_TITLE,
        "url": "/demo/products/xss-title",
        "image_url": "/demo/img/xss-title.svg",
        "price": 1500,
        "cost": 400,
        "currency": "USD",
        "category": "camera-accessories",
    }
    anchor["complements"] = ["xss-title"]
    # The product offered on its own card, not bundled under the lens cap's.
    rules = {**shop.admin("GET", "/v1/admin/rules").json(), "bundles": False}
    assert shop.admin("PUT", "/v1/admin/rules", json=rules).status_code == 200
    upserted = shop.admin("PUT", "/v1/admin/catalog", json=[evil, anchor]).json()
    assert upserted["upserted"] == 2, upserted
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)

    page.goto("/demo/products/lens-cap-52")
    assert "xss-title" in offers_in(page, "product_page")
    card = page.locator('[data-offers="product_page"] [data-product-id="xss-title"]')
    expect(card.locator(".offers-title")).to_have_text(EVIL_TITLE)
    expect(card.locator("img.offers-image")).to_have_attribute("alt", EVIL_TITLE)
    page.wait_for_timeout(500)  # time for an onerror to fire, were there an <img src=x>
    assert page.locator('img[src="x"]').count() == 0
    screenshot(page, "escaping")

    # The storefront's own server-rendered pages escape it too.
    page.goto("/demo/products/xss-title")
    expect(page.locator("h1.product-title")).to_have_text(EVIL_TITLE)
    page.goto("/demo/")
    expect(page.locator(".card-title", has_text="onerror")).to_have_text(EVIL_TITLE)
    page.wait_for_timeout(300)
    assert page.locator('img[src="x"]').count() == 0
    assert dialogs == []
    assert page_log.errors == []


def test_a_visitor_in_the_holdout_group_sees_why_there_are_no_offers(
    shop: Shop, browser: Browser
) -> None:
    held_out = find_visitor(shop.url, held_out=True)
    context = browser.new_context(base_url=shop.url)
    try:
        context.add_init_script(pin_visitor_script(held_out))
        page = context.new_page()
        page.goto("/demo/products/cam-x100")
        note = page.locator('[data-offers="product_page"] + [data-holdout-note]')
        expect(note).to_contain_text("holdout group")
        expect(page.locator("[data-offer-id]")).to_have_count(0)
        assert csp_violations(page) == []
    finally:
        context.close()
