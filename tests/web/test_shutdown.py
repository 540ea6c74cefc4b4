"""SIGTERM on a real `offer-service serve` under load: readiness turns 503 at once, the process
serves on through the drain period, then finishes what is in flight, stores what it accepted
and exits 0; a client that stops sending on a 503 from /readyz (as a balancer does) sees no
failed request."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

from offer_service.storage import open_store
from tests.conftest import BROWSER_UA
from tests.flows import PK
from tests.processes import ServeProcess, prepare_demo_store
from tests.redis_servers import running_redis

pytestmark = pytest.mark.timeout(180)

DRAIN_S = 2.0
# How often the balancer asks each process whether it is ready.
POLL_S = 0.2
SENDERS = 4
EVENTS_PER_BATCH = 5
# Exit within the drain plus this: in-flight requests, the lifespan's flushes, the interpreter.
EXIT_WITHIN_S = 5.0
HEADERS = {"User-Agent": BROWSER_UA, "Content-Type": "text/plain"}


@dataclass
class Traffic:
    """What the balancer and its clients saw."""

    sent: int = 0
    failed: list[str] = field(default_factory=list)
    accepted: set[str] = field(default_factory=set)  # ids of the events answered "accepted"
    # monotonic times: readiness first 503, the listener first refusing a connection
    unready_at: float | None = None
    closed_at: float | None = None
    drain_answers: list[int] = field(default_factory=list)
    out: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)


def impressions(token: str) -> tuple[bytes, set[str]]:
    """A batch of impressions, and their ids."""
    now = int(time.time() * 1000)
    events = [
        {"id": str(uuid.uuid4()), "type": "impression", "token": token, "ts": now,
         "visitor_id": f"v-{uuid.uuid4().hex[:8]}"}
        for _ in range(EVENTS_PER_BATCH)
    ]  # fmt: skip
    return orjson.dumps({"key": PK, "events": events}), {e["id"] for e in events}


def send_while_ready(url: str, token: str, traffic: Traffic, lock: threading.Lock) -> None:
    """A steady stream of offer requests and event batches, until the balancer takes the
    process out."""
    offers = {"key": PK, "surface": "product_page", "product_id": "cam-x100"}
    with httpx.Client(base_url=url, headers=HEADERS, timeout=10) as c:
        n = 0
        while not traffic.out.is_set() and not traffic.stop.is_set():
            n += 1
            body, ids = impressions(token)
            try:
                if n % 2:
                    r = c.post("/v1/events", content=body)
                    ok = r.status_code == 202
                else:
                    r = c.get("/v1/offers", params={**offers, "visitor_id": f"s-{n}"})
                    ok = r.status_code == 200
            except httpx.HTTPError as exc:
                with lock:
                    traffic.sent += 1
                    traffic.failed.append(repr(exc))
                continue
            with lock:
                traffic.sent += 1
                if not ok:
                    traffic.failed.append(f"{r.status_code} {r.text[:200]}")
                elif n % 2:
                    assert r.json()["accepted"] == EVENTS_PER_BATCH, r.text
                    traffic.accepted |= ids


def poll_readiness(url: str, traffic: Traffic) -> None:
    """The balancer's health check: a new connection each time, until one is refused."""
    while not traffic.stop.is_set():
        try:
            status = httpx.get(f"{url}/readyz", timeout=2).status_code
        except httpx.ConnectError:
            traffic.closed_at = time.monotonic()
            return
        except httpx.HTTPError:
            status = 0
        if status != 200 and traffic.unready_at is None:
            traffic.unready_at = time.monotonic()
            traffic.out.set()
        time.sleep(POLL_S)


def stored_events(store_url: str) -> set[str]:
    async def ids() -> set[str]:
        store = open_store(store_url)
        await store.open()
        try:
            record = await store.store_by_key(PK)
            assert record is not None
            until = int(time.time() * 1000) + 60_000
            return {e.id async for e in store.iter_events(record.id, 0, until)}
        finally:
            await store.close()

    return asyncio.run(ids())


@pytest.mark.parametrize(("backend", "workers"), [("sqlite", 1), ("sqlite", 2), ("redis", 2)])
def test_sigterm_drains_then_exits_with_every_request_answered(
    tmp_path: Path, backend: str, workers: int
) -> None:
    with contextlib.ExitStack() as stack:
        if backend == "redis":
            redis = stack.enter_context(contextlib.contextmanager(running_redis)(tmp_path / "r"))
            store_url = redis.url
        else:
            store_url = f"sqlite:///{tmp_path}/offers.db"
        drain_under_load(tmp_path, store_url, workers)


