"""POST /v1/accept (one-click) and POST /v1/decline."""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from offer_service.commerce import accept as accepting
from offer_service.commerce.decline import decline
from offer_service.domain.records import StoreRecord
from offer_service.exceptions import ApiError
from offer_service.web.endpoints.common import (
    ANSWERED_ERRORS,
    BROWSER_BODY_LIMIT,
    body_key,
    charger,
    cors_headers,
    engine,
    error_response,
    json_response,
    publishable_store,
    read_body,
)
from offer_service.web.models import AcceptRequest, DeclineRequest, validation_failed

MISSING_IDEMPOTENCY_KEY = "The Idempotency-Key header is required (1-255 characters)."


async def post_accept(request: Request) -> Response:
    origin = request.headers.get("origin")
    record: StoreRecord | None = None
    try:
        key = request.headers.get("idempotency-key")
        if key is None or not 1 <= len(key) <= 255:
            raise ApiError(
                MISSING_IDEMPOTENCY_KEY,
                code="missing_idempotency_key" if key is None else "bad_idempotency_key",
                status_code=400,
                details=[{"field": "Idempotency-Key", "message": MISSING_IDEMPOTENCY_KEY}],
            )
        raw = await read_body(request, BROWSER_BODY_LIMIT)
        try:
            req = AcceptRequest.model_validate_json(raw)
        except ValidationError as exc:
            await publishable_store(request, body_key(raw))
            raise validation_failed(exc, "The accept request is invalid.") from None
        record = await publishable_store(request, req.key)
        e = engine(request)
        outcome = await accepting.accept(
            e.store, charger(request), record, key, req.token, req.quantity
        )
        # The buyer now owns the product: no cached visitor state of this store may say otherwise.
        e.forget_visitors(record.id)
        headers = cors_headers(origin, record)
        return Response(
            outcome.body, outcome.status, headers=headers, media_type="application/json"
        )
    except ANSWERED_ERRORS as exc:
        # An unreachable store fails closed (nothing was charged, and the same Idempotency-Key
        # can be retried), with CORS like any error of this route.
        return error_response(exc, cors_headers(origin, record))


async def post_decline(request: Request) -> Response:
    origin = request.headers.get("origin")
    record: StoreRecord | None = None
    try:
        raw = await read_body(request, BROWSER_BODY_LIMIT)
        try:
            req = DeclineRequest.model_validate_json(raw)
        except ValidationError as exc:
            await publishable_store(request, body_key(raw))
            raise validation_failed(exc, "The decline request is invalid.") from None
        record = await publishable_store(request, req.key)
        downsell = await decline(engine(request), record, req.token, req.visitor_id)
        return json_response({"downsell": downsell}, 200, cors_headers(origin, record))
    except ANSWERED_ERRORS as exc:
        return error_response(exc, cors_headers(origin, record))
