"""Two `offer-service serve` processes on one Redis: one truth for catalog changes, one-click
accepts and events, whichever instance a request reaches."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import httpx
import orjson
import pytest

from offer_service.domain.events import StoredEvent
from offer_service.serving.spool import Spool
from offer_service.storage.redis.keys import StoreKeys
from offer_service.storage.redis.store import RedisStore
from offer_service_tools.charge_double import ChargeDouble, running_charge_double
from offer_service_tools.demo import DEMO_STORE_ID, DEMO_WEBHOOK_SECRET
from tests.flows import ADMIN, PK, accept, error_code, order_with_offers
from tests.processes import ROOT, ServeProcess, prepare_demo_store, two_instances
from tests.redis_servers import RELAXED, RedisServer, opened_redis

pytestmark = pytest.mark.timeout(240)

ACCEPTS = 50
T = TypeVar("T")


@pytest.fixture(scope="module")
def charges() -> Iterator[ChargeDouble]:
    yield from running_charge_double([DEMO_WEBHOOK_SECRET])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url + RELAXED
    finally:
        server.stop()


@pytest.fixture(scope="module")
def instances(
    redis_url: str, charges: ChargeDouble, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    prepare_demo_store(redis_url, charge_url=charges.url)  # rate limits raised out of the way
    with two_instances(redis_url, tmp_path_factory.mktemp("instances")) as pair:
        yield pair


def read(store_url: str, fn: Callable[[RedisStore], Awaitable[T]]) -> T:
    """Run `fn` on a store of its own (the test's view of Redis, apart from the instances)."""

    async def run() -> T:
        async with opened_redis(store_url) as store:
            return await fn(store)

    return asyncio.run(run())


def product_page(client: httpx.Client, product_id: str = "cam-x100") -> list[dict[str, object]]:
    r = client.get(
        "/v1/offers", params={"key": PK, "surface": "product_page", "product_id": product_id}
    )
    assert r.status_code == 200, r.text
    offers: list[dict[str, object]] = r.json()["offers"]
    return offers


def test_a_catalog_change_through_one_instance_is_served_by_the_other_within_a_second(
    instances: tuple[ServeProcess, ServeProcess],
) -> None:
    first, second = instances
    with first.client() as a, second.client() as b:
        shown = product_page(b)  # the second instance caches this list
        # A product offered on its own (a bundle's title is its products' titles).
        target = str(next(o for o in shown if o["kind"] != "bundle")["product_id"])
        r = a.get("/v1/admin/catalog", params={"limit": 1000}, headers=ADMIN)
        (current,) = [p for p in r.json()["products"] if p["id"] == target]
        renamed = f"Renamed {uuid.uuid4().hex[:6]}"

        r = a.put("/v1/admin/catalog", json=[{**current, "title": renamed}], headers=ADMIN)
        assert r.status_code == 200, r.text
        changed = time.monotonic()

        def title() -> object:
            return {o["product_id"]: o["title"] for o in product_page(b)}.get(target)

        seen_after = None
        while time.monotonic() - changed < 1.0:
            if title() == renamed:
                seen_after = time.monotonic() - changed
                break
            time.sleep(0.02)
        # Whatever the polling saw, a request started a second after the change is fresh.
        time.sleep(max(0.0, 1.0 - (time.monotonic() - changed)))
        assert title() == renamed
        print(f"\nthe other instance served the change after {seen_after or 1.0:.3f} s")
        assert seen_after is not None


def test_concurrent_accepts_with_one_key_across_both_instances_charge_once(
    instances: tuple[ServeProcess, ServeProcess], charges: ChargeDouble, redis_url: str
) -> None:
    first, second = instances
    order_id = f"so-{uuid.uuid4().hex[:8]}"
    with first.client() as a, second.client() as b:
        _, offers = order_with_offers(a, order_id)
        token = str(offers[0]["token"])
        key = f"k-{uuid.uuid4().hex}"
        start = threading.Barrier(ACCEPTS)

        def one(i: int) -> httpx.Response:
            start.wait()
            return accept((a, b)[i % 2], token, key)

        with ThreadPoolExecutor(ACCEPTS) as pool:
            answers = list(pool.map(one, range(ACCEPTS)))
        retry = accept(b, token, key)

    statuses = sorted(r.status_code for r in answers)
    print(
        f"\n{ACCEPTS} concurrent accepts: {statuses.count(200)} x 200, {statuses.count(409)} x 409"
    )
    assert set(statuses) <= {200, 409}, [(r.status_code, r.text) for r in answers]
    assert {error_code(r) for r in answers if r.status_code == 409} <= {"in_progress"}
    won = [r for r in answers if r.status_code == 200]
    assert won and len({r.content for r in won}) == 1
    assert retry.status_code == 200 and retry.content == won[0].content
    assert [c.order_id for c in charges.charges].count(order_id) == 1
    order = read(redis_url, lambda s: s.get_order(DEMO_STORE_ID, order_id))
    assert order is not None
    assert [line.product_id for line in order.lines].count(str(offers[0]["product_id"])) == 1


def test_concurrent_accepts_of_one_offer_with_different_keys_charge_once(
    instances: tuple[ServeProcess, ServeProcess], charges: ChargeDouble
) -> None:
    first, second = instances
    order_id = f"sd-{uuid.uuid4().hex[:8]}"
    with first.client() as a, second.client() as b:
        _, offers = order_with_offers(a, order_id)
        token = str(offers[0]["token"])
        start = threading.Barrier(20)

        def one(i: int) -> httpx.Response:
            start.wait()
            return accept((a, b)[i % 2], token, f"k-{i}-{uuid.uuid4().hex}")

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(one, range(20)))

    codes = {r.status_code: error_code(r) for r in answers if r.status_code != 200}
    assert [r.status_code for r in answers].count(200) <= 1
    assert set(codes.values()) <= {"in_progress", "already_accepted"}
    assert [c.order_id for c in charges.charges].count(order_id) == 1


