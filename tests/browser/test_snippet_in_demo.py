"""The snippet's measured and transactional behaviour in a real browser against the real
service: impressions (>= 50% visible for 1 s), events delivered when the page is hidden or left,
one-click accept that charges once, decline that shows a downsell, a declined card.

Events are sent with navigator.sendBeacon, whose body Playwright does not expose through
page.on("request"). While the page lives, `context.route` sees the beacon, and `route.fetch()` +
`route.fulfill()` still delivers it, so a test sees what was sent and what the server answered.
A beacon sent while the page is being left (pagehide) is delivered by the browser after the page
is gone, out of Playwright's reach: those tests read what the server stored instead.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, Route, expect

from tests.browser.conftest import PageLog, Shop, needs_chromium, screenshot, wait_until

pytestmark = needs_chromium


@dataclass
class EventTap:
    """Every /v1/events request the browser made: the events sent, the server's answers."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)
    arrived_at: list[float] = field(default_factory=list)

    def handle(self, route: Route) -> None:
        response = route.fetch()
        body = json.loads(route.request.post_data or "{}")
        self.sent.extend(body.get("events", []))
        self.answers.append(response.json())
        self.arrived_at.append(time.monotonic())
        route.fulfill(response=response)

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.sent if e.get("type") == event_type]

    def accepted(self) -> int:
        return sum(a.get("accepted", 0) for a in self.answers)

    def rejected(self) -> list[Any]:
        return [r for a in self.answers for r in a.get("rejected", [])]


@pytest.fixture
def tap(context: BrowserContext) -> EventTap:
    t = EventTap()
    context.route("**/v1/events*", t.handle)
    return t


def rendered_offers(page: Page, surface: str) -> int:
    cards = page.locator(f'[data-offers="{surface}"] [data-offer-id]')
    cards.first.wait_for(state="attached", timeout=10_000)
    return cards.count()


def offers_in_view(page: Page, surface: str) -> int:
    """Offers of the placement at least 50% inside the viewport right now."""
    count: int = page.locator(f'[data-offers="{surface}"] [data-offer-id]').evaluate_all(
        """cards => cards.filter(c => {
             const r = c.getBoundingClientRect();
             const visible = Math.min(r.bottom, innerHeight) - Math.max(r.top, 0);
             return visible >= r.height / 2; }).length"""
    )
    return count


def test_impression_is_recorded_only_after_the_offer_was_half_visible_for_one_second(
    shop: Shop, page: Page
) -> None:
    # A short window, so the offers start below the fold.
    page.set_viewport_size({"width": 1280, "height": 500})
    page.goto("/demo/products/cam-x100")
    count = rendered_offers(page, "product_page")
    first = page.locator('[data-offers="product_page"] [data-offer-id]').first
    assert offers_in_view(page, "product_page") == 0, "the offers start in view"

    # Visible for 0.5 s, then scrolled away; leaving the page flushes whatever was queued.
    first.scroll_into_view_if_needed()
    assert offers_in_view(page, "product_page") >= 1
    page.wait_for_timeout(500)
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(1500)
    page.goto("/demo/")
    page.wait_for_timeout(1500)
    assert shop.recorded_events("impression") == 0

    # Visible for 1.3 s: one impression per offer in view, stored by the server.
    page.goto("/demo/products/cam-x100")
    assert rendered_offers(page, "product_page") == count
    first.scroll_into_view_if_needed()
    in_view = offers_in_view(page, "product_page")
    assert in_view >= 1
    page.wait_for_timeout(1300)
    page.goto("/demo/")
    assert wait_until(page, lambda: shop.recorded_events("impression") >= in_view)
    page.wait_for_timeout(500)
    assert shop.recorded_events("impression", "product_page") == in_view


def test_events_queued_while_visible_arrive_as_soon_as_the_page_is_hidden(
    shop: Shop, page: Page, tap: EventTap
) -> None:
    page.goto("/demo/products/cam-x100")
    rendered_offers(page, "product_page")
    page.locator('[data-offers="product_page"] [data-offer-id]').first.scroll_into_view_if_needed()
    count = offers_in_view(page, "product_page")
    assert count >= 1
    page.wait_for_timeout(1300)  # impressions are queued now; the batch timer waits 5 s
    assert tap.sent == []
    hidden_at = time.monotonic()
    page.evaluate(
        """() => {
          Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});
          Object.defineProperty(document, 'hidden', {value: true, configurable: true});
          document.dispatchEvent(new Event('visibilitychange'));
        }"""
    )
    assert wait_until(page, lambda: len(tap.of_type("impression")) == count, timeout_s=3)
    assert tap.arrived_at[0] - hidden_at < 2.0, "sent by the timer, not on visibilitychange"
    assert tap.accepted() == count
    assert tap.rejected() == []
    assert shop.recorded_events("impression", "product_page") == count


