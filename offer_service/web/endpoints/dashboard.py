"""GET /dashboard (the secret key, or a signed expiring link), its CSV and its stylesheet."""

from __future__ import annotations

import contextlib
import time
from datetime import timedelta
from functools import lru_cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from offer_service.domain.records import StoreRecord
from offer_service.domain.surfaces import Surface
from offer_service.domain.time import parse_date
from offer_service.exceptions import NotFound, Unauthorized
from offer_service.measurement import dashboard
from offer_service.types import now_ms
from offer_service.web.endpoints.common import engine, secret_store
from offer_service.web.endpoints.metrics import build_report, csv_response, parse_query

BAD_LINK = "This dashboard link is invalid or has expired; ask for a new one."
ASSET_HEADERS = {"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"}


async def _record(request: Request) -> StoreRecord:
    """The store of a signed link (`store`, `expires`, `sig`) or of the secret key."""
    params = request.query_params
    if "sig" not in params:
        return await secret_store(request)
    record = await engine(request).store.get_store(params.get("store", ""))
    now_s = time.time()
    if record is None or not dashboard.link_valid(
        record, params.get("expires", ""), params.get("sig", ""), now_s
    ):
        raise Unauthorized(BAD_LINK, code="bad_dashboard_link")
    return record


def _range_params(request: Request) -> dict[str, str]:
    """The query, with a date-only `to` (what the page's date picker sends) made inclusive."""
    params = dict(request.query_params)
    to = params.get("to", "")
    if len(to) == 10:
        # 9999-12-31 has no next day: left as it is, for parse_query to refuse.
        with contextlib.suppress(ValueError, OverflowError):
            params["to"] = (parse_date(to) + timedelta(days=1)).isoformat()
    return params


async def get_dashboard(request: Request) -> Response:
    record = await _record(request)
    q = parse_query(record, _range_params(request), now_ms())
    report = await build_report(engine(request), record, q)
    html = dashboard.page(
        report, record.name, dict(request.query_params), [s.value for s in Surface]
    )
    return HTMLResponse(html, headers=dashboard.PAGE_HEADERS)


async def get_dashboard_csv(request: Request) -> Response:
    record = await _record(request)
    q = parse_query(record, _range_params(request), now_ms())
    report = await build_report(engine(request), record, q)
    response = csv_response(report, f"offer-metrics-{record.id}.csv")
    response.headers.update({"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
    return response


ASSETS = {"dashboard.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}


@lru_cache(maxsize=len(ASSETS))
def _asset(name: str) -> bytes:
    return resources.files("offer_service").joinpath("static", "dashboard", name).read_bytes()


async def get_asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS:
        raise NotFound(f"No dashboard file named {name!r}.")
    return Response(_asset(name), headers=ASSET_HEADERS, media_type=ASSETS[name])
