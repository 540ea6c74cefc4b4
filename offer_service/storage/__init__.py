"""Storage backends behind one protocol, chosen by URL scheme."""

from __future__ import annotations

from .base import Store, StoreRecord, VisitorState

__all__ = ["Store", "StoreRecord", "VisitorState", "open_store"]


def open_store(url: str) -> Store:
    """`sqlite:///path` (the embedded default) or, later, `redis://` and `redis+cluster://`."""
    if url.startswith("sqlite://"):
        from .sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    raise ValueError(f"unsupported store URL scheme: {url.split(':', 1)[0]!r}")
