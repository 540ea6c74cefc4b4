"""`offer-service serve --workers 2` answers as one worker would: a decline, impressions up to
the frequency cap and a one-click accept sent through the process are honoured by every later
answer, whichever worker gives it, once VISITOR_POLL_S has passed; /metrics counts both."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from offer_service.domain.policy import FrequencyCap
from offer_service.serving.visitors import VISITOR_POLL_S
from offer_service.web.collect import PUBLISH_EVERY_S
from offer_service_tools.charge_double import ChargeDouble, running_charge_double
from offer_service_tools.demo import DEMO_WEBHOOK_SECRET
from tests.flows import PK, accept, error_code, order_with_offers
from tests.processes import ServeProcess, demo_store_url, new_shopper
from tests.prometheus import matching, scrape, worker_of

pytestmark = pytest.mark.timeout(300)

ANCHOR = "cam-x100"
# Answers asked for after each write: enough that both workers give several.
ANSWERS = 40
EACH_AT_LEAST = 5


@pytest.fixture(scope="module")
def charges() -> Iterator[ChargeDouble]:
    yield from running_charge_double([DEMO_WEBHOOK_SECRET])


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def workers(
    request: pytest.FixtureRequest, charges: ChargeDouble, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    directory: Path = tmp_path_factory.mktemp(request.param)
    for url in demo_store_url(request.param, directory, charge_url=charges.url):
        process = ServeProcess(url, directory / "serve.log", args=["--workers", "2"])
        try:
            yield process
        finally:
            process.stop()


def shopper() -> str:
    return new_shopper("w")


def page(url: str, **params: str) -> tuple[list[dict[str, Any]], str]:
    """A product page's offers on a new connection (so either worker may answer), and the
    worker that answered."""
    query = {"key": PK, "surface": "product_page", "product_id": ANCHOR, "limit": "10", **params}
    r = httpx.get(url + "/v1/offers", params=query, timeout=10)
    assert r.status_code == 200, r.text
    offers: list[dict[str, Any]] = r.json()["offers"]
    return offers, worker_of(r)


def never_offered(url: str, product: str, **params: str) -> Counter[str]:
    """Ask until both workers answered EACH_AT_LEAST times (ANSWERS at least): none offers
    `product`. The answers per worker."""
    answered: Counter[str] = Counter()
    while sum(answered.values()) < ANSWERS or min(answered.values()) < EACH_AT_LEAST:
        assert sum(answered.values()) < 20 * ANSWERS, f"one worker answered all: {answered}"
        offers, worker = page(url, **params)
        assert product not in {o["product_id"] for o in offers}, (worker, answered)
        answered[worker] += 1
    assert len(answered) == 2, answered
    return answered


def post_events(url: str, visitor: str, token: str, kind: str, n: int) -> None:
    now = int(time.time() * 1000)
    batch = [
        {"id": uuid.uuid4().hex, "type": kind, "token": token, "ts": now, "visitor_id": visitor}
        for _ in range(n)
    ]
    r = httpx.post(url + "/v1/events", json={"key": PK, "events": batch}, timeout=10)
    assert r.status_code == 202 and r.json()["accepted"] == n, r.text


def offers_counted(url: str) -> float:
    samples, _ = scrape(url)
    return sum(matching(samples, "offer_offers_requests_total", status="200").values())


def test_a_decline_is_honoured_by_every_worker(workers: ServeProcess) -> None:
    visitor = shopper()
    offers, _ = page(workers.url, visitor_id=visitor)
    declined = offers[0]
    r = httpx.post(
        workers.url + "/v1/decline",
        json={"key": PK, "token": declined["token"], "visitor_id": visitor},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    time.sleep(VISITOR_POLL_S)

    never_offered(workers.url, declined["product_id"], visitor_id=visitor)
    # Declined by this visitor only.
    assert declined["product_id"] in {o["product_id"] for o in page(workers.url)[0]}


def test_the_frequency_cap_is_honoured_by_every_worker(workers: ServeProcess) -> None:
    visitor = shopper()
    offers, _ = page(workers.url, visitor_id=visitor)
    shown = offers[0]
    post_events(workers.url, visitor, shown["token"], "impression", FrequencyCap().impressions)
    time.sleep(VISITOR_POLL_S)

    never_offered(workers.url, shown["product_id"], visitor_id=visitor)


def test_an_accept_is_honoured_by_every_worker(workers: ServeProcess) -> None:
    with httpx.Client(base_url=workers.url, timeout=30) as client:
        order_id = f"o-{uuid.uuid4().hex[:10]}"
        _, offers = order_with_offers(client, order_id)
        taken = offers[0]
        r = accept(client, taken["token"], f"k-{uuid.uuid4().hex}")
        assert r.status_code == 200, r.text
    time.sleep(VISITOR_POLL_S)

    # The product now belongs to the order's customer: no worker offers it to them again,
    # and no worker charges the same offer twice.
    never_offered(workers.url, taken["product_id"], customer_id=f"cust-{order_id}")
    refused: Counter[str] = Counter()
    while len(refused) < 2:
        assert sum(refused.values()) < 200, f"one worker answered all: {refused}"
        r = httpx.post(
            workers.url + "/v1/accept",
            json={"key": PK, "token": taken["token"], "quantity": 1},
            headers={"Idempotency-Key": f"k-{uuid.uuid4().hex}"},
            timeout=30,
        )
        assert r.status_code == 409 and error_code(r) == "already_accepted", r.text
        refused[worker_of(r)] += 1


def test_metrics_count_the_answers_of_both_workers(workers: ServeProcess) -> None:
    time.sleep(2 * PUBLISH_EVERY_S)
    before = offers_counted(workers.url)
    answered = never_offered(workers.url, "no-such-product")
    time.sleep(2 * PUBLISH_EVERY_S)  # each worker publishes its counts for the other's scrapes

    for _ in range(4):  # whichever worker answers the scrape
        assert offers_counted(workers.url) == before + sum(answered.values())
