"""GET and POST /v1/offers."""

from __future__ import annotations

from urllib.parse import parse_qsl

from pydantic import ValidationError
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from offer_service.domain.records import StoreRecord
from offer_service.domain.surfaces import SURFACES, Surface
from offer_service.domain.traffic import classify
from offer_service.serving.engine import Engine
from offer_service.serving.ratelimit import RateLimited
from offer_service.types import whole_in
from offer_service.web.endpoints.common import (
    ANSWERED_ERRORS,
    BROWSER_BODY_LIMIT,
    admit_now,
    body_key,
    browser_store,
    browser_store_now,
    client_address,
    cors_headers,
    engine,
    error_response,
    origin_allowed,
    publishable_key,
    publishable_now,
    publishable_store,
    read_body,
)
from offer_service.web.models import (
    MAX_EXCLUDE,
    MAX_ITEMS,
    CartItem,
    OfferQuery,
    OffersRequest,
    validation_failed,
)
from offer_service.web.telemetry import RouteAnswer

INVALID = "The offers request is invalid."
PREFLIGHT_HEADERS = "Content-Type, Idempotency-Key, X-Offer-Key, X-Request-Id"


MAX_ID = 128
_SURFACE_BY_VALUE = {s.value: s for s in Surface}
_FIXED_HEADERS = [(b"vary", b"Origin"), (b"cache-control", b"no-store")]
_JSON = (b"content-type", b"application/json")
_READ_HEADERS = (b"origin", b"x-offer-key")
_NO_HEADERS: dict[bytes, str | None] = dict.fromkeys(_READ_HEADERS)
# The bytes of a plain query: printable ASCII but space, `%` (an escape) and `+` (a space).
_PLAIN = bytes(b for b in range(0x21, 0x7F) if b not in b"%+")


class GetOffers:
    """GET /v1/offers, the hot path, as a plain ASGI app (a fast route: see dispatch.py).

    A query made only of plain `name=value` pairs on a pre-purchase surface (what the snippet
    sends) is checked by `fast_query` field by field against the same limits as `OffersRequest`;
    anything else (escapes, blanks, repeated names, post-purchase surfaces, a value out of
    bounds) is parsed and validated by the model (`offers_request`), errors included. Either way
    the request is answered without building a Request or a Response.
    """

    def __init__(self, engine: Engine) -> None:
        # The app's own (app.state.engine), held to spare a lookup.
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw: bytes = scope["query_string"]
        fast = fast_query(raw)
        wanted = _read_headers(scope)
        query_key = fast.key if fast is not None else QueryParams(raw).get("key")
        key = publishable_key(query_key, wanted[b"x-offer-key"])
        client = client_address(scope)
        origin = wanted[b"origin"]
        record: StoreRecord | None = None
        e = self.engine
        try:
            record = browser_store_now(e, key, client) if key else None
            if record is None:
                record = await browser_store(e, key, client)
            # A bad key is a 401 before a bad query is a 422.
            req = fast if fast is not None else offers_request(raw)
            await _answer(e, scope, send, record, req, origin)
        except ANSWERED_ERRORS as exc:
            await error_response(exc, cors_headers(origin, record))(scope, receive, send)

    def now(self, scope: Scope, client: str, request_id: str) -> RouteAnswer | None:
        """The 200 of this request when every piece of it is held in this process (a simple
        query, the key's store, then as `Engine.offers_now`): its headers, body and surface.
        None when the request must be answered by `__call__` (anything to await, any error);
        then nothing of it was done or counted, but for a visitor's state read from a local
        store (held, for `__call__` to find). `client`: the client's address."""
        fast = fast_query(scope["query_string"])
        if fast is None:
            return None
        wanted = _read_headers(scope)
        key = publishable_key(fast.key, wanted[b"x-offer-key"])
        e = self.engine
        # The store's cache read is counted with the answer, as the rest of it is.
        record = publishable_now(e, key, count=False) if key else None
        if record is None:
            return None
        flag = classify(scope["headers"])
        try:
            body = e.offers_now(
                record, fast, request_id, flag, lambda: admit_now(e, record, client)
            )
        except RateLimited:
            return None  # not counted: `__call__` answers the 429
        if body is None:
            return None
        e.count_store_hit()
        return _headers(body, wanted[b"origin"], record), body, fast.surface._value_


