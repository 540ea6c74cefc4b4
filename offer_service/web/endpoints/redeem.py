"""POST /v1/offers/redeem: the price a store's cart charges for the offers it took."""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from offer_service.commerce.redeem import redeem
from offer_service.web.endpoints.common import engine, json_response, read_body, secret_store
from offer_service.web.models import validation_failed
from offer_service.web.redeem_models import MAX_REDEEM_TOKENS, MAX_TOKEN, RedeemRequest

# Every token at its longest, and room for the cart id and the JSON around them.
REDEEM_BODY_LIMIT = MAX_REDEEM_TOKENS * (MAX_TOKEN + 8) + 4096


async def post_redeem(request: Request) -> Response:
    raw = await read_body(request, REDEEM_BODY_LIMIT)
    record = await secret_store(request, raw, signable=True)
    try:
        req = RedeemRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_failed(exc, "The redeem request is invalid.") from None
    lines = await redeem(engine(request).store, record, req.cart_id, req.tokens)
    return json_response({"lines": lines}, headers={"Cache-Control": "no-store"})
