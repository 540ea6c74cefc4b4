"""A prepared offer list: it signs an offer's token only once an answer shows it, and chooses
the answer of a visitor without history once per list."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson
import pytest

from offer_service.domain.policy import StoreRules
from offer_service.domain.records import EMPTY_VISITOR
from offer_service.domain.surfaces import Surface
from offer_service.serving import engine as engine_module
from offer_service.serving.engine import Engine
from offer_service.serving.prepared import PREPARED_TTL_S
from offer_service.web.models import OffersRequest
from tests.serving.conftest import CountingStore
from tests.storage.test_storage_contract import product


@pytest.mark.anyio
async def test_a_prepared_list_signs_only_the_offers_answers_show(store: CountingStore) -> None:
    # Single offers only, one per complement (bundles: test_bundles_and_shipping.py).
    rules = StoreRules(holdout_share=0, bundles=False)
    record = await store.create_store("Shop", rules=rules)
    extras = [product(f"x{i}", price=1000 + i) for i in range(6)]
    anchor = replace(product("cam", price=50_000), complements=tuple(p.id for p in extras))
    await store.upsert_products(record.id, [anchor, *extras])
    engine = Engine(store)

    async def answer(limit: int) -> list[dict[str, object]]:
        request = OffersRequest(surface=Surface.PRODUCT_PAGE, product_id="cam", limit=limit)
        offers: list[dict[str, object]] = orjson.loads(await engine.offers(record, request, "r"))[
            "offers"
        ]
        return offers

    two = await answer(2)
    (prepared,) = [v for v, _ in engine._prepared._entries.values()]
    assert len(prepared.offers) == 6
    assert [f is not None for f in prepared.fragments] == [True, True] + [False] * 4
    # A longer answer renders the next offers; those shown before keep their ids and tokens.
    four = await answer(4)
    assert [f is not None for f in prepared.fragments] == [True] * 4 + [False] * 2
    assert four[:2] == two
    assert len({o["token"] for o in four}) == 4


@pytest.mark.anyio
async def test_exploring_answers_for_visitors_without_history_are_chosen_once(
    store: CountingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = await store.create_store("Shop", rules=StoreRules(holdout_share=0))
    extras = [product(f"x{i}", price=1000 + i) for i in range(8)]
    anchor = replace(product("cam", price=50_000), complements=tuple(p.id for p in extras))
    await store.upsert_products(record.id, [anchor, *extras])
    engine = Engine(store)
    finished: list[bool] = []
    finish = engine_module.decide.finish

    def counted(*args: object, **kwargs: Any) -> list[int]:
        finished.append(kwargs["explore"])
        return finish(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine_module.decide, "finish", counted)
    coin = [False]
    monkeypatch.setattr(engine, "explores", lambda rules: coin[0])

    async def answer(visitor: str, exclude: list[str] | None = None) -> list[str]:
        request = OffersRequest(
            surface=Surface.PRODUCT_PAGE,
            product_id="cam",
            limit=3,
            visitor_id=visitor,
            exclude=exclude or [],
        )
        body = orjson.loads(await engine.offers(record, request, "r"))
        return [o["product_id"] for o in body["offers"]]

    plain = [await answer(f"v{i}") for i in range(3)]
    coin[0] = True
    exploring = [await answer(f"w{i}") for i in range(3)]
    assert finished == [False, True]  # once per variant, whoever asks next
    assert plain[0] == plain[1] == plain[2] and exploring[0] == exploring[1] == exploring[2]
    (prepared,) = [v for v, _ in engine._prepared._entries.values()]
    uncached = finish(
        prepared.offers,
        EMPTY_VISITOR,
        record.rules,
        limit=3,
        surface=Surface.PRODUCT_PAGE,
        now_ms=0,
        explore=True,
    )
    assert exploring[0] == [prepared.offers[i].candidate.product.id for i in uncached]
    # A visitor who excludes an offer is still decided on their own.
    assert await answer("w9", exclude=[exploring[0][0]]) != exploring[0]
    assert finished == [False, True, True]


@pytest.mark.anyio
@pytest.mark.parametrize("ttl", [60, 600, 3600])
async def test_a_list_is_built_again_before_its_tokens_expire(
    store: CountingStore, monkeypatch: pytest.MonkeyPatch, ttl: int
) -> None:
    # A list is served until its tokens have PREPARED_TTL_S left, or half their life when that
    # is shorter: tokens of 60 s, shorter than two refreshes of the cache, are renewed every
    # 30 s (not on every request), an hour's after 3,300 s at the latest.
    rules = StoreRules(holdout_share=0, bundles=False, offer_ttl_seconds=ttl)
    record = await store.create_store("Shop", rules=rules)
    extras = [product(f"x{i}", price=1000 + i) for i in range(3)]
    anchor = replace(product("cam", price=50_000), complements=tuple(p.id for p in extras))
    await store.upsert_products(record.id, [anchor, *extras])
    start = 1_000_000.0
    now = [start]
    engine = Engine(store, clock=lambda: now[0])
    built: list[float] = []
    prepare = engine._prepare

    async def counted(*args: Any, **kwargs: Any) -> Any:
        built.append(now[0] - start)
        return await prepare(*args, **kwargs)

    monkeypatch.setattr(engine, "_prepare", counted)
    request = OffersRequest(surface=Surface.PRODUCT_PAGE, product_id="cam", visitor_id="v")
    left_at_least = min(PREPARED_TTL_S, ttl / 2)
    renew = ttl - left_at_least
    expiries = set()
    for step in (0, 1, 2, renew - 1, renew, renew + 1):
        now[0] = start + step
        (first, *_) = orjson.loads(await engine.offers(record, request, "r"))["offers"]
        expiries.add(first["expires_at"])
        left = datetime.fromisoformat(first["expires_at"]).timestamp() - now[0]
        assert left > left_at_least
    assert built == [0, renew]
    assert len(expiries) == 2
