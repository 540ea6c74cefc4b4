"""What every handler shares: JSON responses, bounded bodies, keys, CORS."""

from __future__ import annotations

import time
from typing import Any

import anyio.to_thread
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from offer_service.commerce.charger import Charger
from offer_service.domain.records import StoreRecord
from offer_service.domain.signatures import verify_inbound, verify_inbound_parts
from offer_service.exceptions import (
    ApiError,
    Forbidden,
    StoreUnavailable,
    Unauthorized,
    store_unavailable,
)
from offer_service.serving.engine import Engine
from offer_service.settings import Settings
from offer_service.types import is_whole, now_ms
from offer_service.web.uploads import Upload, limited_stream

BROWSER_BODY_LIMIT = 64 * 1024
IMPORT_BODY_LIMIT = 256 * 1024 * 1024

MISSING_KEY = (
    "A publishable key is required (query parameter key, header X-Offer-Key, or body key)."
)
UNKNOWN_KEY = "The key is not valid for any store."
SECRET_REQUIRED = "This route needs the store's secret key (Authorization: Bearer sk_...)."
PUBLISHABLE_ON_ADMIN = "A publishable key cannot be used on admin routes; use the secret key."
SECRET_ON_BROWSER = (
    "A secret key must never reach a browser: use the publishable key (pk_...) here, "
    "and keep the secret key on your server."
)
BAD_SIGNATURE = "The X-Offer-Signature header is invalid or its timestamp is too far off."
SIGNATURE_NOT_ENOUGH = (
    "Only admin writes may be signed; this route needs the store's secret key "
    "(Authorization: Bearer sk_...)."
)


def engine(request: Request) -> Engine:
    e: Engine = request.app.state.engine
    return e


def charger(request: Request) -> Charger:
    """The client of the stores' charge endpoints (one-click accept)."""
    c: Charger = request.app.state.charger
    return c


def settings(request: Request) -> Settings:
    """The settings the app was created with."""
    s: Settings = request.app.state.settings
    return s


