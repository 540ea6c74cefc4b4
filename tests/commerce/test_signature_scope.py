"""Signatures are bound to their purpose: a captured charge call, or an inbound signature made for
one route or method, opens nothing else; reading or rotating a secret, and every admin read, needs
the Bearer secret key; a secret key revoked with grace 0 takes the webhook secrets with it. The
signer here is written from docs/api.md alone."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import Response

from offer_service_tools.charge_double import ChargeDouble, serving
from offer_service_tools.demo import DEMO_WEBHOOK_SECRET
from tests.conftest import LiveServer
from tests.flows import (
    ADMIN,
    accept,
    error_code,
    order_json,
    order_with_offers,
    read_store,
    set_rules,
)

STORE = "demo"

# Every admin write may be signed; nothing else may.
WRITES = [
    ("PUT", "/v1/admin/catalog"),
    ("POST", "/v1/admin/orders"),
    ("POST", "/v1/admin/returns"),
    ("PUT", "/v1/admin/rules"),
    ("POST", "/v1/admin/orders/o-sig/events"),
    ("POST", "/v1/admin/customers/c-sig/sms-consent"),
]
SECRET_ROUTES = [
    ("POST", "/v1/admin/webhook-secret/rotate"),
    ("POST", "/v1/admin/signing-key/rotate"),
    ("GET", "/v1/admin/feed-key"),
    ("POST", "/v1/admin/feed-key/rotate"),
    ("POST", "/v1/admin/publishable-key/rotate"),
    ("POST", "/v1/admin/secret-key/rotate"),  # last: it retires the key the test runs on
]
READS = [
    ("GET", "/v1/admin/catalog"),
    ("GET", "/v1/admin/rules"),
    ("GET", "/v1/admin/products/cam-x100/neighbors"),
    ("GET", "/v1/admin/metrics"),
    ("GET", "/v1/admin/customers/c-sig/sms-consent"),
    ("GET", "/v1/journeys/o-sig"),
    ("GET", "/dashboard"),
    ("GET", "/dashboard/report.csv"),
]


def inbound(secret: str, method: str, target: str, body: bytes, t: int | None = None) -> str:
    """`t=<unix>,v2=<hex HMAC-SHA256 of "<t>.<METHOD>.<path?query>.<body>">`."""
    t = int(time.time()) if t is None else t
    message = f"{t}.{method}.{target}.".encode() + body
    return f"t={t},v2={hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()}"


def outbound(secret: str, body: bytes, t: int | None = None) -> str:
    """What the service sends a charge endpoint: `t=<unix>,v1=<hex HMAC of "<t>.<body>">`."""
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def send(
    c: httpx.Client, method: str, target: str, body: bytes, signature: str, **headers: str
) -> httpx.Response:
    return c.request(
        method,
        target,
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Offer-Store": STORE,
            "X-Offer-Signature": signature,
            **headers,
        },
    )


@dataclass
class RecordingDouble(ChargeDouble):
    """The charge double, keeping each call as it came over the wire: body and signature."""

    wire: list[tuple[bytes, str]] = field(default_factory=list)

    async def endpoint(self, request: Request) -> Response:
        self.wire.append((await request.body(), request.headers.get("x-offer-signature", "")))
        return await super().endpoint(request)


@pytest.fixture
def double() -> Iterator[RecordingDouble]:
    recording = RecordingDouble(secrets=[DEMO_WEBHOOK_SECRET])
    with serving(recording):
        yield recording


@pytest.fixture
def client(demo_server: LiveServer) -> Iterator[httpx.Client]:
    with demo_server.client() as c:
        set_rules(c, holdout_share=0)
        r = c.post("/v1/admin/orders", json=[order_json("o-sig", ["cam-x100"])], headers=ADMIN)
        assert r.status_code == 200, r.text
        yield c


def assert_refused(r: httpx.Response, where: tuple[str, str]) -> None:
    assert r.status_code == 401, (where, r.status_code, r.text)


def test_a_captured_charge_call_opens_no_admin_route(
    demo_server: LiveServer, client: httpx.Client, double: RecordingDouble
) -> None:
    set_rules(client, charge_url=double.url)
    _, offers = order_with_offers(client, "o-captured")
    r = accept(client, offers[0]["token"], "key-captured")
    assert r.status_code == 200, r.text
    assert double.bad_signatures == 0 and double.charge_count == 1  # outbound v1 still verifies
    ((body, header),) = double.wire
    assert header.startswith("t=") and ",v1=" in header
    before = read_store(demo_server.store_url, STORE)
    for method, path in WRITES + SECRET_ROUTES + READS:
        assert_refused(send(client, method, path, body, header), (method, path))
        # The store id travels in the query string just as well: no difference.
        r = send(client, method, f"{path}?store_id={STORE}", body, header, **{"X-Offer-Store": ""})
        assert_refused(r, (method, path))
    after = read_store(demo_server.store_url, STORE)
    assert after.webhook_secrets == before.webhook_secrets
    assert after.signing_keys == before.signing_keys
    assert (after.secret_key, after.publishable_key) == (before.secret_key, before.publishable_key)
    assert after.rules == before.rules


def test_an_inbound_signature_verifies_only_for_its_own_method_and_target(
    client: httpx.Client,
) -> None:
    body = orjson.dumps({"order_id": "o-sig", "product_ids": ["cam-x100"]})
    header = inbound(DEMO_WEBHOOK_SECRET, "POST", "/v1/admin/returns", body)
    elsewhere = [
        ("POST", "/v1/admin/orders"),
        ("PUT", "/v1/admin/rules"),
        ("PUT", "/v1/admin/catalog"),
        ("POST", "/v1/admin/orders/o-sig/events"),
        ("POST", "/v1/admin/returns?currency=EUR"),  # the query string is signed too
    ]
    for method, target in elsewhere:
        assert_refused(send(client, method, target, body, header), (method, target))
    # The method is part of what is signed.
    put_signed = inbound(DEMO_WEBHOOK_SECRET, "PUT", "/v1/admin/returns", body)
    assert_refused(send(client, "POST", "/v1/admin/returns", body, put_signed), ("POST", "PUT"))
    r = send(client, "POST", "/v1/admin/returns", body, header)
    assert r.status_code == 200, r.text
    # A query string, when there is one, is signed as sent.
    catalog = orjson.dumps([])
    target = "/v1/admin/catalog?currency=EUR"
    r = send(client, "PUT", target, catalog, inbound(DEMO_WEBHOOK_SECRET, "PUT", target, catalog))
    assert r.status_code == 200, r.text


def test_secrets_and_reads_need_the_secret_key_not_a_signature(
    demo_server: LiveServer, client: httpx.Client
) -> None:
    before = read_store(demo_server.store_url, STORE)
    for method, target in SECRET_ROUTES + READS:
        body = b"" if method == "GET" else b"{}"
        # Signed every way a signer could: the inbound scheme for this very request, and the
        # outbound one; neither opens the route.
        both = (
            inbound(DEMO_WEBHOOK_SECRET, method, target, body)
            + ","
            + outbound(DEMO_WEBHOOK_SECRET, body).partition(",")[2]
        )
        for header in (both, inbound(DEMO_WEBHOOK_SECRET, method, target, body)):
            r = send(client, method, target, body, header)
            assert_refused(r, (method, target))
            assert error_code(r) == "secret_key_required", r.text
    assert read_store(demo_server.store_url, STORE) == before
    for method, target in READS + SECRET_ROUTES:
        body = b"" if method == "GET" else b"{}"
        r = client.request(method, target, content=body, headers=ADMIN)
        assert r.status_code == 200, (method, target, r.text)


def test_a_secret_key_revoked_with_grace_0_takes_the_webhook_secrets_it_could_read(
    client: httpx.Client,
) -> None:
    # Whoever holds the leaked key mints a webhook secret of their own with it...
    r = client.post("/v1/admin/webhook-secret/rotate", headers=ADMIN)
    assert r.status_code == 200, r.text
    minted = r.json()["webhook_secret"]
    # ...and the merchant revokes the key.
    r = client.post("/v1/admin/secret-key/rotate", json={"grace_seconds": 0}, headers=ADMIN)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    fresh = answer["webhook_secret"]
    assert fresh.startswith("whsec_") and fresh not in (minted, DEMO_WEBHOOK_SECRET)
    assert r.headers["cache-control"] == "no-store"

    def deliver(secret: str, order_id: str) -> httpx.Response:
        body = orjson.dumps([order_json(order_id, ["cam-x100"])])
        header = inbound(secret, "POST", "/v1/admin/orders", body)
        return send(client, "POST", "/v1/admin/orders", body, header)

    for n, old in enumerate((minted, DEMO_WEBHOOK_SECRET)):
        r = deliver(old, f"o-revoked-{n}")
        assert (r.status_code, error_code(r)) == (401, "bad_signature"), r.text
    r = deliver(fresh, "o-after")
    assert r.status_code == 200, r.text
    expected = hmac.new(fresh.encode(), f"{STORE}:o-after".encode(), hashlib.sha256).hexdigest()
    assert r.json()["order_tokens"]["o-after"] == expected
    assert client.get("/v1/admin/rules", headers=ADMIN).status_code == 401
    newest = {"Authorization": f"Bearer {answer['secret_key']}"}
    assert client.get("/v1/admin/rules", headers=newest).status_code == 200


def test_a_rotation_with_a_grace_period_keeps_the_webhook_secret(client: httpx.Client) -> None:
    r = client.post("/v1/admin/secret-key/rotate", json={"grace_seconds": 60}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert "webhook_secret" not in r.json()
    body = orjson.dumps([order_json("o-graced", ["cam-x100"])])
    header = inbound(DEMO_WEBHOOK_SECRET, "POST", "/v1/admin/orders", body)
    assert send(client, "POST", "/v1/admin/orders", body, header).status_code == 200
