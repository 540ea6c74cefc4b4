"""A flood of events from one client against a real `offer-service serve`: the event budget
admits a bounded number of them, and what no shopper produces is stored flagged and left out of
the report; shoppers behind one NAT at human rates are counted in full."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from offer_service.domain.policy import RateLimits, StoreRules
from offer_service.domain.records import StoreRecord
from offer_service.storage import open_store
from tests.conftest import BROWSER_UA
from tests.flows import ADMIN, PK, copy_demo_catalog
from tests.processes import ServeProcess, prepare_demo_store, two_instances
from tests.redis_servers import RELAXED, running_redis

pytestmark = pytest.mark.timeout(240)

SENT = 5_000
BATCH = 100
CONNECTIONS = 16
DEFAULTS = RateLimits()
# The admin routes stay out of the way: the flood is on the browser route.
LIMITS = {
    **DEFAULTS.model_dump(),
    "admin_per_second": 1_000_000,
    "admin_burst": 1_000_000,
}


def limit_events(process: ServeProcess) -> None:
    """The demo store with the default limits a store has (the admin routes' lifted)."""
    with process.client() as c:
        rules = c.get("/v1/admin/rules", headers=ADMIN).json()
        r = c.put("/v1/admin/rules", json={**rules, "rate_limits": LIMITS}, headers=ADMIN)
        assert r.status_code == 200, r.text


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServeProcess]:
    """The demo store, with the default limits a store has, served by a real process."""
    url = f"sqlite:///{tmp_path}/offers.db"
    prepare_demo_store(url, holdout_share=0)
    process = ServeProcess(url, tmp_path / "serve.log")
    try:
        limit_events(process)
        yield process
    finally:
        process.stop()


def now_ms() -> int:
    return int(time.time() * 1000)


def page_offers(c: httpx.Client, product_id: str, visitor_id: str, key: str = PK) -> list[str]:
    r = c.get(
        "/v1/offers",
        params={
            "key": key,
            "surface": "product_page",
            "product_id": product_id,
            "visitor_id": visitor_id,
        },
    )
    assert r.status_code == 200, r.text
    return [o["token"] for o in r.json()["offers"]]


def report(c: httpx.Client, since_ms: int, secret_key: str | None = None) -> dict[str, Any]:
    r = c.get(
        "/v1/admin/metrics",
        params={"from": str(since_ms - 60_000), "to": str(now_ms() + 60_000)},
        headers={"Authorization": f"Bearer {secret_key}"} if secret_key else ADMIN,
    )
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def flood(urls: list[str], token: str) -> tuple[list[dict[str, Any]], float]:
    """SENT impressions of one token, each with a visitor and an id of its own, from one client
    with a browser's User-Agent, as fast as CONNECTIONS connections carry them (spread evenly
    over the instances at `urls`)."""
    batches = [
        {
            "key": PK,
            "events": [
                {
                    "id": str(uuid.uuid4()),
                    "type": "impression",
                    "token": token,
                    "ts": now_ms(),
                    "visitor_id": str(uuid.uuid4()),
                }
                for _ in range(BATCH)
            ],
        }
        for _ in range(SENT // BATCH)
    ]
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for i, batch in enumerate(batches):
        queue.put_nowait((urls[i % len(urls)], orjson.dumps(batch)))
    answers: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=CONNECTIONS)
    headers = {"User-Agent": BROWSER_UA, "Content-Type": "text/plain"}
    async with httpx.AsyncClient(limits=limits, headers=headers) as client:

        async def worker() -> None:
            while not queue.empty():
                url, body = queue.get_nowait()
                r = await client.post(url + "/v1/events", content=body)
                assert r.status_code in (202, 429), r.text
                answers.append(r.json() if r.status_code == 202 else {"refused": BATCH})

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
        return answers, time.monotonic() - started


def other_store(service: ServeProcess) -> StoreRecord:
    """A second store on the server, with the demo's catalog and default limits."""

    async def create() -> StoreRecord:
        store = open_store(service.store_url)
        await store.open()
        try:
            return await store.create_store("Other shop", rules=StoreRules(holdout_share=0))
        finally:
            await store.close()

    record = asyncio.run(create())
    with service.client() as c:
        copy_demo_catalog(c, record.secret_key)
    return record


