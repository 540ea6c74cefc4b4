"""What /metrics tells an on-call engineer through a Redis outage: store errors by kind, the
fail-fast state, events spooled and the spool's depth, then the replay, and the aggregation lag
back to zero. A real `redis-server` stopped and started again; a real `serve` process."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import prepare_demo_store
from tests.prometheus import matching, parse
from tests.redis_servers import RedisServer, running_redis
from tests.serving.test_redis_outage import PK, impressions, product_page, serve, until

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path / "redis")


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    return sum(matching(samples, name, **labels).values())


def test_an_outage_and_its_recovery_read_on_the_metrics(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    url = redis_server.url  # the production timeouts
    prepare_demo_store(url)
    service = serve(url, tmp_path, "a")
    run = f"m{uuid.uuid4().hex[:6]}"
    try:
        with service.client() as c:
            offer = until(lambda: product_page(c, "cam-x100")).json()["offers"][0]
            before = parse(c.get("/metrics").text)
            assert total(before, "offer_store_errors_total") == 0
            assert total(before, "offer_store_fail_fast") == 0
            assert total(before, "offer_event_aggregation_lag_seconds") == 0

            redis_server.stop()
            fail_fast, sent = 0.0, 0
            deadline = time.monotonic() + 10
            while fail_fast == 0 and time.monotonic() < deadline:
                events = impressions(run, range(sent, sent + 5), offer["token"])
                r = c.post("/v1/events", json={"key": PK, "events": events})
                assert r.status_code == 202, r.text  # into the spool
                sent += 5
                during = parse(c.get("/metrics").text)
                fail_fast = total(during, "offer_store_fail_fast")
            assert fail_fast == 1
            assert total(during, "offer_store_errors_total", kind="unavailable") >= 1
            assert total(during, "offer_spool_events_total", outcome="spooled") == sent
            assert during["offer_spool_files"] >= 1 and during["offer_spool_bytes"] > 0
            # A scrape while the store is down answers at once, without the lag it cannot read.
            assert not matching(during, "offer_event_aggregation_lag_seconds")

            redis_server.start()
            assert until(lambda: c.get("/readyz")).status_code == 200
            deadline = time.monotonic() + 30
            while True:
                after = parse(c.get("/metrics").text)
                replayed = total(after, "offer_spool_events_total", outcome="replayed")
                lag = total(after, "offer_event_aggregation_lag_seconds")
                if (replayed == sent and lag == 0) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
    finally:
        service.stop()
    assert replayed == sent and after["offer_spool_files"] == 0
    assert total(after, "offer_store_fail_fast") == 0
    assert lag == 0 and total(after, "offer_event_aggregation_pending") == 0
    assert matching(after, "offer_event_aggregation_lag_seconds")
