"""The simulator's plumbing: the service's API over httpx, keep-alive and bounded concurrency."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Iterable
from types import TracebackType
from typing import Any, TypeVar

import httpx
import orjson

T = TypeVar("T")
RETRIES = 8
# Orders per POST: at most the ingest's incremental-affinity batch (a bigger one recounts all).
ORDERS_PER_POST = 500
# A report over a long run takes a while; nothing else comes near. No wait for a pooled
# connection: a request only reaches a pool that has one free (see `Api.__aenter__`).
TIMEOUT_S = 120.0
TIMEOUTS = {"connect": TIMEOUT_S, "read": TIMEOUT_S, "write": TIMEOUT_S, "pool": None}
# httpcore's pool checks every one of its connections each time a request starts or ends, so a
# pool of n connections costs O(n) per request: several small pools cost less than one large
# one (one pool of 32 spent most of the client's CPU there).
PER_POOL = 4
# A kept-alive connection the server closed meanwhile fails like this; every call the simulator
# makes is idempotent (orders by id, accepts by Idempotency-Key), so it is sent again once.
STALE_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class SimulationError(RuntimeError):
    """The service answered something a well-behaved client cannot carry on from."""


class Api:
    """The service's API as the simulated shoppers and the merchant's backend use it."""

    def __init__(self, url: str, publishable_key: str, secret_key: str, concurrency: int) -> None:
        self.url = url.rstrip("/")
        self.pk = publishable_key
        self.admin_headers = {"Authorization": f"Bearer {secret_key}"}
        self._concurrency = concurrency
        self._pools: list[httpx.AsyncHTTPTransport] = []
        self._free: asyncio.Queue[httpx.AsyncHTTPTransport] = asyncio.Queue()

    async def __aenter__(self) -> Api:
        # Each pool is queued in `_free` once per connection it may open: a request takes a
        # pool with a connection to spare, and at most `concurrency` requests are in flight.
        shards = max(1, -(-self._concurrency // PER_POOL))
        tls = ssl.create_default_context()  # one for all pools: loading the CAs takes a while
        for shard in range(shards):
            size = len(range(shard, self._concurrency, shards))
            limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
            pool = httpx.AsyncHTTPTransport(limits=limits, verify=tls)
            self._pools.append(pool)
            for _ in range(size):
                self._free.put_nowait(pool)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for pool in self._pools:
            await pool.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One exchange through httpx's transport: the simulator is mostly requests, and
        `httpx.AsyncClient`'s layers (URL merging, cookies, auth, redirects, its User-Agent,
        which the service counts as a bot's) cost it half as much CPU again, for nothing it uses."""
        assert self._pools, "use `async with Api(...)`"
        timeout = {"timeout": TIMEOUTS}
        request = httpx.Request(method, self.url + path, extensions=timeout, **kwargs)
        pool = await self._free.get()
        try:
            try:
                response = await pool.handle_async_request(request)
            except STALE_CONNECTION:
                response = await pool.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
            return response
        finally:
            self._free.put_nowait(pool)

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call; waits out 429 (Retry-After) and 503 answers."""
        if "json" in kwargs:  # orjson: encoding orders and events is much of the client's work
            kwargs["content"] = orjson.dumps(kwargs.pop("json"))
            kwargs["headers"] = {"Content-Type": "application/json", **kwargs.get("headers", {})}
        for attempt in range(RETRIES):
            response = await self._send(method, path, **kwargs)
            if response.status_code not in (429, 503):
                return response
            await asyncio.sleep(float(response.headers.get("retry-after", "0.2")) * (attempt + 1))
        return response

    async def expect(self, status: int, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.request(method, path, **kwargs)
        if response.status_code != status:
            raise SimulationError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return orjson.loads(response.content)

    @staticmethod
    async def gather(calls: Iterable[Awaitable[T]]) -> list[T]:
        return list(await asyncio.gather(*calls))

    # the merchant's backend (secret key)

    async def catalog(self) -> list[dict[str, Any]]:
        products: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
            page = await self.expect(
                200, "GET", "/v1/admin/catalog", params=params, headers=self.admin_headers
            )
            products.extend(page["products"])
            cursor = page["next_cursor"]
            if not cursor or len(products) >= 10_000:
                return products

    async def rules(self) -> dict[str, Any]:
        rules: dict[str, Any] = await self.expect(
            200, "GET", "/v1/admin/rules", headers=self.admin_headers
        )
        return rules

    async def put_rules(self, rules: dict[str, Any]) -> None:
        await self.expect(200, "PUT", "/v1/admin/rules", json=rules, headers=self.admin_headers)

    async def orders(self, orders: list[dict[str, Any]]) -> dict[str, str]:
        """Record orders; their order tokens by id."""
        tokens: dict[str, str] = {}
        for start in range(0, len(orders), ORDERS_PER_POST):
            batch = orders[start : start + ORDERS_PER_POST]
            body = await self.expect(
                200, "POST", "/v1/admin/orders", json=batch, headers=self.admin_headers
            )
            if body["rejected"]:
                raise SimulationError(f"orders rejected: {body['rejected'][:3]}")
            tokens.update(body["order_tokens"])
        return tokens

    async def returns(self, order_id: str, product_ids: list[str]) -> None:
        await self.expect(
            200,
            "POST",
            "/v1/admin/returns",
            json={"order_id": order_id, "product_ids": product_ids},
            headers=self.admin_headers,
        )

    async def report(self, since_ms: int, until_ms: int) -> dict[str, Any]:
        report: dict[str, Any] = await self.expect(
            200,
            "GET",
            "/v1/admin/metrics",
            params={"from": str(since_ms), "to": str(until_ms)},
            headers=self.admin_headers,
        )
        return report

    # the shopper's browser (publishable key)

    async def offers(
        self, surface: str, anchor: tuple[str, ...], visitor_id: str | None = None
    ) -> dict[str, Any]:
        params = {"key": self.pk, "surface": surface}
        params["product_id" if surface == "product_page" else "items"] = ",".join(anchor)
        if visitor_id:
            params["visitor_id"] = visitor_id
        body: dict[str, Any] = await self.expect(200, "GET", "/v1/offers", params=params)
        return body

    async def thank_you(self, order_id: str, order_token: str, visitor_id: str) -> dict[str, Any]:
        params = {
            "key": self.pk,
            "surface": "thank_you",
            "order_id": order_id,
            "order_token": order_token,
            "visitor_id": visitor_id,
        }
        body: dict[str, Any] = await self.expect(200, "GET", "/v1/offers", params=params)
        return body

    async def send_events(self, events: list[dict[str, Any]], per_batch: int) -> None:
        async def send(batch: list[dict[str, Any]]) -> None:
            body = await self.expect(
                202,
                "POST",
                "/v1/events",
                content=orjson.dumps({"key": self.pk, "events": batch}),
                headers={"Content-Type": "text/plain"},
            )
            if body["rejected"]:
                raise SimulationError(f"events rejected: {body['rejected'][:3]}")

        # Impressions first, as a shopper's beacons deliver them: a click the service receives
        # before its offer's impression is stored as invalid traffic (traffic.py).
        for part in (
            [e for e in events if e["type"] == "impression"],
            [e for e in events if e["type"] != "impression"],
        ):
            batches = [part[i : i + per_batch] for i in range(0, len(part), per_batch)]
            await self.gather(send(b) for b in batches)

    async def accept(self, token: str, idempotency_key: str) -> bool:
        response = await self.request(
            "POST",
            "/v1/accept",
            json={"key": self.pk, "token": token, "quantity": 1},
            headers={"Idempotency-Key": idempotency_key},
        )
        return response.status_code == 200
