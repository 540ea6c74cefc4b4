"""SQLite reads share a read transaction briefly: own writes are seen at once, others' soon, and
an idle process does not keep one open; they read the file through a memory map."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from offer_service.domain.products import Product
from offer_service.storage.sqlite.store import READ_MAP_BYTES, SNAPSHOT_MAX_S, SQLiteStore


@pytest.mark.anyio
async def test_a_write_is_seen_by_the_next_read_and_an_idle_snapshot_ends(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "offers.db"))
    await store.open()
    try:
        record = await store.create_store("Shop")
        before = await store.version(record.id)  # a read: the snapshot starts
        await store.upsert_products(record.id, [Product(id="p", title="t", price=1)])
        assert await store.version(record.id) > before
        assert list(await store.get_products(record.id, ["p"])) == ["p"]

        await asyncio.sleep(SNAPSHOT_MAX_S * 5)
        assert store._reader is not None and not store._reader.in_transaction
    finally:
        await store.close()


@pytest.mark.anyio
async def test_a_write_by_another_connection_is_seen_within_the_snapshot_limit(
    tmp_path: Path,
) -> None:
    path = tmp_path / "offers.db"
    store = SQLiteStore(str(path))
    await store.open()
    try:
        record = await store.create_store("Shop")
        before = await store.version(record.id)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("UPDATE stores SET version = version + 1 WHERE id = ?", (record.id,))
        other.close()
        await asyncio.sleep(SNAPSHOT_MAX_S * 2)
        assert await store.version(record.id) == before + 1
    finally:
        await store.close()


@pytest.mark.anyio
async def test_reads_go_through_a_memory_map_of_the_file(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "offers.db"))
    await store.open()
    try:
        assert store._reader is not None and store._writer is not None
        ((mapped,),) = store._reader.execute("PRAGMA mmap_size").fetchall()
        # As much as asked, or SQLite's build limit (2 GB in the common builds), never none.
        assert min(READ_MAP_BYTES, 2**31 - 2**16) <= mapped <= READ_MAP_BYTES
        ((writer_mapped,),) = store._writer.execute("PRAGMA mmap_size").fetchall()
        assert writer_mapped == 0  # writes go through SQLite's own cache, as before
    finally:
        await store.close()
