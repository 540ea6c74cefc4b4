"""Fixtures of the serving tests: a real SQLite store that counts what it is asked."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from pathlib import Path

import pytest

from offer_service.domain.products import Product
from offer_service.storage.sqlite.store import SQLiteStore


class CountingStore(SQLiteStore):
    """The real SQLite store, counting the product ids it is asked for."""

    asked: list[str]

    async def get_products(self, store_id: str, ids: Collection[str]) -> dict[str, Product]:
        self.asked.extend(sorted(ids))
        return await super().get_products(store_id, ids)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    s = CountingStore(str(tmp_path / "shop.db"))
    s.asked = []
    await s.open()
    try:
        yield s
    finally:
        await s.close()
