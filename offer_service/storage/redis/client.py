"""The Redis backend's two clients and how their failures become StoreError.

Two clients with different patience, because a page waits on one and money on the other:
- a fail-fast client for the request path's reads (100 ms per reply): a slow or absent Redis
  costs a request at most that, and the engine answers from its in-process cache instead;
- a patient client for durable writes (5 s per reply: an import's pipelines, a script after a
  charge), with shorter deadlines where an answer is owed quickly (events: the spool takes over;
  accept claims: fail closed with 503).
Both retry once, without delay, only when a pooled connection turns out dead (the server
restarted): a timeout is never retried, since the write may have been applied.

Errors that mean "Redis cannot be reached" (refused, reset, loading, cluster down, timeouts)
raise `StoreUnavailable`; anything else raises `StoreError`. After a connection failure the
store refuses reads and event writes for half a second without trying (a circuit breaker), so
an outage costs requests nothing; `ping` always tries, so readiness sees recovery at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    MaxConnectionsError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from offer_service.exceptions import StoreError, StoreUnavailable
from offer_service.storage.health import ERROR, FAIL_FAST, TIMEOUT, UNAVAILABLE, StoreHealth
from offer_service.storage.redis.keys import StoreKeys
from offer_service.storage.redis.pool import (
    POOL_BUSY,
    POOL_HEADROOM,
    POOL_SIZE_MAX_DEFAULT,
    Pool,
    PoolBusy,
)
from offer_service.storage.redis.scripts import Script

T = TypeVar("T")
log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.1
WRITE_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 1.0
# Idempotency claims and accept reservations: fail closed, quickly (the client retries).
ACCEPT_TIMEOUT_S = 0.5
# Event batches: past this the spool takes them.
EVENTS_TIMEOUT_S = 1.0
BREAKER_S = 0.5
# Compare-and-set retries before a write gives up (only under heavy contention on one order).
CAS_ATTEMPTS = 20

# What redis-py raises when the server cannot answer at all.
_DOWN = (RedisConnectionError, RedisClusterException, ConnectionError)
_SLOW = (RedisTimeoutError, TimeoutError, ClusterDownError, TryAgainError)

# A client is `redis.asyncio.Redis` or `RedisCluster`: redis-py annotates their shared command
# methods as `Awaitable[T] | T` (one stub for sync and async), so they are handled as Any here.
Client = Any


def _options(url: str) -> tuple[str, bool, dict[str, str]]:
    """(URL for redis-py, cluster?, this backend's own query options)."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        raise ValueError(f"expected redis://, rediss:// or redis+cluster://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"the Redis URL names no host: {url!r}")
    options = dict(parse_qsl(parts.query))
    cluster = scheme.endswith("+cluster")
    base = urlunsplit((scheme.removesuffix("+cluster"), parts.netloc, parts.path, "", ""))
    return base, cluster, options


def _ms(options: dict[str, str], name: str, default_s: float) -> float:
    value = options.get(name)
    return default_s if value is None else int(value) / 1000


def _client(url: str, cluster: bool, timeout_s: float, connect_s: float, pool_size: int) -> Client:
    # Once, at once, and only for a dead connection (see the module docstring).
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    common: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": connect_s,
        "retry": retry,
        "decode_responses": False,
        # Per node for a cluster. Calls wait for one of `pool_size` slots first (pool.py).
        "max_connections": pool_size + POOL_HEADROOM,
    }
    if cluster:
        return RedisCluster.from_url(url, **common)
    return Redis.from_url(url, **common)


def sha1(data: bytes | str) -> str:
    """The hex SHA1 that Lua's redis.sha1hex computes (compare-and-set of a read value)."""
    return hashlib.sha1(data.encode() if isinstance(data, str) else data).hexdigest()


def text(value: bytes | str) -> str:
    """A reply that may come back as bytes or as text, as text."""
    return value.decode() if isinstance(value, bytes) else value


