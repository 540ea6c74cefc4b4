"""Redis: rate limits shared by every instance (GCRA on Redis's clock)."""

from __future__ import annotations

from offer_service.storage.redis.client import RedisBase, run_script
from offer_service.storage.redis.keys import StoreKeys
from offer_service.storage.redis.scripts.limits import RATE_LIMIT

# The narrowest window: a hash a second at most, whatever the limits.
MIN_WINDOW_MS = 1000


def window_ms(lasting_us: int) -> int:
    """The width of the windows holding buckets whose count lasts at most `lasting_us` (interval
    plus tolerance) past its write: a whole number of seconds, so that the few limits a store
    sets share a few hashes."""
    return max(MIN_WINDOW_MS, -(-lasting_us // 1_000_000) * 1000)


class RedisLimits(RedisBase):
    """The SharedLimits capability."""

    async def rate_lease(
        self, store_id: str, bucket: str, per_second: float, burst: int, want: int
    ) -> tuple[int, float]:
        """GCRA shared by every instance, counting up to `want` requests at once: (how many were
        counted, 0.0), at least one, or (0, the seconds to wait) when not even one is allowed.
        One script, one round trip, on the fail-fast client (a slow or absent Redis raises
        StoreUnavailable at once, and the caller counts the request in its own process)."""
        interval = max(1, round(1_000_000 / per_second))
        tolerance = interval * max(burst - 1, 0)
        width_ms = window_ms(interval + tolerance)
        key = StoreKeys(store_id).rate_windows(width_ms)
        args = [interval, tolerance, max(1, want), bucket, width_ms * 1000]
        granted, wait_us = await self._call(
            "check a rate limit",
            lambda c: run_script(c, RATE_LIMIT, [key], args),
            fast=True,
            breaker=True,
        )
        return int(granted), int(wait_us) / 1_000_000
