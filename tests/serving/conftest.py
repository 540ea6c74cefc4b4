"""Fixtures of the serving tests: a real SQLite store that counts what it is asked."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import TypeVar

import pytest

from offer_service.domain.products import Product
from offer_service.storage.sqlite.store import SQLiteStore


class CountingStore(SQLiteStore):
    """The real SQLite store, counting the product ids it is asked for."""

    asked: list[str]

    async def get_products(self, store_id: str, ids: Collection[str]) -> dict[str, Product]:
        self.asked.extend(sorted(ids))
        return await super().get_products(store_id, ids)


S = TypeVar("S", bound=CountingStore)


@contextlib.asynccontextmanager
async def opened(kind: type[S], path: Path) -> AsyncIterator[S]:
    """A `CountingStore` (or subclass) on a new file, open for the block."""
    s = kind(str(path))
    s.asked = []
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    async with opened(CountingStore, tmp_path / "shop.db") as s:
        yield s
