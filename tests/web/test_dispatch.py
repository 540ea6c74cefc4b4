"""The dispatch: the fast route and the routed path answer every request alike (one definition of
each rule behind both), and each fast case of a rule agrees with the general case it belongs to."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.types import Receive, Scope, Send

from offer_service.app import create_app
from offer_service.domain.policy import RateLimits, StoreRules
from offer_service.exceptions import ApiError, StoreUnavailable
from offer_service.serving.engine import Engine
from offer_service.settings import Settings
from offer_service.storage.sqlite.store import SQLiteStore
from offer_service.web.dispatch import OfferApp
from offer_service.web.endpoints.common import browser_store, browser_store_now
from tests.conftest import BROWSER_UA

ORIGIN = "http://localhost:8000"  # one of the demo store's origins
# Differ on every answer, or name the request: not part of what is compared.
VARYING = {"request_id", "offer_id", "token", "expires_at"}
OWN_HEADERS = {"x-request-id", "content-length"}


Clients = tuple[OfferApp, httpx.AsyncClient, httpx.AsyncClient]


@contextlib.asynccontextmanager
async def started(tmp_path: Path) -> AsyncIterator[Clients]:
    """The demo app, started, and two clients over httpx's ASGI transport: the second sends
    its requests with a root path, which no fast route takes (so Starlette routes them)."""
    app = create_app(Settings(store_url=f"sqlite:///{tmp_path}/offers.db", demo=True))
    headers = {"User-Agent": BROWSER_UA, "Origin": ORIGIN}

    def client(root_path: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, root_path=root_path)
        return httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers)

    async with app.router.lifespan_context(app), client("") as c, client("/shop") as routed:
        yield app, c, routed


def comparable(r: httpx.Response) -> tuple[int, object, dict[str, str]]:
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in VARYING}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    headers = {k: v for k, v in r.headers.items() if k not in OWN_HEADERS}
    return r.status_code, strip(orjson.loads(r.content)), headers


@pytest.mark.anyio
async def test_the_fast_route_and_the_routed_path_answer_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with started(tmp_path) as (app, c, routed):
        stack_calls: list[str] = []
        stack = app.build_middleware_stack()

        async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
            stack_calls.append(scope["path"])
            await stack(scope, receive, send)

        monkeypatch.setattr(app, "middleware_stack", recorded)
        offers = "/v1/offers"
        requests = [
            c.build_request(
                "GET", offers, params={"key": "pk_demo", "surface": "cart", "items": "cam-x100"}
            ),
            # the model's path (a blank value), then a 422 after a good key, a 401, a 404
            c.build_request(
                "GET",
                offers,
                params={"key": "pk_demo", "surface": "cart", "items": "cam-x100", "x": ""},
            ),
            c.build_request("GET", offers, params={"key": "pk_demo", "surface": "cart"}),
            c.build_request("GET", offers, params={"key": "pk_nope", "surface": "cart"}),
            c.build_request(
                "GET",
                offers,
                params={"key": "pk_demo", "surface": "product_page", "product_id": "nope"},
            ),
            c.build_request("POST", "/v1/events", json={"key": "pk_demo", "events": [{"id": "e"}]}),
            c.build_request("POST", "/v1/events", json={"key": "pk_nope", "events": []}),
        ]
        for request in requests:
            fast = await c.send(request)
            assert stack_calls == [], request.url  # the fast route skipped Starlette's stack
            slow = await routed.send(request)
            assert stack_calls == [request.url.path]
            stack_calls.clear()
            assert comparable(fast) == comparable(slow), request.url

        # An unreachable store and an unhandled error: the 503 and the 500, both ways.
        async def unreachable(key: str) -> None:
            raise StoreUnavailable("the store is down")

        async def broken(key: str) -> None:
            raise RuntimeError("broken")

        for failing, status in ((unreachable, 503), (broken, 500)):
            monkeypatch.setattr(app.state.engine, "store_by_key", failing)
            for request in requests[3], requests[6]:  # keys no cache holds
                fast = await c.send(request)
                slow = await routed.send(request)
                assert fast.status_code == slow.status_code == status
                assert comparable(fast) == comparable(slow)


@pytest.mark.anyio
async def test_the_dispatch_is_built_with_the_app_not_by_its_first_request(
    tmp_path: Path,
) -> None:
    async with started(tmp_path) as (app, c, _):
        assert app.middleware_stack is None  # nothing routed yet
        r = await c.get("/v1/offers", params={"key": "pk_demo", "surface": "cart", "items": "a"})
        assert r.status_code == 404 and r.headers["x-request-id"].startswith("req_")
        assert app.middleware_stack is None  # answered without building Starlette's stack


async def _engines(path: Path, per_second: float, burst: int) -> tuple[Engine, Engine, str]:
    """Two engines in the same state over one store: one asked the fast way, one the general."""
    store = SQLiteStore(str(path))
    await store.open()
    limits = RateLimits(browser_per_second=per_second, browser_burst=burst)
    record = await store.create_store("Shop", rules=StoreRules(rate_limits=limits))
    return Engine(store), Engine(store), record.publishable_key


async def _ask_now(e: Engine, key: str) -> object:
    try:
        return browser_store_now(e, key, "10.0.0.1")
    except ApiError as exc:
        return (exc.status_code, exc.body(), exc.headers)


async def _ask(e: Engine, key: str) -> object:
    try:
        return await browser_store(e, key, "10.0.0.1")
    except ApiError as exc:
        return (exc.status_code, exc.body(), exc.headers)


@pytest.mark.anyio
async def test_browser_store_now_answers_as_browser_store_whenever_it_answers(
    tmp_path: Path,
) -> None:
    fast, general, key = await _engines(tmp_path / "shop.db", per_second=0.001, burst=2)
    try:
        assert await _ask_now(fast, key) is None  # nothing cached yet: browser_store decides
        for e in (fast, general):
            await e.store_by_key(key)  # both caches warm, no request counted
        answers = [(await _ask_now(fast, key), await _ask(general, key)) for _ in range(3)]
        # Two within the burst, then refused: the same record, then the same 429.
        assert [a for a, _ in answers] == [b for _, b in answers]
        assert answers[0][0] is not None and answers[2][0][0] == 429  # type: ignore[index]
        # A key of no store: the fast case leaves it to browser_store, which refuses it.
        assert await _ask_now(fast, "pk_nope") is None
        assert (await _ask(general, "pk_nope"))[0] == 401  # type: ignore[index]
    finally:
        await fast.store.close()


@pytest.mark.anyio
async def test_store_by_key_now_answers_as_store_by_key_whenever_it_answers(
    tmp_path: Path,
) -> None:
    engine, _, key = await _engines(tmp_path / "shop.db", per_second=100.0, burst=100)
    try:
        assert engine.store_by_key_now(key) is None  # nothing cached: store_by_key decides
        record = await engine.store_by_key(key)
        assert record is not None and engine.store_by_key_now(key) is record
        assert await engine.store_by_key(key) is record
        assert await engine.store_by_key("pk_nope") is None
        assert engine.store_by_key_now("pk_nope") is None  # a known miss is store_by_key's
    finally:
        await engine.store.close()


@pytest.mark.anyio
async def test_a_store_lost_after_the_key_is_known_is_a_503_the_page_can_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with started(tmp_path) as (app, c, routed):
        params = {"key": "pk_demo", "surface": "cart", "items": "cam-x100"}
        headers = {"origin": ORIGIN}
        assert (await c.get("/v1/offers", params=params, headers=headers)).status_code == 200

        async def down(*args: object, **kwargs: object) -> bytes:
            raise StoreUnavailable("the store is down")

        monkeypatch.setattr(app.state.engine, "offers", down)
        for client in (c, routed):
            r = await client.get("/v1/offers", params=params, headers=headers)
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "store_unavailable"
            assert r.headers["access-control-allow-origin"] == ORIGIN
