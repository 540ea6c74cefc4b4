"""Leases of a shared rate limit: a busy bucket costs a round trip per lease, not per request,
and the instance never admits a request that the shared store did not count."""

from __future__ import annotations

import asyncio

import pytest

from offer_service.exceptions import StoreUnavailable
from offer_service.serving.ratelimit import LEASE_S, LEASE_SHARE, RateLimited, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Shared:
    """GCRA on a fake clock, counting calls and the requests it counted."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.tat: dict[tuple[str, str], float] = {}
        self.calls = 0
        self.counted = 0
        self.wants: list[int] = []
        self.fail = False

    async def rate_lease(
        self, store_id: str, bucket: str, per_second: float, burst: int, want: int
    ) -> tuple[int, float]:
        self.calls += 1
        self.wants.append(want)
        await asyncio.sleep(0)
        if self.fail:
            raise StoreUnavailable("down")
        now = self.clock.now
        interval = 1.0 / per_second
        tolerance = interval * (burst - 1)
        tat = max(self.tat.get((store_id, bucket), now), now)
        if tat - tolerance > now:
            return 0, tat - tolerance - now
        n = min(want, int((now + tolerance - tat) / interval + 1e-9) + 1)
        self.tat[(store_id, bucket)] = tat + n * interval
        self.counted += n
        return n, 0.0


async def admit_all(limiter: RateLimiter, n: int, per_second: float, burst: int) -> int:
    admitted = 0
    for _ in range(n):
        try:
            await limiter.admit("st", "browser:1.2.3.4", per_second, burst)
        except RateLimited:
            continue
        admitted += 1
    return admitted


def test_a_busy_bucket_costs_one_round_trip_per_lease() -> None:
    clock = Clock()
    shared = Shared(clock)
    limiter = RateLimiter(clock=clock, shared=shared)

    async def run() -> int:
        admitted = 0
        for _ in range(1000):  # 1,000 requests a second for a second
            clock.now += 0.001
            admitted += await admit_all(limiter, 1, 10_000, 10_000)
        return admitted

    assert asyncio.run(run()) == 1000
    assert shared.calls < 100
    assert max(shared.wants) <= 10_000 // LEASE_SHARE
    assert shared.counted >= 1000


def test_a_quiet_bucket_asks_for_one_request_at_a_time() -> None:
    clock = Clock()
    shared = Shared(clock)
    limiter = RateLimiter(clock=clock, shared=shared)

    async def run() -> None:
        for _ in range(20):
            clock.now += 2 * LEASE_S
            await admit_all(limiter, 1, 100, 200)

    asyncio.run(run())
    assert shared.wants == [1] * 20
    assert shared.counted == 20


def test_two_instances_never_admit_more_than_the_shared_limit() -> None:
    clock = Clock()
    shared = Shared(clock)
    a = RateLimiter(clock=clock, shared=shared)
    b = RateLimiter(clock=clock, shared=shared)
    burst = 400

    async def run() -> int:
        admitted = 0
        for _ in range(2000):
            clock.now += 0.0001  # far faster than 1 a second refills
            admitted += await admit_all(a, 1, 1.0, burst)
            admitted += await admit_all(b, 1, 1.0, burst)
        return admitted

    admitted = asyncio.run(run())
    # Each admitted request was counted first; a lease left over is at most burst/LEASE_SHARE.
    assert admitted <= shared.counted <= burst + 1
    assert admitted >= burst - 2 * (burst // LEASE_SHARE)


def test_a_batch_takes_what_the_shared_bucket_has_in_one_round_trip() -> None:
    clock = Clock()
    shared = Shared(clock)
    limiter = RateLimiter(clock=clock, shared=shared)

    async def run() -> list[tuple[int, float]]:
        return [await limiter.take("st", "events:1.2.3.4", 1.0, 150, 100) for _ in range(3)]

    first, second, third = asyncio.run(run())
    assert first == (100, 0.0)
    assert second == (50, 0.0)  # what the bucket still had
    assert third[0] == 0 and third[1] > 0
    assert shared.wants[:2] == [100, 100]
    assert shared.counted == 150


def test_two_instances_taking_batches_never_exceed_the_shared_budget() -> None:
    clock = Clock()
    shared = Shared(clock)
    a = RateLimiter(clock=clock, shared=shared)
    b = RateLimiter(clock=clock, shared=shared)
    burst = 1000

    async def run() -> int:
        taken = 0
        for i in range(200):
            clock.now += 0.001
            for limiter in (a, b):
                taken += (await limiter.take("st", "events:1.2.3.4", 1.0, burst, 1 + i % 100))[0]
        return taken

    taken = asyncio.run(run())
    assert taken <= shared.counted <= burst + 1
    assert taken >= burst - 2 * (burst // LEASE_SHARE)


def test_concurrent_requests_share_one_renewal() -> None:
    clock = Clock()
    shared = Shared(clock)
    limiter = RateLimiter(clock=clock, shared=shared)

    async def run() -> None:
        await admit_all(limiter, 1, 10_000, 10_000)
        await asyncio.gather(*(admit_all(limiter, 1, 10_000, 10_000) for _ in range(50)))

    asyncio.run(run())
    assert shared.calls <= 3


def test_an_outage_counts_in_process() -> None:
    clock = Clock()
    shared = Shared(clock)
    shared.fail = True
    limiter = RateLimiter(clock=clock, shared=shared)
    assert asyncio.run(admit_all(limiter, 5, 1.0, 3)) == 3
    assert limiter.fallbacks == 5
    with pytest.raises(RateLimited):
        asyncio.run(limiter.admit("st", "browser:1.2.3.4", 1.0, 3))


def test_admit_here_takes_from_the_lease_and_leaves_the_rest_to_admit() -> None:
    """Without a coroutine a request is admitted from what the lease holds, never past it: an
    empty or expired lease, or none, is `admit`'s to renew."""
    clock = Clock()
    shared = Shared(clock)
    limiter = RateLimiter(clock=clock, shared=shared)
    burst = 40 * LEASE_SHARE
    assert limiter.admit_here("s", "b", 1000, burst) is False  # no lease yet

    async def run() -> None:
        # A busy bucket: its lease holds more than the request that renewed it.
        for _ in range(6):
            await limiter.admit("s", "b", 1000, burst)

    asyncio.run(run())
    calls = shared.calls
    here = 0
    while limiter.admit_here("s", "b", 1000, burst):
        here += 1
    assert here >= 1
    assert shared.calls == calls  # none of them asked the store
    assert 6 + here <= shared.counted  # and none was admitted that it did not count
    # Another bucket, or this one once its lease is out of date, is `admit`'s.
    assert limiter.admit_here("s", "other", 1000, burst) is False
    asyncio.run(run())
    clock.now += LEASE_S
    assert limiter.admit_here("s", "b", 1000, burst) is False
