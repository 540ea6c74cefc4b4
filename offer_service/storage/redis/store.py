"""The shared backend: Redis or Redis Cluster, for many service processes on many machines.

`redis://[user:password@]host:port[/db]` or `redis+cluster://host:port` (any node of the
cluster). Optional query parameters set the timeouts, in ms (defaults in `client.py`):
`read_timeout_ms`, `write_timeout_ms`, `connect_timeout_ms`, `accept_timeout_ms`,
`events_timeout_ms`; `event_log_days` bounds the raw events kept in memory. Key names and
TTLs are in `keys.py`, the clients and their error handling in `client.py` (the connections
each may use, `OFFER_REDIS_POOL_SIZE`, in `pool.py`), the atomic
check-and-writes in `scripts/` (one module per role), and each role of the Store protocol in
its own module: tenants, credentials, catalog, orders, affinity, signals, events, commerce,
redemptions, journeys and limits.

Data is kept in the shape it is read, as in the SQLite backend: a product, an order, a
product's co-purchase counts or its neighbour list is one hash field; a shopper's purchases one
hash. Every key of a store carries the store's hash tag, so a store lives in one cluster slot
and more shards hold more stores. Writes that change what offers look like bump the store's
`version` field, which every service process checks at least once a second.
"""

from __future__ import annotations

from offer_service.storage.redis.affinity import RedisAffinity
from offer_service.storage.redis.catalog import RedisCatalog
from offer_service.storage.redis.commerce import RedisCommerce
from offer_service.storage.redis.credentials import RedisCredentials
from offer_service.storage.redis.events import RedisEvents
from offer_service.storage.redis.journeys import RedisJourneys
from offer_service.storage.redis.limits import RedisLimits
from offer_service.storage.redis.orders import RedisOrders
from offer_service.storage.redis.redemptions import RedisRedemptions
from offer_service.storage.redis.signals import RedisSignals
from offer_service.storage.redis.sources import RedisSources

__all__ = ["RedisStore"]


class RedisStore(
    RedisCredentials,
    RedisCatalog,
    RedisOrders,
    RedisAffinity,
    RedisSignals,
    RedisEvents,
    RedisCommerce,
    RedisRedemptions,
    RedisJourneys,
    RedisLimits,
    RedisSources,
):
    """The `Store` protocol on Redis or Redis Cluster."""

    @property
    def streams(self) -> RedisStore:
        """Events go through a stream per store, counted by aggregators."""
        return self

    @property
    def shared_limits(self) -> RedisStore:
        """Rate limits are kept in Redis for every instance."""
        return self

    @property
    def local_reads(self) -> None:
        """Every read is a round trip to Redis."""
        return None

    @classmethod
    def from_url(cls, url: str, *, pool_size: int | None = None) -> RedisStore:
        return cls(url, pool_size=pool_size)