class PostOffers:
    """POST /v1/offers: the same request as a JSON body, answered as GET answers it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        origin = request.headers.get("origin")
        record: StoreRecord | None = None
        try:
            raw = await read_body(request, BROWSER_BODY_LIMIT)
            try:
                req = OffersRequest.model_validate_json(raw or b"{}")
            except ValidationError as exc:
                # The key may be in the body: resolve the store first so a bad key is a 401.
                await publishable_store(request, body_key(raw))
                raise validation_failed(exc, INVALID) from None
            record = await publishable_store(request, req.key)
            await _answer(engine(request), scope, send, record, req, origin)
        except ANSWERED_ERRORS as exc:
            await error_response(exc, cors_headers(origin, record))(scope, receive, send)


def _read_headers(scope: Scope) -> dict[bytes, str | None]:
    """The Origin and X-Offer-Key headers: the first of each, as Starlette's Headers.get would
    answer."""
    wanted = _NO_HEADERS.copy()
    for name, value in scope["headers"]:
        if name in wanted and wanted[name] is None:
            wanted[name] = value.decode("latin-1")
    return wanted


async def _answer(
    e: Engine,
    scope: Scope,
    send: Send,
    record: StoreRecord,
    req: OffersRequest | OfferQuery,
    origin: str | None,
) -> None:
    """The 200 of GET and POST /v1/offers."""
    flag = classify(scope["headers"])  # a bot or a prefetch: its exposure is flagged
    # The metrics' label; `_value_`, an attribute, not `.value`, a property costing 0.2 us.
    scope["state"]["surface"] = req.surface._value_
    body = await e.offers(record, req, scope["state"]["request_id"], flag)
    headers = _headers(body, origin, record)
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _headers(body: bytes, origin: str | None, record: StoreRecord) -> list[tuple[bytes, bytes]]:
    """The headers of a 200 of /v1/offers."""
    headers = [*_FIXED_HEADERS, (b"content-length", str(len(body)).encode()), _JSON]
    if origin and origin_allowed(origin, record.rules.allowed_origins):
        headers.append((b"access-control-allow-origin", origin.encode("latin-1")))
    return headers


def offers_request(raw: bytes) -> OffersRequest | OfferQuery:
    """The request of a GET /v1/offers query string: `fast_query`'s when it answers, else the
    model's (ValidationFailed, a 422, when the query is invalid)."""
    fast = fast_query(raw)
    if fast is not None:
        return fast
    try:
        return OffersRequest.model_validate(dict(parse_qsl(raw.decode("latin-1"))))
    except ValidationError as exc:
        raise validation_failed(exc, INVALID) from None


def fast_query(raw: bytes) -> OfferQuery | None:
    """`offers_request`'s answer when the query is simple enough to check without the model:
    every parameter a plain `name=value` (printable ASCII without escapes, spaces or `+`, no
    blank value, no name twice) and every field within the model's limits (`_checked`). None
    when the model must decide."""
    # One pass: what is left once every allowed byte is deleted must be nothing.
    if not raw or raw.translate(None, _PLAIN):
        return None
    text = raw.decode("ascii")
    query: dict[str, str] = {}
    for pair in text.split("&"):
        name, eq, value = pair.partition("=")
        if not eq or not name or not value or name in query:
            return None
        query[name] = value
    return _checked(query)


def _ids(value: str, most: int) -> list[str] | None:
    parts = [p for p in value.split(",") if p]
    if not parts or len(parts) > most or any(len(p) > MAX_ID for p in parts):
        return None
    return parts


def _checked(query: dict[str, str]) -> OfferQuery | None:
    """The request of a simple query on a pre-purchase surface, when every field is within
    OffersRequest's limits; None when the model must decide (and maybe explain a 422)."""
    surface = _SURFACE_BY_VALUE.get(query.get("surface", ""))
    if surface is None or "order_id" in query or "order_token" in query:
        return None
    anchor = SURFACES[surface].anchor
    if anchor not in ("product", "items"):
        return None
    product_id = query.get("product_id")
    if (product_id is None and anchor == "product") or len(product_id or "") > MAX_ID:
        return None
    items: list[CartItem] | None = None
    if "items" in query:
        ids = _ids(query["items"], MAX_ITEMS)
        if ids is None:
            return None
        items = [CartItem.model_construct(product_id=i) for i in ids]
    elif anchor == "items":
        return None
    visitor_id = query.get("visitor_id")
    customer_id = query.get("customer_id")
    if len(visitor_id or "") > MAX_ID or len(customer_id or "") > MAX_ID:
        return None
    limit: int | None = None
    if "limit" in query:
        limit = whole_in(query["limit"], 1, 1000)
        if limit is None:
            return None
    exclude: list[str] = []
    if "exclude" in query:
        ids = _ids(query["exclude"], MAX_EXCLUDE)
        if ids is None:
            return None
        exclude = ids
    return OfferQuery(
        surface,
        key=query.get("key"),
        product_id=product_id,
        items=items,
        visitor_id=visitor_id,
        customer_id=customer_id,
        limit=limit,
        exclude=exclude,
    )


async def preflight(request: Request) -> Response:
    """CORS preflight. The store is named by the `key` query parameter (the snippet sends it on
    every POST), so only that store's origins are answered."""
    record = None
    key = request.query_params.get("key")
    if key:
        record = await engine(request).store_by_key(key)
    headers = cors_headers(request.headers.get("origin"), record)
    if "Access-Control-Allow-Origin" in headers:
        headers.update(
            {
                "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                "Access-Control-Allow-Headers": PREFLIGHT_HEADERS,
                "Access-Control-Max-Age": "600",
            }
        )
    return Response(None, 204, headers=headers)
