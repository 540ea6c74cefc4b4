"""Online Retail invoice importer: small crafted files, then the real data sets."""

from __future__ import annotations

import csv
import io
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from offer_service.domain.orders import OrderLine, ProductReturn
from offer_service.domain.products import Product, is_product_code
from offer_service.exceptions import ValidationFailed
from offer_service.importers import (
    InvoiceLine,
    OnlineRetailImport,
    Rejection,
    iter_invoice_lines,
    parse_online_retail,
    read_online_retail,
)

DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"


def ms(year: int, month: int, day: int, hour: int, minute: int) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()) * 1000


def datasets() -> Path:
    if not DATASETS.is_dir():
        pytest.skip(f"the shared data sets are not present at {DATASETS}")
    return DATASETS


# Every trap of the real data in twenty lines; the trailing comments give physical lines.
SMALL = "\n".join(
    [
        HEADER,  # 1
        "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,"
        "United Kingdom",  # 2
        "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom",  # 3
        "536365,85123a,WHITE HANGING HEART T-LIGHT HOLDER ,2,2010-12-01 08:27:00,2.50,17850.0,"
        "United Kingdom",  # 4: the same product in lower case, a minute later, cheaper
        "536365,POST,POSTAGE,1,2010-12-01 08:26:00,18.00,17850.0,United Kingdom",  # 5: a fee
        "536366,22633,HAND  WARMER UNION JACK,6,2010-12-01 08:28:00,1.85,,United Kingdom",  # 6
        "536367,22633,?,-12,2010-12-02 10:00:00,0,,United Kingdom",  # 7: stock adjustment
        "C536368,85123A,WHITE HANGING HEART T-LIGHT HOLDER,-1,2010-12-03 09:00:00,2.55,17850.0,"
        "United Kingdom",  # 8: a return
        "C536368,D,Discount,-1,2010-12-03 09:00:00,5.00,17850.0,United Kingdom",  # 9
        "C536369,M,Manual,-1,2010-12-03 09:05:00,1.00,12345.0,United Kingdom",  # 10
        "536370,22633,HAND WARMER UNION JACK NEW,12,2010-12-04 09:00:00,1.95,12583.0,France",  # 11
        "536371,22634,FREE GIFT,1,2010-12-04 10:00:00,0.00,12583.0,France",  # 12: free
        "536372,PADS,PADS TO MATCH ALL CUSHIONS,1,2010-12-05 10:00:00,0.001,,United Kingdom",  # 13
        "536373,22635,X,six,2010-12-05 10:00:00,1.00,,United Kingdom",  # 14: bad quantity
        "536373,22635,X,1,2010-12-05 10:00:00,GBP1,,United Kingdom",  # 15: bad price
        "536373,22635,X,1,yesterday,1.00,,United Kingdom",  # 16: bad date
        "536373,22635,X,1,2010-12-05 10:00:00,1.00",  # 17: too few cells
        '536374,22636,"LANTERN,\nMULTI LINE",2,2010-12-06 10:00:00,1.00,,United Kingdom',  # 18-19
        "",  # 20: blank
        "536375,22637,Y,6.0,2010-12-06 11:00:00,1,,United Kingdom",  # 21: pandas-style quantity
        "536376,22637,Y,1,2010-13-06 11:00:00,1,,United Kingdom",  # 22: month 13
    ]
)


@pytest.fixture(scope="module")
def small() -> OnlineRetailImport:
    return parse_online_retail(SMALL)


def test_orders_hold_only_product_lines_merged_per_stock_code(small: OnlineRetailImport) -> None:
    orders = {order.id: order for order in small.orders}

    assert list(orders) == ["536365", "536366", "536370", "536374", "536375"]
    # 85123A and 85123a are one product: quantities summed, the latest price kept; POST left out
    assert orders["536365"].lines == (OrderLine("85123A", 8, 250), OrderLine("71053", 6, 339))
    assert orders["536365"].placed_at_ms == ms(2010, 12, 1, 8, 26)
    assert orders["536365"].customer_id == "17850"
    assert orders["536365"].currency == "GBP"
    assert orders["536366"].customer_id is None
    assert orders["536375"].lines == (OrderLine("22637", 6, 100),)


