"""Event budgets and the rates no shopper reaches: how many of one client's events are taken, and
which of those are stored flagged as invalid traffic.

The budget counts events, not requests (a batch of 100 costs 100), per store and client address,
on the rate limiter: shared by every instance on Redis, so instances together never admit more.
Events past it are refused one by one (`rate_limited`), so a batch's other events still count.

What the budget admits is then held against three rates, each a sliding minute (GCRA with a
minute's worth of burst) per store: one visitor's events, the new visitors of one address, and
the impressions of one offer (one token) from one address. A shopper makes a few events a page
and sees an offer once or twice; a script replaying one token with a fresh visitor id per event
passes the last two within a minute. These are counted in each process: they flag, they do not
refuse, so an instance's own count is enough to catch a flood (with N instances sharing one
client's requests evenly, the flood goes N times as far before it is flagged; the budget still
bounds it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from offer_service.domain.events import StoredEvent
from offer_service.domain.policy import RateLimits
from offer_service.domain.traffic import ADDRESS_VISITORS, OFFER_IMPRESSIONS, VISITOR_RATE
from offer_service.serving.limits import KEYS_MAX
from offer_service.serving.ratelimit import RateLimiter, newest

# How long a visitor counts as seen from an address: the thresholds are per minute, so a shopper
# who stays is counted once a minute.
SEEN_S = 60.0
MINUTE_S = 60.0


class EventRates:
    """The event budget (on `limiter`) and the rate flags (counted in this process)."""

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = KEYS_MAX,
    ) -> None:
        self.limiter = limiter
        self._rates = RateLimiter(max_keys=max_keys, clock=clock)
        self._clock = clock
        self._max_keys = max_keys
        # (store, address, visitor) -> (counted until, whether it came one too many).
        self._seen: dict[tuple[str, str, str], tuple[float, bool]] = {}

    async def admit(
        self, store_id: str, limits: RateLimits, client: str, count: int
    ) -> tuple[int, float]:
        """How many of `count` events the client's budget takes now (the first ones), and when
        none: the seconds until one would be."""
        if count <= 0:
            return 0, 0.0
        return await self.limiter.take(
            store_id, "events:" + client, limits.events_per_second, limits.events_burst, count
        )

    def flag(
        self, store_id: str, limits: RateLimits, client: str, events: Sequence[StoredEvent]
    ) -> int:
        """Flag the events past a rate no shopper reaches (in place; an event flagged already
        keeps its reason and is not counted): how many were flagged. Counted per visitor and per
        offer, not per event: a page's batch is one visitor and a few offers."""
        now = self._clock()
        by_visitor: dict[str | None, list[StoredEvent]] = {}
        for e in events:
            if e.flag is None:
                by_visitor.setdefault(e.visitor_id, []).append(e)
        per_visitor = limits.visitor_events_per_minute
        by_offer: dict[str, list[StoredEvent]] = {}
        flagged = 0
        for visitor, own in by_visitor.items():
            if visitor is not None:
                if self._one_too_many(store_id, client, visitor, limits, now):
                    flagged += _flag(own, ADDRESS_VISITORS)
                    continue
                key = ("visitor", store_id, visitor)
                n = self._rates.take_here(key, per_visitor / MINUTE_S, per_visitor, len(own))[0]
                flagged += _flag(own[n:], VISITOR_RATE)
                own = own[:n]
            for e in own:
                if e.type == "impression":
                    by_offer.setdefault(e.offer_id, []).append(e)
        per_offer = limits.offer_impressions_per_minute
        for offer_id, seen in by_offer.items():
            where = ("offer", store_id, offer_id, client)
            n = self._rates.take_here(where, per_offer / MINUTE_S, per_offer, len(seen))[0]
            flagged += _flag(seen[n:], OFFER_IMPRESSIONS)
        return flagged

    def _one_too_many(
        self, store_id: str, client: str, visitor: str, limits: RateLimits, now: float
    ) -> bool:
        """Whether a visitor is past the new visitors its address may bring this minute,
        decided the first time it is seen there in a minute and kept for the minute."""
        key = (store_id, client, visitor)
        seen = self._seen.get(key)
        if seen is not None and seen[0] > now:
            return seen[1]
        n = limits.address_visitors_per_minute
        crowded = not self._rates.take_here(("address", store_id, client), n / MINUTE_S, n, 1)[0]
        if len(self._seen) >= self._max_keys and key not in self._seen:
            self._sweep(now)
        self._seen[key] = (now + SEEN_S, crowded)
        return crowded

    def _sweep(self, now: float) -> None:
        """Forget visitors whose minute has passed; if most are recent, the oldest half."""
        alive = {k: v for k, v in self._seen.items() if v[0] > now}
        self._seen = newest(alive, self._max_keys // 2)


def _flag(events: Sequence[StoredEvent], reason: str) -> int:
    """Flag `events` with `reason`: how many."""
    for e in events:
        e.flag = reason
    return len(events)
