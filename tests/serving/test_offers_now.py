"""`Engine.offers_now`: the answer of a warm request without a coroutine, the same as `offers`';
and when anything is missing, or the rate limit says no, nothing done at all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from offer_service.domain.policy import LearningRules, StoreRules
from offer_service.domain.records import StoreRecord
from offer_service.domain.surfaces import Surface
from offer_service.serving.engine import Engine
from offer_service.serving.visitors import HELD, INDEX, STORE
from offer_service.storage.sqlite.store import SQLiteStore
from offer_service.web.models import OffersRequest
from tests.serving.conftest import CountingStore, opened
from tests.storage.test_storage_contract import product

pytestmark = pytest.mark.anyio

NO_EXPLORING = LearningRules(explore_share=0.0)


async def shop(store: CountingStore, holdout_share: float = 0.0) -> StoreRecord:
    rules = StoreRules(holdout_share=holdout_share, bundles=False, learning=NO_EXPLORING)
    record = await store.create_store("Shop", rules=rules)
    extras = [product(f"x{i}", price=1000 + i) for i in range(6)]
    anchor = replace(product("cam", price=50_000), complements=tuple(p.id for p in extras))
    await store.upsert_products(record.id, [anchor, *extras])
    return record


def ask(visitor: str | None) -> OffersRequest:
    return OffersRequest(surface=Surface.PRODUCT_PAGE, product_id="cam", visitor_id=visitor)


def counts(engine: Engine) -> tuple[int, dict[str, int], int]:
    """Everything an answer notes: cache hits, visitor sources, exposures pending."""
    pending = sum(len(v) for v in engine.exposures._pending.values())
    return engine._prepared.hits, dict(engine.visitors.sources), pending


async def index_built(engine: Engine, record: StoreRecord) -> None:
    """Wait for the store's index of visitors with a state (built in the background after the
    first request): until then a new visitor's state is read from the store."""
    version = await engine.version(record.id)
    for _ in range(500):
        if engine.visitors.held(record.id, "nobody", None, version, count=False) is not None:
            return
        await asyncio.sleep(0.01)
        await engine.offers(record, ask("warming"), "a")
    raise AssertionError("the visitor index was never built")


def without_id(body: bytes) -> dict[str, object]:
    answer = orjson.loads(body)
    assert answer.pop("request_id") in ("a", "b")
    return dict(answer)


async def test_a_warm_request_is_answered_as_offers_answers_it(store: CountingStore) -> None:
    record = await shop(store)
    engine = Engine(store)
    admitted: list[bool] = []

    def admit() -> bool:
        admitted.append(True)
        return True

    # Cold: nothing held, nothing done, the limit not asked.
    before = counts(engine)
    assert engine.offers_now(record, ask("v1"), "b", None, admit) is None
    assert counts(engine) == before and admitted == []
    first = await engine.offers(record, ask("v1"), "a")
    await index_built(engine, record)
    hits, sources, pending = counts(engine)
    now = engine.offers_now(record, ask("v2"), "b", None, admit)
    assert now is not None
    assert without_id(now) == without_id(first)
    assert orjson.loads(now)["offers"]
    assert admitted == [True]
    # Noted as `offers` notes it: a prepared hit, the visitor from the index, an exposure.
    assert counts(engine) == (hits + 1, {**sources, INDEX: sources[INDEX] + 1}, pending + 1)
    # An anonymous request has no state to look for.
    assert engine.offers_now(record, ask(None), "b", None, admit) is not None


async def test_a_refused_request_leaves_nothing_noted(store: CountingStore) -> None:
    record = await shop(store)
    engine = Engine(store)
    await engine.offers(record, ask("v1"), "a")
    await index_built(engine, record)
    before = counts(engine)
    assert engine.offers_now(record, ask("v2"), "b", None, lambda: False) is None
    assert counts(engine) == before