def test_cancellations_become_returns_of_their_products(small: OnlineRetailImport) -> None:
    assert small.returns == [
        ProductReturn(("85123A",), ms(2010, 12, 3, 9, 0), order_id=None, customer_id="17850")
    ]


def test_products_take_the_latest_priced_description_and_sale_price(
    small: OnlineRetailImport,
) -> None:
    products = {product.id: product for product in small.products}

    assert sorted(products) == ["22633", "22636", "22637", "71053", "85123A"]
    # The later "?" note on the price-0 adjustment row is not a title.
    assert products["22633"] == Product(
        id="22633",
        title="HAND WARMER UNION JACK NEW",
        price=195,
        currency="GBP",
        url="/products/22633",
    )
    assert products["85123A"].price == 250
    assert products["85123A"].title == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert products["22636"].title == "LANTERN, MULTI LINE"


def test_fee_codes_free_items_and_sub_penny_prices_never_become_products(
    small: OnlineRetailImport,
) -> None:
    ids = {product.id for product in small.products} | {
        line.product_id for order in small.orders for line in order.lines
    }

    assert ids.isdisjoint({"POST", "D", "M", "22634", "PADS"})


def test_malformed_rows_are_rejected_with_their_lines_and_skipped(
    small: OnlineRetailImport,
) -> None:
    assert [(r.line, r.field) for r in small.rejected] == [
        (14, "Quantity"),
        (15, "UnitPrice"),
        (16, "InvoiceDate"),
        (17, None),
        (22, "InvoiceDate"),
    ]
    assert small.rejected[0].message == "Quantity must be a whole number, not 'six'."
    assert small.rejected[3].message == "The row has 6 cells but the header has 8."


def test_stats_count_every_kind_of_row(small: OnlineRetailImport) -> None:
    assert small.stats.as_dict() == {
        "rows": 19,
        "rejected": 5,
        "invoices": 10,
        "orders": 5,
        "return_invoices": 2,
        "returns": 1,
        "product_lines": 7,
        "fee_lines": 3,
        "stock_adjustments": 1,
        "zero_price_lines": 3,
        "negative_price_lines": 0,
        "stock_codes": 11,
        "products": 5,
        "customers": 3,
    }


def test_the_pandas_export_layout_is_read_too() -> None:
    data = (
        f",{HEADER}\r\n"
        "0,536370,22728,ALARM CLOCK BAKELIKE PINK,24,12/1/2010 8:45,3.75,12583.0,France\r\n"
        "1,536370,22727,ALARM CLOCK BAKELIKE RED ,24,12/1/2010 8:45,3.75,12583.0,France\r\n"
        "2,C536371,22728,ALARM CLOCK BAKELIKE PINK,-2,12/13/2010 14:05,3.75,12583.0,France\r\n"
    ).encode()

    result = parse_online_retail(data)

    assert result.rejected == []
    assert [(o.id, o.placed_at_ms, len(o.lines)) for o in result.orders] == [
        ("536370", ms(2010, 12, 1, 8, 45), 2)
    ]
    assert [p.title for p in result.products] == [
        "ALARM CLOCK BAKELIKE PINK",
        "ALARM CLOCK BAKELIKE RED",
    ]
    assert result.returns == [ProductReturn(("22728",), ms(2010, 12, 13, 14, 5), None, "12583")]


def test_bom_and_cp1252_bytes_are_read() -> None:
    row = "536365,22000,CAF\u00c9 MUG,1,2010-12-01 08:26:00,2.00,,France\n"

    with_bom = parse_online_retail(b"\xef\xbb\xbf" + f"{HEADER}\n{row}".encode())
    windows = parse_online_retail(f"{HEADER}\n{row}".encode("cp1252"))

    assert [p.title for p in with_bom.products] == ["CAF\u00c9 MUG"]
    assert [p.title for p in windows.products] == ["CAF\u00c9 MUG"]


