"""The parts of event ingestion that batch work: ids of any characters on SQLite, the WAL
copied off the write path, and tokens verified once while they stay valid."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

import pytest

from offer_service.domain.events import BAD_TOKEN, Rejected, StoredEvent, validate_event
from offer_service.domain.tokens import sign
from offer_service.storage.sqlite.store import CHECKPOINT_INTERVAL_S, SCHEMA_VERSION, SQLiteStore
from offer_service.types import DAY_MS, HOUR_MS
from tests.domain.test_tokens import KEY, OTHER, claims
from tests.storage.test_storage_commerce_contract import NOW, event
from tests.storage.test_storage_contract import opened
from tests.storage.test_storage_security_contract import OLD_EVENTS


@pytest.mark.anyio
async def test_ids_that_differ_after_a_nul_character_are_different_events(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "offers.db"))
    await store.open()
    try:
        record = await store.create_store("Shop")
        batch = [event("a\x00b", visitor="v\x00"), event("a\x00c"), event("a\x00b"), event("a")]
        assert await store.record_events(record.id, batch, 0) == [True, True, False, True]
        again = [event("a\x00c"), event("plain"), event("a\x00d", "click", visitor="v\x00")]
        assert await store.record_events(record.id, again, 0) == [False, True, True]
        stored = {e.id: e async for e in store.iter_events(record.id, 0, NOW + 1)}
        assert set(stored) == {"a\x00b", "a\x00c", "a", "plain", "a\x00d"}
        assert stored["a\x00b"].visitor_id == "v\x00"
        assert stored["a\x00d"].flag is None  # its impression was shown to the same visitor
        counters = await store.event_counters(record.id)
        assert counters[("cart", "cross_sell", "p1", "", "impression")] == 4
    finally:
        await store.close()


@pytest.mark.anyio
async def test_stores_sharing_a_file_find_each_others_event_ids(tmp_path: Path) -> None:
    """The ids of the window are kept in memory: each process reads the ids the others wrote
    before its own write, and a process opened later reads them from the file."""
    url = f"sqlite:///{tmp_path / 'offers.db'}"
    since = NOW - DAY_MS
    async with opened(url) as first, opened(url) as second:
        record = await first.create_store("Shop")
        assert await first.record_events(record.id, [event("e1")], since) == [True]
        assert await second.record_events(record.id, [event("e1"), event("e2")], since) == [
            False,
            True,
        ]
        assert await first.record_events(record.id, [event("e2"), event("e3")], since) == [
            False,
            True,
        ]
    async with opened(url) as later:
        fresh = await later.record_events(record.id, [event(f"e{i}") for i in range(1, 5)], since)
        assert fresh == [False, False, False, True]
        assert [e.id async for e in later.iter_events(record.id, 0, NOW + 1)] == [
            "e1",
            "e2",
            "e3",
            "e4",
        ]


@pytest.mark.anyio
async def test_event_ids_are_remembered_for_the_window_asked_for(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'offers.db'}"
    old = dataclasses.replace(event("old"), received_ms=NOW - 3 * DAY_MS)
    async with opened(url) as store:
        record = await store.create_store("Shop")
        assert await store.record_events(record.id, [old], 0) == [True]
    async with opened(url) as store:
        # Read from the file for the last day only, then for a wider window (a spool replay).
        assert await store.record_events(record.id, [event("new")], NOW - DAY_MS) == [True]
        assert await store.record_events(record.id, [old], NOW - 4 * DAY_MS) == [False]
        assert await store.record_events(record.id, [event("new")], NOW - DAY_MS) == [False]
        # Once the window has moved past them, ids are forgotten: stored again, as the
        # contract allows after 24 hours.
        later = NOW + DAY_MS + HOUR_MS
        again = dataclasses.replace(event("new"), received_ms=later)
        assert await store.record_events(record.id, [again], later - DAY_MS) == [True]
        assert await store.record_events(record.id, [again], later - DAY_MS) == [False]


@pytest.mark.anyio
async def test_impressions_seen_of_schema_6_are_rekeyed_by_visitor_and_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "offers.db"
    async with opened(f"sqlite:///{path}") as store:
        record = await store.create_store("Shop")
    with sqlite3.connect(path) as conn:  # as schemas 5 and 6 made it: keyed by offer first
        conn.execute("DROP TABLE impressions_seen")
        conn.execute(
            "CREATE TABLE impressions_seen (store_id TEXT NOT NULL, offer_id TEXT NOT NULL,"
            " visitor_id TEXT NOT NULL, last_ms INTEGER NOT NULL,"
            " PRIMARY KEY (store_id, offer_id, visitor_id)) WITHOUT ROWID"
        )
        conn.execute(
            "INSERT INTO impressions_seen VALUES (?, 'off_1', 'v1', ?)", (record.id, NOW - 1)
        )
        conn.execute("PRAGMA user_version = 6")
    async with opened(f"sqlite:///{path}") as store:
        clicks = [event("c1", "click"), event("c2", "click", visitor="v2")]
        await store.record_events(record.id, clicks, NOW - DAY_MS)
        flags = {e.id: e.flag async for e in store.iter_events(record.id, 0, NOW + 1)}
        assert flags == {"c1": None, "c2": "no_impression"}  # v1's impression was kept
    with sqlite3.connect(path) as conn:
        key = conn.execute(
            "SELECT name FROM pragma_table_info('impressions_seen') WHERE pk > 0 ORDER BY pk"
        ).fetchall()
        assert key == [("store_id",), ("visitor_id",), ("offer_id",)]


@pytest.mark.anyio
async def test_the_wal_is_checkpointed_in_the_background_after_writes(tmp_path: Path) -> None:
    path = tmp_path / "offers.db"
    store = SQLiteStore(str(path))
    await store.open()
    try:
        record = await store.create_store("Shop")
        for i in range(3):
            await store.record_events(record.id, [event(f"e{i}-{j}") for j in range(50)], 0)
            await asyncio.sleep(CHECKPOINT_INTERVAL_S)
        while store._checkpoint is not None:
            await asyncio.sleep(0.01)
        assert store._writer is not None
        busy, frames, copied = store._writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and frames == copied
        assert sum([1 async for _ in store.iter_events(record.id, 0, NOW + 1)]) == 150
    finally:
        await store.close()


def raw(token: str) -> dict[str, object]:
    return {"id": "e1", "type": "impression", "token": token, "ts": NOW}


def test_a_remembered_token_is_still_refused_once_expired_or_its_key_is_gone() -> None:
    expires_s = NOW // 1000 + 60
    token = sign(claims(issued_at=expires_s - 600, expires_at=expires_s), KEY)
    first = validate_event(0, raw(token), "st_1", (KEY,), NOW)
    assert isinstance(first, StoredEvent) and first.offer_id == "off_1"
    again = validate_event(0, raw(token), "st_1", (KEY,), NOW)
    assert again == first
    expired = validate_event(0, raw(token), "st_1", (KEY,), (expires_s + 1) * 1000)
    other_key = validate_event(0, raw(token), "st_1", (OTHER,), NOW)
    same_kid = (dataclasses.replace(KEY, secret=b"u" * 32),)
    forged_key = validate_event(0, raw(token), "st_1", same_kid, NOW)
    other_store = validate_event(0, raw(token), "st_2", (KEY,), NOW)
    for refused in (expired, other_key, forged_key, other_store):
        assert isinstance(refused, Rejected)
        assert (refused.index, refused.code, refused.field) == (0, BAD_TOKEN, "token")
        assert refused.message  # says why, in a sentence


@pytest.mark.anyio
async def test_a_file_of_the_previous_schema_keeps_matching_actions_to_its_impressions(
    tmp_path: Path,
) -> None:
    path = tmp_path / "offers.db"
    with sqlite3.connect(path) as conn:  # as schema 2 left it: no flags, no impressions_seen
        conn.execute(OLD_EVENTS)
        conn.executemany(
            "INSERT INTO events VALUES (?, ?, 'impression', ?, ?, ?, 'cart', 'cross_sell', 'p1',"
            " 'off_1', NULL, NULL, 900, 'USD')",
            [("st_old", "i1", NOW, NOW, "v1"), ("st_old", "i2", NOW, NOW, None)],
        )
        conn.execute("PRAGMA user_version = 2")
    store = SQLiteStore(str(path))
    await store.open()
    try:
        actions = [event("c1", "click"), event("c2", "click", visitor=None)]
        actions.append(event("c3", "click", visitor="v2"))
        await store.record_events("st_old", actions, 0)
        flags = {e.id: e.flag async for e in store.iter_events("st_old", 0, NOW + 1)}
        assert flags == {"i1": None, "i2": None, "c1": None, "c2": None, "c3": "no_impression"}
    finally:
        await store.close()


@pytest.mark.anyio
async def test_a_file_that_has_impressions_seen_is_upgraded_without_reading_its_events(
    tmp_path: Path,
) -> None:
    path = tmp_path / "offers.db"
    async with opened(f"sqlite:///{path}"):
        pass
    with sqlite3.connect(path) as conn:  # schema 5: impressions_seen kept, no orders_by_time
        conn.execute("DROP INDEX orders_by_time")
        conn.execute(OLD_EVENTS)  # and a row per event, the flag added by schema 3
        conn.execute("ALTER TABLE events ADD COLUMN flag TEXT")
        conn.execute(
            "INSERT INTO events VALUES ('st_old', 'i1', 'impression', ?, ?, 'v1', 'cart',"
            " 'cross_sell', 'p1', 'off_1', NULL, NULL, 900, 'USD', NULL)",
            (NOW, NOW),
        )
        conn.execute("PRAGMA user_version = 5")
    async with opened(f"sqlite:///{path}"):
        pass
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(orders)")}
        assert "orders_by_time" in indexes
        # Its impressions_seen was complete as it stood: no pass over the events refilled it.
        assert conn.execute("SELECT COUNT(*) FROM impressions_seen").fetchone() == (0,)
        assert not conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'events'").fetchone()
    async with opened(f"sqlite:///{path}") as store:  # its event moved into the log
        assert [e.id async for e in store.iter_events("st_old", 0, NOW + 1)] == ["i1"]
