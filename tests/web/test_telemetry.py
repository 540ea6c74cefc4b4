"""Security headers on every response; JSON logs that never hold a secret."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.types import Receive, Scope, Send

from offer_service.app import OfferApp, create_app
from offer_service.exceptions import StoreUnavailable
from offer_service.settings import Settings
from offer_service.web.telemetry import (
    API_CSP,
    BUCKETS,
    SECURITY_HEADERS,
    JsonFormatter,
    Metrics,
    redact,
    with_security_headers,
)
from tests.conftest import LiveServer


def test_every_response_carries_the_security_headers(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        for r in (
            c.get("/healthz"),
            c.get("/v1/offers", params={"key": "pk_demo", "surface": "cart", "items": "cam-x100"}),
            c.get("/v1/nope"),
            c.get("/v1/admin/catalog"),
        ):
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["referrer-policy"] == "strict-origin-when-cross-origin"
            assert "default-src 'none'" in r.headers["content-security-policy"]
            assert "access-control-allow-credentials" not in r.headers


def test_a_page_keeps_its_own_policy_and_gets_the_rest() -> None:
    plain = [(b"content-type", b"application/json")]
    assert with_security_headers(plain) == [*plain, *SECURITY_HEADERS, API_CSP]
    page = [
        (b"Content-Security-Policy", b"default-src 'self'"),
        (b"x-frame-options", b"SAMEORIGIN"),
    ]
    out = with_security_headers(page)
    assert out[:2] == page
    assert [name for name, _ in out[2:]] == [
        name for name, _ in SECURITY_HEADERS if name != b"x-frame-options"
    ]


def test_latency_lands_in_the_first_bucket_at_or_above_it() -> None:
    metrics = Metrics()
    for seconds in (0.0005, BUCKETS[0], 0.0011, BUCKETS[-1], 99.0):
        metrics.observe("/v1/offers", "GET", 200, seconds)
    counts = metrics.latency["/v1/offers"]
    assert counts[0] == 2 and counts[1] == 1 and counts[len(BUCKETS) - 1] == 1
    assert counts[-1] == 1 and sum(counts) == 5
    assert 'le="+Inf"} 5' in metrics.render()


def test_secrets_are_redacted_from_log_lines() -> None:
    token = "eyJ2IjoxLCJraWQiOiJrMSJ9aaaaaaa.c2lnbmF0dXJlc2lnbmF0dXJlc2ln"
    text = (
        "Bearer sk_nNv7XXqJYDp4Z4PGGl7GBm4Ou4LeC7 whsec_WpmDcfVhXMuTcZkgNQJ9wDVa "
        f"token={token} order_token={'ab' * 32} product sd-128"
    )
    out = redact(text)
    assert "sk_nNv7" not in out and "whsec_Wpm" not in out
    assert token not in out and "ab" * 32 not in out
    assert "product sd-128" in out


def test_log_lines_are_json_with_the_request_id() -> None:
    record = logging.LogRecord(
        "offer_service", logging.ERROR, __file__, 1, "boom sk_abcdefghijkl", None, None
    )
    record.request_id = "req_1"
    line = orjson.loads(JsonFormatter().format(record))
    assert line["level"] == "error"
    assert line["request_id"] == "req_1"
    assert line["message"] == "boom [redacted]"


@contextlib.asynccontextmanager
async def _started(tmp_path: Path) -> AsyncIterator[tuple[OfferApp, httpx.AsyncClient]]:
    """The app over httpx's ASGI transport, started and its stack built."""
    app = create_app(Settings(store_url=f"sqlite:///{tmp_path}/offers.db"))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://offers.test") as c,
    ):
        assert (await c.get("/healthz")).status_code == 200
        yield app, c


@pytest.mark.anyio
async def test_an_unhandled_error_is_a_json_500_on_the_hot_route_and_on_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(key: str) -> None:
        raise RuntimeError(f"lookup of {key} broke")

    async with _started(tmp_path) as (app, c):
        stack = app.middleware_stack
        assert stack is not None
        through_stack: list[str] = []

        async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
            through_stack.append(f"{scope['method']} {scope['path']}")
            await stack(scope, receive, send)

        monkeypatch.setattr(app, "middleware_stack", recorded)
        monkeypatch.setattr(app.state.engine, "store_by_key", broken)
        hot = await c.get("/v1/offers", params={"key": "pk_x", "surface": "cart", "items": "a"})
        events = await c.post("/v1/events", json={"key": "pk_x", "events": []})
        routed = await c.options("/v1/offers", params={"key": "pk_x"})  # the CORS preflight
        for r in (hot, events, routed):
            assert r.status_code == 500
            assert r.json()["error"]["code"] == "internal_error"
            assert "broke" not in r.text and "pk_x" not in r.text
            assert r.headers["x-request-id"].startswith("req_")
            assert r.headers["x-frame-options"] == "DENY"
            assert "default-src 'none'" in r.headers["content-security-policy"]
        # The hot routes skipped Starlette's stack (its ServerErrorMiddleware); the routed one not.
        assert through_stack == ["OPTIONS /v1/offers"]
        text = (await c.get("/metrics")).text
        assert 'route="/v1/offers",method="GET",status="500"} 1' in text
        assert 'route="/v1/events",method="POST",status="500"} 1' in text
        assert 'route="/v1/offers",method="OPTIONS",status="500"} 1' in text


def test_the_hot_route_sends_each_header_once(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        for _ in range(2):  # on a fresh server the first request builds the stack
            r = c.get(
                "/v1/offers",
                params={"key": "pk_demo", "surface": "cart", "items": "cam-x100"},
                headers={"X-Request-Id": "hot-1", "Origin": "http://localhost:8000"},
            )
            assert r.status_code == 200 and r.headers["x-request-id"] == "hot-1"
            names = [name.lower() for name, _ in r.headers.raw]
            assert len(names) == len(set(names))
            assert {name for name, _ in (*SECURITY_HEADERS, API_CSP)} <= set(names)


@pytest.mark.anyio
async def test_the_hot_routes_answer_an_unreachable_store_as_the_app_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(key: str) -> None:
        raise StoreUnavailable("the store is down")

    async with _started(tmp_path) as (app, c):
        monkeypatch.setattr(app.state.engine, "store_by_key", unreachable)
        answers = [
            await c.get("/v1/offers", params={"key": "pk_x", "surface": "cart", "items": "a"}),
            await c.post("/v1/events", json={"key": "pk_x", "events": []}),
            await c.post("/v1/offers", json={"key": "pk_x", "surface": "cart", "items": []}),
        ]
        for r in answers:
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "store_unavailable"
            assert r.headers["retry-after"] == "1"
            assert r.headers["x-frame-options"] == "DENY"
