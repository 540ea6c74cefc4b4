"""Rate limits: GCRA arithmetic, the in-process limiter's bounded memory (forgetting only what
cannot matter first), and 429 with Retry-After on the real routes."""

from __future__ import annotations

import pytest

from offer_service.domain.policy import RateLimits, StoreRules
from offer_service.serving.ratelimit import RateLimited, RateLimiter
from tests.conftest import LiveServer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_allowed_then_requests_are_spaced_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    assert [limiter.check("k", per_second=2, burst=3) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.check("k", per_second=2, burst=3)
    assert wait == 0.5
    clock.now += 0.5
    assert limiter.check("k", per_second=2, burst=3) == 0.0
    assert limiter.check("k", per_second=2, burst=3) == 0.5


def test_keys_are_limited_separately() -> None:
    limiter = RateLimiter(clock=Clock())
    assert limiter.check("a", per_second=1, burst=1) == 0.0
    assert limiter.check("a", per_second=1, burst=1) > 0
    assert limiter.check("b", per_second=1, burst=1) == 0.0


def test_a_key_whose_time_has_passed_counts_as_never_seen() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    assert limiter.check("k", per_second=1, burst=1) == 0.0
    assert limiter.check("k", per_second=1, burst=1) > 0
    clock.now += 1.0
    assert limiter.check("k", per_second=1, burst=1) == 0.0


def test_past_keys_are_swept_first_and_active_ones_kept() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock, max_keys=10)
    for i in range(5):
        limiter.check(f"old{i}", per_second=1, burst=1)
    clock.now += 10.0  # the old keys' times have passed
    limiter.check("active", per_second=1, burst=1)
    for i in range(4):
        limiter.check(f"new{i}", per_second=1, burst=1)
    limiter.check("one-more", per_second=1, burst=1)  # the 11th key: a sweep
    assert limiter.check("active", per_second=1, burst=1) > 0  # still limited
    assert len(limiter._tat) <= 10


def test_memory_stays_bounded_when_every_key_is_active() -> None:
    limiter = RateLimiter(clock=Clock(), max_keys=100)
    for i in range(1_000):
        assert limiter.check(f"k{i}", per_second=1, burst=1) == 0.0
        assert len(limiter._tat) <= 100


def test_browser_and_admin_routes_answer_429_with_retry_after(server: LiveServer) -> None:
    limits = RateLimits(browser_per_second=1, browser_burst=3, admin_per_second=1, admin_burst=2)
    record = server.create_store(rules=StoreRules(rate_limits=limits))
    with server.client() as c:
        params = {"key": record.publishable_key, "surface": "cart", "items": "x"}
        statuses = [c.get("/v1/offers", params=params).status_code for _ in range(4)]
        assert statuses == [404, 404, 404, 429]
        r = c.get("/v1/offers", params=params)
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "rate_limited"
        assert int(r.headers["retry-after"]) >= 1
        admin = {"Authorization": f"Bearer {record.secret_key}"}
        codes = [c.get("/v1/admin/catalog", headers=admin).status_code for _ in range(3)]
        assert codes == [200, 200, 429]


def test_admit_here_counts_in_process_and_refuses_past_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    assert [limiter.admit_here("s", "browser:ip", 2, 2) for _ in range(2)] == [True, True]
    with pytest.raises(RateLimited) as refused:
        limiter.admit_here("s", "browser:ip", 2, 2)
    assert refused.value.headers == {"Retry-After": "1"}
    # The same count as `check` and `admit`: the bucket is one.
    assert limiter.check(("s", "browser:ip"), 2, 2) == 0.5


def test_admit_here_leaves_a_shared_limiter_to_admit() -> None:
    class Shared:
        async def rate_lease(self, *args: object) -> tuple[int, float]:
            raise AssertionError("admit_here never reaches the shared store")

    limiter = RateLimiter(clock=Clock(), shared=Shared())  # type: ignore[arg-type]
    assert limiter.admit_here("s", "browser:ip", 2, 1) is False
    # Nothing counted in process either: the bucket's one request is still free here.
    assert limiter.check(("s", "browser:ip"), 2, 1) == 0.0
    assert limiter.check(("s", "browser:ip"), 2, 1) == 0.5


def test_a_batch_takes_as_many_as_the_bucket_holds_and_no_more() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    assert limiter.take_here("k", 5, 10, 25) == (10, 0.0)
    granted, wait = limiter.take_here("k", 5, 10, 25)
    assert (granted, wait) == (0, pytest.approx(0.2))
    clock.now += 1.0  # five refilled
    assert limiter.take_here("k", 5, 10, 25) == (5, 0.0)
    clock.now += 10.0  # full again: a small batch takes all it wants
    assert limiter.take_here("k", 5, 10, 3) == (3, 0.0)
