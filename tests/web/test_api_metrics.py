"""GET /v1/admin/metrics and /dashboard over HTTP: auth, validation, JSON and CSV, and a small
shopping session measured end to end (a click-attributed purchase, a one-click accept charged
through a real charge endpoint, a return, a holdout visitor)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from offer_service.cli import main
from offer_service.decision.experiments import in_holdout
from offer_service.measurement.dashboard import dashboard_url, link_params
from offer_service.web.report_models import MetricsReport
from offer_service_tools.charge_double import ChargeDouble, running_charge_double
from offer_service_tools.demo import DEMO_STORE_ID
from tests.conftest import LiveServer

ADMIN = {"Authorization": "Bearer sk_demo"}


@pytest.fixture
def charge() -> Iterator[ChargeDouble]:
    yield from running_charge_double(["whsec_demo"])


def visitor(held: bool, prefix: str = "m") -> str:
    return next(
        f"{prefix}-{i}"
        for i in range(1000)
        if in_holdout(DEMO_STORE_ID, f"{prefix}-{i}", 0.10) == held
    )


def now_ms() -> int:
    return int(time.time() * 1000)


def event(kind: str, offer: dict[str, Any], visitor_id: str) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "type": kind,
        "token": offer["token"],
        "ts": now_ms() - 1000,
        "visitor_id": visitor_id,
    }


def order(c: httpx.Client, oid: str, vid: str, lines: list[tuple[str, int]]) -> str:
    body = {
        "id": oid,
        "visitor_id": vid,
        "placed_at": datetime.now(UTC).isoformat(),
        "currency": "USD",
        "lines": [{"product_id": p, "quantity": 1, "price": price} for p, price in lines],
    }
    r = c.post("/v1/admin/orders", json=[body], headers=ADMIN)
    assert r.status_code == 200, r.text
    token: str = r.json()["order_tokens"][oid]
    return token


def test_metrics_need_the_secret_key(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        assert c.get("/v1/admin/metrics").status_code == 401
        r = c.get("/v1/admin/metrics", headers={"Authorization": "Bearer pk_demo"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "secret_key_required"


def test_bad_parameters_are_a_422_naming_each_field(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        r = c.get(
            "/v1/admin/metrics",
            params={"from": "yesterday", "surface": "nowhere"},
            headers=ADMIN,
        )
        assert r.status_code == 422
        assert r.json()["error"]["details"][0]["field"] == "from"
        r = c.get(
            "/v1/admin/metrics",
            params={
                "from": "2026-01-02",
                "to": "2026-01-01",
                "surface": "nowhere",
                "window_days": "0",
            },
            headers=ADMIN,
        )
        fields = {d["field"] for d in r.json()["error"]["details"]}
        assert r.status_code == 422 and fields == {"from", "surface", "window_days"}


def test_a_session_measured_end_to_end(demo_server: LiveServer, charge: ChargeDouble) -> None:
    started = now_ms()
    with demo_server.client() as c:
        rules = c.get("/v1/admin/rules", headers=ADMIN).json()
        c.put("/v1/admin/rules", json={**rules, "charge_url": charge.url}, headers=ADMIN)
        tv, hv = visitor(False), visitor(True)
        # The treatment visitor clicks an offer on the product page and buys it with the camera.
        page = c.get(
            "/v1/offers",
            params={
                "key": "pk_demo",
                "surface": "product_page",
                "product_id": "cam-x100",
                "visitor_id": tv,
            },
        ).json()
        clicked = page["offers"][0]
        events = [event("impression", o, tv) for o in page["offers"]] + [
            event("click", clicked, tv)
        ]
        assert c.post("/v1/events", json={"key": "pk_demo", "events": events}).status_code == 202
        price = clicked["offer_price"]["amount"]
        token = order(c, "m-o1", tv, [("cam-x100", 49900), (clicked["product_id"], price)])
        # ...then takes the thank-you offer one-click.
        ty = c.get(
            "/v1/offers",
            params={
                "key": "pk_demo",
                "surface": "thank_you",
                "order_id": "m-o1",
                "order_token": token,
                "visitor_id": tv,
            },
        ).json()
        extra = ty["offers"][0]
        c.post("/v1/events", json={"key": "pk_demo", "events": [event("impression", extra, tv)]})
        r = c.post(
            "/v1/accept",
            json={"key": "pk_demo", "token": extra["token"]},
            headers={"Idempotency-Key": "m-accept-1"},
        )
        assert r.status_code == 200, r.text
        # The clicked product comes back.
        r = c.post(
            "/v1/admin/returns",
            json={"order_id": "m-o1", "product_ids": [clicked["product_id"]]},
            headers=ADMIN,
        )
        assert r.status_code == 200
        # The holdout visitor sees nothing and buys a camera anyway.
        held = c.get(
            "/v1/offers",
            params={
                "key": "pk_demo",
                "surface": "product_page",
                "product_id": "cam-x100",
                "visitor_id": hv,
            },
        ).json()
        assert held["holdout"] is True
        order(c, "m-o2", hv, [("cam-x100", 49900)])
        params = {"from": str(started - 60_000), "to": str(now_ms() + 60_000)}
        r = c.get("/v1/admin/metrics", params=params, headers=ADMIN)
        csv = c.get("/v1/admin/metrics", params=params, headers={**ADMIN, "Accept": "text/csv"})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    report = r.json()
    MetricsReport.model_validate(report)
    t = report["totals"]
    assert (t["accepts"], t["one_click_accepts"], t["click_attributed_purchases"]) == (2, 1, 1)
    assert t["impressions"] == len(page["offers"]) + 1 and t["clicks"] == 1
    assert t["attributed_revenue"]["amount"] == price + extra["offer_price"]["amount"]
    assert t["refunded_revenue"]["amount"] == price
    assert t["return_rate"]["value"] == 0.5
    assert charge.charge_count == 1
    surfaces = {row["surface"]: row for row in report["breakdown"]["surface"]}
    assert surfaces["thank_you"]["one_click_accepts"] == 1
    assert surfaces["product_page"]["click_attributed_purchases"] == 1
    o = report["orders"]
    assert (o["orders"], o["orders_with_offer_items"]) == (2, 1)
    h = report["holdout"]
    assert h["sample_sizes"] == {"treatment": 1, "holdout": 1}
    assert h["groups"]["holdout"]["revenue_per_visitor"]["value"] == 49900
    total = 49900 + price + extra["offer_price"]["amount"]
    assert h["groups"]["treatment"]["revenue_per_visitor"]["value"] == total
    assert report["attribution"]["window_days"] == 7
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert "report,,,attribution_window_days,7,,," in csv.text.splitlines()


def test_window_days_is_configurable_and_stated(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        r = c.get("/v1/admin/metrics", params={"window_days": "3"}, headers=ADMIN)
        assert r.json()["attribution"]["window_days"] == 3
        rules = c.get("/v1/admin/rules", headers=ADMIN).json()
        c.put("/v1/admin/rules", json={**rules, "attribution_window_days": 14}, headers=ADMIN)
        r = c.get("/v1/admin/metrics", headers=ADMIN)
        assert r.json()["attribution"]["window_days"] == 14
        assert "14 days" in r.json()["attribution"]["rule"]


# --- the dashboard's doors ---------------------------------------------------------------------


def test_dashboard_opens_with_the_secret_key_or_a_signed_link(demo_server: LiveServer) -> None:
    record = demo_server.create_store("Links")
    with demo_server.client() as c:
        assert c.get("/dashboard").status_code == 401
        r = c.get("/dashboard", headers={"Authorization": f"Bearer {record.secret_key}"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "script-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["referrer-policy"] == "no-referrer"
        good = link_params(record, int(time.time()) + 600)
        assert c.get("/dashboard", params=good).status_code == 200
        assert c.get("/dashboard/report.csv", params=good).text.startswith("section,")
        expired = link_params(record, int(time.time()) - 1)
        assert c.get("/dashboard", params=expired).status_code == 401
        forged = {**good, "store": DEMO_STORE_ID}  # another store's id under this signature
        r = c.get("/dashboard", params=forged)
        assert r.status_code == 401 and r.json()["error"]["code"] == "bad_dashboard_link"
        tampered = {**good, "expires": str(int(good["expires"]) + 3600)}
        assert c.get("/dashboard", params=tampered).status_code == 401
        css = c.get("/dashboard/dashboard.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_dashboard_url_command_prints_a_working_link(
    demo_server: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    record = demo_server.create_store("Cli")
    code = main(
        [
            "dashboard-url",
            "--store",
            record.id,
            "--url",
            demo_server.url,
            "--store-url",
            demo_server.store_url,
        ]
    )
    assert code == 0
    link = capsys.readouterr().out.strip()
    assert link.startswith(f"{demo_server.url}/dashboard?store={record.id}&expires=")
    assert httpx.get(link).status_code == 200
    assert main(["dashboard-url", "--store", "nope", "--store-url", demo_server.store_url]) == 1
    assert dashboard_url("http://x/", record, 5).startswith("http://x/dashboard?")
