"""POST /v1/admin/publishable-key/rotate and /v1/admin/secret-key/rotate: new API keys, with a
grace period for the old ones."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from offer_service.domain.records import KeyKind
from offer_service.exceptions import Forbidden
from offer_service.storage.rotation import rotate_api_key
from offer_service.types import now_ms
from offer_service.web.endpoints.common import (
    BROWSER_BODY_LIMIT,
    engine,
    json_response,
    read_body,
    secret_store,
)
from offer_service.web.models import KeyRotationRequest, validation_failed

CURRENT_KEY_REQUIRED = (
    "Rotating a key needs the store's current secret key (Authorization: Bearer sk_...), "
    "not a retired one or a webhook signature."
)
INVALID = "The key rotation request is invalid."


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _rotate(request: Request, kind: KeyKind) -> Response:
    raw = await read_body(request, BROWSER_BODY_LIMIT)
    record = await secret_store(request, raw)
    # A leaked key still in its grace period must not be able to lock the merchant out.
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("bearer ") or auth[7:].strip() != record.secret_key:
        raise Forbidden(CURRENT_KEY_REQUIRED, code="current_secret_key_required")
    try:
        body = KeyRotationRequest.model_validate_json(raw.strip() or b"{}")
    except ValidationError as exc:
        raise validation_failed(exc, INVALID) from None
    e = engine(request)
    now = now_ms()
    grace_ms = body.grace_seconds * 1000
    rotation = await rotate_api_key(e.store, record.id, kind, grace_ms=grace_ms, now_ms=now)
    await e.changed(record)  # the old keys' cache entries: refused on time from now on
    await e.changed(rotation.record)
    answer: dict[str, str | None] = {
        f"{kind}_key": rotation.key,
        "previous_key_expires_at": _iso(now + grace_ms) if grace_ms else None,
    }
    if rotation.webhook_secret is not None:
        answer["webhook_secret"] = rotation.webhook_secret
    return json_response(answer, headers={"Cache-Control": "no-store"})


async def rotate_publishable_key(request: Request) -> Response:
    """Make a new publishable key current; the old one keeps working for `grace_seconds`."""
    return await _rotate(request, "publishable")


async def rotate_secret_key(request: Request) -> Response:
    """Make a new secret key current; the old one keeps working for `grace_seconds`."""
    return await _rotate(request, "secret")
