"""GET /metrics after real requests through real servers: requests and latency by route and
surface, caches, the process's own series, and one sum across `serve --workers 2`."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from offer_service.web.collect import PUBLISH_EVERY_S
from offer_service.web.exposition import FAMILIES
from tests.conftest import LiveServer
from tests.processes import ServeProcess, prepare_demo_store
from tests.prometheus import matching, parse, scrape, worker_of

OFFERS = "offer_offers_requests_total"
LATENCY = "offer_offers_request_duration_seconds"
ROUTE = 'offer_http_requests_total{route="/v1/offers",method="GET",status="%s"}'
CART = {"key": "pk_demo", "surface": "cart", "items": "cam-x100"}
PRODUCT = {"key": "pk_demo", "surface": "product_page", "product_id": "cam-x100"}


def offers_count(samples: dict[str, float], surface: str, status: str = "200") -> float:
    key = f'{OFFERS}{{surface="{surface}",method="GET",status="{status}"}}'
    return samples.get(key, 0.0)


def test_offers_are_counted_and_timed_per_surface(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        for _ in range(3):
            assert c.get("/v1/offers", params=CART).status_code == 200
        for _ in range(2):
            assert c.get("/v1/offers", params=PRODUCT).status_code == 200
        # A surface no one knows is an error, counted under "other", never under its own text.
        assert c.get("/v1/offers", params={**CART, "surface": "nowhere"}).status_code == 422
        # An error on a known surface is counted on that surface.
        assert c.get("/v1/offers", params={"key": "pk_demo", "surface": "cart"}).status_code == 422
        assert c.get("/healthz").status_code == 200
        samples = parse(c.get("/metrics").text)
    assert offers_count(samples, "cart") == 3 and offers_count(samples, "product_page") == 2
    assert offers_count(samples, "other", "422") == 1 and offers_count(samples, "cart", "422") == 1
    assert not matching(samples, OFFERS, surface="nowhere")
    # The route's own series counts every surface, as it always has.
    assert samples[ROUTE % 200] == 5 and samples[ROUTE % 422] == 2
    assert samples['offer_http_requests_total{route="/healthz",method="GET",status="200"}'] == 1
    for surface, n in (("cart", 4), ("product_page", 2), ("other", 1)):
        buckets = list(matching(samples, LATENCY + "_bucket", surface=surface).values())
        assert buckets == sorted(buckets) and buckets[-1] == n  # cumulative, +Inf last
        assert samples[f'{LATENCY}_count{{surface="{surface}"}}'] == n
        assert 0 < samples[f'{LATENCY}_sum{{surface="{surface}"}}'] < n * 5
    # Repeated requests are answered from the in-process caches.
    hits = matching(samples, "offer_cache_requests_total", result="hit")
    assert hits['offer_cache_requests_total{cache="stores",result="hit"}'] >= 4
    assert hits['offer_cache_requests_total{cache="prepared",result="hit"}'] >= 3
    assert samples["offer_exposures_dropped_total"] == 0
    assert samples["offer_spool_files"] == 0 and samples["offer_metrics_workers"] == 1
    # The process's own series, one worker's.
    (rss,) = matching(samples, "process_resident_memory_bytes").values()
    assert 20e6 < rss < 2e9
    (cpu,) = matching(samples, "process_cpu_seconds_total").values()
    assert cpu > 0
    assert set(matching(samples, "python_gc_collections_total")) == {
        f'python_gc_collections_total{{worker="{w}",generation="{g}"}}'
        for w in [next(iter(matching(samples, "offer_store_fail_fast"))).split('"')[1]]
        for g in range(3)
    }
    assert list(matching(samples, "offer_store_fail_fast").values()) == [0]


@pytest.mark.timeout(120)
def test_every_scrape_sums_every_worker(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path}/offers.db"
    prepare_demo_store(store_url)
    server = ServeProcess(store_url, tmp_path / "serve.log", args=["--workers", "2"])
    try:
        # Requests on new connections until both workers answered some.
        answered: dict[str, int] = {}
        n = 0
        while len(answered) < 2 or n < 20:
            assert n < 400, f"one worker answered everything: {answered}"
            r = httpx.get(server.url + "/v1/offers", params=CART, timeout=10)
            assert r.status_code == 200, r.text
            answered[worker_of(r)] = answered.get(worker_of(r), 0) + 1
            n += 1
        # Each worker writes its counts for the other's scrapes every PUBLISH_EVERY_S.
        time.sleep(2 * PUBLISH_EVERY_S)
        seen: set[str] = set()
        for attempt in range(40):
            samples, worker = scrape(server.url)
            assert offers_count(samples, "cart") == n, (attempt, answered)
            assert samples[f'{LATENCY}_count{{surface="cart"}}'] == n
            assert samples[ROUTE % 200] == n
            assert samples["offer_metrics_workers"] == 2
            assert len(matching(samples, "process_resident_memory_bytes")) == 2
            seen.add(worker)
            if len(seen) == 2 and attempt >= 10:
                break
        assert len(seen) == 2, "every scrape landed on one worker"

        # A worker killed outright: its counts stay in the sum (a counter never goes back).
        victim = int(next(iter(matching(samples, "offer_store_fail_fast"))).split('"')[1])
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            samples, _ = scrape(server.url)
            workers = matching(samples, "offer_store_fail_fast")
            if f'worker="{victim}"' not in "".join(workers) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert f'worker="{victim}"' not in "".join(workers)
        assert offers_count(samples, "cart") == n and samples[ROUTE % 200] == n
    finally:
        server.stop()


def test_every_series_is_documented() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    assert [f for f in FAMILIES if f"`{f}`" not in page] == []
