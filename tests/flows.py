"""Shopper and merchant flows shared by the accept, decline, events and webhook tests: orders on
the demo store, thank-you offers, accepts, and reading or re-encoding offer tokens."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from offer_service.domain.policy import RateLimits
from offer_service.domain.records import SigningKey, StoreRecord
from offer_service.storage import open_store
from offer_service_tools.demo import CATALOG, DEMO_PUBLISHABLE_KEY, DEMO_SECRET_KEY

PK = DEMO_PUBLISHABLE_KEY
ADMIN = {"Authorization": f"Bearer {DEMO_SECRET_KEY}"}
PRICES = {p.id: p.price for p in CATALOG}
FAMILIES = {p.id: p.family for p in CATALOG}


# The tests send hundreds of browser requests and events a second from one address; rate
# limiting and rate flags are not what they test, so where the store has limits they are raised
# out of the way.
UNLIMITED = RateLimits.lifted().model_dump()


def set_rules(
    client: httpx.Client, headers: dict[str, str] | None = None, **changes: Any
) -> dict[str, Any]:
    """PUT /v1/admin/rules replaces every rule: read them, change some, write them back."""
    headers = headers or ADMIN
    r = client.get("/v1/admin/rules", headers=headers)
    assert r.status_code == 200, r.text
    rules: dict[str, Any] = {**r.json(), **changes}
    if "rate_limits" in rules:
        rules["rate_limits"] = {**rules["rate_limits"], **UNLIMITED}
    r = client.put("/v1/admin/rules", json=rules, headers=headers)
    assert r.status_code == 200, r.text
    return rules


def copy_demo_catalog(client: httpx.Client, secret_key: str) -> None:
    """Put the demo store's catalog into another store (of `secret_key`)."""
    catalog = client.get("/v1/admin/catalog", params={"limit": 1000}, headers=ADMIN).json()
    r = client.put(
        "/v1/admin/catalog",
        json=catalog["products"],
        headers={"Authorization": f"Bearer {secret_key}"},
    )
    assert r.status_code == 200, r.text


def order_json(
    order_id: str, products: list[str], *, minutes_ago: float = 0, customer_id: str | None = None
) -> dict[str, Any]:
    placed = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {
        "id": order_id,
        "placed_at": placed.isoformat().replace("+00:00", "Z"),
        "currency": "USD",
        "customer_id": customer_id or f"cust-{order_id}",
        "lines": [{"product_id": p, "quantity": 1, "price": PRICES[p]} for p in products],
    }


def place_order(
    client: httpx.Client,
    order_id: str,
    products: list[str],
    *,
    minutes_ago: float = 0,
    headers: dict[str, str] | None = None,
) -> str:
    """Send the order as the merchant's backend does; its order token."""
    order = order_json(order_id, products, minutes_ago=minutes_ago)
    r = client.post("/v1/admin/orders", json=[order], headers=headers or ADMIN)
    assert r.status_code == 200, r.text
    token: str = r.json()["order_tokens"][order_id]
    return token


def thank_you_offers(
    client: httpx.Client, order_id: str, order_token: str, limit: int = 2, key: str = PK
) -> list[dict[str, Any]]:
    r = client.get(
        "/v1/offers",
        params={
            "key": key,
            "surface": "thank_you",
            "order_id": order_id,
            "order_token": order_token,
            "limit": limit,
        },
    )
    assert r.status_code == 200, r.text
    offers: list[dict[str, Any]] = r.json()["offers"]
    return offers


def order_with_offers(
    client: httpx.Client, order_id: str, products: list[str] | None = None, **kw: Any
) -> tuple[str, list[dict[str, Any]]]:
    token = place_order(client, order_id, products or ["cam-x100"], **kw)
    offers = thank_you_offers(client, order_id, token)
    assert offers, f"the demo store made no thank-you offer for {order_id}"
    return token, offers


def accept(
    client: httpx.Client,
    token: str,
    key: str | None,
    quantity: int = 1,
    pk: str = PK,
    timeout: float = 30,
) -> httpx.Response:
    headers = {} if key is None else {"Idempotency-Key": key}
    return client.post(
        "/v1/accept",
        json={"key": pk, "token": token, "quantity": quantity},
        headers=headers,
        timeout=timeout,
    )


def send_accept(url: str, key: str, body: bytes) -> tuple[int, bytes]:
    """POST /v1/accept with a raw body, from any thread or process: (status, body)."""
    r = httpx.post(
        f"{url}/v1/accept",
        content=body,
        headers={"Idempotency-Key": key, "Content-Type": "application/json"},
        timeout=30,
    )
    return r.status_code, r.content


def error_code(r: httpx.Response) -> str:
    try:
        code: str = r.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return f"<no error code: {r.status_code} {r.text[:200]}>"
    return code


def read_store(store_url: str, store_id: str) -> StoreRecord:
    async def run() -> StoreRecord:
        store = open_store(store_url)
        await store.open()
        try:
            record = await store.get_store(store_id)
        finally:
            await store.close()
        assert record is not None
        return record

    return asyncio.run(run())


def signing_keys(store_url: str, store_id: str) -> tuple[SigningKey, ...]:
    return read_store(store_url, store_id).signing_keys


# -- offer tokens, taken apart the way an attacker would ----------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_payload(token: str) -> dict[str, Any]:
    body, _, _ = token.partition(".")
    payload: dict[str, Any] = orjson.loads(unb64(body))
    return payload


def reencode(payload: dict[str, Any], signature_part: str) -> str:
    """`payload` re-encoded, carrying someone else's signature."""
    return f"{b64(orjson.dumps(payload))}.{signature_part}"


def now_s() -> int:
    return int(time.time())
