"""When Redis fails: no acknowledged event is lost or counted twice, offers keep coming from the
in-process cache, one-click accept fails closed fast, readiness says so, and everything
recovers without restarting the service. Real `redis-server` processes, killed, stopped and
started again on the same AOF; real `offer-service serve` processes."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from offer_service_tools.charge_double import ChargeDouble, running_charge_double
from offer_service_tools.demo import DEMO_STORE_ID, DEMO_WEBHOOK_SECRET
from tests.flows import PK, accept, error_code, order_with_offers
from tests.processes import ServeProcess, prepare_demo_store
from tests.redis_servers import RELAXED, RedisServer, opened_redis, running_redis

pytestmark = pytest.mark.timeout(240)

BATCH = 5


@pytest.fixture
def charges() -> Iterator[ChargeDouble]:
    yield from running_charge_double([DEMO_WEBHOOK_SECRET])


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path / "redis")


def serve(store_url: str, directory: Path, name: str) -> ServeProcess:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OFFER_SPOOL_DIR", str(spool_dir(directory, name)))
        return ServeProcess(store_url, directory / f"{name}.log")


def spool_dir(directory: Path, name: str) -> Path:
    return directory / f"spool-{name}"


def spooled_bytes(*directories: Path) -> int:
    return sum(p.stat().st_size for d in directories for p in d.glob("*.spool"))


def until(fn: Callable[[], httpx.Response], ok: int = 200, timeout_s: float = 20) -> httpx.Response:
    """Retry `fn` until it answers `ok` (warming caches, waiting for a recovery)."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = fn()
        if r.status_code == ok or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def stored(
    store_url: str, counter: tuple[str, str, str, str, str], prefix: str
) -> tuple[list[str], int]:
    """Ids of the stored events with `prefix` (in stream order, repeats kept) and the counter."""

    async def run() -> tuple[list[str], int]:
        async with opened_redis(store_url) as store:
            counters = await store.event_counters(DEMO_STORE_ID)
            ids = [
                e.id
                async for e in store.iter_events(DEMO_STORE_ID, 0, 2**53)
                if e.id.startswith(prefix)
            ]
        return ids, counters.get(counter, 0)

    return asyncio.run(run())


def product_page(
    client: httpx.Client, product_id: str, visitor: str | None = None
) -> httpx.Response:
    params = {"key": PK, "surface": "product_page", "product_id": product_id}
    if visitor:
        params["visitor_id"] = visitor
    return client.get("/v1/offers", params=params)


def impressions(run: str, numbers: range, token: str) -> list[dict[str, object]]:
    now = int(time.time() * 1000)
    return [
        {"id": f"{run}-{n:06d}", "type": "impression", "token": token, "ts": now} for n in numbers
    ]


