"""The simulator's plumbing: the service's API over a small keep-alive HTTP/1.1 client (bounded
concurrency, retries on 429 and 503)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import orjson

T = TypeVar("T")
RETRIES = 8
# Orders per POST: at most the ingest's incremental-affinity batch (a bigger one recounts all).
ORDERS_PER_POST = 500


class SimulationError(RuntimeError):
    """The service answered something a well-behaved client cannot carry on from."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, head: bytes, body: bytes) -> tuple[Answer, bool]:
        """One request and its answer; True when the connection can be used again."""
        self.writer.write(head + body)
        await self.writer.drain()
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        raw = await self.reader.readuntil(b"\r\n\r\n")
        headers: dict[str, str] = {}
        for line in raw[:-4].split(b"\r\n"):
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while size := int((await self.reader.readuntil(b"\r\n")).strip(), 16):
                parts.append(await self.reader.readexactly(size + 2))
            await self.reader.readuntil(b"\r\n")
            content = b"".join(p[:-2] for p in parts)
        else:
            content = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return Answer(status, headers, content), headers.get("connection") != "close"

    def close(self) -> None:
        self.writer.close()


class Http:
    """A small keep-alive HTTP/1.1 client for one origin. The simulation spends most of its
    time making requests; this does one in a fraction of the CPU of a general-purpose client."""

    def __init__(self, base_url: str, size: int) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise SimulationError(f"the simulator speaks plain http://, not {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.authority = parts.netloc
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(size)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        content: bytes = b"",
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        if params:
            path = f"{path}?{urlencode(params)}"
        all_headers = {"Host": self.authority, **(headers or {})}
        if json is not None:
            content = orjson.dumps(json)
            all_headers.setdefault("Content-Type", "application/json")
        all_headers["Content-Length"] = str(len(content))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in all_headers.items()
        )
        raw_head = (head + "\r\n").encode("latin-1")
        async with self._slots:
            for attempt in range(2):
                reused = bool(self._idle)
                conn = self._idle.pop() if reused else await self._connect()
                try:
                    answer, keep = await conn.exchange(raw_head, content)
                except (ConnectionError, asyncio.IncompleteReadError):
                    conn.close()
                    # A kept-alive connection the server closed meanwhile: every call the
                    # simulator makes is idempotent, so it is sent again on a new one.
                    if reused and attempt == 0:
                        continue
                    raise
                if keep:
                    self._idle.append(conn)
                else:
                    conn.close()
                return answer
        raise AssertionError("unreachable")

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=2**20)
        return _Connection(reader, writer)

    async def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


class Api:
    """The service's API as the simulated shoppers and the merchant's backend use it."""

    def __init__(self, url: str, publishable_key: str, secret_key: str, concurrency: int) -> None:
        self.url = url.rstrip("/")
        self.pk = publishable_key
        self.admin_headers = {"Authorization": f"Bearer {secret_key}"}
        self._concurrency = concurrency
        self._http: Http | None = None

    async def __aenter__(self) -> Api:
        self._http = Http(self.url, self._concurrency)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._http is not None:
            await self._http.close()

    async def request(self, method: str, path: str, **kwargs: Any) -> Answer:
        """One call; waits out 429 (Retry-After) and 503 answers."""
        assert self._http is not None, "use `async with Api(...)`"
        for attempt in range(RETRIES):
            response = await self._http.request(method, path, **kwargs)
            if response.status not in (429, 503):
                return response
            await asyncio.sleep(float(response.headers.get("retry-after", "0.2")) * (attempt + 1))
        return response

    async def expect(self, status: int, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.request(method, path, **kwargs)
        if response.status != status:
            raise SimulationError(f"{method} {path}: {response.status} {response.text[:300]}")
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
        return response.status == 200
