"""Rate limits: GCRA (the generic cell rate algorithm) per store key and client address.

GCRA keeps one number per key, the "theoretical arrival time", and answers in O(1): a request is
allowed when it does not arrive earlier than that time minus the burst tolerance. It spaces
requests evenly (no fixed-window edges) and says exactly how long to wait when it refuses.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable

from cachetools import TTLCache

from .exceptions import ApiError

RATE_LIMITED = "Too many requests; retry after the time in the Retry-After header."


class RateLimited(ApiError):
    status_code = 429
    code = "rate_limited"


class RateLimiter:
    """In-process limiter. Keys idle longer than `idle_s` are forgotten (bounded memory)."""

    def __init__(
        self,
        *,
        max_keys: int = 200_000,
        idle_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tat: TTLCache[Hashable, float] = TTLCache(maxsize=max_keys, ttl=idle_s, timer=clock)
        self._clock = clock

    def check(self, key: Hashable, per_second: float, burst: int) -> float:
        """0.0 when allowed (and counted), else the seconds to wait before a retry."""
        now = self._clock()
        interval = 1.0 / per_second
        tolerance = interval * max(burst - 1, 0)
        tat = max(self._tat.get(key, now), now)
        if tat - tolerance > now:
            return tat - tolerance - now
        self._tat[key] = tat + interval
        return 0.0

    def enforce(self, key: Hashable, per_second: float, burst: int) -> None:
        wait = self.check(key, per_second, burst)
        if wait > 0:
            retry_after = str(max(1, math.ceil(min(wait, 86_400.0))))
            raise RateLimited(RATE_LIMITED, headers={"Retry-After": retry_after})