def drain_under_load(tmp_path: Path, store_url: str, workers: int) -> None:
    prepare_demo_store(store_url, holdout_share=0, rate_limits={})
    service = ServeProcess(
        store_url,
        tmp_path / "serve.log",
        env={"OFFER_SPOOL_DIR": str(tmp_path / "spool")},
        args=["--drain-seconds", str(DRAIN_S), "--workers", str(workers)],
    )
    try:
        with service.client() as c:
            r = c.get(
                "/v1/offers",
                params={"key": PK, "surface": "product_page", "product_id": "cam-x100",
                        "visitor_id": "first"},
            )  # fmt: skip
            token = r.json()["offers"][0]["token"]
            assert c.get("/readyz").json() == {"status": "ok"}

        traffic = Traffic()
        lock = threading.Lock()
        senders = [
            threading.Thread(target=send_while_ready, args=(service.url, token, traffic, lock))
            for _ in range(SENDERS)
        ]
        poller = threading.Thread(target=poll_readiness, args=(service.url, traffic))
        for t in [*senders, poller]:
            t.start()
        time.sleep(1.0)
        before = traffic.sent
        signalled = time.monotonic()
        service.proc.send_signal(signal.SIGTERM)

        # A client that ignores readiness is still served during the drain, on new connections.
        time.sleep(DRAIN_S / 2)
        with httpx.Client(base_url=service.url, headers=HEADERS, timeout=10) as c:
            for _ in range(3):
                traffic.drain_answers.append(c.get("/healthz").status_code)
                body, ids = impressions(token)
                r = c.post("/v1/events", content=body)
                traffic.drain_answers.append(r.status_code)
                if r.status_code == 202:
                    with lock:
                        traffic.accepted |= ids
            r = c.get("/readyz")
        assert (r.status_code, r.json()) == (503, {"status": "draining"})

        code = service.proc.wait(timeout=DRAIN_S + EXIT_WITHIN_S + 10)
        exited = time.monotonic()
        poller.join(timeout=5)  # it ends on the first refused connection
        traffic.stop.set()
        for t in [*senders, poller]:
            t.join(timeout=10)
    finally:
        service.stop()

    print(
        f"\nSIGTERM on {store_url.split(':')[0]} with {workers} worker(s) under load: "
        f"{traffic.sent} requests sent "
        f"({before} before the signal), {len(traffic.failed)} failed; readiness 503 after "
        f"{(traffic.unready_at or 0) - signalled:.2f} s, listener closed after "
        f"{(traffic.closed_at or 0) - signalled:.2f} s, exit after {exited - signalled:.2f} s; "
        f"{len(traffic.accepted)} events accepted"
    )
    assert traffic.failed == [], traffic.failed[:5]
    assert traffic.sent > before > 0
    assert code == 0, service.log()
    # Seen by the balancer with time to spare before the listener closes (with --workers the
    # supervisor passes the signal on within 0.5 s; a busy machine adds its own delay).
    assert traffic.unready_at is not None and traffic.unready_at - signalled < DRAIN_S - POLL_S
    assert traffic.closed_at is not None and traffic.closed_at > traffic.unready_at
    # The listener stays open through the drain period.
    assert traffic.closed_at - signalled >= DRAIN_S - POLL_S
    assert traffic.drain_answers == [200, 202] * 3
    assert exited - signalled < DRAIN_S + EXIT_WITHIN_S
    # Every event answered "accepted" is in the store once the process is gone.
    assert traffic.accepted - stored_events(store_url) == set()


def test_a_second_sigterm_leaves_the_drain_and_a_second_sigint_ends_it(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path}/offers.db"
    prepare_demo_store(store_url)
    drain_s = 4.0
    for sig, stops_early in ((signal.SIGTERM, False), (signal.SIGINT, True)):
        service = ServeProcess(
            store_url, tmp_path / f"{sig.name}.log", args=["--drain-seconds", str(drain_s)]
        )
        try:
            signalled = time.monotonic()
            service.proc.send_signal(sig)
            time.sleep(0.5)
            assert httpx.get(f"{service.url}/readyz", timeout=2).status_code == 503
            # A process manager that signals the whole group, or Ctrl-C again.
            service.proc.send_signal(sig)
            time.sleep(0.5)
            if not stops_early:
                assert httpx.get(f"{service.url}/healthz", timeout=2).status_code == 200
            code = service.proc.wait(timeout=drain_s + EXIT_WITHIN_S)
            took = time.monotonic() - signalled
        finally:
            service.stop()
        assert code == 0, service.log()
        if stops_early:
            assert took < drain_s - 1, took
        else:
            assert drain_s <= took < drain_s + EXIT_WITHIN_S, took