async def declined_by(engine: Engine, store: SQLiteStore, record: StoreRecord, visitor: str) -> str:
    """The first product offered, declined by `visitor` as this process's decline route
    records it: the store, then this process forgets what it held of the visitor (and its
    index lists them)."""
    first = await engine.offers(record, ask("v1"), "a")
    await index_built(engine, record)
    declined: str = orjson.loads(first)["offers"][0]["product_id"]
    await store.record_visitor_signal(
        record.id, visitor, declined, "decline", int(time.time() * 1000)
    )
    engine.forget_visitors(record.id, [visitor])
    return declined


async def test_a_visitor_with_a_state_is_read_in_turn_then_held(store: CountingStore) -> None:
    record = await shop(store)
    engine = Engine(store)
    declined = await declined_by(engine, store, record, "v3")
    # Not held, and listed by the index: read on the spot from the local store, once.
    sources = dict(engine.visitors.sources)
    now = engine.offers_now(record, ask("v3"), "b", None, lambda: True)
    assert now is not None
    assert declined not in {o["product_id"] for o in orjson.loads(now)["offers"]}
    assert engine.visitors.sources == {**sources, STORE: sources[STORE] + 1}
    # The same answer `offers` gives, from the state now held.
    read = await engine.offers(record, ask("v3"), "a")
    assert without_id(now) == without_id(read)
    assert engine.visitors.sources == {
        **sources,
        STORE: sources[STORE] + 1,
        HELD: sources[HELD] + 1,
    }


class RemoteStore(CountingStore):
    """The SQLite store, read as a store whose reads are round trips (Redis)."""

    @property
    def local_reads(self) -> None:
        return None


@pytest.fixture
async def remote(tmp_path: Path) -> AsyncIterator[RemoteStore]:
    async with opened(RemoteStore, tmp_path / "remote.db") as s:
        yield s


async def test_a_visitor_with_a_state_on_a_remote_store_is_read_by_offers(
    remote: RemoteStore,
) -> None:
    record = await shop(remote)
    engine = Engine(remote)
    declined = await declined_by(engine, remote, record, "v3")
    before = counts(engine)
    assert engine.offers_now(record, ask("v3"), "b", None, lambda: True) is None
    assert counts(engine) == before
    read = await engine.offers(record, ask("v3"), "a")
    assert engine.visitors.sources[STORE] == before[1][STORE] + 1
    assert declined not in {o["product_id"] for o in orjson.loads(read)["offers"]}
    now = engine.offers_now(record, ask("v3"), "b", None, lambda: True)
    assert now is not None
    assert without_id(now) == without_id(read)


async def test_a_failed_read_in_turn_leaves_the_request_to_offers(store: CountingStore) -> None:
    record = await shop(store)
    engine = Engine(store)
    declined = await declined_by(engine, store, record, "v3")
    before = counts(engine)
    reader, store._reader = store._reader, None  # every read now fails (StoreError)
    try:
        assert engine.offers_now(record, ask("v3"), "b", None, lambda: True) is None
    finally:
        store._reader = reader
    assert counts(engine) == before
    read = await engine.offers(record, ask("v3"), "a")
    assert declined not in {o["product_id"] for o in orjson.loads(read)["offers"]}


async def test_a_refused_request_read_in_turn_notes_only_the_read(store: CountingStore) -> None:
    record = await shop(store)
    engine = Engine(store)
    await declined_by(engine, store, record, "v3")
    hits, sources, pending = counts(engine)
    assert engine.offers_now(record, ask("v3"), "b", None, lambda: False) is None
    # The read is done and its state held; no hit, no exposure.
    assert counts(engine) == (hits, {**sources, STORE: sources[STORE] + 1}, pending)
    assert engine.visitors.held(record.id, "v3", None, await engine.version(record.id)) is not None


async def test_a_holdout_visitor_gets_no_offers_in_turn(store: CountingStore) -> None:
    record = await shop(store, holdout_share=1.0)
    engine = Engine(store)
    await engine.offers(record, ask("v1"), "a")
    now = engine.offers_now(record, ask("v2"), "b", None, lambda: True)
    assert now is not None
    assert orjson.loads(now)["holdout"] is True
    assert orjson.loads(now)["offers"] == []
    assert engine.offers_now(record, ask("v3"), "b", None, lambda: False) is None
