"""The offers path's per-process copy of a visitor's state: keyed by the store's version, dropped
at once by events, accepts and declines of this process, and either at most VISITOR_TTL_S old or,
on a store that lists the visitors whose signals changed (SQLite, Redis), dropped when that list
names the visitor (read every VISITOR_POLL_S) and at most VISITOR_LISTED_TTL_S old."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from offer_service.domain.events import StoredEvent
from offer_service.domain.policy import StoreRules
from offer_service.domain.records import EMPTY_VISITOR, VisitorChanges, VisitorState
from offer_service.exceptions import StoreUnavailable
from offer_service.measurement.exposures import exposure
from offer_service.serving import visitors as visitors_module
from offer_service.serving.engine import Engine
from offer_service.serving.visitors import VISITOR_LISTED_TTL_S, VISITOR_TTL_S, Visitors
from offer_service.storage.sqlite.store import SQLiteStore


class Store:
    """Counts visitor reads and can be taken down; Visitors (and the engine, for its events)
    need nothing else of it."""

    shared_limits = None
    streams = None
    local_reads = None

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


RULES = StoreRules()


def visitors_of(store: object) -> Visitors:
    return Visitors(store, random.Random(7))  # type: ignore[arg-type]


async def state(
    visitors: Visitors, visitor: str | None = "v1", customer: str | None = None, version: int = 1
) -> VisitorState:
    """The state an offers request of the store "st" takes, at store version `version`."""
    return await visitors.state("st", visitor, customer, RULES, version, 0)


def impression(visitor: str) -> StoredEvent:
    return exposure(visitor, "product_page", holdout=False, arm=None, at_ms=0)


def test_a_visitor_is_read_once_per_ttl_and_version() -> None:
    store = Store()
    visitors = visitors_of(store)

    async def run() -> None:
        first = await state(visitors)
        assert await state(visitors) is first
        assert store.reads == 1
        await state(visitors, version=2)  # the store changed: read again
        assert store.reads == 2
        await state(visitors, customer="c1", version=2)  # another customer
        assert store.reads == 3
        await state(visitors, visitor=None, customer="c1", version=2)
        await state(visitors, visitor=None, customer="c1", version=2)
        assert store.reads == 5  # without a visitor id nothing is kept
        held = visitors._held["st"]["v1"]
        visitors._held["st"]["v1"] = held._replace(expires=held.expires - VISITOR_TTL_S)
        await state(visitors, customer="c1", version=2)  # expired
        assert store.reads == 6

    asyncio.run(run())


def test_held_answers_as_state_does_whenever_it_answers() -> None:
    """`held` is `state`'s answer without a coroutine: wherever it gives one, `state` gives the
    same without reading the store; where it gives none, `state` decides."""
    store = Store()
    visitors = visitors_of(store)
    asks = [
        ("v1", None, 1),  # held
        ("v1", "c1", 1),  # held for another customer
        ("v1", None, 2),  # held for another version
        ("v2", None, 1),  # never read
        (None, "c1", 1),  # no visitor id: never held
        (None, None, 1),
    ]

    async def run() -> None:
        await state(visitors)
        answered = 0
        for visitor, customer, version in asks:
            held = visitors.held("st", visitor, customer, version)
            reads = store.reads
            found = await state(visitors, visitor, customer, version)
            if held is not None:
                answered += 1
                assert found is held and store.reads == reads
            # What `state` read for a visitor, `held` answers next, as `state` would.
            assert visitors.held("st", visitor, customer, version) is (found if visitor else None)
        assert answered == 1
        store.down = True
        held = visitors.held("st", "v2", None, 1)
        assert held is not None and await state(visitors, "v2", None, 1) is held

    asyncio.run(run())


def test_nothing_is_held_while_a_poll_of_the_changes_is_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = Store()
    visitors = visitors_of(store)

    async def run() -> None:
        await state(visitors)
        assert visitors.held("st", "v1", None, 1) is not None
        monkeypatch.setattr(visitors_module, "VISITOR_POLL_S", 0.0)
        assert visitors.held("st", "v1", None, 1) is None  # `state` must ask first
        assert await state(visitors) is not None and store.reads == 1

    asyncio.run(run())


def test_events_accepts_and_declines_of_this_process_drop_it_at_once() -> None:
    store = Store()
    engine = Engine(store)  # type: ignore[arg-type]
    visitors = engine.visitors

    async def run() -> None:
        await state(visitors, "v1")
        await state(visitors, "v2")
        await engine.events.record_events("st", [impression("v1")], 0)
        await state(visitors, "v1")
        await state(visitors, "v2")
        assert store.reads == 3  # v1 again, v2 still held
        engine.forget_visitors("st")  # an accept: the whole store
        await state(visitors, "v2")
        assert store.reads == 4
        assert len(visitors) == 1

    asyncio.run(run())


def test_a_failed_read_is_not_kept() -> None:
    store = Store()
    store.down = True
    visitors = visitors_of(store)

    async def run() -> None:
        assert await state(visitors) is EMPTY_VISITOR
        store.down = False
        assert await state(visitors) is not EMPTY_VISITOR
        assert store.reads == 2

    asyncio.run(run())


def test_on_sqlite_another_process_s_signals_drop_only_the_visitors_they_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two stores on one file stand for two processes: what one writes for a visitor reaches
    the other's next request of that visitor, and no other visitor is read again."""
    monkeypatch.setattr(visitors_module, "VISITOR_POLL_S", 0.0)  # every request reads the list
    path = tmp_path / "shared.db"

    async def run() -> None:
        mine, theirs = SQLiteStore(path), SQLiteStore(path)
        await mine.open()
        await theirs.open()
        try:
            rec = await mine.create_store("Shared")
            visitors = Visitors(mine, random.Random(7))

            async def of(visitor: str) -> VisitorState:
                return await visitors.state(rec.id, visitor, None, rec.rules, 1, 0)

            v1 = await of("v1")
            v2 = await of("v2")
            assert v1.declined == frozenset()
            # Held well past VISITOR_TTL_S: the list tells this process when to read again.
            expires = visitors._held[rec.id]["v1"].expires
            assert expires - time.monotonic() > VISITOR_TTL_S
            assert expires - time.monotonic() <= VISITOR_LISTED_TTL_S

            await theirs.record_visitor_signal(rec.id, "v1", "p", "decline", 1_000)

            assert (await of("v1")).declined == {"p"}
            assert await of("v2") is v2
        finally:
            await theirs.close()
            await mine.close()

    asyncio.run(run())


def test_without_a_list_of_changes_a_state_is_held_the_short_ttl() -> None:
    visitors = visitors_of(Store())

    async def run() -> None:
        await state(visitors)
        assert visitors._held["st"]["v1"].expires - time.monotonic() <= VISITOR_TTL_S

    asyncio.run(run())


def test_states_read_together_expire_at_spread_times() -> None:
    visitors = visitors_of(Store())

    async def run() -> None:
        now = time.monotonic()
        for n in range(50):
            await state(visitors, f"v{n}")
        left = [held.expires - now for held in visitors._held["st"].values()]
        assert len(set(left)) == 50
        assert all(VISITOR_TTL_S * 0.79 < x <= VISITOR_TTL_S + 0.1 for x in left)
        assert max(left) - min(left) > VISITOR_TTL_S * 0.1

    asyncio.run(run())
