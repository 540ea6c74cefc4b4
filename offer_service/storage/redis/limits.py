"""Redis: rate limits shared by every instance (GCRA on Redis's clock)."""

from __future__ import annotations

from offer_service.storage.redis.client import RedisBase, run_script
from offer_service.storage.redis.keys import StoreKeys
from offer_service.storage.redis.scripts.limits import RATE_LIMIT


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
        key = StoreKeys(store_id).rate(bucket)
        granted, wait_us = await self._call(
            "check a rate limit",
            lambda c: run_script(c, RATE_LIMIT, [key], [interval, tolerance, max(1, want)]),
            fast=True,
            breaker=True,
        )
        return int(granted), int(wait_us) / 1_000_000