def test_click_event_arrives_when_the_shopper_leaves_through_the_offer_link(
    shop: Shop, page: Page
) -> None:
    page.goto("/demo/products/cam-x100")
    rendered_offers(page, "product_page")
    card = page.locator('[data-offers="product_page"] [data-offer-id]').first
    target = card.get_attribute("data-product-id")
    card.locator("a.offers-link").click()
    page.wait_for_url(f"**/demo/products/{target}")
    assert wait_until(page, lambda: shop.recorded_events("click") >= 1)
    page.wait_for_timeout(500)
    assert shop.recorded_events("click", "product_page") == 1


def test_rapid_double_click_on_accept_charges_exactly_once(
    shop: Shop, page: Page, page_log: PageLog
) -> None:
    token = shop.place_order("dbl-1", ["battery-np50"], "cust-dbl")
    accepts: list[str] = []
    page.on("request", lambda r: accepts.append(r.url) if "/v1/accept" in r.url else None)
    page.goto(shop.thank_you_url("dbl-1", token))
    assert rendered_offers(page, "thank_you") == 2
    cards = page.locator('[data-offers="thank_you"] [data-offer-id]')

    first = cards.nth(0)
    first.locator('[data-offer-action="accept"]').dblclick()
    expect(first).to_have_attribute("data-state", "accepted")
    expect(first.locator('[role="status"]')).to_have_text("Added to your order")

    # A scripted burst of three clicks on the second offer's button.
    second = cards.nth(1)
    second.locator('[data-offer-action="accept"]').evaluate(
        "b => { b.click(); b.click(); b.click(); }"
    )
    expect(second).to_have_attribute("data-state", "accepted")
    page.wait_for_timeout(500)

    log = shop.charges("dbl-1")
    charged = sorted(c["product_id"] for c in log["charges"])
    accepted = [card.get_attribute("data-product-id") or "" for card in (first, second)]
    assert charged == sorted(accepted)
    assert log["requests"] == 2, "the charge endpoint was called more than once for an offer"
    assert len(accepts) == 2
    screenshot(page, "thank_you-accepted")
    # The thank-you page, reloaded, lists what was added after checkout.
    page.reload()
    expect(page.locator(".receipt")).to_contain_text("Added after checkout")
    assert page_log.errors == []


def test_declining_an_offer_shows_a_cheaper_downsell_from_its_family(
    shop: Shop, page: Page
) -> None:
    token = shop.place_order("down-1", ["battery-np50"], "cust-down")
    with page.expect_response("**/v1/offers?*") as offers_response:
        page.goto(shop.thank_you_url("down-1", token))
    offered = {o["product_id"]: o for o in offers_response.value.json()["offers"]}
    assert "sd-128" in offered, offered.keys()
    card = page.locator('[data-offers="thank_you"] [data-product-id="sd-128"]')

    with page.expect_response("**/v1/decline*") as decline_response:
        card.locator('[data-offer-action="decline"]').click()
    downsell = decline_response.value.json()["downsell"]
    assert downsell["product_id"] == "sd-64"
    assert downsell["kind"] == "downsell"
    assert downsell["offer_price"]["amount"] < offered["sd-128"]["offer_price"]["amount"]

    replacement = page.locator('[data-offers="thank_you"] [data-product-id="sd-64"]')
    expect(replacement.locator(".offers-title")).to_have_text("64 GB SD card")
    expect(card).to_have_count(0)
    screenshot(page, "thank_you-downsell")

    replacement.locator('[data-offer-action="accept"]').click()
    expect(replacement).to_have_attribute("data-state", "accepted")
    charges = shop.charges("down-1")["charges"]
    assert [(c["product_id"], c["amount"]["amount"]) for c in charges] == [
        ("sd-64", downsell["offer_price"]["amount"])
    ]


def test_simulated_declined_card_shows_payment_declined_and_charges_nothing(
    shop: Shop, page: Page
) -> None:
    page.goto("/demo/products/battery-np50")
    page.click("[data-add-to-cart]")
    page.wait_for_url("**/demo/cart")
    page.goto("/demo/checkout")
    page.check("[data-simulate-decline]")
    page.click("[data-place-order]")
    page.wait_for_url("**/demo/thank-you?**")
    expect(page.locator(".notice")).to_contain_text("simulated declined card")
    rendered_offers(page, "thank_you")
    card = page.locator('[data-offers="thank_you"] [data-offer-id]').first
    card.locator('[data-offer-action="accept"]').click()
    expect(card).to_have_attribute("data-state", "error")
    expect(card.locator('[role="status"]')).to_have_text("Payment declined")
    log = shop.charges()
    assert log["charges"] == []
    assert log["declined"] == 1
    screenshot(page, "thank_you-declined")
