"""The offers path's per-process copy of a visitor's state: keyed by the store's version, dropped
at once by events, accepts and declines of this process, and either at most VISITOR_TTL_S old or,
on a store that lists the visitors whose signals changed (SQLite, Redis), dropped when that list
names the visitor (read every VISITOR_POLL_S) and at most VISITOR_LISTED_TTL_S old."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from offer_service.domain.events import StoredEvent
from offer_service.domain.policy import StoreRules
from offer_service.domain.records import (
    EMPTY_VISITOR,
    SigningKey,
    StoreRecord,
    VisitorChanges,
    VisitorState,
)
from offer_service.domain.surfaces import Surface
from offer_service.exceptions import StoreUnavailable
from offer_service.measurement.exposures import exposure
from offer_service.serving import engine as engine_module
from offer_service.serving.engine import VISITOR_LISTED_TTL_S, VISITOR_TTL_S, Engine
from offer_service.storage.sqlite.store import SQLiteStore
from offer_service.web.models import OfferQuery


class Store:
    """Counts visitor reads and can be taken down; the engine needs nothing else of it."""

    shared_limits = None
    streams = None

    def __init__(self) -> None:
        self.reads = 0
        self.down = False

    async def visitor_state(
        self, store_id: str, visitor_id: str | None, customer_id: str | None, since_ms: int
    ) -> VisitorState:
        self.reads += 1
        if self.down:
            raise StoreUnavailable("down")
        return VisitorState(impressions={"p": self.reads})

    async def version(self, store_id: str) -> int:
        return 1

    async def visitor_changes(self, store_id: str, after: str | None) -> VisitorChanges | None:
        return None  # no list of changed visitors: states are held VISITOR_TTL_S

    async def record_events(
        self, store_id: str, events: list[StoredEvent], dedupe_since_ms: int
    ) -> list[bool]:
        return [True] * len(events)


def record() -> StoreRecord:
    return StoreRecord(
        id="st",
        name="s",
        publishable_key="pk_x",
        secret_key="sk_x",
        webhook_secrets=("whsec_x",),
        signing_keys=(SigningKey(kid="k1", secret=b"x" * 32),),
        rules=StoreRules(),
        created_at_ms=0,
    )


def query(visitor: str | None = "v1", customer: str | None = None) -> OfferQuery:
    return OfferQuery(
        Surface.PRODUCT_PAGE, product_id="p", visitor_id=visitor, customer_id=customer
    )


def impression(visitor: str) -> StoredEvent:
    return exposure(visitor, "product_page", holdout=False, arm=None, at_ms=0)


def test_a_visitor_is_read_once_per_ttl_and_version() -> None:
    store = Store()
    engine = Engine(store)  # type: ignore[arg-type]
    rec = record()

    async def run() -> None:
        first = await engine._cached_visitor(rec, query(), 1, 0)
        assert await engine._cached_visitor(rec, query(), 1, 0) is first
        assert store.reads == 1
        await engine._cached_visitor(rec, query(), 2, 0)  # the store changed: read again
        assert store.reads == 2
        await engine._cached_visitor(rec, query(customer="c1"), 2, 0)  # another customer
        assert store.reads == 3
        await engine._cached_visitor(rec, query(visitor=None, customer="c1"), 2, 0)
        await engine._cached_visitor(rec, query(visitor=None, customer="c1"), 2, 0)
        assert store.reads == 5  # without a visitor id nothing is kept
        held = engine._visitors["st"]["v1"]
        engine._visitors["st"]["v1"] = (held[0], held[1], held[2] - VISITOR_TTL_S, held[3])
        await engine._cached_visitor(rec, query(customer="c1"), 2, 0)  # expired
        assert store.reads == 6

    asyncio.run(run())


def test_events_accepts_and_declines_of_this_process_drop_it_at_once() -> None:
    store = Store()
    engine = Engine(store)  # type: ignore[arg-type]
    rec = record()

    async def run() -> None:
        await engine._cached_visitor(rec, query("v1"), 1, 0)
        await engine._cached_visitor(rec, query("v2"), 1, 0)
        await engine.events.record_events("st", [impression("v1")], 0)
        await engine._cached_visitor(rec, query("v1"), 1, 0)
        await engine._cached_visitor(rec, query("v2"), 1, 0)
        assert store.reads == 3  # v1 again, v2 still held
        engine.forget_visitors("st")  # an accept: the whole store
        await engine._cached_visitor(rec, query("v2"), 1, 0)
        assert store.reads == 4
        assert engine._visitors_held == 1

    asyncio.run(run())


def test_a_failed_read_is_not_kept() -> None:
    store = Store()
    store.down = True
    engine = Engine(store)  # type: ignore[arg-type]
    rec = record()

    async def run() -> None:
        assert await engine._cached_visitor(rec, query(), 1, 0) is EMPTY_VISITOR
        store.down = False
        assert await engine._cached_visitor(rec, query(), 1, 0) is not EMPTY_VISITOR
        assert store.reads == 2

    asyncio.run(run())


def test_on_sqlite_another_process_s_signals_drop_only_the_visitors_they_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two engines on one file stand for two processes: what one writes for a visitor reaches
    the other's next request of that visitor, and no other visitor is read again."""
    monkeypatch.setattr(engine_module, "VISITOR_POLL_S", 0.0)  # every request reads the list
    path = tmp_path / "shared.db"

    async def run() -> None:
        mine, theirs = SQLiteStore(path), SQLiteStore(path)
        await mine.open()
        await theirs.open()
        try:
            rec = await mine.create_store("Shared")
            engine = Engine(mine)
            v1 = await engine._cached_visitor(rec, query("v1"), 1, 0)
            v2 = await engine._cached_visitor(rec, query("v2"), 1, 0)
            assert v1.declined == frozenset()
            # Held well past VISITOR_TTL_S: the list tells this process when to read again.
            expires = engine._visitors[rec.id]["v1"][2]
            assert expires - time.monotonic() > VISITOR_TTL_S
            assert expires - time.monotonic() <= VISITOR_LISTED_TTL_S

            await theirs.record_visitor_signal(rec.id, "v1", "p", "decline", 1_000)

            assert (await engine._cached_visitor(rec, query("v1"), 1, 0)).declined == {"p"}
            assert await engine._cached_visitor(rec, query("v2"), 1, 0) is v2
        finally:
            await theirs.close()
            await mine.close()

    asyncio.run(run())


def test_without_a_list_of_changes_a_state_is_held_the_short_ttl() -> None:
    store = Store()
    engine = Engine(store)  # type: ignore[arg-type]

    async def run() -> None:
        await engine._cached_visitor(record(), query(), 1, 0)
        assert engine._visitors["st"]["v1"][2] - time.monotonic() <= VISITOR_TTL_S

    asyncio.run(run())


def test_states_read_together_expire_at_spread_times() -> None:
    store = Store()
    engine = Engine(store)  # type: ignore[arg-type]

    async def run() -> None:
        now = time.monotonic()
        for n in range(50):
            await engine._cached_visitor(record(), query(f"v{n}"), 1, 0)
        left = [held[2] - now for held in engine._visitors["st"].values()]
        assert len(set(left)) == 50
        assert all(VISITOR_TTL_S * 0.79 < x <= VISITOR_TTL_S + 0.1 for x in left)
        assert max(left) - min(left) > VISITOR_TTL_S * 0.1

    asyncio.run(run())