def replay_flood(urls: list[str], report_from: ServeProcess, instances: int = 1) -> None:
    """The flood against `urls`, and what the store's report made of it: the budget admits at
    most its burst and what refills meanwhile (one budget for every instance), and the report
    counts at most what one offer's impressions from one address may come to in each instance
    (the rate flags are counted per instance); the rest is stored flagged."""
    started = now_ms()
    with report_from.client() as c:
        token = page_offers(c, "cam-x100", "attacker")[0]
    answers, seconds = asyncio.run(flood(urls, token))
    accepted = sum(a.get("accepted", 0) for a in answers)
    refused = sum(a.get("refused", 0) for a in answers) + sum(
        1 for a in answers for item in a.get("rejected", []) if item["code"] == "rate_limited"
    )
    with report_from.client() as c:
        data = report(c, started)
    counted = data["totals"]["impressions"]
    flagged = data["invalid_traffic"]["events"]
    print(
        f"\nflood over {len(urls)} instance(s): {SENT} sent in {seconds:.2f} s; {accepted} "
        f"accepted, {refused} refused (rate_limited), {flagged} flagged "
        f"{data['invalid_traffic']['by_reason']}, {counted} counted in the report"
    )
    assert accepted + refused == SENT
    admitted_at_most = DEFAULTS.events_burst + DEFAULTS.events_per_second * (seconds + 1)
    assert accepted <= admitted_at_most
    per_instance = DEFAULTS.offer_impressions_per_minute * (1 + (seconds + 1) / 60)
    assert counted <= instances * per_instance
    assert counted + flagged == accepted


def test_a_flood_from_one_client_is_bounded_by_the_event_budget_and_flagged(
    service: ServeProcess,
) -> None:
    started = now_ms()
    other = other_store(service)
    replay_flood([service.url], service)

    # The other store's shoppers on the same address have a budget of their own there.
    with service.client() as c:
        tokens = page_offers(c, "cam-x100", "neighbour", other.publishable_key)
        events = [
            {"id": str(uuid.uuid4()), "type": "impression", "token": t, "ts": now_ms(),
             "visitor_id": "neighbour"}
            for t in tokens
        ]  # fmt: skip
        body = {"key": other.publishable_key, "events": events}
        r = c.post("/v1/events", content=orjson.dumps(body))
        assert r.json() == {"accepted": len(tokens), "duplicates": 0, "rejected": []}
        theirs = report(c, started, other.secret_key)
    assert theirs["totals"]["impressions"] == len(tokens)
    assert theirs["invalid_traffic"]["events"] == 0


def test_shoppers_behind_one_nat_at_human_rates_are_counted_in_full(
    service: ServeProcess,
) -> None:
    """Forty shoppers on one address, each viewing a page and sending its events as the snippet
    does (impressions of every offer shown, a click on one of them): nothing refused, nothing
    flagged, every impression and click counted."""
    started = now_ms()
    products = ["cam-x100", "grinder-burr", "serum-30ml", "tripod-pro"]
    impressions = clicks = 0
    with service.client() as c:
        for i in range(40):
            visitor = f"nat-shopper-{i}"
            tokens = page_offers(c, products[i % len(products)], visitor)
            events = [
                {
                    "id": str(uuid.uuid4()),
                    "type": "impression",
                    "token": t,
                    "ts": now_ms(),
                    "visitor_id": visitor,
                }
                for t in tokens
            ]
            if i % 4 == 0:
                events.append({**events[0], "id": str(uuid.uuid4()), "type": "click"})
                clicks += 1
            impressions += len(tokens)
            r = c.post("/v1/events", content=orjson.dumps({"key": PK, "events": events}))
            assert r.status_code == 202, r.text
            assert r.json() == {"accepted": len(events), "duplicates": 0, "rejected": []}
            time.sleep(0.05)
        data = report(c, started)
    assert data["invalid_traffic"]["events"] == 0, data["invalid_traffic"]
    assert (data["totals"]["impressions"], data["totals"]["clicks"]) == (impressions, clicks)


def test_instances_on_one_redis_share_one_event_budget(tmp_path: Path) -> None:
    for server in running_redis(tmp_path / "redis"):
        url = server.url + RELAXED
        prepare_demo_store(url, holdout_share=0)
        with two_instances(url, tmp_path) as (first, second):
            limit_events(first)
            replay_flood([first.url, second.url], first, instances=2)
