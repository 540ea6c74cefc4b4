"""Signed admin writes (order and return webhooks): signature vectors, tolerance both ways, secret
rotation, and idempotent duplicate deliveries. The signer here is written from docs/api.md alone."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import time
from typing import Any

import httpx
import orjson
import pytest

from offer_service_tools.demo import DEMO_WEBHOOK_SECRET
from tests.conftest import LiveServer
from tests.flows import ADMIN, PK, error_code, order_json

STORE = "demo"


def signature(
    secret: str, body: bytes, t: int, method: str = "POST", target: str = "/v1/admin/orders"
) -> str:
    """`t=<unix>,v2=<hex HMAC-SHA256 of "<t>.<METHOD>.<path?query>.<body>">`."""
    message = f"{t}.{method}.{target}.".encode() + body
    return f"t={t},v2={hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()}"


def signed_post(
    client: httpx.Client,
    path: str,
    body: bytes,
    header: str | None,
    store: str | None = STORE,
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["X-Offer-Signature"] = header
    if store is not None:
        headers["X-Offer-Store"] = store
    return client.post(path, content=body, headers=headers)


def orders_body(order_id: str, products: list[str] | None = None) -> bytes:
    return orjson.dumps([order_json(order_id, products or ["cam-x100", "sd-128"])])


def deliver(
    client: httpx.Client, body: bytes, secret: str = DEMO_WEBHOOK_SECRET, t: int | None = None
) -> httpx.Response:
    t = math.floor(time.time()) if t is None else t
    return signed_post(client, "/v1/admin/orders", body, signature(secret, body, t))


def assert_unauthorized(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert error_code(r) == "bad_signature", r.text


def baskets(client: httpx.Client, product_id: str = "cam-x100") -> tuple[int, dict[str, int]]:
    r = client.get(
        f"/v1/admin/products/{product_id}/neighbors", params={"limit": 200}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    body = r.json()
    return body["baskets"], {n["product_id"]: n["pair_count"] for n in body["neighbors"]}


@pytest.fixture
def client(demo_server: LiveServer) -> Any:
    with demo_server.client() as c:
        yield c


def test_a_correctly_signed_order_webhook_is_imported(client: httpx.Client) -> None:
    body = orders_body("wh-ok")
    r = deliver(client, body)
    assert r.status_code == 200, r.text
    assert r.json()["imported"] == 1
    token = r.json()["order_tokens"]["wh-ok"]
    offers = client.get(
        "/v1/offers",
        params={"key": PK, "surface": "thank_you", "order_id": "wh-ok", "order_token": token},
    )
    assert offers.status_code == 200, offers.text


def test_a_reserialised_body_with_the_original_signature_is_401(client: httpx.Client) -> None:
    order = order_json("wh-reser", ["cam-x100"])
    body = orjson.dumps([order])
    header = signature(DEMO_WEBHOOK_SECRET, body, math.floor(time.time()))
    variants = [
        json.dumps([order]).encode(),  # ", " and ": " separators
        json.dumps([order], indent=2).encode(),
        json.dumps([order], sort_keys=True, separators=(",", ":")).encode(),
        body + b"\n",
        b" " + body,
    ]
    for variant in variants:
        assert variant != body and json.loads(variant) == [order]
        assert_unauthorized(signed_post(client, "/v1/admin/orders", variant, header))
    # None of them was imported: the genuine delivery is the first.
    r = signed_post(client, "/v1/admin/orders", body, header)
    assert r.status_code == 200, r.text
    assert (r.json()["imported"], r.json()["duplicates"]) == (1, 0)


def test_the_timestamp_tolerance_is_300_seconds_both_ways(client: httpx.Client) -> None:
    def vector(n: int, offset: int) -> httpx.Response:
        # floor/ceil so the real distance is never smaller than `offset` when it must be refused,
        # and never larger than it when it must pass.
        now = time.time()
        if abs(offset) > 300:
            t = math.floor(now) + offset if offset < 0 else math.ceil(now) + offset
        else:
            t = math.ceil(now) + offset if offset < 0 else math.floor(now) + offset
        return deliver(client, orders_body(f"wh-t-{n}"), t=t)

    assert_unauthorized(vector(0, -301))
    assert_unauthorized(vector(1, +301))
    assert_unauthorized(vector(2, -3600))
    assert_unauthorized(vector(3, +86400))
    for n, offset in ((4, -299), (5, +299), (6, 0)):
        r = vector(n, offset)
        assert r.status_code == 200, (offset, r.text)
        assert r.json()["imported"] == 1


def test_bad_signatures_are_401(client: httpx.Client) -> None:
    body = orders_body("wh-bad")
    t = math.floor(time.time())
    good = signature(DEMO_WEBHOOK_SECRET, body, t)
    bad_headers = [
        signature("whsec_wrong", body, t),
        signature(DEMO_WEBHOOK_SECRET, body, t + 1).replace(f"t={t + 1}", f"t={t}"),
        f"t={t},v2={'0' * 64}",
        f"t={t}",
        good.split(",")[1],
        "",
        "garbage",
        f"t={t},v2={good.rpartition('=')[2][:-1]}",
        f"t=abc,v2={good.rpartition('=')[2]}",
        # The same MAC under the outbound scheme's name, and an outbound signature of the body.
        good.replace(",v2=", ",v1="),
        f"t={t},v1="
        + hmac.new(
            DEMO_WEBHOOK_SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256
        ).hexdigest(),
    ]
    for header in bad_headers:
        assert_unauthorized(signed_post(client, "/v1/admin/orders", body, header))
    # A good signature naming another store, or no store at all, does not authenticate.
    assert signed_post(client, "/v1/admin/orders", body, good, store="st_nope").status_code == 401
    assert signed_post(client, "/v1/admin/orders", body, good, store=None).status_code == 401
    # Neither a signature nor a key.
    assert signed_post(client, "/v1/admin/orders", body, None).status_code == 401
    r = signed_post(client, "/v1/admin/orders", body, good)
    assert r.status_code == 200 and r.json()["imported"] == 1


def test_a_signed_request_with_the_secret_key_is_still_verified(client: httpx.Client) -> None:
    body = orders_body("wh-both")
    header = signature("whsec_wrong", body, math.floor(time.time()))
    r = client.post(
        "/v1/admin/orders",
        content=body,
        headers={"Content-Type": "application/json", "X-Offer-Signature": header, **ADMIN},
    )
    assert_unauthorized(r)


def test_after_a_rotation_the_new_and_the_previous_secret_verify(client: httpx.Client) -> None:
    r = client.post("/v1/admin/webhook-secret/rotate", headers=ADMIN)
    assert r.status_code == 200, r.text
    new = r.json()["webhook_secret"]
    assert isinstance(new, str) and new and new != DEMO_WEBHOOK_SECRET
    r = deliver(client, orders_body("wh-rot-new"), new)
    assert r.status_code == 200, r.text
    # Order tokens are made with the new secret from now on.
    expected = hmac.new(new.encode(), f"{STORE}:wh-rot-new".encode(), hashlib.sha256).hexdigest()
    assert r.json()["order_tokens"]["wh-rot-new"] == expected
    r = deliver(client, orders_body("wh-rot-old"), DEMO_WEBHOOK_SECRET)
    assert r.status_code == 200, r.text
    assert_unauthorized(
        deliver(client, orders_body("wh-rot-third"), "whsec_" + secrets.token_hex(16))
    )
    # An order token made with the previous secret still opens the order's offers.
    old_token = hmac.new(
        DEMO_WEBHOOK_SECRET.encode(), f"{STORE}:wh-rot-old".encode(), hashlib.sha256
    ).hexdigest()
    offers = client.get(
        "/v1/offers",
        params={
            "key": PK,
            "surface": "thank_you",
            "order_id": "wh-rot-old",
            "order_token": old_token,
        },
    )
    assert offers.status_code == 200, offers.text

    # The next rotation retires the original secret; the one before it keeps verifying.
    newer = client.post("/v1/admin/webhook-secret/rotate", headers=ADMIN).json()["webhook_secret"]
    assert newer not in (new, DEMO_WEBHOOK_SECRET)
    assert deliver(client, orders_body("wh-rot-2a"), newer).status_code == 200
    assert deliver(client, orders_body("wh-rot-2b"), new).status_code == 200
    assert_unauthorized(deliver(client, orders_body("wh-rot-2c"), DEMO_WEBHOOK_SECRET))


def test_rotation_needs_the_secret_key(client: httpx.Client) -> None:
    assert client.post("/v1/admin/webhook-secret/rotate").status_code == 401
    r = client.post("/v1/admin/webhook-secret/rotate", headers={"Authorization": f"Bearer {PK}"})
    assert r.status_code == 403, r.text
    # The original secret was not rotated away.
    assert deliver(client, orders_body("wh-still")).status_code == 200


def test_a_duplicate_delivery_is_idempotent_and_not_counted_twice(client: httpx.Client) -> None:
    n0, pairs0 = baskets(client)
    body = orders_body("wh-dup", ["cam-x100", "sd-128"])
    first = deliver(client, body)
    assert first.status_code == 200, first.text
    assert (first.json()["imported"], first.json()["duplicates"]) == (1, 0)
    n1, pairs1 = baskets(client)
    assert n1 == n0 + 1
    assert pairs1["sd-128"] == pairs0.get("sd-128", 0) + 1
    for _ in range(2):
        # A platform retrying: the same order JSON, signed again.
        again = deliver(client, body)
        assert again.status_code == 200, again.text
        assert (again.json()["imported"], again.json()["duplicates"]) == (0, 1)
    assert baskets(client) == (n1, pairs1)


def test_a_signed_return_webhook_is_accepted_and_verified(client: httpx.Client) -> None:
    assert deliver(client, orders_body("wh-ret", ["serum-30ml"])).status_code == 200
    body = orjson.dumps({"order_id": "wh-ret", "product_ids": ["serum-30ml"]})
    t = math.floor(time.time())
    path = "/v1/admin/returns"

    def signed(secret: str, at: int) -> str:
        return signature(secret, body, at, "POST", path)

    assert_unauthorized(signed_post(client, path, body, signed("whsec_wrong", t)))
    assert_unauthorized(signed_post(client, path, body, signed(DEMO_WEBHOOK_SECRET, t - 301)))
    # Signed for the orders route: not for this one.
    assert_unauthorized(signed_post(client, path, body, signature(DEMO_WEBHOOK_SECRET, body, t)))
    r = signed_post(client, path, body, signed(DEMO_WEBHOOK_SECRET, t))
    assert r.status_code == 200, r.text
