"""Real headless Chromium (Playwright, sync API) against a real uvicorn serving the demo store.

Chromium comes from apt (`/usr/bin/chromium`; `scripts/test` installs it when missing), never
from Playwright's own download. Each test gets a fresh demo server (its own SQLite file), a new
browser context whose snippet visitor id is pinned outside the store's holdout group (so the
offers are always there to test), and a recorder of Content-Security-Policy violations.
Screenshots of the demo pages go to `test-artifacts/` (gitignored).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from offer_service.storage import open_store
from offer_service_tools.demo import DEMO_SECRET_KEY, DEMO_STORE_ID
from tests.conftest import LiveServer

T = TypeVar("T")
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# Record every CSP violation of every page, from before the page's own scripts run.
CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(e.effectiveDirective + ' ' + e.blockedURI);
}, true);
"""

# Test modules here carry `pytestmark = needs_chromium`.
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="browser tests need Chromium at /usr/bin/chromium "
    "(apt-get install -y chromium; scripts/test installs it when missing)",
)


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield b
    b.close()


@dataclass
class Shop:
    """The demo server as the tests drive it: its API and its demo-only charge log."""

    server: LiveServer
    visitor_id: str
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = self.server.client()

    @property
    def url(self) -> str:
        return self.server.url

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {DEMO_SECRET_KEY}"}
        response = self.http.request(method, path, headers=headers, **kwargs)
        assert response.status_code == 200, response.text
        return response

    def place_order(self, order_id: str, product_ids: list[str], customer_id: str) -> str:
        """Record a paid order through the admin API; returns its order token."""
        products = {
            p["id"]: p for p in self.admin("GET", "/v1/admin/catalog?limit=100").json()["products"]
        }
        order = {
            "id": order_id,
            "customer_id": customer_id,
            "placed_at": _now_iso(),
            "currency": "USD",
            "lines": [
                {"product_id": pid, "quantity": 1, "price": products[pid]["price"]}
                for pid in product_ids
            ],
        }
        token: str = self.admin("POST", "/v1/admin/orders", json=[order]).json()["order_tokens"][
            order_id
        ]
        return token

    def thank_you_url(self, order_id: str, token: str) -> str:
        return f"{self.url}/demo/thank-you?" + urlencode(
            {"order_id": order_id, "order_token": token}
        )

    def charges(self, order_id: str | None = None) -> dict[str, Any]:
        params = {"order_id": order_id} if order_id else {}
        body: dict[str, Any] = self.http.get("/demo/charges", params=params).json()
        return body

    def recorded_events(self, event_type: str, surface: str | None = None) -> int:
        """Events of a type the server has stored durably (its counters), read from its store."""

        async def read() -> dict[tuple[str, str, str, str, str], int]:
            store = open_store(self.server.store_url)
            await store.open()
            try:
                return await store.event_counters(DEMO_STORE_ID)
            finally:
                await store.close()

        counters = run_async(read())
        return sum(
            n
            for (surf, _kind, _pid, _arm, etype), n in counters.items()
            if etype == event_type and (surface is None or surf == surface)
        )


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run in a worker thread: Playwright's sync API keeps an event loop running in the
    test's thread once a browser fixture is up, and asyncio.run refuses to nest in it."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def csp_violations(page: Page) -> list[str]:
    """The page's CSP violations so far ("<directive> <blocked URI>"), recorded from its start."""
    violations: list[str] = page.evaluate("window.__cspViolations")
    return violations


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find_visitor(url: str, *, held_out: bool) -> str:
    """A visitor id the store holds out (or not), asked of the service rather than recomputed."""
    params = {"key": "pk_demo", "surface": "product_page", "product_id": "cam-x100"}
    with httpx.Client(base_url=url, timeout=10) as c:
        for n in range(400):
            visitor = f"browser-test-{n}"
            body = c.get("/v1/offers", params={**params, "visitor_id": visitor}).json()
            if body["holdout"] == held_out:
                return visitor
    pytest.skip(f"no visitor id with holdout={held_out} among the 400 tried")


def pin_visitor_script(visitor_id: str) -> str:
    return (
        f"try {{ localStorage.setItem('offers_vid', {json.dumps(visitor_id)}); }} catch (e) {{}}"
        + CSP_RECORDER
    )


@pytest.fixture
def shop(demo_server: LiveServer) -> Iterator[Shop]:
    s = Shop(demo_server, find_visitor(demo_server.url, held_out=False))
    yield s
    s.http.close()


@pytest.fixture
def context(browser: Browser, shop: Shop) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=shop.url)
    ctx.add_init_script(pin_visitor_script(shop.visitor_id))
    yield ctx
    ctx.close()


@dataclass
class PageLog:
    """What a page reported: uncaught errors and console messages."""

    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def csp_messages(self) -> list[str]:
        return [m for m in self.console if "Content Security Policy" in m]


@pytest.fixture
def page_log() -> PageLog:
    return PageLog()


@pytest.fixture
def page(context: BrowserContext, page_log: PageLog) -> Page:
    p = context.new_page()
    p.on("pageerror", lambda exc: page_log.errors.append(str(exc)))
    p.on("console", lambda msg: page_log.console.append(f"{msg.type}: {msg.text}"))
    return p


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"demo-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_until(page: Page, predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Let Playwright dispatch events (route handlers) until `predicate` holds or time is up."""
    steps = int(timeout_s * 10)
    for _ in range(steps):
        if predicate():
            return True
        page.wait_for_timeout(100)
    return predicate()
