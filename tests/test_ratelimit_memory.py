"""The in-process limiter's memory: bounded, and forgetting only what cannot matter first."""

from __future__ import annotations

from offer_service.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


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
