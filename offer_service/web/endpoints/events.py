"""POST /v1/events: sendBeacon (text/plain) or JSON batches of shopper events."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from offer_service.domain.events import MAX_EVENTS, Rejected, StoredEvent, validate_event
from offer_service.domain.records import StoreRecord
from offer_service.domain.traffic import classify
from offer_service.exceptions import ValidationFailed
from offer_service.serving.ratelimit import RateLimited, retry_after_s
from offer_service.serving.spool import record_events as spooled
from offer_service.types import DAY_MS, now_ms
from offer_service.web.endpoints.common import (
    ANSWERED_ERRORS,
    BROWSER_BODY_LIMIT,
    client_address,
    cors_headers,
    engine,
    error_response,
    json_response,
    publishable_store,
    read_body,
)

NOT_A_BATCH = 'The body must be a JSON object {"key": ..., "events": [...]}.'
OVER_BUDGET = (
    "This client has sent more events than the store's event budget allows; "
    "send it again after {seconds} s."
)


class PostEvents:
    """POST /v1/events as a plain ASGI app, a fast route (see dispatch.py): py-spy under
    bench.py's events load gave Starlette's router and exception layers about 50 us of a
    batch's 780 us (in situ within the machine's noise), and its request/response wrapper
    measured about 1 us more per batch than this class (in process, an empty batch: 23.0-23.5
    us against 21.9-22.3 us). API errors are answered by `post_events`, with CORS; any other
    error by the telemetry's frame, as for every request."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await post_events(Request(scope, receive, send))
        await response(scope, receive, send)


async def post_events(request: Request) -> Response:
    origin = request.headers.get("origin")
    record: StoreRecord | None = None
    try:
        raw = await read_body(request, BROWSER_BODY_LIMIT)
        try:
            batch = orjson.loads(raw)
        except orjson.JSONDecodeError:
            batch = None
        body_key = batch.get("key") if isinstance(batch, dict) else None
        record = await publishable_store(request, body_key if isinstance(body_key, str) else None)
        events = batch.get("events") if isinstance(batch, dict) else None
        if not isinstance(events, list):
            raise ValidationFailed(
                NOT_A_BATCH, details=[{"field": "events", "message": NOT_A_BATCH}]
            )
        if len(events) > MAX_EVENTS:
            raise ValidationFailed(
                f"A batch holds at most {MAX_EVENTS} events.",
                details=[{"field": "events", "message": f"at most {MAX_EVENTS} events"}],
            )
        now = now_ms()
        # Bots and speculative loads are stored, flagged, and left out of the metrics.
        flag = classify(request.scope["headers"])
        good: list[StoredEvent] = []
        indexes: list[int] = []
        rejected: list[Rejected] = []
        seen: set[str] = set()
        duplicates = 0
        for index, raw_event in enumerate(events):
            result = validate_event(index, raw_event, record.id, record.signing_keys, now, flag)
            if isinstance(result, Rejected):
                rejected.append(result)
            elif result.id in seen:
                duplicates += 1
            else:
                seen.add(result.id)
                good.append(result)
                indexes.append(index)
        # The client's event budget takes the first ones; the rest are refused one by one.
        rates = engine(request).event_rates
        limits = record.rules.rate_limits
        client = client_address(request.scope)
        taken, wait = await rates.admit(record.id, limits, client, len(good))
        headers = cors_headers(origin, record)
        if taken < len(good):
            retry_after = retry_after_s(wait or 1.0 / limits.events_per_second)
            message = OVER_BUDGET.format(seconds=retry_after)
            rejected.extend(Rejected(i, RateLimited.code, None, message) for i in indexes[taken:])
            rejected.sort(key=lambda r: r.index)
            del good[taken:]
            headers = {**headers, "Retry-After": str(retry_after)}
        # Rates no shopper reaches: stored, flagged, left out of the metrics.
        rates.flag(record.id, limits, client, good)
        # Committed to the store, or (store unreachable) to this process's spool file.
        spool = getattr(request.app.state, "spool", None)
        fresh = await spooled(engine(request).events, spool, record.id, good, now - DAY_MS)
        accepted = sum(fresh)
        duplicates += len(fresh) - accepted
        return json_response(
            {
                "accepted": accepted,
                "duplicates": duplicates,
                "rejected": [r.as_dict() for r in rejected],
            },
            202,
            headers,
        )
    except ANSWERED_ERRORS as exc:
        return error_response(exc, cors_headers(origin, record))