def test_a_file_that_is_not_online_retail_raises_validation_failed() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_online_retail("id,title,price\na,A,1\n")
    assert "missing InvoiceNo" in caught.value.message

    with pytest.raises(ValidationFailed):
        parse_online_retail(b"")


def test_a_bad_currency_is_a_validation_error() -> None:
    with pytest.raises(ValidationFailed):
        parse_online_retail(SMALL, currency="pounds")


def test_progress_is_reported_every_ten_thousand_rows_and_at_the_end() -> None:
    rows = [
        f"{500000 + i // 5},22633,HAND WARMER,1,2011-01-01 10:00:00,1.95,,UK" for i in range(25_000)
    ]
    calls: list[int] = []

    result = parse_online_retail("\n".join([HEADER, *rows]), progress=calls.append)

    assert calls == [10_000, 20_000, 25_000]
    assert result.stats.orders == 5_000


def test_iter_invoice_lines_yields_typed_rows_and_rejections() -> None:
    text = f"{HEADER}\n536365,85123a, WHITE  HEART ,6,2010-12-01 08:26:00,2.55,17850.0,UK\nx,y\n"

    rows = list(iter_invoice_lines(text, source="day.csv"))

    assert rows == [
        InvoiceLine(
            "536365",
            "85123a",
            "WHITE HEART",
            6,
            255,
            ms(2010, 12, 1, 8, 26),
            "17850",
            "UK",
            2,
            "day.csv",
        ),
        Rejection("The row has 2 cells but the header has 8.", line=3, source="day.csv"),
    ]


def test_a_tar_archive_is_read_in_member_name_order_with_sources(tmp_path: Path) -> None:
    archive = tmp_path / "days.tar.xz"
    day2 = f"{HEADER}\n536400,22633,HAND WARMER,1,2010-12-02 10:00:00,1.95,,UK\nbroken\n"
    day1 = f"{HEADER}\n536300,22633,HAND WARMER OLD,1,2010-12-01 10:00:00,1.85,,UK\n"
    with tarfile.open(archive, "w:xz") as tar:
        members = [
            ("days/2010-12-02.csv", day2),
            ("days/2010-12-01.csv", day1),
            ("days/2010-12-03.csv", "id,title\n"),  # not this layout: rejected, the rest kept
        ]
        for name, text in members:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        notes = tarfile.TarInfo("days/README.txt")
        notes.size = 5
        tar.addfile(notes, io.BytesIO(b"notes"))

    result = parse_online_retail(archive)

    assert [order.id for order in result.orders] == ["536300", "536400"]
    assert [(p.title, p.price) for p in result.products] == [("HAND WARMER", 195)]
    assert [(r.source, r.line) for r in result.rejected] == [
        ("days/2010-12-02.csv", 3),
        ("days/2010-12-03.csv", 1),
    ]
    assert result.rejected[0].message == "The row has 1 cells but the header has 8."
    assert "not the Online Retail layout" in result.rejected[1].message
    assert read_online_retail(str(archive)).stats == result.stats
    assert list(tmp_path.iterdir()) == [archive]  # nothing unpacked


# --- the real data ----------------------------------------------------------------------------


def minor_units(text: str) -> int:
    return int((Decimal(text) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass
class Reference:
    """What the importer should find, computed with a plain loop (columns by position)."""

    rows: int = 0
    invoices: set[str] = field(default_factory=set)
    stock_codes: set[str] = field(default_factory=set)
    customers: set[str] = field(default_factory=set)
    orders: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)
    returns: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, rows: list[list[str]]) -> Reference:
        ref = cls(rows=len(rows))
        for invoice, code, _, quantity, _, price, customer, _ in rows:
            ref.invoices.add(invoice)
            ref.stock_codes.add(code)
            if customer:
                ref.customers.add(customer)
            if not is_product_code(code):
                continue
            if invoice.startswith("C"):
                ref.returns.setdefault(invoice, set()).add(code.upper())
            elif int(quantity) > 0 and minor_units(price) > 0:
                lines = ref.orders.setdefault(invoice, {})
                summed = lines.get(code.upper(), (0, 0))[0] + int(quantity)
                lines[code.upper()] = (summed, minor_units(price))
        return ref

    @property
    def cancellations(self) -> int:
        return sum(1 for invoice in self.invoices if invoice.startswith("C"))


