"""The worker's trainer on a real Redis store: it fits a store once, then again on new orders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from offer_service.commerce.ingest import import_orders
from offer_service.serving.training import Trainer
from tests.redis_servers import RELAXED, RedisServer, opened_redis, running_redis
from tests.storage.test_storage_contract import order, product

DAY = 86_400_000


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path / "redis")


@pytest.mark.anyio
async def test_the_trainer_fits_new_stores_and_refits_after_enough_orders(
    redis_server: RedisServer,
) -> None:
    async with opened_redis(redis_server.url + RELAXED) as store:
        assert store.streams is not None
        record = await store.create_store("Shop")
        await store.upsert_products(record.id, [product(p) for p in "abcde"])
        baskets = [["a", "b"], ["a", "b", "c"], ["c", "d"], ["a", "b"]]
        orders = [
            order(f"o{i}", b, at_ms=1_700_000_000_000 + i * DAY) for i, b in enumerate(baskets)
        ]
        await import_orders(store, record, orders, [])
        assert (await store.neighbors(record.id, "a", 5))[0].score is None

        trainer = Trainer(store, store.streams, retrain_orders=3)
        assert await trainer.run_once() == 1
        first = await store.neighbors(record.id, "a", 5)
        assert first[0].product_id == "b" and first[0].score is not None
        # Nothing new: no refit. Two orders: still under the threshold of 3.
        assert await trainer.run_once() == 0
        more = [
            order(f"n{i}", ["a", "e"], at_ms=1_700_000_000_000 + (9 + i) * DAY) for i in range(3)
        ]
        await import_orders(store, record, more[:2], [])
        assert await trainer.run_once() == 0
        assert await store.neighbors(record.id, "a", 5) == first  # the model's list waits
        await import_orders(store, record, more[2:], [])
        assert await trainer.run_once() == 1
        refit = {pc.product_id for pc in await store.neighbors(record.id, "a", 5)}
        assert "e" in refit
