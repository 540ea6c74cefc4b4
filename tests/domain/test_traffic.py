"""Invalid traffic: which requests are bots or prefetches, and how flagged events are stored,
counted apart in the report and left out of every billable figure and of learning."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from offer_service.decision.learning import Feedback, LearningConfig
from offer_service.domain.events import StoredEvent
from offer_service.domain.traffic import BOT, PREFETCH, classify, is_bot
from offer_service.web.report_models import MetricsReport
from tests.conftest import BROWSER_UA, LiveServer
from tests.web.test_api_metrics import ADMIN, event, now_ms, visitor

BOTS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/131.0.0.0 Safari/537.36",
    "python-requests/2.32.3",
    "python-httpx/0.28.1",
    "curl/8.5.0",
    "Wget/1.21.4",
    "Go-http-client/2.0",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; "
    "+https://openai.com/gptbot)",
    "Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
    "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/109.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse",
    "SomeNewCrawler/0.1",
    "Acme-SEO-Bot/3.0",
)
SHOPPERS = (
    BROWSER_UA,
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Linux; Android 13; CUBOT P60) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/470.0.0.38.109]",
    "",  # nothing is known about a request without one
)


@pytest.mark.parametrize("ua", BOTS)
def test_known_bots_are_bots(ua: str) -> None:
    assert is_bot(ua)
    assert classify([(b"user-agent", ua.encode())]) == BOT


@pytest.mark.parametrize("ua", SHOPPERS)
def test_shoppers_browsers_are_not(ua: str) -> None:
    assert not is_bot(ua)
    assert classify([(b"host", b"shop.example"), (b"user-agent", ua.encode())]) is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"sec-purpose", b"prefetch"),
        (b"sec-purpose", b"prefetch;prerender"),
        (b"purpose", b"prefetch"),
        (b"x-moz", b"prefetch"),
        (b"x-purpose", b"preview"),
        (b"x-purpose", b"Preview"),
    ],
)
def test_speculative_loads_are_prefetches_whoever_asks(name: bytes, value: bytes) -> None:
    headers = [(b"user-agent", BROWSER_UA.encode()), (name, value)]
    assert classify(headers) == PREFETCH
    assert classify([(b"user-agent", b"Googlebot/2.1"), (name, value)]) == PREFETCH
    assert classify([(b"user-agent", BROWSER_UA.encode()), (name, b"anything-else")]) is None


def stored(kind: str, flag: str | None) -> StoredEvent:
    return StoredEvent(
        uuid.uuid4().hex,
        kind,
        1000,
        1000,
        "v",
        "cart",
        "cross_sell",
        "p",
        "o",
        None,
        None,
        1,
        "X",
        flag,
    )


def test_learning_ignores_flagged_events() -> None:
    fb = Feedback(LearningConfig(), as_of_ms=1000, window_ms=7 * 86_400_000)
    for kind, flag in (
        ("impression", None),
        ("impression", "bot"),
        ("click", "no_impression"),
        ("accept", "prefetch"),
    ):
        fb.add_event(stored(kind, flag))
    assert fb.counts[("cart", "p")] == [1.0, 0.0, 0.0, 0.0]
    assert fb.clicks == []


def test_flagged_events_are_stored_and_reported_apart_from_the_billable_figures(
    demo_server: LiveServer,
) -> None:
    started = now_ms()
    shopper, other = visitor(False, "t"), visitor(False, "u")
    with (
        demo_server.client() as c,
        demo_server.client(headers={"User-Agent": BOTS[0]}) as bot,
        demo_server.client(headers={"Sec-Purpose": "prefetch;prerender"}) as prefetch,
    ):
        params = {"key": "pk_demo", "surface": "product_page", "product_id": "cam-x100"}
        offers = c.get("/v1/offers", params={**params, "visitor_id": shopper}).json()["offers"]
        assert len(offers) >= 3
        # A bot and a prerendered page ask too: answered, but nobody saw anything.
        assert (
            bot.get("/v1/offers", params={**params, "visitor_id": "crawler-1"}).status_code == 200
        )
        assert prefetch.get("/v1/offers", params={**params, "visitor_id": other}).status_code == 200

        def post(client: Any, events: list[dict[str, Any]]) -> None:
            r = client.post("/v1/events", json={"key": "pk_demo", "events": events})
            assert r.status_code == 202 and r.json()["accepted"] == len(events), r.text

        post(
            c,
            [event("impression", o, shopper) for o in offers]
            + [event("click", offers[0], shopper)],
        )
        post(
            bot,
            [event("impression", offers[1], "crawler-1"), event("click", offers[1], "crawler-1")],
        )
        post(prefetch, [event("impression", offers[2], other)])
        post(c, [event("click", offers[2], other)])  # its only impression was a prefetch's
        report = c.get(
            "/v1/admin/metrics",
            params={"from": str(started - 60_000), "to": str(now_ms() + 60_000)},
            headers=ADMIN,
        )
        csv = c.get("/v1/admin/metrics", params={"format": "csv"}, headers=ADMIN).text
        page = c.get("/dashboard", headers=ADMIN).text
    assert report.status_code == 200
    data = report.json()
    MetricsReport.model_validate(data)
    totals = data["totals"]
    assert (totals["impressions"], totals["clicks"]) == (len(offers), 1)
    assert data["holdout"]["sample_sizes"] == {"treatment": 1, "holdout": 0}
    invalid = data["invalid_traffic"]
    assert invalid["by_reason"] == {"bot": 3, "prefetch": 2, "no_impression": 1}
    assert invalid["by_type"] == {"click": 2, "exposure": 2, "impression": 2}
    assert invalid["events"] == 6
    assert invalid["share_of_events"] == round(6 / (6 + len(offers) + 1 + 1), 6)
    assert "invalid_traffic,reason,no_impression,events,1,,," in csv.splitlines()
    assert 'data-kpi="invalid"' in page and "1 no impression" in page
