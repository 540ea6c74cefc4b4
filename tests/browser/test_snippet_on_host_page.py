"""The snippet on a merchant's plain host page (its own origin, fonts and colours) in real Chromium:
add to cart from the product page, cart and checkout through the storefront's handler, a bundle's
"Add all", the free-shipping gap shown and closed, a compact phone layout, the message after
"No thanks", and the visitor id reaching the store's own server as a first-party cookie.

Offers come from the real demo service; shapes it may not serve yet (a bundle, `free_shipping`)
come from a stand-in offer service, a real HTTP server on another origin (host_page.py).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Request,
    Response,
    Route,
    ViewportSize,
    expect,
)
from playwright.sync_api import Error as PlaywrightError

from tests.browser.conftest import ARTIFACTS, Shop, needs_chromium, wait_until
from tests.browser.host_page import FixtureServer, Seen, host_html, serve, serve_sdk

pytestmark = needs_chromium

# A pink theme in a serif font and a padded content column, as in a real static shop template.
PINK = "rgb(160, 20, 90)"
THEME = (
    f"<style>body {{ margin: 0; font: 17px Georgia, serif; color: {PINK}; background: #fff5f9; }}"
    "main { max-width: 72rem; margin: 0 auto; padding: 0 1.25rem; }</style>"
)
# The storefront's own code: its add handler keeps what it was given and puts it in its cart.
STOREFRONT = """<script>
window.__adds = [];
window.__cart = ['cam-x100'];
offers('on', 'add', function (d) {
  window.__adds.push({token: d.offer.token, product_id: d.offer.product_id, quantity: d.quantity,
                      items: (d.offer.items || []).map(function (i) { return i.product_id; })});
  window.__cart.push(d.offer.product_id);
  var cart = document.querySelector('[data-offers="cart"]');
  if (cart) offers('render', cart, {items: window.__cart});
});
</script>"""
PHONE: ViewportSize = {"width": 390, "height": 844}


@pytest.fixture
def host() -> Iterator[FixtureServer]:
    with serve(FixtureServer()) as s:
        yield s


def answers_by_surface(page: Page) -> dict[str, list[dict[str, Any]]]:
    """Every /v1/offers answer the page received, by surface (the last one wins)."""
    seen: dict[str, list[dict[str, Any]]] = {}

    def keep(response: Response) -> None:
        if "/v1/offers?" in response.url and response.ok:
            surface = response.url.split("surface=")[1].split("&")[0]
            seen[surface] = response.json()["offers"]

    page.on("response", keep)
    return seen


def tap_events(context: BrowserContext) -> list[dict[str, Any]]:
    """Events the snippet sends, passed on to the service unchanged."""
    sent: list[dict[str, Any]] = []

    def handle(route: Route) -> None:
        sent.extend(json.loads(route.request.post_data or "{}").get("events", []))
        # The page may be left (or the test end) while it is sent.
        with contextlib.suppress(PlaywrightError):
            route.fulfill(response=route.fetch())

    context.route("**/v1/events*", handle)
    return sent


def hide_page(page: Page) -> None:
    page.evaluate(
        """() => {
          Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});
          Object.defineProperty(document, 'hidden', {value: true, configurable: true});
          document.dispatchEvent(new Event('visibilitychange'));
        }"""
    )


def cards(page: Page, surface: str) -> int:
    found = page.locator(f'[data-offers="{surface}"] [data-offer-id]')
    found.first.wait_for(state="attached", timeout=10_000)
    return found.count()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"host-{name}.png"), full_page=True)


def test_add_on_product_page_cart_and_checkout_calls_the_storefront_handler_with_the_offer(
    shop: Shop, host: FixtureServer, page: Page, context: BrowserContext
) -> None:
    places = (
        '<div data-offers="product_page" data-product-id="cam-x100"></div>'
        '<div data-offers="cart" data-items="cam-x100"></div>'
        '<div data-offers="checkout" data-items="cam-x100"></div>'
    )
    host.page("/shop", host_html(shop.url, places, THEME + STOREFRONT))
    answers = answers_by_surface(page)
    sent = tap_events(context)
    page.goto(host.url + "/shop")
    surfaces = ("cart", "product_page", "checkout")
    for surface in surfaces:
        assert cards(page, surface) >= 1
    assert wait_until(page, lambda: len(answers) == 3)
    # The first single-product offer of each (the product page leads with a bundle).
    taken = {s: next(o for o in answers[s] if o["kind"] != "bundle") for s in surfaces}

    # The cart first: the handler re-renders the cart placement after every add.
    for surface in surfaces:
        card = page.locator(
            f'[data-offers="{surface}"] [data-offer-id="{taken[surface]["offer_id"]}"]'
        )
        button = card.locator('button[data-offer-action="add"]')
        expect(button).to_have_text("Add to cart")
        button.click()

    adds = page.evaluate("window.__adds")
    assert adds == [
        {"token": o["token"], "product_id": o["product_id"], "quantity": 1, "items": []}
        for o in (taken[s] for s in surfaces)
    ]
    assert page.url == host.url + "/shop", "a storefront with a handler stays on its page"
    hide_page(page)
    assert wait_until(page, lambda: len([e for e in sent if e["type"] == "add"]) == 3)
    assert [e["token"] for e in sent if e["type"] == "add"] == [taken[s]["token"] for s in surfaces]


def test_add_without_a_handler_goes_to_the_offered_product(
    shop: Shop, host: FixtureServer, page: Page
) -> None:
    place = '<div data-offers="cart" data-items="cam-x100"></div>'
    host.page("/cart", host_html(shop.url, place))
    answers = answers_by_surface(page)
    page.goto(host.url + "/cart")
    cards(page, "cart")
    offered = answers["cart"][0]
    page.locator('[data-offers="cart"] [data-offer-action="add"]').first.click()
    page.wait_for_url(f"**/demo/products/{offered['product_id']}")


def test_four_offers_fit_a_phone_screen_in_the_page_s_own_font_and_colours(
    shop: Shop, host: FixtureServer, page: Page
) -> None:
    place = '<div data-offers="product_page" data-product-id="cam-x100" data-limit="4"></div>'
    host.page("/product", host_html(shop.url, f"<main><h1>Camera X100</h1>{place}</main>", THEME))
    page.set_viewport_size(PHONE)
    page.goto(host.url + "/product")
    assert cards(page, "product_page") == 4
    page.wait_for_function(
        "[...document.querySelectorAll('.offers-image')].every(i => i.complete)", timeout=10_000
    )
    height = page.locator(".offers-list").evaluate("e => e.getBoundingClientRect().height")
    print(f"4 offers on a 390 px screen: {height:.0f} px high")
    shot(page, "phone-product_page")
    assert height < 700, f"4 offers take {height:.0f} px on a phone"

    title = page.locator(".offers-title").first
    expect(title).to_have_css("color", PINK)
    expect(title).to_have_css("font-weight", "400")
    assert "Georgia" in title.evaluate("e => getComputedStyle(e).fontFamily")
    button = page.locator('[data-offer-action="add"]').first
    expect(button).to_have_css("color", PINK)
    expect(button).to_have_css("font-family", "Georgia, serif")
    assert page.locator("[data-offers] [style]").count() == 0, "no inline styles"


def test_no_thanks_leaves_a_visible_message(shop: Shop, host: FixtureServer, page: Page) -> None:
    place = '<div data-offers="checkout" data-items="cam-x100" data-accept></div>'
    host.page("/checkout", host_html(shop.url, f"<main>{place}</main>", THEME))
    page.set_viewport_size(PHONE)
    page.goto(host.url + "/checkout")
    cards(page, "checkout")
    card = page.locator('[data-offers="checkout"] [data-offer-id]').first
    shot(page, "phone-checkout")
    card.locator('[data-offer-action="decline"]').click()
    expect(card).to_have_attribute("data-state", "declined")
    status = card.locator('[role="status"]')
    expect(status).to_have_text("Thanks, we won't show this again")
    expect(status).to_be_visible()
    expect(status).to_have_css("opacity", "1")
    expect(card.locator('[data-offer-action="decline"]')).to_be_hidden()
    shot(page, "checkout-declined")


@pytest.fixture
def plain_context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile: nothing stored yet, the visitor id is the snippet's own."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    yield ctx
    ctx.close()


def test_visitor_id_reaches_the_store_s_server_as_a_cookie_and_identify_is_kept(
    shop: Shop, host: FixtureServer, plain_context: BrowserContext
) -> None:
    place = '<div data-offers="cart" data-items="cam-x100"></div>'
    host.page("/cart", host_html(shop.url, place))
    host.page("/checkout", "<!doctype html><p>checkout</p>")
    page = plain_context.new_page()
    sent_ids: list[str] = []

    def keep(request: Request) -> None:
        if "/v1/offers?" in request.url:
            sent_ids.append(request.url.split("visitor_id=")[1].split("&")[0])

    page.on("request", keep)
    page.goto(host.url + "/cart")
    assert wait_until(page, lambda: len(sent_ids) == 1)
    vid = page.evaluate("offers('visitorId')")
    assert len(vid) == 32
    assert sent_ids == [vid]

    # The store's server reads the cookie at checkout.
    page.goto(host.url + "/checkout")
    assert f"offer_vid={vid}" in host.requests_to("/checkout")[-1].headers.get("cookie", "")

    # identify() on one page holds on the next: its requests and the cookie carry the new id.
    page.goto(host.url + "/cart")
    assert wait_until(page, lambda: len(sent_ids) == 2)
    page.evaluate("offers('identify', 'cust-77')")
    page.goto(host.url + "/cart")
    assert wait_until(page, lambda: len(sent_ids) == 3)
    assert sent_ids[2] == "cust-77"
    assert "offer_vid=cust-77" in host.requests_to("/cart")[-1].headers.get("cookie", "")
    page.goto(host.url + "/checkout")
    assert "offer_vid=cust-77" in host.requests_to("/checkout")[-1].headers.get("cookie", "")


def _usd(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "USD"}


def _offer(pid: str, title: str, price: int, **over: Any) -> dict[str, Any]:
    return {
        "offer_id": f"off_{pid}",
        "product_id": pid,
        "kind": "cross_sell",
        "rank": 1,
        "title": title,
        "url": f"/products/{pid}",
        "image_url": None,
        "reason": None,
        "price": _usd(price),
        "discount_pct": 10,
        "offer_price": _usd(price - price // 10),
        "token": f"tok_{pid}",
        "expires_at": "2099-01-01T00:00:00Z",
        **over,
    }


BUNDLE = _offer(
    "cam-x100",
    "Camera X100 kit",
    56799,
    offer_id="off_bundle",
    kind="bundle",
    token="tok_bundle",
    offer_price=_usd(51119),
    items=[
        {"product_id": "cam-x100", "title": "Camera X100", "price": _usd(49900)},
        {"product_id": "sd-128", "title": "128 GB SD card", "price": _usd(2999)},
        {"product_id": "bag-small", "title": "Camera bag", "price": _usd(3900)},
    ],
)


def _fixture_offers(seen: Seen) -> tuple[int, Any]:
    """The stand-in service: a bundle on the product page; a cart $12 short of free shipping
    until the SD card is in it."""
    if seen.query.get("surface") == "product_page":
        return 200, {"holdout": False, "offers": [BUNDLE, _offer("lens-cap-52", "Lens cap", 999)]}
    if "sd-128" in seen.query.get("items", ""):
        return 200, {"holdout": False, "offers": [_offer("battery-np50", "Battery", 3499)]}
    gap = {"threshold": _usd(5000), "remaining": _usd(1200)}
    sd = _offer("sd-128", "128 GB SD card", 2999, reason="Gets you free shipping")
    return 200, {"holdout": False, "offers": [sd], "free_shipping": gap}


@pytest.fixture
def service(host: FixtureServer) -> Iterator[FixtureServer]:
    with serve(FixtureServer(cors_origin=host.url)) as s:
        serve_sdk(s)
        s.json("/v1/offers", _fixture_offers)
        s.json("/v1/events", lambda _seen: (202, {"accepted": 1, "duplicates": 0, "rejected": []}))
        yield s


def test_bundle_add_all_and_the_free_shipping_gap_shown_then_closed(
    host: FixtureServer, service: FixtureServer, plain_context: BrowserContext
) -> None:
    places = (
        '<div data-offers="product_page" data-product-id="cam-x100"></div>'
        '<div data-offers="cart" data-items="cam-x100"></div>'
    )
    # The merchant fills the product page's buttons with its own colour.
    filled = "<style>[data-offers=product_page] { --offers-button-bg: rgb(214, 51, 108); }</style>"
    host.page("/shop", host_html(service.url, places, THEME + filled + STOREFRONT, key="pk_test"))
    page = plain_context.new_page()
    page.set_viewport_size(PHONE)
    page.goto(host.url + "/shop")
    cards(page, "product_page")
    cards(page, "cart")

    bundle = page.locator('[data-offer-id="off_bundle"]')
    expect(bundle.locator(".offers-bundle li")).to_have_text(
        ["Camera X100", "128 GB SD card", "Camera bag"]
    )
    expect(bundle.locator(".offers-was")).to_have_text("Was $567.99")
    expect(bundle.locator(".offers-now")).to_have_text("$511.19")
    expect(bundle.locator("button")).to_have_count(1)
    expect(bundle.locator("button")).to_have_css("background-color", "rgb(214, 51, 108)")

    gap = page.locator('[data-offers="cart"] [data-offer-free-shipping]')
    expect(gap).to_have_text("Spend $12.00 more for free shipping")
    expect(gap).to_be_visible()
    bar = gap.locator("progress")
    assert bar.evaluate("b => [b.max, b.value]") == [5000, 3800]
    assert bar.evaluate("b => b.getBoundingClientRect().width") > 300, "the bar spans the cart"
    shot(page, "bundle-and-free-shipping")

    expect(bundle.locator('[data-offer-action="add"]')).to_have_text("Add all")
    bundle.locator('[data-offer-action="add"]').click()
    adds = page.evaluate("window.__adds")
    assert adds == [
        {
            "token": "tok_bundle",
            "product_id": "cam-x100",
            "quantity": 1,
            "items": ["cam-x100", "sd-128", "bag-small"],
        }
    ]

    # Taking the cart's offer closes the gap: the storefront re-renders its cart placement.
    page.locator('[data-offers="cart"] [data-offer-action="add"]').click()
    expect(page.locator('[data-offers="cart"] [data-product-id="battery-np50"]')).to_have_count(1)
    expect(gap).to_have_count(0)
    assert service.requests_to("/v1/offers")[-1].query["items"] == "cam-x100,cam-x100,sd-128"