def test_no_acknowledged_event_is_lost_or_counted_twice_when_redis_is_killed(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    url = redis_server.url + RELAXED
    prepare_demo_store(url)
    first, second = serve(url, tmp_path, "a"), serve(url, tmp_path, "b")
    spools = (spool_dir(tmp_path, "a"), spool_dir(tmp_path, "b"))
    run = f"n{uuid.uuid4().hex[:6]}"
    acknowledged: list[str] = []
    refused: list[tuple[int, str]] = []
    stop = threading.Event()
    try:
        with first.client() as a:
            offer = until(lambda: product_page(a, "cam-x100")).json()["offers"][0]
        counter = ("product_page", offer["kind"], offer["product_id"], "", "impression")

        def post() -> None:
            with first.client() as a, second.client() as b:
                n = 0
                while not stop.is_set():
                    events = impressions(run, range(n, n + BATCH), offer["token"])
                    try:
                        r = (a, b)[(n // BATCH) % 2].post(
                            "/v1/events", json={"key": PK, "events": events}
                        )
                    except httpx.HTTPError as exc:
                        refused.append((0, repr(exc)))
                    else:
                        if r.status_code == 202 and r.json()["accepted"] == BATCH:
                            acknowledged.extend(str(e["id"]) for e in events)
                        else:
                            refused.append((r.status_code, r.text))
                    n += BATCH
                    time.sleep(0.005)

        poster = threading.Thread(target=post)
        poster.start()
        time.sleep(1.0)
        redis_server.kill()  # SIGKILL: the AOF may lack the last acknowledged writes
        time.sleep(1.5)
        spooled_during_outage = spooled_bytes(*spools)
        redis_server.start()  # same port, same AOF
        time.sleep(1.5)
        stop.set()
        poster.join(timeout=30)

        deadline = time.monotonic() + 30
        while spooled_bytes(*spools) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert spooled_bytes(*spools) == 0, "the spools were not replayed"
        ids, counted = stored(url, counter, run)
    finally:
        stop.set()
        first.stop()
        second.stop()

    lost = len(set(acknowledged) - set(ids))
    duplicated = (len(ids) - len(set(ids))) + (counted - len(set(ids)))
    print(
        f"\nevents acknowledged with 202: {len(acknowledged)}; spooled while Redis was down: "
        f"{spooled_during_outage} bytes; stored: {len(set(ids))}; counted: {counted}; "
        f"lost: {lost}; duplicated: {duplicated}"
    )
    assert refused == []
    assert acknowledged
    assert spooled_during_outage > 0  # the outage really was in the middle of the run
    assert (lost, duplicated) == (0, 0)
    assert counted == len(acknowledged)


def test_events_a_killed_redis_acknowledged_but_lost_are_sent_again_when_it_restarts(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """`appendfsync everysec` answers before writing while a slow disk finishes the previous
    fsync, so a SIGKILL can lose the last second of acknowledged writes. Here the AOF is cut
    back to what it held before the events were posted (the worst such loss, every time)."""
    url = redis_server.url + RELAXED
    prepare_demo_store(url)
    service = serve(url, tmp_path, "a")
    run = f"l{uuid.uuid4().hex[:6]}"
    acknowledged: list[str] = []
    try:
        with service.client() as c:
            offer = until(lambda: product_page(c, "cam-x100")).json()["offers"][0]
            counter = ("product_page", offer["kind"], offer["product_id"], "", "impression")
            redis_server.rewrite_aof()
            before = tmp_path / "aof-before"
            shutil.copytree(redis_server.aof_directory, before)
            for n in range(0, 4 * BATCH, BATCH):
                events = impressions(run, range(n, n + BATCH), offer["token"])
                r = c.post("/v1/events", json={"key": PK, "events": events})
                assert (r.status_code, r.json()["accepted"]) == (202, BATCH), r.text
                acknowledged.extend(str(e["id"]) for e in events)

            redis_server.kill()
            shutil.rmtree(redis_server.aof_directory)
            shutil.copytree(before, redis_server.aof_directory)
            redis_server.start()

            deadline = time.monotonic() + 20
            while len(set(stored(url, counter, run)[0])) < len(acknowledged):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            ids, counted = stored(url, counter, run)
    finally:
        service.stop()
    print(
        f"\nacknowledged: {len(acknowledged)}; lost with the AOF's tail: {len(acknowledged)}; "
        f"stored after the restart: {len(set(ids))}; counted: {counted}"
    )
    assert (sorted(ids), counted) == (sorted(acknowledged), len(acknowledged))


def test_with_redis_stopped_offers_come_from_the_cache_and_accept_fails_closed(
    tmp_path: Path, redis_server: RedisServer, charges: ChargeDouble
) -> None:
    url = redis_server.url  # the production timeouts
    prepare_demo_store(url, charge_url=charges.url)
    service = serve(url, tmp_path, "a")
    order_id = f"out-{uuid.uuid4().hex[:6]}"
    key = f"k-{uuid.uuid4().hex}"
    try:
        with service.client() as c:
            _, offers = order_with_offers(c, order_id)
            token = str(offers[0]["token"])
            warm = until(lambda: product_page(c, "cam-x100", "v-1"))
            assert warm.status_code == 200, warm.text

            redis_server.stop()

            started = time.monotonic()
            cached = product_page(c, "cam-x100", "v-1")
            offers_ms = (time.monotonic() - started) * 1000
            started = time.monotonic()
            refused = accept(c, token, key)
            accept_ms = (time.monotonic() - started) * 1000
            ready = c.get("/readyz")
            beacon = c.post(
                "/v1/events",
                json={"key": PK, "events": impressions("out", range(3), token)},
            )
            uncached = product_page(c, "coffee-250g")
            print(
                f"\nRedis stopped: offers {cached.status_code} in {offers_ms:.0f} ms, accept "
                f"{refused.status_code} {error_code(refused)} in {accept_ms:.0f} ms, readyz "
                f"{ready.status_code}, events {beacon.status_code}, uncached offers "
                f"{uncached.status_code} {error_code(uncached)}"
            )
            assert cached.status_code == 200
            assert [o["product_id"] for o in cached.json()["offers"]] == [
                o["product_id"] for o in warm.json()["offers"]
            ]
            assert (refused.status_code, error_code(refused)) == (503, "store_unavailable")
            assert refused.headers["retry-after"] == "1"
            assert accept_ms < 1000
            assert ready.status_code == 503
            assert (beacon.status_code, beacon.json()["accepted"]) == (202, 3)
            assert (uncached.status_code, error_code(uncached)) == (503, "store_unavailable")
            assert charges.charges == []

            redis_server.start()

            started = time.monotonic()
            assert until(lambda: c.get("/readyz")).status_code == 200
            recovered_s = time.monotonic() - started
            done = until(lambda: accept(c, token, key))
            assert done.status_code == 200, done.text
            assert until(lambda: product_page(c, "coffee-250g")).status_code == 200
            counter = ("thank_you", offers[0]["kind"], offers[0]["product_id"], "", "impression")
            deadline = time.monotonic() + 20
            while stored(url, counter, "out")[1] < 3 and time.monotonic() < deadline:
                time.sleep(0.2)
            ids, counted = stored(url, counter, "out")
            print(
                f"Redis back: ready after {recovered_s:.2f} s, accept {done.status_code}, "
                f"spooled events counted {counted}"
            )
            assert (sorted(ids), counted) == (["out-000000", "out-000001", "out-000002"], 3)
            assert [ch.order_id for ch in charges.charges] == [order_id]
    finally:
        service.stop()


def exposures(store_url: str, visitors: set[str]) -> dict[str, str]:
    """The stored exposures of `visitors`: visitor id -> kind (holdout or treatment)."""

    async def run() -> dict[str, str]:
        async with opened_redis(store_url) as store:
            return {
                e.visitor_id: e.kind
                async for e in store.iter_events(DEMO_STORE_ID, 0, 2**53)
                if e.type == "exposure" and e.visitor_id in visitors
            }

    return asyncio.run(run())


def test_exposures_of_visitors_served_while_redis_is_stopped_are_spooled_and_kept(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    url = redis_server.url  # the production timeouts
    prepare_demo_store(url)
    service = serve(url, tmp_path, "a")
    run = f"x{uuid.uuid4().hex[:6]}"
    served: dict[str, str] = {}
    try:
        with service.client() as c:
            # No visitor: a holdout visitor's answer would prepare no list to serve from.
            assert until(lambda: product_page(c, "cam-x100")).status_code == 200
            mark = service.log_path.stat().st_size
            redis_server.stop()
            started, n = time.monotonic(), 0
            while time.monotonic() - started < 4:
                visitor = f"{run}-{n:04d}"
                r = product_page(c, "cam-x100", visitor)
                assert r.status_code == 200, r.text
                served[visitor] = "holdout" if r.json()["holdout"] else "treatment"
                n += 1
                time.sleep(0.02)
            redis_server.start()
            assert until(lambda: c.get("/readyz")).status_code == 200
            deadline = time.monotonic() + 20
            while len(exposures(url, set(served))) < len(served):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            kept = exposures(url, set(served))
    finally:
        service.stop()
    with service.log_path.open("rb") as f:
        f.seek(mark)
        outage_log = f.read().decode(errors="replace").splitlines()
    errors = [line for line in outage_log if '"level":"error"' in line or "Traceback" in line]
    warnings = [line for line in outage_log if "exposure" in line and '"warning"' in line]
    holdouts = sum(kind == "holdout" for kind in served.values())
    print(
        f"\nserved during the outage: {len(served)} visitors ({holdouts} holdout); exposures "
        f"kept: {len(kept)}; lost: {len(set(served) - set(kept))}; error lines: {len(errors)}; "
        f"exposure warnings: {len(warnings)}"
    )
    assert holdouts > 0
    assert kept == served
    assert errors == []
    assert len(warnings) == 1


def test_with_redis_hung_requests_time_out_fast_instead_of_hanging(
    tmp_path: Path, redis_server: RedisServer, charges: ChargeDouble
) -> None:
    url = redis_server.url  # the production timeouts
    prepare_demo_store(url, charge_url=charges.url)
    service = serve(url, tmp_path, "a")
    order_id = f"hung-{uuid.uuid4().hex[:6]}"
    key = f"k-{uuid.uuid4().hex}"
    assert redis_server.proc is not None
    pid = redis_server.proc.pid
    try:
        with service.client() as c:
            _, offers = order_with_offers(c, order_id)
            token = str(offers[0]["token"])
            assert until(lambda: product_page(c, "cam-x100", "v-2")).status_code == 200

            os.kill(pid, signal.SIGSTOP)  # accepts connections, never answers
            try:
                started = time.monotonic()
                cached = product_page(c, "cam-x100", "v-2")
                offers_ms = (time.monotonic() - started) * 1000
                started = time.monotonic()
                refused = accept(c, token, key)
                accept_ms = (time.monotonic() - started) * 1000
                ready = c.get("/readyz")
            finally:
                os.kill(pid, signal.SIGCONT)
            print(
                f"\nRedis hung: offers {cached.status_code} in {offers_ms:.0f} ms, accept "
                f"{refused.status_code} {error_code(refused)} in {accept_ms:.0f} ms, readyz "
                f"{ready.status_code}"
            )
            assert cached.status_code == 200
            assert (refused.status_code, error_code(refused)) == (503, "store_unavailable")
            assert accept_ms < 3000  # the 500 ms claim deadline, not the 5 s socket timeout
            assert ready.status_code == 503

            assert until(lambda: c.get("/readyz")).status_code == 200
            # The claim may have been written before the deadline: a retry then waits out the
            # claim's lease (409) or finds it never landed (200).
            done = until(lambda: accept(c, token, key), timeout_s=40)
            assert done.status_code == 200, done.text
            assert [ch.order_id for ch in charges.charges] == [order_id]
    finally:
        service.stop()
