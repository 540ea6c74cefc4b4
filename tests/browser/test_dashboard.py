"""The dashboard in real headless Chromium: opened by a signed link after a simulated day of
shopping, every chart renders with data, under its strict CSP, without a console error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page

from offer_service.domain.policy import Experiment, Variant
from offer_service.domain.records import StoreRecord
from offer_service.measurement.dashboard import link_params
from offer_service.storage import open_store
from offer_service_tools.demo import DEMO_STORE_ID
from offer_service_tools.sim_model import Behaviour
from offer_service_tools.simulate import simulate
from tests.browser.conftest import ARTIFACTS, PageLog, Shop, csp_violations, needs_chromium

pytestmark = needs_chromium

T = TypeVar("T")

CHARTS = (
    "take-rate-by-surface",
    "incremental-rpv",
    "attach-rate-over-time",
    "top-offers-by-margin",
    "returns",
)


def off_thread(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion in a thread: Playwright's sync API owns this thread's loop."""

    async def run() -> T:
        return await make()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def _record(shop: Shop) -> StoreRecord:
    async def read() -> StoreRecord:
        store = open_store(shop.server.store_url)
        await store.open()
        try:
            record = await store.get_store(DEMO_STORE_ID)
            assert record is not None
            return record
        finally:
            await store.close()

    return off_thread(read)


@pytest.fixture
def signed_link(shop: Shop) -> str:
    """A link to the demo store's dashboard, after 1,500 simulated visitors in two arms."""
    rules = shop.admin("GET", "/v1/admin/rules").json()
    rules["experiments"] = [
        Experiment(
            name="rank",
            surfaces=["product_page", "cart"],  # type: ignore[list-item]
            variants=[Variant(name="price"), Variant(name="margin", value="margin")],
        ).model_dump(mode="json")
    ]
    shop.admin("PUT", "/v1/admin/rules", json=rules)
    behaviour = Behaviour(arm_multiplier={"rank:margin": 1.5}, offer_return_rate=0.2)
    # In small chunks, so orders arrive over a few seconds: attach rate has a time series.
    off_thread(lambda: simulate(shop.url, visitors=1500, seed=3, behaviour=behaviour, chunk=150))
    params = link_params(_record(shop), int(time.time()) + 600)
    return f"{shop.url}/dashboard?{urlencode(params)}"


def test_every_chart_renders_with_data(page: Page, page_log: PageLog, signed_link: str) -> None:
    response = page.goto(signed_link)
    assert response is not None and response.status == 200
    for chart in CHARTS:
        svg = page.locator(f'svg[data-chart="{chart}"]')
        assert svg.count() == 1, chart
        assert svg.locator("[data-empty]").count() == 0, f"{chart} has no data"
        assert svg.locator("[data-value]").count() >= 1, chart
        box = svg.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 50, chart
    # Two arms and all offers: three intervals against the holdout.
    assert page.locator('svg[data-chart="incremental-rpv"] circle[data-value]').count() == 3
    assert page.locator('svg[data-chart="take-rate-by-surface"] rect[data-value]').count() == 3
    assert page.locator('svg[data-chart="attach-rate-over-time"] circle[data-value]').count() > 1
    assert "attribution window" in page.inner_text("header")
    assert page.locator('[data-kpi="rpv"] .tile-value').inner_text() != "n/a"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert not page_log.errors, page_log.errors
    assert not [m for m in page_log.console if m.startswith("error")], page_log.console
    assert csp_violations(page) == []


def test_the_range_form_keeps_the_signed_link(
    page: Page, page_log: PageLog, signed_link: str
) -> None:
    page.goto(signed_link)
    page.select_option('select[name="surface"]', "cart")
    page.click('form.range button[type="submit"]')
    page.wait_for_url("**surface=cart**")
    assert "cart" in page.inner_text("header")
    rows = page.locator('table[data-table="surface"] tbody tr')
    assert rows.count() == 1 and rows.first.inner_text().startswith("cart")
    assert page.locator('svg[data-chart="take-rate-by-surface"] rect[data-value]').count() == 1
    csv_link = page.locator("a[download]").get_attribute("href") or ""
    assert csv_link.startswith("/dashboard/report.csv?") and "sig=" in csv_link
    assert not page_log.errors and csp_violations(page) == []