def test_events_posted_to_both_instances_add_up_once(
    instances: tuple[ServeProcess, ServeProcess], redis_url: str
) -> None:
    first, second = instances
    with first.client() as a, second.client() as b:
        offer = product_page(a, "coffee-250g")[0]
        counter = ("product_page", str(offer["kind"]), str(offer["product_id"]), "", "click")
        before = read(redis_url, lambda s: s.event_counters(DEMO_STORE_ID))
        run = uuid.uuid4().hex[:8]
        now = int(time.time() * 1000)
        batches = [
            [
                {"id": f"{run}-{i}-{j}", "type": "click", "token": offer["token"], "ts": now}
                for j in range(10)
            ]
            for i in range(20)
        ]
        totals = {"accepted": 0, "duplicates": 0}
        for i, batch in enumerate(batches):
            # Each batch to one instance, then again to the other (a retried beacon).
            for client in (a, b) if i % 2 else (b, a):
                r = client.post("/v1/events", json={"key": PK, "events": batch})
                assert r.status_code == 202, r.text
                for name in totals:
                    totals[name] += r.json()[name]

    after = read(redis_url, lambda s: s.event_counters(DEMO_STORE_ID))
    counted = after.get(counter, 0) - before.get(counter, 0)
    print(f"\n200 events sent twice across two instances: counted {counted}, totals {totals}")
    assert totals == {"accepted": 200, "duplicates": 200}
    assert counted == 200


def test_the_instances_aggregate_events_themselves_and_trim_the_stream(
    instances: tuple[ServeProcess, ServeProcess], redis_url: str
) -> None:
    first, second = instances
    k = StoreKeys(DEMO_STORE_ID)
    with first.client() as a, second.client() as b:
        offer = product_page(a, "serum-30ml")[0]
        field = orjson.dumps(["product_page", offer["kind"], offer["product_id"], "", "impression"])
        now = int(time.time() * 1000)
        for i, client in enumerate((a, b, a, b)):
            events = [
                {"id": f"agg-{uuid.uuid4().hex}", "type": "impression", "token": offer["token"]}
                | {"ts": now}
                for _ in range(25)
            ]
            r = client.post("/v1/events", json={"key": PK, "events": events})
            assert r.status_code == 202 and r.json()["accepted"] == 25, (i, r.text)

    async def state(store: RedisStore) -> tuple[int, int]:
        # The raw counter, without a reader's own aggregation pass.
        counted = await store._do("read a counter", "hget", k.counters, field)
        return int(counted or 0), await store._do("read the stream length", "xlen", k.events)

    deadline = time.monotonic() + 30
    while True:
        counted, length = read(redis_url, state)
        if (counted == 100 and length <= 1) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    print(f"\ncounted by the instances' aggregators: {counted}; stream entries left: {length}")
    assert counted == 100
    assert length <= 1  # acknowledged entries are trimmed (the last delivered one is kept)


def test_a_separate_worker_aggregates_and_replays_orphaned_spools(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    url = server.url + RELAXED
    events = [
        StoredEvent(
            f"w-{i}", "click", 1, 1, None, "cart", "cross_sell", "p", "o", None, None, 1, "X"
        )
        for i in range(6)
    ]

    async def prepare() -> str:
        async with opened_redis(url) as store:
            record = await store.create_store("Worker")
            await store.record_events(record.id, events[:3], 0)
            orphan = Spool(tmp_path / "spool")  # a service process that died with a spool
            await orphan.append(record.id, events[3:], 0)
            orphan.close()
            return record.id

    store_id = asyncio.run(prepare())
    k = StoreKeys(store_id)
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [
            *(sys.executable, "-m", "offer_service.cli", "worker"),
            *("--store-url", url, "--spool-dir", str(tmp_path / "spool")),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        async def counted() -> int:
            async with opened_redis(url) as store:
                field = orjson.dumps(["cart", "cross_sell", "p", "", "click"])
                return int(await store._do("read a counter", "hget", k.counters, field) or 0)

        deadline = time.monotonic() + 30
        while asyncio.run(counted()) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert asyncio.run(counted()) == 6
        assert list((tmp_path / "spool").glob("*.spool")) == []
        os.kill(worker.pid, signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        log.close()
        server.stop()
