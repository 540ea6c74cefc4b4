"""Exposures: one event per visitor, surface and UTC day, written behind the offers request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from offer_service.domain.events import StoredEvent
from offer_service.measurement.exposures import EXPOSURE, ExposureLog, exposure_id
from offer_service.serving.spool import Spool
from offer_service.storage import open_store
from offer_service.storage.redis.store import RedisStore
from offer_service.storage.sqlite.store import SQLiteStore
from offer_service.types import DAY_MS
from tests.redis_servers import free_port

NOON = 1_764_072_000_000  # 2025-11-25T12:00:00Z


def test_exposure_ids_are_one_per_visitor_surface_and_day() -> None:
    day = NOON // DAY_MS
    assert exposure_id("v1", "cart", day) == exposure_id("v1", "cart", day)
    others = {exposure_id("v2", "cart", day), exposure_id("v1", "checkout", day)}
    others.add(exposure_id("v1", "cart", day + 1))
    assert exposure_id("v1", "cart", day) not in others
    assert len(exposure_id("v" * 128, "cart", day)) <= 64


def test_the_log_writes_each_exposure_once_and_flushes_on_close(tmp_path: Path) -> None:
    async def run() -> list[tuple[str | None, str, str, str | None]]:
        store = open_store(f"sqlite:///{tmp_path}/o.db")
        await store.open()
        try:
            record = await store.create_store("s")
            now = [NOON / 1000]
            log = ExposureLog(store, flush_after_s=60, clock=lambda: now[0])
            log.seen(record.id, "v1", "cart", holdout=False, arm="x:a")
            log.seen(record.id, "v1", "cart", holdout=False, arm="x:a")  # the same day: once
            log.seen(record.id, "v1", "product_page", holdout=False, arm=None)
            log.seen(record.id, "h1", "cart", holdout=True, arm=None)
            now[0] += 86_400  # the next day counts again
            log.seen(record.id, "v1", "cart", holdout=False, arm="x:a")
            await log.close()  # does not wait the 60 s
            events = [e async for e in store.iter_events(record.id, 0, 2**62)]
            await log.flush()  # nothing left to write twice
            again = [e async for e in store.iter_events(record.id, 0, 2**62)]
            assert len(again) == len(events)
            assert {e.type for e in events} == {EXPOSURE}
            return sorted((e.visitor_id, e.surface, e.kind, e.arm) for e in events)
        finally:
            await store.close()

    assert asyncio.run(run()) == [
        ("h1", "cart", "holdout", None),
        ("v1", "cart", "treatment", "x:a"),
        ("v1", "cart", "treatment", "x:a"),
        ("v1", "product_page", "treatment", None),
    ]


def test_an_exposure_noted_during_a_write_is_written_without_another(tmp_path: Path) -> None:
    """The last exposure of a burst, noted while the batch before it is being written, is
    written after it, with no later exposure or shutdown to start a write."""

    class SlowStore(SQLiteStore):
        writing: asyncio.Event  # set when a write starts
        go_on: asyncio.Event  # set to let it finish

        async def record_events(
            self, store_id: str, events: Sequence[StoredEvent], dedupe_since_ms: int
        ) -> list[bool]:
            self.writing.set()
            await self.go_on.wait()
            return await super().record_events(store_id, events, dedupe_since_ms)

    async def run() -> list[str | None]:
        store = SlowStore(str(tmp_path / "o.db"))
        store.writing, store.go_on = asyncio.Event(), asyncio.Event()
        await store.open()
        try:
            record = await store.create_store("s")
            log = ExposureLog(store, flush_after_s=0.01, clock=lambda: NOON / 1000)
            log.seen(record.id, "v1", "cart", holdout=False, arm=None)
            await asyncio.wait_for(store.writing.wait(), 5)  # v1's batch is being written
            log.seen(record.id, "v2", "cart", holdout=False, arm=None)
            store.go_on.set()
            for _ in range(200):
                written = [e.visitor_id async for e in store.iter_events(record.id, 0, 2**62)]
                if len(written) == 2:
                    break
                await asyncio.sleep(0.01)
            await log.close()
            return sorted(written)
        finally:
            await store.close()

    assert asyncio.run(run()) == ["v1", "v2"]


def test_exposures_the_store_cannot_take_go_to_the_spool_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def run() -> list[tuple[str | None, str]]:
        kept = open_store(f"sqlite:///{tmp_path}/o.db")
        down = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
        await kept.open()
        await down.open()
        try:
            record = await kept.create_store("s")
            spool = Spool(tmp_path / "spool", fsync=False)
            log = ExposureLog(down, flush_after_s=60, clock=lambda: NOON / 1000, spool=spool)
            for visitor in ("v1", "v2", "v3"):  # three batches, one outage
                log.seen(record.id, visitor, "cart", holdout=visitor == "v2", arm=None)
                await log.flush()
            await spool.replay(kept)  # the store answers again
            spool.close()
            return sorted(
                [(e.visitor_id, e.kind) async for e in kept.iter_events(record.id, 0, 2**62)]
            )
        finally:
            await down.close()
            await kept.close()

    with caplog.at_level(logging.WARNING, logger="offer_service.measurement.exposures"):
        stored = asyncio.run(run())
    assert stored == [("v1", "treatment"), ("v2", "holdout"), ("v3", "treatment")]
    warnings = [r for r in caplog.records if r.name == "offer_service.measurement.exposures"]
    assert [(r.levelname, r.exc_info) for r in warnings] == [("WARNING", None)]


def test_a_full_table_forgets_only_its_older_half(tmp_path: Path) -> None:
    # 8 remembered: two generations of 4. A visitor noted in the newer one, or noted again
    # while in the older, is not written again when the table turns; one not seen for two
    # turns is (the store's dedupe keeps one of it).
    async def run() -> list[str]:
        store = open_store(f"sqlite:///{tmp_path}/o.db")
        await store.open()
        try:
            record = await store.create_store("s")
            log = ExposureLog(store, flush_after_s=60, clock=lambda: NOON / 1000, recent_max=8)

            def note(*visitors: str) -> None:
                for v in visitors:
                    log.seen(record.id, v, "cart", holdout=False, arm=None)

            note("a", "b", "c", "d")  # the first generation, full
            note("e", "f")  # turned: a-d older
            note("a")  # busy: back in the newer one, not written
            note("g", "h")  # full again (e, f, a, g)... h turns it: a stays, b-d forgotten
            note("a", "e", "b")  # a and e remembered; b written again
            pending = log._pending[record.id]
            await log.close()
            return [e.visitor_id or "" for e in pending]
        finally:
            await store.close()

    assert asyncio.run(run()) == ["a", "b", "c", "d", "e", "f", "g", "h", "b"]
