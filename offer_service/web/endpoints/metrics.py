"""GET /v1/admin/metrics: the measurement report, JSON or CSV (`Accept: text/csv`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from offer_service.domain.events import MAX_CLOCK_SKEW_MS
from offer_service.domain.records import StoreRecord
from offer_service.domain.surfaces import Surface
from offer_service.domain.time import MAX_MS, parse_ms
from offer_service.exceptions import ValidationFailed
from offer_service.measurement import report
from offer_service.measurement.report_csv import to_csv
from offer_service.serving.engine import Engine
from offer_service.storage.protocols import Store
from offer_service.types import DAY_MS, MINUTE_MS, now_ms, whole_in
from offer_service.web.endpoints.common import engine, json_response, secret_store

DEFAULT_RANGE_MS = 30 * DAY_MS
MAX_RANGE_MS = 400 * DAY_MS
# An event's `ts` may be this far from its receipt.
SKEW_MS = MAX_CLOCK_SKEW_MS
INVALID = "The metrics request is invalid."


def _time(params: Mapping[str, str], name: str, default: int) -> int:
    text = params.get(name)
    if not text:
        return default
    try:
        ms = parse_ms(text)
    except ValueError:
        raise ValidationFailed(
            INVALID,
            details=[{"field": name, "message": f"{name} must be ISO 8601 or epoch milliseconds"}],
        ) from None
    if not 0 <= ms <= MAX_MS:
        raise ValidationFailed(
            INVALID, details=[{"field": name, "message": f"{name} must be between 1970 and 3000"}]
        )
    return ms


def parse_query(record: StoreRecord, params: Mapping[str, str], now: int) -> report.ReportQuery:
    """`from`, `to` (ISO 8601 or epoch ms; default the last 30 days), `surface`, `window_days`."""
    until = _time(params, "to", now)
    since = _time(params, "from", until - DEFAULT_RANGE_MS)
    details = []
    if since >= until:
        details.append({"field": "from", "message": "from must be before to"})
    elif until - since > MAX_RANGE_MS:
        details.append({"field": "from", "message": "a report covers at most 400 days"})
    surface = params.get("surface") or None
    if surface is not None and surface not in {s.value for s in Surface}:
        details.append({"field": "surface", "message": f"unknown surface {surface!r}"})
    window_text = params.get("window_days")
    window = record.rules.attribution_window_days
    if window_text:
        days = whole_in(window_text, 1, 90)
        if days is None:
            details.append({"field": "window_days", "message": "an integer from 1 to 90"})
        else:
            window = days
    if details:
        raise ValidationFailed(INVALID, details=details)
    return report.ReportQuery(
        store_id=record.id,
        since_ms=since,
        until_ms=until,
        surface=surface,
        window_days=window,
        holdout_share=record.rules.holdout_share,
    )


async def build_report(e: Engine, record: StoreRecord, q: report.ReportQuery) -> dict[str, Any]:
    """Read what the report needs from the store and build it."""
    await e.exposures.flush()  # this process's visitors of the last moment count too
    return await read_report(e.store, record, q)


async def read_report(store: Store, record: StoreRecord, q: report.ReportQuery) -> dict[str, Any]:
    """The report of what `store` holds: events, orders and accepts of the period and window."""
    sid = record.id
    window_ms = q.window_days * DAY_MS
    events = [
        ev
        async for ev in store.iter_events(
            sid, q.since_ms - window_ms - SKEW_MS, q.until_ms + SKEW_MS
        )
    ]
    orders = [o async for o in store.iter_orders(sid, q.since_ms, q.until_ms)]
    accept_until = q.until_ms + record.rules.post_purchase_window_minutes * MINUTE_MS
    accepts = [a async for a in store.iter_accepts(sid, q.since_ms, accept_until)]
    ids = {ev.product_id for ev in events if ev.product_id}
    ids.update(line.product_id for o in orders for line in o.lines)
    products = await store.get_products(sid, ids)
    return report.build(q, events, accepts, orders, products, now_ms())


def wants_csv(request: Request) -> bool:
    if request.query_params.get("format") == "csv":
        return True
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == "text/csv" for part in accept.split(","))


def csv_response(data: Mapping[str, Any], filename: str) -> Response:
    return Response(
        to_csv(data),
        200,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def get_metrics(request: Request) -> Response:
    record = await secret_store(request)
    q = parse_query(record, request.query_params, now_ms())
    data = await build_report(engine(request), record, q)
    if wants_csv(request):
        return csv_response(data, f"offer-metrics-{record.id}.csv")
    return json_response(data, headers={"Cache-Control": "no-store"})
