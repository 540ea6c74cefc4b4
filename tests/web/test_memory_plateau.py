"""A serving process's memory levels off however many visitors, carts and addresses it meets."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from offer_service_tools.demo import CATALOG, DEMO_PUBLISHABLE_KEY
from tests.processes import ServeProcess, prepare_demo_store
from tests.redis_servers import RELAXED, running_redis

MIB = 2**20
CONNECTIONS = 16
# Each request a new visitor, a new client address and, until the carts run out, new contents.
REQUESTS = 40_000
SAMPLES = 8
PLATEAU_MIB = 10
# Small bounds, so the tables are full early in the run and any that is not bounded shows.
SMALL_LIMITS = {
    "OFFER_CACHE_PREPARED": "300",
    "OFFER_CACHE_PRODUCTS": "1000",
    "OFFER_CACHE_VISITORS": "1000",
    "OFFER_CACHE_KEYS": "2000",
    "OFFER_TRUST_PROXY": "1",
}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServeProcess]:
    # On Redis, so that the process's memory is its own tables' (an embedded store's page cache
    # grows with its file, up to its own bound of 64 MiB).
    with contextlib.contextmanager(running_redis)(tmp_path / "redis") as redis:
        url = redis.url + RELAXED
        prepare_demo_store(url)
        process = ServeProcess(url, tmp_path / "serve.log", env=SMALL_LIMITS)
        try:
            yield process
        finally:
            process.stop()


def rss(pid: int) -> int:
    """The process's resident memory now, in bytes (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def carts() -> Iterator[str]:
    """Distinct cart contents (two to four of the catalog's products), then again."""
    ids = [p.id for p in CATALOG]
    every = itertools.chain.from_iterable(itertools.combinations(ids, n) for n in (2, 3, 4))
    return itertools.cycle(",".join(c) for c in every)


def request(n: int, cart: str) -> bytes:
    """A cart page's offers request of visitor `n`, from an address of its own."""
    address = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
    target = f"/v1/offers?key={DEMO_PUBLISHABLE_KEY}&surface=cart&items={cart}&visitor_id=v{n}"
    return (
        f"GET {target} HTTP/1.1\r\nHost: shop.test\r\nX-Forwarded-For: {address}\r\n\r\n"
    ).encode()


async def drive(port: int, pid: int, total: int, samples: int) -> tuple[list[int], dict[int, int]]:
    """Send `total` requests over CONNECTIONS keep-alive connections; the server's RSS after
    each `total / samples`, and the answers' statuses."""
    numbers = iter(range(total))
    cart = carts()
    statuses: dict[int, int] = {}
    step = total // samples
    sent = 0
    readings: list[int] = []

    async def connection() -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for n in numbers:
                writer.write(request(n, next(cart)))
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                status = int(status_line.split()[1])
                statuses[status] = statuses.get(status, 0) + 1
                sent += 1
                if sent % step == 0:
                    readings.append(rss(pid))
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    return readings, statuses


@pytest.mark.timeout(400)
def test_memory_levels_off_under_many_distinct_visitors_and_carts(service: ServeProcess) -> None:
    started = time.monotonic()
    readings, statuses = asyncio.run(drive(service.port, service.proc.pid, REQUESTS, SAMPLES))
    took = time.monotonic() - started

    assert statuses == {200: REQUESTS}
    mib = [round(r / MIB, 1) for r in readings]
    # The tables are full within the first eighth; what grows after slows down (measured: 113,
    # 115, 116, 117, 119, 120, 120, 121 MiB: 4.4 MiB over the second half). Without the bound
    # on visitors' states the second half adds 22 MiB; without the one on prepared lists, 250.
    growth = readings[-1] - readings[len(readings) // 2 - 1]
    detail = f"RSS MiB at each eighth of {REQUESTS} requests in {took:.0f} s: {mib}"
    assert growth < PLATEAU_MIB * MIB, detail
