"""Property tests: importers never crash on hostile input, number every error, keep good rows."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offer_service import importers
from offer_service.exceptions import ValidationFailed

GOOD_ROW = "ok{n},Good {n},1000,USD,misc"
HEADER = "id,title,price,currency,category"

junk_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
junk_bytes = st.binary(max_size=400)


def _one_line(row: str) -> str:
    # An unbalanced quote legitimately joins the next line into one field (RFC 4180), which
    # would swallow a good row: junk rows here stay on their own line.
    return row.replace("\n", " ").replace("\r", " ").replace('"', "'")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(junk_text, st.just(GOOD_ROW)), max_size=12))
def test_native_csv_keeps_good_rows_and_numbers_every_rejection(rows: list[str]) -> None:
    lines = [HEADER]
    for i, row in enumerate(rows):
        lines.append(row.format(n=i) if row == GOOD_ROW else _one_line(row))
    result = importers.parse_catalog_csv("\n".join(lines), "USD", "csv")
    good = {f"ok{i}" for i, row in enumerate(rows) if row == GOOD_ROW}
    assert good <= {p.id for p in result.items}
    for rejection in result.rejected:
        assert rejection.line is not None and 2 <= rejection.line <= len(lines)
        assert rejection.message


@settings(max_examples=300, deadline=None)
@given(junk_bytes)
def test_catalog_csv_never_crashes_on_arbitrary_bytes(data: bytes) -> None:
    try:
        result = importers.parse_catalog_csv(data, "USD", "auto")
    except ValidationFailed:
        return
    for rejection in result.rejected:
        assert rejection.line is not None


@settings(max_examples=300, deadline=None)
@given(st.one_of(junk_bytes, junk_text.map(str.encode)))
def test_json_importers_never_crash(data: bytes) -> None:
    for parse in (importers.parse_catalog_json, importers.parse_orders_json):
        try:
            result = parse(data)
        except ValidationFailed:
            continue
        for rejection in result.rejected:
            assert rejection.index is not None and rejection.message


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "id": st.one_of(st.text(max_size=200), st.integers(), st.none()),
                "title": st.one_of(st.text(max_size=50), st.none()),
                "price": st.one_of(
                    st.integers(-5, 10**12), st.floats(allow_nan=True), st.text(max_size=5)
                ),
                "currency": st.one_of(st.just("USD"), st.text(max_size=4)),
                "category": st.text(max_size=10),
            }
        ),
        max_size=10,
    )
)
def test_catalog_json_keeps_valid_items_and_indexes_the_rest(
    items: list[dict[str, object]],
) -> None:
    import orjson

    try:
        raw = orjson.dumps(items)
    except (TypeError, orjson.JSONEncodeError):
        return
    result = importers.parse_catalog_json(raw)
    rejected_indexes = {r.index for r in result.rejected}
    assert len(result.items) + len(rejected_indexes) == len(items)


@settings(max_examples=200, deadline=None)
@given(st.lists(junk_text, max_size=10))
def test_online_retail_csv_never_crashes_and_numbers_lines(rows: list[str]) -> None:
    header = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
    good = "536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom"
    text = "\n".join([header, good, *(_one_line(r) for r in rows)])
    result = importers.parse_online_retail(text)
    assert any(o.id == "536365" for o in result.orders)
    for rejection in result.rejected:
        assert rejection.line is not None and rejection.line >= 3