def hex_id(value: str) -> str:
    """Hex of the UTF-8 bytes: sorts like the text itself, bytewise, and contains no space."""
    return value.encode().hex()


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def flat(rows: Iterable[Sequence[Any]]) -> list[Any]:
    return [value for row in rows for value in row]


async def run_script(
    client: Client, script: Script, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    try:
        return await client.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        # A restarted server (or a new cluster node) has an empty script cache.
        return await client.eval(script.source, len(keys), *keys, *args)


# What reads the raw events: the report (by default the last 30 days, with clicks up to the
# 7-day attribution window before them and timestamps up to 7 days off their receipt: 44 days
# back) and the learner when a process starts (six half-lives of the default 14 days: 84 days).
# 90 days serve both at their defaults; Redis memory is then traffic times 90 days
# (docs/memory.md) rather than growing for ever.
EVENT_LOG_DAYS = 90


class RedisBase:
    """Connection handling and error mapping shared by the Redis backend's parts."""

    def __init__(self, url: str, *, pool_size: int | None = None) -> None:
        """`pool_size`: commands each client may have in flight at once (pool.py)."""
        self.url = url
        self.pool_size = pool_size or POOL_SIZE_MAX_DEFAULT
        # Made again with the clients by `open`, for the event loop that uses them.
        self.fast_pool = Pool(self.pool_size)
        self.durable_pool = Pool(self.pool_size)
        self._base_url, self.cluster, self.options = _options(url)
        self.read_timeout_s = _ms(self.options, "read_timeout_ms", READ_TIMEOUT_S)
        self.write_timeout_s = _ms(self.options, "write_timeout_ms", WRITE_TIMEOUT_S)
        self.connect_timeout_s = _ms(self.options, "connect_timeout_ms", CONNECT_TIMEOUT_S)
        self.accept_timeout_s = _ms(self.options, "accept_timeout_ms", ACCEPT_TIMEOUT_S)
        self.events_timeout_s = _ms(self.options, "events_timeout_ms", EVENTS_TIMEOUT_S)
        # Days of raw events kept for measurement (0: all, as the SQLite backend keeps them);
        # the counters keep counting whatever the retention.
        self.event_log_days = int(self.options.get("event_log_days", str(EVENT_LOG_DAYS)))
        self._fast: Client = None
        self._durable: Client = None
        # Failures by kind and the breaker's deadline, read by the metrics.
        self.health = StoreHealth()
        self._logged_at = -1.0

    async def open(self) -> None:
        """Create the clients; they connect on first use, so a Redis that is down at start-up
        does not stop the service from starting (it reports not ready until Redis answers)."""
        if self._fast is not None:
            return
        base, cluster, connect_s = self._base_url, self.cluster, self.connect_timeout_s
        fast = _client(base, cluster, self.read_timeout_s, connect_s, self.pool_size)
        durable = _client(base, cluster, self.write_timeout_s, connect_s, self.pool_size)
        self.fast_pool, self.durable_pool = Pool(self.pool_size), Pool(self.pool_size)
        self._fast, self._durable = fast, durable

    async def close(self) -> None:
        clients, (self._fast, self._durable) = (self._fast, self._durable), (None, None)
        for client in clients:
            if client is not None:
                with contextlib.suppress(RedisError, RedisClusterException, OSError):
                    await client.aclose()

    async def ping(self) -> None:
        await self._call("answer a ping", lambda c: c.ping(), fast=True, breaker=False)

    def _log_outage(self, message: str) -> None:
        # At most one line a second: during an outage every request would write one.
        now = time.monotonic()
        if now - self._logged_at >= 1.0:
            self._logged_at = now
            log.warning(message)

    async def _require_store(self, k: StoreKeys, store_id: str) -> None:
        """Writes to an unknown store are errors, as in the SQLite backend."""
        if not await self._write("check a store", lambda c: c.exists(k.record)):
            raise StoreError(f"unknown store {store_id!r}")

    # plumbing

    async def _read(self, action: str, call: Callable[[Client], Awaitable[T]]) -> T:
        """A request-path read on the fail-fast client."""
        return await self._call(action, call, fast=True, breaker=True)

    async def _write(
        self,
        action: str,
        call: Callable[[Client], Awaitable[T]],
        *,
        deadline_s: float | None = None,
        breaker: bool = False,
    ) -> T:
        """A write (or a bulk read) on the patient client."""
        return await self._call(action, call, fast=False, breaker=breaker, deadline_s=deadline_s)

    async def _do(self, action: str, command: str, *args: Any, **kwargs: Any) -> Any:
        """One command on the patient client, by its redis-py method name."""
        return await self._write(action, lambda c: getattr(c, command)(*args, **kwargs))

    async def _script(
        self,
        action: str,
        script: Script,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        deadline_s: float | None = None,
        breaker: bool = False,
    ) -> Any:
        return await self._write(
            action,
            lambda c: run_script(c, script, keys, args),
            deadline_s=deadline_s,
            breaker=breaker,
        )

    async def _score_range(
        self, key: str, since: int, until: int, page: int = 1000
    ) -> AsyncIterator[tuple[bytes, int]]:
        """Members of a sorted set scored in [since, until), by score then member, in pages
        (a cursor of score and members already seen at that score)."""
        low, skip = since, 0
        while True:
            rows: list[tuple[bytes, float]] = await self._do(
                "read a range",
                "zrangebyscore",
                key,
                low,
                f"({until}",
                start=skip,
                num=page,
                withscores=True,
            )
            for member, score in rows:
                yield member, int(score)
            if len(rows) < page:
                return
            last = int(rows[-1][1])
            if last == low:
                skip += len(rows)
            else:
                low, skip = last, sum(1 for _, score in rows if int(score) == last)

    async def _call(
        self,
        action: str,
        call: Callable[[Client], Awaitable[T]],
        *,
        fast: bool,
        breaker: bool,
        deadline_s: float | None = None,
    ) -> T:
        client = self._fast if fast else self._durable
        if client is None:
            raise StoreError("Redis store is not open")
        health = self.health
        op = "read" if fast else "write"
        if breaker and time.monotonic() < health.down_until:
            health.failed(op, FAIL_FAST)
            raise StoreUnavailable(f"Redis is unavailable (it failed just now): cannot {action}")
        pool = self.fast_pool if fast else self.durable_pool
        # A call waits for a connection no longer than it would wait for a reply.
        wait_s = self.read_timeout_s if fast else self.write_timeout_s
        try:
            if deadline_s is None:
                async with pool.slot(wait_s):
                    result = await call(client)
            else:
                async with asyncio.timeout(deadline_s), pool.slot(deadline_s):
                    result = await call(client)
        except (PoolBusy, MaxConnectionsError) as exc:
            # Busy, not down: the breaker stays open to the next request (pool.py).
            health.failed(op, TIMEOUT)
            self._log_outage(f"no Redis connection came free in time: cannot {action}")
            raise StoreUnavailable(f"{POOL_BUSY}: cannot {action}") from exc
        except _DOWN as exc:
            health.down_until = time.monotonic() + BREAKER_S
            health.failed(op, UNAVAILABLE)
            self._log_outage(f"Redis is unavailable: cannot {action}: {exc}")
            raise StoreUnavailable(f"Redis is unavailable: cannot {action}: {exc}") from exc
        except _SLOW as exc:
            health.failed(op, TIMEOUT)
            self._log_outage(f"Redis did not answer in time: cannot {action}")
            raise StoreUnavailable(f"Redis did not answer in time: cannot {action}") from exc
        except RedisError as exc:
            health.failed(op, ERROR)
            raise StoreError(f"Redis store could not {action}: {exc}") from exc
        if not breaker:
            health.down_until = 0.0
        return result
