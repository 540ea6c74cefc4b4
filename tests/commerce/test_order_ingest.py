"""Order ingestion: a bulk import recounts affinity without holding the event loop."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable
from pathlib import Path

import pytest

from offer_service.commerce import ingest
from offer_service.decision import affinity
from tests.storage.test_storage_contract import opened, order


@pytest.mark.anyio
async def test_a_bulk_recount_runs_off_the_event_loop_and_counts_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The full Online Retail store's recount is 3.4 s of CPU: on the loop's thread every other
    # store's requests would wait for it.
    threads: list[threading.Thread] = []
    count_pairs = affinity.count_pairs

    def counting(baskets: Iterable[Collection[str]]) -> affinity.AffinityCounts:
        threads.append(threading.current_thread())
        return count_pairs(baskets)

    monkeypatch.setattr(affinity, "count_pairs", counting)
    orders = [order(f"o{i}", ["a", "b", "c"][: 2 + i % 2]) for i in range(6)]
    async with opened(f"sqlite:///{tmp_path / 'offers.db'}") as store:
        record = await store.create_store("Bulk")
        summary = await ingest.import_orders(store, record, orders, [], bulk_threshold=0)
        ab = await store.pair_counts(record.id, "a")

    assert summary.rebuilt and summary.imported == 6
    assert threads and all(t is not threading.main_thread() for t in threads)
    assert {p.product_id: p.pair_count for p in ab} == {"b": 6, "c": 3}