def order_lines(result: OnlineRetailImport) -> dict[str, dict[str, tuple[int, int]]]:
    return {
        order.id: {line.product_id: (line.quantity, line.price) for line in order.lines}
        for order in result.orders
    }


def returned_products(returns: list[ProductReturn]) -> list[list[str]]:
    return sorted(sorted(r.product_ids) for r in returns)


@pytest.mark.dataset
def test_france_file_matches_a_plain_csv_reading() -> None:
    path = datasets() / "online_retail_france.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        header, *body = list(csv.reader(handle))
    assert header[0] == ""  # the pandas index column
    expected = Reference.of([row[1:] for row in body])

    result = parse_online_retail(path)

    assert result.rejected == []
    stats = result.stats
    assert (stats.rows, stats.invoices, stats.return_invoices) == (
        expected.rows,
        len(expected.invoices),
        expected.cancellations,
    )
    assert (stats.stock_codes, stats.customers) == (
        len(expected.stock_codes),
        len(expected.customers),
    )
    # The figures the data README gives for this file.
    assert (stats.rows, stats.invoices, stats.return_invoices) == (8_557, 461, 69)
    assert (stats.stock_codes, stats.customers) == (1_543, 87)
    assert order_lines(result) == expected.orders
    assert len(result.orders) == 382
    assert returned_products(result.returns) == sorted(map(sorted, expected.returns.values()))
    assert {p.id for p in result.products} == {
        pid for lines in expected.orders.values() for pid in lines
    }


@pytest.mark.dataset
def test_full_archive_matches_the_data_readme_and_a_plain_reading() -> None:
    path = datasets() / "retail-data-by-day.tar.xz"
    rows: list[list[str]] = []
    with tarfile.open(path, "r:xz") as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is not None:
                rows.extend(list(csv.reader(io.TextIOWrapper(handle, "utf-8", newline="")))[1:])
    expected = Reference.of(rows)
    del rows

    result = parse_online_retail(path)

    assert result.rejected == []
    stats = result.stats
    assert stats.rows == expected.rows == 541_909
    assert stats.invoices == len(expected.invoices) == 25_900
    assert stats.return_invoices == expected.cancellations == 3_836
    assert stats.stock_codes == len(expected.stock_codes) == 4_070
    assert stats.customers == len(expected.customers) == 4_372
    assert stats.stock_adjustments == 1_336
    assert stats.negative_price_lines == 2
    assert stats.zero_price_lines == 2_515 + 4  # and four at 0.001, which round to 0
    assert order_lines(result) == expected.orders
    assert len(result.orders) == 19_773
    assert returned_products(result.returns) == sorted(map(sorted, expected.returns.values()))
    assert len(result.returns) == 3_422
    assert {p.id for p in result.products} == {
        pid for lines in expected.orders.values() for pid in lines
    }
    assert len(result.products) == 3_798


def test_a_row_with_several_bad_fields_has_a_rejection_for_each() -> None:
    data = "\n".join(
        [
            HEADER,
            "536365,85123A,HEART,6,2010-12-01 08:26:00,2.55,17850,United Kingdom",
            "536366,,HEART,six,yesterday,GBP1,17850,United Kingdom",
        ]
    )

    result = parse_online_retail(data)

    assert [(r.line, r.field) for r in result.rejected] == [
        (3, "StockCode"),
        (3, "Quantity"),
        (3, "InvoiceDate"),
        (3, "UnitPrice"),
    ]
    assert result.rejected[1].message == "Quantity must be a whole number, not 'six'."
    assert (result.stats.rows, result.stats.rejected, result.stats.orders) == (2, 1, 1)
