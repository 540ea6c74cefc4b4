"""GET and POST /v1/offers."""

from __future__ import annotations

from urllib.parse import parse_qsl

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from ..exceptions import ApiError
from ..models import OffersRequest, validation_failed
from ..storage.base import StoreRecord
from .common import (
    BROWSER_BODY_LIMIT,
    body_key,
    cors_headers,
    engine,
    error_response,
    publishable_store,
    read_body,
)

INVALID = "The offers request is invalid."
PREFLIGHT_HEADERS = "Content-Type, Idempotency-Key, X-Offer-Key, X-Request-Id"


async def get_offers(request: Request) -> Response:
    record: StoreRecord | None = None
    try:
        query = dict(parse_qsl(request.scope["query_string"].decode("latin-1")))
        record = await publishable_store(request)
        try:
            req = OffersRequest.model_validate(query)
        except ValidationError as exc:
            raise validation_failed(exc, INVALID) from None
        return await _answer(request, record, req)
    except ApiError as exc:
        return error_response(request, exc, record)


async def post_offers(request: Request) -> Response:
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
        return await _answer(request, record, req)
    except ApiError as exc:
        return error_response(request, exc, record)


async def _answer(request: Request, record: StoreRecord, req: OffersRequest) -> Response:
    request_id: str = request.scope["state"]["request_id"]
    body = await engine(request).offers(record, req, request_id)
    headers = cors_headers(request, record)
    headers["Cache-Control"] = "no-store"
    return Response(body, 200, headers=headers, media_type="application/json")


async def preflight(request: Request) -> Response:
    """CORS preflight. The store is named by the `key` query parameter (the snippet sends it on
    every POST), so only that store's origins are answered."""
    record = None
    key = request.query_params.get("key")
    if key:
        record = await engine(request).store_by_key(key)
    headers = cors_headers(request, record)
    if "Access-Control-Allow-Origin" in headers:
        headers.update(
            {
                "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                "Access-Control-Allow-Headers": PREFLIGHT_HEADERS,
                "Access-Control-Max-Age": "600",
            }
        )
    return Response(None, 204, headers=headers)