def json_response(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = content if isinstance(content, bytes) else orjson.dumps(content)
    return Response(body, status_code, headers=headers, media_type="application/json")


# What a browser route answers itself, with its CORS headers, so the page can read why: an API
# error, or a store that cannot be reached (a 503, see error_response). Anything else is the
# telemetry's JSON 500.
ANSWERED_ERRORS = (ApiError, StoreUnavailable)


def error_response(
    exc: ApiError | StoreUnavailable, headers: dict[str, str] | None = None
) -> Response:
    """The answer to an error a client is told of: its code, message and details, its own
    headers (Retry-After) and `headers` (CORS on browser routes). A store that cannot be reached
    is a 503 here and nowhere else: only what cannot be answered from the in-process cache gets
    that far (a cache miss, an admin write, a one-click accept), so fail closed, fast, and say
    when to retry."""
    error = store_unavailable() if isinstance(exc, StoreUnavailable) else exc
    return json_response(error.body(), error.status_code, {**error.headers, **(headers or {})})


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed `limit`. An import's
    body is spooled to a file instead (`uploads.spool_body`)."""
    return b"".join([chunk async for chunk in limited_stream(request, limit)])


async def publishable_store(request: Request, body_key: str | None = None) -> StoreRecord:
    """The store of a browser request's publishable key (see `publishable_key`)."""
    key = publishable_key(
        request.query_params.get("key"), request.headers.get("x-offer-key"), body_key
    )
    return await browser_store(engine(request), key, client_address(request.scope))


def publishable_key(query: str | None, header: str | None, body: str | None = None) -> str | None:
    """Where a browser request's publishable key is looked for, first found first."""
    return query or header or body


async def browser_store(e: Engine, key: str | None, client: str) -> StoreRecord:
    """The store of a publishable key, after the key's per-client rate limit. A secret key
    is refused (403) rather than served: it was pasted into a page by mistake, and must fail
    loudly before it leaks further. Only the current publishable key is answered by
    `browser_store_now`, so the check costs a warm request nothing."""
    if not key:
        raise Unauthorized(MISSING_KEY, code="missing_key")
    record = browser_store_now(e, key, client)
    if record is not None:
        return record
    record = await e.store_by_key(key)
    # A retired key is refused from the end of its grace period, whatever a cache holds.
    kind = record.key_kind(key, now_ms()) if record is not None else None
    if record is None or kind is None:
        raise Unauthorized(UNKNOWN_KEY, code="unknown_key")
    if kind == "secret":
        raise Forbidden(SECRET_ON_BROWSER, code="secret_key_on_browser_route")
    await e.limiter.admit(*_browser_bucket(record, client))
    return record


def browser_store_now(e: Engine, key: str, client: str) -> StoreRecord | None:
    """`browser_store`'s answer when it needs no coroutine (it asks here first): the store of a
    current publishable key held fresh, counted by this process's limiter. None when
    `browser_store` must decide (a miss, a stale entry, an unknown or retired key, a shared
    limiter)."""
    record = publishable_now(e, key)
    return record if record is not None and admit_now(e, record, client) else None


def publishable_now(e: Engine, key: str, *, count: bool = True) -> StoreRecord | None:
    """The store whose current publishable key this is, while the engine holds it fresh; None
    when `browser_store` must decide. `count`: as `Engine.store_by_key_now`'s."""
    record = e.store_by_key_now(key, count=count)
    return record if record is not None and key == record.publishable_key else None


def admit_now(e: Engine, record: StoreRecord, client: str) -> bool:
    """Count a browser request against the client's rate limit without a coroutine: True once
    counted (RateLimited when over), False when `browser_store` must count it."""
    return e.limiter.admit_here(*_browser_bucket(record, client))


def _browser_bucket(record: StoreRecord, client: str) -> tuple[str, str, float, int]:
    """A browser client's rate-limit bucket of a store: store, bucket, rate and burst."""
    limits = record.rules.rate_limits
    return record.id, "browser:" + client, limits.browser_per_second, limits.browser_burst


async def secret_store(
    request: Request, body: bytes | Upload = b"", *, signable: bool = False
) -> StoreRecord:
    """The store of an admin request: the secret key, or, on an admin write (`signable`), an
    inbound signature naming its store (over `body`: bytes, or an import's spooled Upload, read
    back a chunk at a time in a worker thread). Reads and every route that reads or rotates a secret
    stay closed to a signature alone: whoever holds the webhook secret (or a captured signed
    request) must not be able to take the store over with it."""
    auth = request.headers.get("authorization", "")
    signed = request.headers.get("x-offer-signature")
    e = engine(request)
    record: StoreRecord | None
    if auth.lower().startswith("bearer "):
        key = auth[7:].strip()
        record = await e.store_by_key(key)
        kind = record.key_kind(key, now_ms()) if record is not None else None
        if record is None or kind is None:
            raise Unauthorized(UNKNOWN_KEY, code="unknown_key")
        if kind != "secret":
            raise Forbidden(PUBLISHABLE_ON_ADMIN, code="secret_key_required")
    elif signed is not None and signable:
        store_id = request.headers.get("x-offer-store") or request.query_params.get("store_id")
        record = await e.store.get_store(store_id) if store_id else None
        if record is None:
            raise Unauthorized(BAD_SIGNATURE, code="bad_signature")
    elif signed is not None:
        raise Unauthorized(SIGNATURE_NOT_ENOUGH, code="secret_key_required")
    else:
        raise Unauthorized(SECRET_REQUIRED, code="missing_key")
    if signed is not None and not await _signed_by(request, signed, body, record):
        raise Unauthorized(BAD_SIGNATURE, code="bad_signature")
    limits = record.rules.rate_limits
    await e.limiter.admit(record.id, "admin", limits.admin_per_second, limits.admin_burst)
    return record


async def _signed_by(
    request: Request, signed: str, body: bytes | Upload, record: StoreRecord
) -> bool:
    target = signed_target(request.scope)
    if isinstance(body, bytes):
        return verify_inbound(
            signed, request.method, target, body, record.webhook_secrets, time.time()
        )
    return await anyio.to_thread.run_sync(
        verify_inbound_parts,
        signed,
        request.method,
        target,
        body.chunks,
        record.webhook_secrets,
        time.time(),
    )


def signed_target(scope: Scope) -> str:
    """The request target an inbound signature covers: the path and query string exactly as
    the client sent them (still percent-encoded), `?` only when there is a query."""
    raw = scope.get("raw_path") or scope["path"].encode()
    path = raw.decode("latin-1").partition("?")[0]
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{path}?{query}" if query else path


def client_address(scope: Scope) -> str:
    """The client's address: the socket peer, or, behind a proxy the server trusts
    (OFFER_TRUST_PROXY), the address the server took from X-Forwarded-For (`cmd_serve`). Never
    the header itself: only the server knows which peers are proxies."""
    client = scope.get("client")
    return client[0] if client else ""


def origin_allowed(origin: str, allowed: list[str]) -> bool:
    """Exact match, or an entry ending in `:*` that allows any port of that scheme and host."""
    if not origin or origin == "null":
        return False
    for entry in allowed:
        if entry == origin:
            return True
        if entry.endswith(":*"):
            base = entry[:-2]
            rest = origin[len(base) :]
            if origin.startswith(base) and (rest == "" or (rest[:1] == ":" and is_whole(rest[1:]))):
                return True
    return False


def cors_headers(origin: str | None, record: StoreRecord | None) -> dict[str, str]:
    """CORS response headers for a browser route (`origin`: the request's Origin header): only
    the store's own origins are allowed, and an error's answer carries them too, so the page can
    read why it failed."""
    headers = {"Vary": "Origin"}
    if origin and record is not None and origin_allowed(origin, record.rules.allowed_origins):
        headers["Access-Control-Allow-Origin"] = origin
    return headers


def body_key(raw: bytes) -> str | None:
    """The `key` field of a JSON body that failed validation, so a bad key is still a 401 and a
    good one lets the 422 through."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    key = data.get("key") if isinstance(data, dict) else None
    return key if isinstance(key, str) else None
