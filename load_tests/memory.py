"""Memory per product, per visitor and per event: in Redis, and in a serving process.

Redis (a server of its own, nothing persisted): `used_memory` before and after importing
`--products` products, after one impression of each of `--visitors` visitors (aggregated), and
after a second impression of each (so the last step is the cost of an event alone). The serving
process (`offer-service serve` on that Redis, every cache limit high): resident size before and
after offers requests of `--visitors` new visitors on one cart (a held visitor's state each), then
of one visitor on `--carts` new carts (a prepared offer list each).

    python load_tests/memory.py
    python load_tests/memory.py --products 20000 --visitors 20000 --carts 5000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import httpx  # noqa: E402
from bench import free_port  # noqa: E402

from offer_service.domain.events import StoredEvent  # noqa: E402
from offer_service.domain.products import Product  # noqa: E402
from offer_service.storage import open_store  # noqa: E402
from offer_service.storage.redis.store import RedisStore  # noqa: E402
from offer_service_tools.demo import CATALOG, DEMO_PUBLISHABLE_KEY, install_demo  # noqa: E402

BATCH = 500
HIGH_LIMITS = {
    "OFFER_CACHE_PREPARED": "10000000",
    "OFFER_CACHE_VISITORS": "10000000",
    "OFFER_CACHE_KEYS": "10000000",
    "OFFER_TRUST_PROXY": "1",
    "OFFER_DRAIN_SECONDS": "0",
}


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    port = free_port()
    command = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([*command, "--dir", str(directory)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if redis_cli(port, "ping") == "PONG":
                break
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait()


def redis_cli(port: int, *args: str) -> str:
    run = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True)
    return run.stdout.strip()


def used_memory(url: str) -> int:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    for line in redis_cli(port, "info", "memory").splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1])
    raise RuntimeError("no used_memory")


def impression(visitor: str, at_ms: int) -> StoredEvent:
    return StoredEvent(
        id=uuid.uuid4().hex,
        type="impression",
        ts_ms=at_ms,
        received_ms=at_ms,
        visitor_id=visitor,
        surface="cart",
        kind="treatment",
        product_id=CATALOG[1].id,
        offer_id="o_" + uuid.uuid4().hex[:12],
        order_id=None,
        arm=None,
        offer_price=1000,
        currency="USD",
    )


async def redis_figures(url: str, products: int, visitors: int) -> dict[str, float]:
    store = open_store(url)
    assert isinstance(store, RedisStore)
    await store.open()
    try:
        record = await install_demo(store)
        before = used_memory(url)
        made = (
            Product(
                id=f"m{i}",
                title=f"Memory product {i}",
                price=1000 + i % 5000,
                category=f"c{i % 40}",
                url=f"https://shop.example/products/m{i}",
                image_url=f"https://shop.example/images/m{i}.jpg",
            )
            for i in range(products)
        )
        while batch := list(itertools.islice(made, BATCH)):
            await store.upsert_products(record.id, batch)
        after_products = used_memory(url)
        now = int(time.time() * 1000)
        for rnd in range(2):
            for start in range(0, visitors, BATCH):
                events = [impression(f"v{i}", now) for i in range(start, start + BATCH)]
                await store.record_events(record.id, events, now - 86_400_000)
            while await store.aggregate(record.id, "memory"):
                pass
            await store.trim_events(record.id)
            if rnd == 0:
                after_first = used_memory(url)
        after_second = used_memory(url)
    finally:
        await store.close()
    return {
        "redis bytes per product": (after_products - before) / products,
        "redis bytes per visitor (one event)": (after_first - after_products) / visitors,
        "redis bytes per further event": (after_second - after_first) / visitors,
    }


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@dataclass(frozen=True, slots=True)
class Served:
    """A running `offer-service serve`: its process id and base URL."""

    pid: int
    url: str


@contextlib.contextmanager
def serving(store_url: str, workdir: Path, settings: dict[str, str]) -> Iterator[Served]:
    """An `offer-service serve` on `store_url` with `settings` in its environment, once it
    answers /healthz; stopped on leaving (its log in `workdir`)."""
    port = free_port()
    env = {**os.environ, **settings, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "offer_service.cli", "serve", "--port", str(port)]
    log = open(workdir / "serve.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([*command, "--store-url", store_url], env=env, stdout=log, stderr=log)
    served = Served(proc.pid, f"http://127.0.0.1:{port}")
    try:
        with httpx.Client(base_url=served.url, timeout=5) as client:
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/healthz").status_code == 200:
                        break
                time.sleep(0.1)
        yield served
    finally:
        proc.terminate()
        proc.wait()
        log.close()


def process_figures(url: str, workdir: Path, visitors: int, carts: int) -> dict[str, float]:
    with (
        serving(url, workdir, HIGH_LIMITS) as served,
        httpx.Client(base_url=served.url, timeout=30) as client,
    ):
        ids = [p.id for p in CATALOG]
        every = itertools.chain.from_iterable(itertools.combinations(ids, n) for n in (2, 3, 4))
        cart_list = [",".join(c) for c in itertools.islice(every, carts + 1)]

        def ask(n: int, cart: str, visitor: str) -> None:
            query = {"key": DEMO_PUBLISHABLE_KEY, "surface": "cart", "items": cart}
            headers = {"X-Forwarded-For": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"}
            answer = client.get(
                "/v1/offers", params={**query, "visitor_id": visitor}, headers=headers
            )
            answer.raise_for_status()

        for n in range(200):  # warm: first-request allocations
            ask(n, cart_list[0], "warm")
        start = rss(served.pid)
        for n in range(visitors):
            ask(n, cart_list[0], f"mv{n}")
        after_visitors = rss(served.pid)
        for n in range(carts):
            ask(n, cart_list[n + 1], "one")
        after_carts = rss(served.pid)
    return {
        "process bytes per held visitor": (after_visitors - start) / visitors,
        "process bytes per prepared list": (after_carts - after_visitors) / carts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--visitors", type=int, default=20_000)
    parser.add_argument("--carts", type=int, default=5_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, redis_server(Path(scratch)) as url:
        figures = asyncio.run(redis_figures(url, args.products, args.visitors))
        figures.update(process_figures(url, Path(scratch), args.visitors, args.carts))
    for name, value in figures.items():
        print(f"{name}: {value:,.0f}")


if __name__ == "__main__":
    main()
