"""The error contract: stable codes, human messages, the bad field, never a stack trace."""

from __future__ import annotations

import time

from offer_service.domain.signatures import inbound_signature
from tests.conftest import LiveServer


def test_missing_key_is_401(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        r = c.get("/v1/offers", params={"surface": "cart", "items": "cam-x100"})
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "missing_key"
        assert r.json()["error"]["message"]


def test_unknown_key_is_401_on_browser_and_admin_routes(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        r = c.get("/v1/offers", params={"key": "pk_nope", "surface": "cart", "items": "x"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unknown_key"
        r = c.get("/v1/admin/catalog", headers={"Authorization": "Bearer sk_nope"})
        assert r.status_code == 401


def test_the_key_travels_in_a_header_too(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        r = c.get(
            "/v1/offers",
            params={"surface": "cart", "items": "cam-x100"},
            headers={"X-Offer-Key": "pk_demo"},
        )
        assert r.status_code == 200


def test_a_publishable_key_on_an_admin_route_is_403(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        r = c.get("/v1/admin/catalog", headers={"Authorization": "Bearer pk_demo"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "secret_key_required"


def test_admin_without_any_key_is_401(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        assert c.put("/v1/admin/catalog", json=[]).status_code == 401


def test_a_body_over_the_limit_is_413(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        big = (
            b'{"key":"pk_demo","surface":"cart","items":['
            + b'{"product_id":"x"},' * 5000
            + b'{"product_id":"y"}]}'
        )
        r = c.post("/v1/offers", content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_a_chunked_body_over_the_limit_is_413(demo_server: LiveServer) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(100):
            yield b"x" * 1024

    with demo_server.client() as c:
        r = c.post("/v1/offers", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413


def test_validation_errors_list_every_bad_field(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        r = c.post(
            "/v1/offers",
            json={
                "key": "pk_demo",
                "surface": "cart",
                "items": [{"product_id": "a"}, {"product_id": "b", "quantity": 0}],
                "limit": -1,
            },
        )
        assert r.status_code == 422
        fields = {d["field"] for d in r.json()["error"]["details"]}
        assert fields == {"items[1].quantity", "limit"}


def test_malformed_json_is_422_not_500(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        r = c.post("/v1/offers", content=b"{nope", headers={"X-Offer-Key": "pk_demo"})
        assert r.status_code == 422
        assert "Traceback" not in r.text


def test_unknown_surface_is_422(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        r = c.get("/v1/offers", params={"key": "pk_demo", "surface": "homepage"})
        assert r.status_code == 422
        assert r.json()["error"]["details"][0]["field"] == "surface"


def test_unknown_route_is_a_json_404(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        r = c.get("/v1/nothing-here")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_every_response_carries_a_request_id_and_echoes_the_callers(
    demo_server: LiveServer,
) -> None:
    with demo_server.client() as c:
        assert c.get("/healthz").headers["x-request-id"].startswith("req_")
        r = c.get(
            "/v1/offers",
            params={"key": "pk_demo", "surface": "cart", "items": "cam-x100"},
            headers={"X-Request-Id": "abc-123"},
        )
        assert r.headers["x-request-id"] == "abc-123"
        assert r.json()["request_id"] == "abc-123"
        assert c.get("/nope", headers={"X-Request-Id": "e-1"}).headers["x-request-id"] == "e-1"


def test_health_readiness_and_metrics(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json() == {"status": "ok"}
        c.get("/v1/offers", params={"key": "pk_demo", "surface": "cart", "items": "cam-x100"})
        text = c.get("/metrics").text
        assert 'offer_http_requests_total{route="/v1/offers",method="GET",status="200"}' in text


def test_signed_admin_writes_are_verified(demo_server: LiveServer) -> None:
    body = b'{"order_id": "demo-00001", "product_ids": ["gift-wrap"]}'
    with demo_server.client() as c:
        now = int(time.time())
        good = inbound_signature("whsec_demo", "POST", "/v1/admin/returns", body, now)
        headers = {"X-Offer-Store": "demo", "Content-Type": "application/json"}
        r = c.post(
            "/v1/admin/returns", content=body, headers={**headers, "X-Offer-Signature": good}
        )
        assert r.status_code == 200, r.text
        stale = inbound_signature("whsec_demo", "POST", "/v1/admin/returns", body, now - 301)
        r = c.post(
            "/v1/admin/returns", content=body, headers={**headers, "X-Offer-Signature": stale}
        )
        assert r.status_code == 401 and r.json()["error"]["code"] == "bad_signature"
        forged = inbound_signature("whsec_wrong", "POST", "/v1/admin/returns", body, now)
        r = c.post(
            "/v1/admin/returns", content=body, headers={**headers, "X-Offer-Signature": forged}
        )
        assert r.status_code == 401
        # Bearer plus a bad signature: the signature still counts.
        r = c.post(
            "/v1/admin/returns",
            content=body,
            headers={"Authorization": "Bearer sk_demo", "X-Offer-Signature": forged},
        )
        assert r.status_code == 401


def test_an_event_with_an_object_for_its_type_is_rejected_not_a_500(
    demo_server: LiveServer,
) -> None:
    # Found by schemathesis: an unhashable "type" used to crash the batch.
    with demo_server.client() as c:
        r = c.post(
            "/v1/events",
            json={"key": "pk_demo", "events": [{"id": "0", "type": {}, "token": "x", "ts": 0}]},
        )
        assert r.status_code == 202
        assert r.json()["rejected"] == [
            {
                "index": 0,
                "code": "invalid_event",
                "field": "type",
                "message": "type must be one of accept, add, click, decline, impression, view.",
            }
        ]
