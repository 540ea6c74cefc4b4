"""The Store contract for invalid traffic and key rotation: run against every backend."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from offer_service.domain.events import StoredEvent
from offer_service.domain.traffic import (
    IMPRESSION_MATCH_WINDOW_MS,
    MESSAGE_MATCH_WINDOW_MS,
    match_window_ms,
)
from offer_service.exceptions import StoreError
from offer_service.storage.protocols import Store
from offer_service.storage.sqlite.store import SQLiteStore
from offer_service.types import DAY_MS, HOUR_MS, now_ms
from tests.storage.test_storage_commerce_contract import NOW, TTL, event
from tests.storage.test_storage_contract import new_store, store, unique

__all__ = ["store"]

pytestmark = pytest.mark.anyio


def on(e: StoredEvent, *, offer: str = "off_1", at: int = NOW, **changes: object) -> StoredEvent:
    return dataclasses.replace(e, offer_id=offer, received_ms=at, ts_ms=at, **changes)  # type: ignore[arg-type]


async def flags(store: Store, store_id: str) -> dict[str, str | None]:
    return {e.id: e.flag async for e in store.iter_events(store_id, 0, NOW + 10 * TTL)}


async def test_an_action_without_an_impression_of_its_offer_is_stored_flagged(
    store: Store,
) -> None:
    record = await new_store(store)
    batch = [
        on(event("c0", "click")),  # nothing shown yet
        on(event("i1", "impression")),
        on(event("c1", "click")),  # after its impression in the same batch
        on(event("a1", "accept", visitor="v2")),  # another visitor saw nothing
        on(event("d1", "decline"), offer="off_2"),  # another offer was never shown
        on(event("v1", "view")),  # views need no impression
    ]
    assert await store.record_events(record.id, batch, NOW - TTL) == [True] * 6
    later = [on(event("c2", "click"), at=NOW + 1000), on(event("d2", "decline"), at=NOW + 2000)]
    assert await store.record_events(record.id, later, NOW - TTL) == [True, True]
    assert await flags(store, record.id) == {
        "c0": "no_impression",
        "i1": None,
        "c1": None,
        "a1": "no_impression",
        "d1": "no_impression",
        "v1": None,
        "c2": None,
        "d2": None,
    }
    # Flagged events are stored and counted like any other: nothing is dropped.
    counters = await store.event_counters(record.id)
    assert counters[("cart", "cross_sell", "p1", "", "click")] == 3


async def test_an_impression_matches_actions_only_inside_the_window(store: Store) -> None:
    record = await new_store(store)
    start = now_ms() - 2 * IMPRESSION_MATCH_WINDOW_MS
    late = start + IMPRESSION_MATCH_WINDOW_MS + HOUR_MS
    await store.record_events(record.id, [on(event("i", "impression"), at=start)], start - TTL)
    await store.record_events(record.id, [on(event("c", "click"), at=late)], late - TTL)
    found = {e.id: e.flag async for e in store.iter_events(record.id, start, late + 1)}
    assert found == {"i": None, "c": "no_impression"}


async def test_a_message_impression_matches_clicks_for_as_long_as_its_journey(
    store: Store,
) -> None:
    # An email is read days after it was sent: its offers' clicks look back 30 days, the web's 1.
    record = await new_store(store)
    start = now_ms() - 31 * DAY_MS
    events = [
        on(event("ie", "impression"), offer="off_mail", at=start, surface="email"),
        on(event("iw", "impression"), offer="off_web", at=start),
    ]
    await store.record_events(record.id, events, start - TTL)
    assert match_window_ms("email") == MESSAGE_MATCH_WINDOW_MS == 30 * DAY_MS
    expected: dict[str, str | None] = {"ie": None, "iw": None}
    for days, offer, surface, flag in (
        (5, "off_mail", "email", None),
        (5, "off_web", "cart", "no_impression"),
        (29, "off_mail", "email", None),
        (31, "off_mail", "email", "no_impression"),
    ):
        at = start + days * DAY_MS - HOUR_MS
        click = on(event(f"c-{offer}-{days}", "click"), offer=offer, at=at, surface=surface)
        await store.record_events(record.id, [click], at - TTL)
        expected[click.id] = flag
    found = {e.id: e.flag async for e in store.iter_events(record.id, start, now_ms() + 1)}
    assert found == expected


async def test_a_flagged_impression_does_not_make_later_actions_valid(store: Store) -> None:
    record = await new_store(store)
    events = [
        on(event("i", "impression"), flag="bot"),
        on(event("c", "click")),
        on(event("p", "click"), flag="prefetch"),
    ]
    await store.record_events(record.id, events, NOW - TTL)
    # A request's own flag is kept as it came; only unflagged actions are checked.
    assert await flags(store, record.id) == {"i": "bot", "c": "no_impression", "p": "prefetch"}


async def test_a_rotated_key_resolves_until_its_grace_period_ends(store: Store) -> None:
    record = await new_store(store)
    now = now_ms()
    new_pk, new_sk = unique("pk_"), unique("sk_")
    rotated = await store.rotate_api_key(
        record.id, "publishable", new_pk, grace_ms=60_000, now_ms=now
    )
    assert rotated.publishable_key == new_pk and rotated.secret_key == record.secret_key
    assert rotated.key_kind(record.publishable_key, now) == "publishable"
    assert rotated.key_kind(record.publishable_key, now + 60_000) is None
    for key in (new_pk, record.publishable_key, record.secret_key):
        found = await store.store_by_key(key)
        assert found is not None and found.id == record.id
    assert await store.version(record.id) > 1

    rotated = await store.rotate_api_key(record.id, "secret", new_sk, grace_ms=0, now_ms=now)
    assert rotated.secret_key == new_sk
    assert await store.store_by_key(record.secret_key) is None  # no grace: revoked at once
    assert rotated.key_kind(record.secret_key, now) is None
    assert rotated.secret_keys(now) == (new_sk,)
    again = await store.get_store(record.id)
    assert again is not None and again.key_kind(record.publishable_key, now) == "publishable"


async def test_an_expired_retired_key_no_longer_resolves(store: Store) -> None:
    record = await new_store(store)
    past = now_ms() - 120_000
    await store.rotate_api_key(
        record.id, "publishable", unique("pk_"), grace_ms=60_000, now_ms=past
    )
    assert await store.store_by_key(record.publishable_key) is None


async def test_a_rotation_shortens_the_grace_of_earlier_keys_of_its_kind(store: Store) -> None:
    record = await new_store(store)
    now = now_ms()
    first, second = unique("sk_"), unique("sk_")
    await store.rotate_api_key(record.id, "secret", first, grace_ms=3_600_000, now_ms=now)
    await store.rotate_api_key(record.id, "secret", second, grace_ms=0, now_ms=now)
    # The leaked original and the intermediate key are both gone, immediately.
    for key in (record.secret_key, first):
        assert await store.store_by_key(key) is None
    found = await store.store_by_key(second)
    assert found is not None and found.secret_key == second and found.secret_keys(now) == (second,)


async def test_a_key_of_any_store_cannot_become_another_key(store: Store) -> None:
    a, b = await new_store(store), await new_store(store)
    now = now_ms()
    with pytest.raises(StoreError):
        await store.rotate_api_key(a.id, "publishable", b.secret_key, grace_ms=0, now_ms=now)
    replacement = unique("pk_")
    await store.rotate_api_key(a.id, "publishable", replacement, grace_ms=60_000, now_ms=now)
    with pytest.raises(StoreError):  # a retired key in its grace period is still taken
        await store.rotate_api_key(b.id, "publishable", a.publishable_key, grace_ms=0, now_ms=now)
    found = await store.store_by_key(b.publishable_key)
    assert found is not None and found.id == b.id


# The SQLite backend's own promise: a file written by an earlier release gains the flag.
OLD_EVENTS = """
CREATE TABLE events (
    store_id TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL, visitor_id TEXT, surface TEXT NOT NULL, kind TEXT NOT NULL,
    product_id TEXT NOT NULL, offer_id TEXT NOT NULL, order_id TEXT, arm TEXT,
    offer_price INTEGER NOT NULL, currency TEXT NOT NULL, PRIMARY KEY (store_id, id)
) WITHOUT ROWID
"""


async def test_an_events_table_of_an_older_release_gains_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(OLD_EVENTS)
        conn.execute(
            "INSERT INTO events VALUES"
            " ('st_old', 'e0', 'click', 5, 5, 'v1', 'cart', 'cross_sell', 'p1', 'off_1', NULL,"
            " NULL, 900, 'USD')"
        )
        conn.execute("PRAGMA user_version = 2")
    store = SQLiteStore(str(path))
    await store.open()
    try:
        assert [(e.id, e.flag) async for e in store.iter_events("st_old", 0, 10)] == [("e0", None)]
        record = await new_store(store)
        await store.record_events(record.id, [on(event("c", "click"))], NOW - TTL)
        assert await flags(store, record.id) == {"c": "no_impression"}
    finally:
        await store.close()


async def test_a_shared_rate_limit_allows_a_burst_then_spaces_requests(store: Store) -> None:
    limits = store.shared_limits
    if limits is None:
        pytest.skip("this backend leaves rate limits to each process")
    store = limits  # type: ignore[assignment]
    record = await new_store(store)
    answers = [await store.rate_lease(record.id, "browser:10.0.0.1", 1.0, 3, 1) for _ in range(4)]
    assert answers[:3] == [(1, 0.0), (1, 0.0), (1, 0.0)]
    granted, wait = answers[3]
    assert granted == 0 and 0.5 < wait <= 1.0  # about one emission interval, on Redis's clock
    assert await store.rate_lease(record.id, "browser:10.0.0.2", 1.0, 3, 1) == (1, 0.0)
    other = await new_store(store)
    assert await store.rate_lease(other.id, "browser:10.0.0.1", 1.0, 3, 1) == (1, 0.0)
    # A lease counts as many as the bucket allows now, never more than asked for.
    assert await store.rate_lease(other.id, "browser:10.0.0.3", 1.0, 3, 5) == (3, 0.0)
    assert await store.rate_lease(other.id, "browser:10.0.0.4", 1.0, 3, 2) == (2, 0.0)
