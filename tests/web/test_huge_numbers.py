"""Numbers too long to read: every route that reads a whole number or a time from the client,
sent a 5,000-digit number (int() refuses past 4,300 digits) and a 20-digit one (past int64),
answers its documented error, never a 500 with a trace in the log."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from starlette.requests import Request

from offer_service.exceptions import PayloadTooLarge
from offer_service.web.endpoints.common import read_body
from offer_service_tools.demo import DEMO_STORE_ID
from tests.conftest import LiveServer
from tests.flows import ADMIN, PK

HUGE = "9" * 5000
LONG = "9" * 20
JSON = {"Content-Type": "application/json"}
PAGE = {"key": PK, "surface": "product_page", "product_id": "cam-x100"}


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged_errors(demo_server: LiveServer) -> Iterator[list[logging.LogRecord]]:
    """What the server logs at error level (after create_app set its handlers)."""
    handler = Records()
    logger = logging.getLogger("offer_service")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


def browser_post(
    c: httpx.Client, path: str, fields: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    """A JSON body of the publishable key and `fields`, the key in the query too: a body with a
    5,000-digit number is no JSON orjson reads, key included."""
    body = f'{{"key":"{PK}",{fields}}}'
    return c.post(path, params={"key": PK}, content=body, headers={**JSON, **(headers or {})})


def send_everywhere(c: httpx.Client, n: str) -> dict[str, httpx.Response]:
    """`n` wherever a route reads a number from the client."""
    return {
        "offers, fast query": c.get("/v1/offers", params={**PAGE, "limit": n}),
        # `+` (an escaped space) leaves the query to the model.
        "offers, model query": c.get("/v1/offers", params={**PAGE, "limit": n, "exclude": "a b"}),
        "offers, body": browser_post(
            c, "/v1/offers", f'"surface":"product_page","product_id":"cam-x100","limit":{n}'
        ),
        "offers, quantity": browser_post(
            c, "/v1/offers", f'"surface":"cart","items":[{{"product_id":"a","quantity":{n}}}]'
        ),
        "accept, quantity": browser_post(
            c, "/v1/accept", f'"token":"t","quantity":{n}', {"Idempotency-Key": "huge-1"}
        ),
        "catalog limit": c.get("/v1/admin/catalog", params={"limit": n}, headers=ADMIN),
        "neighbors limit": c.get(
            "/v1/admin/products/cam-x100/neighbors", params={"limit": n}, headers=ADMIN
        ),
        "metrics window_days": c.get("/v1/admin/metrics", params={"window_days": n}, headers=ADMIN),
        "metrics from": c.get("/v1/admin/metrics", params={"from": n}, headers=ADMIN),
        "metrics to": c.get("/v1/admin/metrics", params={"to": n}, headers=ADMIN),
        "dashboard window_days": c.get("/dashboard", params={"window_days": n}, headers=ADMIN),
        "dashboard csv to": c.get("/dashboard/report.csv", params={"to": n}, headers=ADMIN),
        "journey at": c.get("/v1/journeys/o-1", params={"at": n}, headers=ADMIN),
        "key rotation grace": c.post(
            "/v1/admin/publishable-key/rotate",
            content=f'{{"grace_seconds":{n}}}',
            headers={**ADMIN, **JSON},
        ),
    }


@pytest.mark.parametrize("n", [HUGE, LONG], ids=["5000 digits", "20 digits"])
def test_a_number_too_long_is_a_422_and_no_trace(
    demo_server: LiveServer, logged_errors: list[logging.LogRecord], n: str
) -> None:
    with demo_server.client() as c:
        answers = send_everywhere(c, n)
    statuses = {name: r.status_code for name, r in answers.items()}
    assert statuses == dict.fromkeys(answers, 422)
    for r in answers.values():
        assert r.json()["error"]["code"] == "validation_error"
    assert logged_errors == []


@pytest.mark.parametrize("n", [HUGE, LONG], ids=["5000 digits", "20 digits"])
def test_a_dashboard_link_expiring_past_any_clock_is_just_a_bad_link(
    demo_server: LiveServer, logged_errors: list[logging.LogRecord], n: str
) -> None:
    link = {"store": DEMO_STORE_ID, "expires": n, "sig": "0" * 64}
    with demo_server.client() as c:
        answers = [c.get("/dashboard", params=link), c.get("/dashboard/report.csv", params=link)]
    for r in answers:
        assert (r.status_code, r.json()["error"]["code"]) == (401, "bad_dashboard_link")
    assert logged_errors == []


def test_an_event_time_too_long_is_a_rejected_event(
    demo_server: LiveServer, logged_errors: list[logging.LogRecord]
) -> None:
    with demo_server.client() as c:
        events = [
            c.post(
                "/v1/events",
                params={"key": PK},
                content=f'{{"events":[{{"id":"e1","type":"click","token":"t","ts":{n}}}]}}',
                headers=JSON,
            )
            for n in (HUGE, LONG)
        ]
    # orjson reads no number of 5,000 digits: the body is no batch.
    assert (events[0].status_code, events[0].json()["error"]["code"]) == (422, "validation_error")
    assert events[1].status_code == 202
    assert events[1].json()["rejected"][0]["index"] == 0
    assert logged_errors == []


def test_a_catalog_cursor_of_digits_is_just_a_product_id(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        for n in (HUGE, LONG):
            r = c.get("/v1/admin/catalog", params={"cursor": n, "limit": 5}, headers=ADMIN)
            assert r.status_code == 200
            assert all(p["id"] > n for p in r.json()["products"])


@pytest.mark.parametrize(
    "params",
    [
        {"to": "999999999999999"},  # epoch ms in the year 33658
        {"from": "-999999999999999", "to": "-999999999000000"},
        {"to": "9999-12-31"},
    ],
)
def test_a_report_time_past_the_year_3000_is_a_422(
    demo_server: LiveServer, logged_errors: list[logging.LogRecord], params: dict[str, str]
) -> None:
    with demo_server.client() as c:
        answers = [
            c.get("/v1/admin/metrics", params=params, headers=ADMIN),
            c.get("/dashboard", params=params, headers=ADMIN),
            c.get("/dashboard/report.csv", params=params, headers=ADMIN),
        ]
    for r in answers:
        assert r.status_code == 422, r.text
        assert {d["field"] for d in r.json()["error"]["details"]} <= {"from", "to"}
    assert logged_errors == []


@pytest.mark.anyio
@pytest.mark.parametrize("declared", [HUGE, LONG])
async def test_a_declared_length_too_long_to_read_is_a_413(declared: str) -> None:
    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/events",
        "headers": [(b"content-length", declared.encode())],
        "query_string": b"",
    }
    with pytest.raises(PayloadTooLarge):
        await read_body(Request(scope, receive), 64 * 1024)
