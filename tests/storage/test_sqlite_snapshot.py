"""SQLite reads share a read transaction briefly: own writes are seen at once, others' soon, and
an idle process does not keep one open; they read the file through a memory map."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
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


def test_a_write_ends_another_threads_snapshot_on_that_threads_loop(tmp_path: Path) -> None:
    """sqlite3 connections are not safe to share between threads: a write through one store
    object ends the read snapshots of every object on the file, and an object opened on another
    thread's loop has its snapshot ended on that thread, never on the writer's (a COMMIT on its
    reader from here, racing its own use or its close, crashed the process)."""
    path = str(tmp_path / "offers.db")

    async def create() -> str:
        store = SQLiteStore(path)
        await store.open()
        try:
            return (await store.create_store("Shop")).id
        finally:
            await store.close()

    store_id = asyncio.run(create())
    opened, written = threading.Event(), threading.Event()
    ended_on: list[int] = []

    async def other_thread() -> None:
        store = SQLiteStore(path)
        await store.open()
        end = store._end_snapshot

        def recorded() -> None:
            ended_on.append(threading.get_ident())
            end()

        store._end_snapshot = recorded  # type: ignore[method-assign]
        try:
            await store.version(store_id)  # a read: its snapshot starts
            opened.set()
            while not written.is_set():
                await asyncio.sleep(0.01)
            await asyncio.sleep(SNAPSHOT_MAX_S * 5)
        finally:
            await store.close()

    thread = threading.Thread(target=lambda: asyncio.run(other_thread()))
    thread.start()
    try:
        assert opened.wait(10)

        async def write() -> None:
            store = SQLiteStore(path)
            await store.open()
            try:
                await store.upsert_products(store_id, [Product(id="p", title="t", price=1)])
            finally:
                await store.close()

        asyncio.run(write())
    finally:
        written.set()
        thread.join(10)
    assert ended_on and set(ended_on) == {thread.ident}
