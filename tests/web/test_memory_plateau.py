"""A serving process's memory levels off under a million distinct visitors, at default limits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from offer_service.storage import open_store
from offer_service_tools.demo import CATALOG, DEMO_PUBLISHABLE_KEY, DEMO_STORE_ID
from tests.processes import ROOT, ServeProcess, prepare_demo_store
from tests.prometheus import parse
from tests.redis_servers import RELAXED, RedisServer

MIB = 2**20
VISITORS = 1_000_000
# By then every bounded table is full at its default bound (docs/memory.md): visitors' states
# (100,000) and the keyed tables (200,000, several keys a visitor) within 200,000 requests,
# prepared lists (10,000) within some 180,000 (load_tests/visitors.lua).
FULL_AFTER = 0.3
SAMPLE_EVERY_S = 2.0
# A held visitor costs a process 1,754 bytes (docs/memory.md). Past FULL_AFTER the resident size
# may rise by a twentieth of that per visitor met, 88 bytes, less than any table entry a Python
# process could keep per visitor (the id's string alone takes some 60): a table that kept one
# fails, and so does a leak of 88 bytes or more a request.
HELD_VISITOR_BYTES = 1_754
ALLOWED_PER_VISITOR = HELD_VISITOR_BYTES / 20
# Every cache limit at its default; the client's address from X-Forwarded-For.
SETTINGS = {"OFFER_TRUST_PROXY": "1"}
WRK_SCRIPT = ROOT / "load_tests" / "visitors.lua"
SUMMARY = re.compile(r"visitors: sent (\d+) answered (\d+) ok (\d+) other (\d+)")


class VolatileRedis(RedisServer):
    """A Redis that persists nothing: a million visitors' exposures in an append-only file
    would cost the run disk writes and rewrites, and prove nothing here."""

    def command(self) -> list[str]:
        return [*super().command(), "--appendonly", "no"]


def pin(pid: int, cores: set[int]) -> None:
    """Every thread of `pid` (and so every thread it starts later) onto `cores`."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task), cores)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[ServeProcess, RedisServer]]:
    # On Redis, so that the process's memory is its own tables' (an embedded store's page cache
    # grows with its file, up to its own bound of 64 MiB).
    redis = VolatileRedis(tmp_path / "redis")
    redis.start()
    try:
        url = redis.url + RELAXED
        prepare_demo_store(url)
        process = ServeProcess(url, tmp_path / "serve.log", env=SETTINGS)
        try:
            yield process, redis
        finally:
            process.stop()
    finally:
        redis.stop()


def rss(pid: int) -> int:
    """The process's resident memory now, in bytes (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """The process's user and system CPU time so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def offers_answered(url: str) -> dict[str, int]:
    """The process's /v1/offers answers so far, by status (its /metrics)."""
    samples = parse(httpx.get(url + "/metrics", timeout=30).text)
    by_status: dict[str, int] = {}
    for name, value in samples.items():
        if name.startswith("offer_offers_requests_total{"):
            status = re.search(r'status="(\d+)"', name)
            assert status is not None, name
            by_status[status[1]] = by_status.get(status[1], 0) + int(value)
    return by_status


def exposures(store_url: str) -> int:
    """The visitors the store noted an exposure of (one each per surface and day)."""

    async def count() -> int:
        store = open_store(store_url)
        await store.open()
        try:
            counters = await store.event_counters(DEMO_STORE_ID)
        finally:
            await store.close()
        return sum(n for key, n in counters.items() if key[-1] == "exposure")

    return asyncio.run(count())


def fitted_rise(points: list[tuple[int, int]]) -> float:
    """How much the least-squares line through (x, y) rises from the first x to the last."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in points)
    variance = sum((x - mean_x) ** 2 for x, _ in points)
    return covariance / variance * (points[-1][0] - points[0][0])


@pytest.mark.timeout(2500)  # the client gives up after 2,400 s
def test_memory_levels_off_under_a_million_distinct_visitors(
    service: tuple[ServeProcess, RedisServer],
) -> None:
    server, redis = service
    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.skip("wrk is not installed (apt-get install wrk)")
    # The server alone on one core; the client and Redis on the others, when there are others.
    cores = sorted(os.sched_getaffinity(0))
    client_cores = set(cores[1:]) or set(cores)
    pin(server.proc.pid, {cores[0]})
    assert redis.proc is not None
    pin(redis.proc.pid, client_cores)
    ids = ",".join(p.id for p in CATALOG if p.active and not p.is_fee)
    command = [wrk, "-t2", "-c32", "-d2400s", "--timeout", "30s", "-s", str(WRK_SCRIPT)]
    command += [server.url + "/", "--", DEMO_PUBLISHABLE_KEY, ids]
    client = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, client_cores),
    )
    started = time.monotonic()
    # (answers so far, resident bytes), every SAMPLE_EVERY_S until a million visitors were met.
    samples: list[tuple[int, int]] = []
    try:
        while client.poll() is None:
            answered = sum(offers_answered(server.url).values())
            samples.append((answered, rss(server.proc.pid)))
            time.sleep(SAMPLE_EVERY_S)
            if answered >= VISITORS:
                break  # and wrk has had the answers it was waiting for by now
    finally:
        # wrk stops at SIGINT and prints what it counted.
        client.send_signal(signal.SIGINT)
        report, _ = client.communicate(timeout=60)
    took = time.monotonic() - started
    # What the run took on a machine of its own: the server's rate is its one core's.
    busy = cpu_seconds(server.proc.pid)

    full = [(n, r) for n, r in samples if n >= FULL_AFTER * VISITORS]
    rise = fitted_rise(full) if len(full) > 1 else 0.0
    allowed = ALLOWED_PER_VISITOR * (full[-1][0] - full[0][0]) if full else 0.0
    readings = ", ".join(
        f"{n // 1000}k: {r / MIB:.0f}" for n, r in samples[:: max(len(samples) // 24, 1)]
    )
    redis_memory = re.search(r"used_memory:(\d+)", redis.cli("INFO", "memory"))
    detail = (
        f"{samples[-1][0]} answers in {took:.0f} s, the server busy {busy:.0f} s; "
        f"RSS MiB by answers so far: {readings}, {samples[-1][1] / MIB:.0f}; "
        f"the fitted line past {FULL_AFTER:.0%} rising {rise / MIB:.1f} MiB "
        f"(allowed {allowed / MIB:.1f}); Redis "
        f"{int(redis_memory[1]) / MIB if redis_memory else 0:.0f} MiB"
    )
    print(detail)

    summary = SUMMARY.search(report)
    assert summary is not None, report
    _, answered, ok, other = (int(g) for g in summary.groups())
    # Every request a visitor id never sent before (the script numbers them per thread), every
    # one answered 200, no connection failed or timed out.
    assert ok >= VISITORS and ok == answered and other == 0, report
    assert "Socket errors" not in report, report
    assert offers_answered(server.url).keys() == {"200"}
    # The store met them too: one exposure noted for each distinct visitor.
    assert exposures(redis.url + RELAXED) >= VISITORS
    assert rise < allowed, detail
