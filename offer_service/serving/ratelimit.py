"""Rate limits: GCRA (the generic cell rate algorithm) per store key and client address.

GCRA keeps one number per key, the "theoretical arrival time", and answers in O(1): a request is
allowed when it does not arrive earlier than that time minus the burst tolerance. It spaces
requests evenly (no fixed-window edges) and says exactly how long to wait when it refuses. A
bucket may also count several at once and grant as many as it has (`take`): the event budget
counts a batch's events, not its request.

On a shared store that can (Redis: one Lua script, one round trip, Redis's clock) the numbers
live in the store, so every instance counts against one limit. A busy bucket does not cost a
round trip per request: an instance counts several requests in the store at once (a lease) and
admits them locally for at most `LEASE_S`. A lease is sized to what the instance admitted on that
bucket in the previous lease period and holds at most `1/LEASE_SHARE` of the bucket's burst, so
a bucket seen at most once per period costs one round trip per request, exactly as without
leases. Every request admitted was counted in the store first, so instances together never
admit more than the limit; a lease not used up within `LEASE_S` is dropped, so with N busy
instances a bucket may refuse up to N x burst/LEASE_SHARE requests early (5% of the burst per
instance). When the store fails or is slow the request is counted in this process instead: an
outage never turns into 429s or 503s, it only makes the limit per instance for a moment.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable, Hashable
from typing import TypeVar

from offer_service.exceptions import ApiError, StoreError
from offer_service.serving.limits import KEYS_MAX
from offer_service.storage.protocols import SharedLimits

RATE_LIMITED = "Too many requests; retry after the time in the Retry-After header."
# After the shared limiter fails, requests are counted in-process this long before it is tried
# again: a hung Redis must not cost every request its read timeout.
SHARED_RETRY_S = 0.5
# A lease of the shared limit is used for at most this long, and holds at most this share of a
# bucket's burst.
LEASE_S = 0.1
LEASE_SHARE = 20

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class RateLimited(ApiError):
    status_code = 429
    code = "rate_limited"


class _Lease:
    """Requests of one bucket counted in the shared store and not admitted yet."""

    __slots__ = ("renewing", "slots", "started", "used")

    def __init__(self) -> None:
        self.slots = 0
        self.used = 0
        self.started = 0.0
        self.renewing: asyncio.Future[float] | None = None


class RateLimiter:
    """In-process limiter, in front of a shared one when there is one. A key is forgotten once
    its time has passed (it then counts as never seen); at most `max_keys` are kept."""

    def __init__(
        self,
        *,
        max_keys: int = KEYS_MAX,
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
        self._leases: dict[Hashable, _Lease] = {}

    def check(self, key: Hashable, per_second: float, burst: int) -> float:
        """0.0 when allowed (and counted), else the seconds to wait before a retry."""
        return self.take_here(key, per_second, burst, 1)[1]

    def take_here(
        self, key: Hashable, per_second: float, burst: int, want: int
    ) -> tuple[int, float]:
        """Count up to `want` at once in this process, as many as the bucket allows now (as the
        shared script does): (how many, 0.0) with at least one, or (0, the seconds to wait)."""
        now = self._clock()
        interval = 1.0 / per_second
        tolerance = interval * max(burst - 1, 0)
        tat = max(self._tat.get(key, now), now)
        if tat - tolerance > now:
            return 0, tat - tolerance - now
        # (A hair over the quotient, so that floating point does not lose a whole one.)
        n = want if want == 1 else min(want, int((now + tolerance - tat) / interval + 1e-9) + 1)
        if len(self._tat) >= self._max_keys and key not in self._tat:
            self._sweep(now)
        self._tat[key] = tat + n * interval
        return n, 0.0

    def _sweep(self, now: float) -> None:
        """Forget keys whose time has passed; if most are still active, the oldest half."""
        alive = {k: t for k, t in self._tat.items() if t > now}
        self._tat = newest(alive, self._max_keys // 2)

    def admit_here(self, store_id: str, bucket: str, per_second: float, burst: int) -> bool:
        """`admit` without a coroutine: when this process alone counts the bucket (no shared
        limiter, or the shared one rests), or this instance's lease of it has a request left.
        True once counted (RateLimited when over); False when `admit` must be awaited."""
        if self.shared is not None:
            now = self._clock()
            if now >= self._shared_rests_until:
                lease = self._leases.get((store_id, bucket))
                if lease is None or lease.slots < 1 or now >= lease.started + LEASE_S:
                    return False
                lease.slots -= 1
                lease.used += 1
                return True
            self.fallbacks += 1
        _refuse(self.check((store_id, bucket), per_second, burst))
        return True

    async def admit(self, store_id: str, bucket: str, per_second: float, burst: int) -> None:
        """Count a request against a store's bucket (RateLimited when over): on the shared
        limiter when there is one, in this process otherwise or when the shared one fails."""
        _refuse((await self.take(store_id, bucket, per_second, burst, 1))[1])

    async def take(
        self, store_id: str, bucket: str, per_second: float, burst: int, want: int
    ) -> tuple[int, float]:
        """Count up to `want` against a store's bucket at once (a batch's events), as many as
        it allows now: (how many, 0.0) with at least one, or (0, the seconds to wait). On the
        shared limiter when there is one, in this process otherwise or when the shared one
        fails."""
        if self.shared is not None:
            if self._clock() >= self._shared_rests_until:
                try:
                    return await self._leased(
                        self.shared, store_id, bucket, per_second, burst, want
                    )
                except StoreError:
                    self._shared_rests_until = self._clock() + SHARED_RETRY_S
            self.fallbacks += 1
        return self.take_here((store_id, bucket), per_second, burst, want)

    async def _leased(
        self,
        shared: SharedLimits,
        store_id: str,
        bucket: str,
        per_second: float,
        burst: int,
        want: int,
    ) -> tuple[int, float]:
        """Take up to `want` from this instance's lease of the bucket, renewing it (one round
        trip, one at a time per bucket) when it is used up or expired: (how many, 0.0) with at
        least one, or (0, the seconds to wait)."""
        key = (store_id, bucket)
        got = 0
        while True:
            now = self._clock()
            lease = self._leases.get(key)
            if lease is None:
                if len(self._leases) >= self._max_keys:
                    self._sweep_leases(now)
                lease = self._leases[key] = _Lease()
            if lease.slots > 0 and now < lease.started + LEASE_S:
                n = min(want - got, lease.slots)
                lease.slots -= n
                lease.used += n
                got += n
                if got == want:
                    return got, 0.0
            if lease.renewing is not None:
                # The renewal's wait, or -1.0 when it failed: then try for ourselves.
                wait = await asyncio.shield(lease.renewing)
                if wait > 0:
                    return (got, 0.0) if got else (0, wait)
                continue
            # What this instance admitted on the bucket in the last lease period, and at least
            # what is still wanted now.
            elapsed = now - lease.started
            ask = 1
            if elapsed < 2 * LEASE_S:
                ask = math.ceil(lease.used * LEASE_S / max(elapsed, 0.001))
            ask = max(1, want - got, min(ask, burst // LEASE_SHARE))
            future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            lease.renewing = future
            try:
                granted, wait = await shared.rate_lease(store_id, bucket, per_second, burst, ask)
            except BaseException:
                future.set_result(-1.0)
                raise
            finally:
                lease.renewing = None
            future.set_result(wait)
            if wait > 0 or granted < 1:
                lease.slots = 0
                if got:
                    return got, 0.0
                return 0, wait if wait > 0 else 1.0 / per_second
            n = min(granted, want - got)
            got += n
            lease.slots = granted - n
            lease.used = n
            lease.started = self._clock()
            # Fewer than wanted when the bucket had no more to give.
            return got, 0.0

    def _sweep_leases(self, now: float) -> None:
        """Forget the leases of buckets quiet for a whole period (none is being renewed)."""
        alive = {
            k: v
            for k, v in self._leases.items()
            if v.renewing is not None or now - v.started < 2 * LEASE_S
        }
        self._leases = newest(alive, self._max_keys // 2)


def newest(entries: dict[K, V], most: int) -> dict[K, V]:
    """`entries`, or only the `most` inserted last when there are more."""
    if len(entries) <= most:
        return entries
    return dict(itertools.islice(entries.items(), len(entries) - most, None))


def retry_after_s(wait: float) -> int:
    """A wait as the whole seconds of a Retry-After header (at least 1, at most a day)."""
    return max(1, math.ceil(min(wait, 86_400.0)))


def _refuse(wait: float) -> None:
    if wait > 0:
        retry_after = str(retry_after_s(wait))
        raise RateLimited(RATE_LIMITED, headers={"Retry-After": retry_after})
