"""Storage backends behind one protocol, chosen by URL scheme."""

from __future__ import annotations

from offer_service.domain.records import StoreRecord, VisitorState
from offer_service.storage.protocols import Store

__all__ = ["Store", "StoreRecord", "VisitorState", "open_store", "shared_by_processes"]


def shared_by_processes(url: str) -> bool:
    """Whether another process can open the store at `url` (not an in-memory SQLite database,
    which belongs to its one connection)."""
    if not url.startswith("sqlite://"):
        return True
    return url.split("?", 1)[0].rsplit("/", 1)[-1] != ":memory:"


def open_store(url: str, *, create: bool = True, pool_size: int | None = None) -> Store:
    """`sqlite:///path` (the embedded default), `redis://host:port/db` (one Redis shared by
    many service processes) or `redis+cluster://host:port` (Redis Cluster).

    With `create=False` (commands that use an existing store), `open()` raises StoreMissing
    instead of creating a missing SQLite file; a Redis database always exists. `pool_size`: a
    Redis client's connections (commands in flight at once), by default `pool.py`'s."""
    if url.startswith("sqlite://"):
        from offer_service.storage.sqlite.store import SQLiteStore

        return SQLiteStore.from_url(url, create=create)
    if url.split("://", 1)[0] in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        from offer_service.storage.redis.store import RedisStore

        return RedisStore.from_url(url, pool_size=pool_size)
    raise ValueError(f"unsupported store URL scheme: {url.split(':', 1)[0]!r}")
