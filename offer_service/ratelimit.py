"""Rate limits: GCRA (the generic cell rate algorithm) per store key and client address.

GCRA keeps one number per key, the "theoretical arrival time", and answers in O(1): a request is
allowed when it does not arrive earlier than that time minus the burst tolerance. It spaces
requests evenly (no fixed-window edges) and says exactly how long to wait when it refuses.

On a shared store that can (Redis: one Lua script, one round trip, Redis's clock) the numbers
live in the store, so every instance counts against one limit. When the store fails or is slow
the request is counted in this process instead: an outage never turns into 429s or 503s, it
only makes the limit per instance for a moment.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from typing import Protocol, runtime_checkable

from .exceptions import ApiError, StoreError

RATE_LIMITED = "Too many requests; retry after the time in the Retry-After header."
# After the shared limiter fails, requests are counted in-process this long before it is tried
# again: a hung Redis must not cost every request its read timeout.
SHARED_RETRY_S = 0.5


class RateLimited(ApiError):
    status_code = 429
    code = "rate_limited"


@runtime_checkable
class SharedLimits(Protocol):
    """A store that keeps rate limits for every instance (the Redis backend)."""

    async def rate_limit(self, store_id: str, bucket: str, per_second: float, burst: int) -> float:
        """0.0 when allowed (and counted), else the seconds to wait; StoreError on failure."""
        ...


class RateLimiter:
    """In-process limiter, in front of a shared one when there is one. A key is forgotten once
    its time has passed (it then counts as never seen); at most `max_keys` are kept."""

    def __init__(
        self,
        *,
        max_keys: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedLimits | None = None,
    ) -> None:
        # A key whose theoretical arrival time has passed counts exactly as a key never seen, so
        # a plain dict is swept of those when it grows past `max_keys` (amortised O(1)).
        self._tat: dict[Hashable, float] = {}
        self._max_keys = max_keys
        self._clock = clock
        self.shared = shared
        # Requests counted in this process because the shared limiter failed or rests.
        self.fallbacks = 0
        self._shared_rests_until = 0.0

    def check(self, key: Hashable, per_second: float, burst: int) -> float:
        """0.0 when allowed (and counted), else the seconds to wait before a retry."""
        now = self._clock()
        interval = 1.0 / per_second
        tolerance = interval * max(burst - 1, 0)
        tat = max(self._tat.get(key, now), now)
        if tat - tolerance > now:
            return tat - tolerance - now
        if len(self._tat) >= self._max_keys and key not in self._tat:
            self._sweep(now)
        self._tat[key] = tat + interval
        return 0.0

    def _sweep(self, now: float) -> None:
        """Forget keys whose time has passed; if most are still active, the oldest half."""
        self._tat = {k: t for k, t in self._tat.items() if t > now}
        if len(self._tat) > self._max_keys // 2:
            keep = list(self._tat.items())[len(self._tat) - self._max_keys // 2 :]
            self._tat = dict(keep)

    def enforce(self, key: Hashable, per_second: float, burst: int) -> None:
        _refuse(self.check(key, per_second, burst))

    async def admit(self, store_id: str, bucket: str, per_second: float, burst: int) -> None:
        """Count a request against a store's bucket (RateLimited when over): on the shared
        limiter when there is one, in this process otherwise or when the shared one fails."""
        if self.shared is not None:
            if self._clock() >= self._shared_rests_until:
                try:
                    wait = await self.shared.rate_limit(store_id, bucket, per_second, burst)
                except StoreError:
                    self._shared_rests_until = self._clock() + SHARED_RETRY_S
                else:
                    _refuse(wait)
                    return
            self.fallbacks += 1
        _refuse(self.check((store_id, bucket), per_second, burst))


def _refuse(wait: float) -> None:
    if wait > 0:
        retry_after = str(max(1, math.ceil(min(wait, 86_400.0))))
        raise RateLimited(RATE_LIMITED, headers={"Retry-After": retry_after})
