"""Rows of an Online Retail invoice file (UCI data set 352), typed and located."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import NamedTuple

from offer_service.domain.time import epoch_ms, parse_datetime
from offer_service.exceptions import ValidationFailed, field_error
from offer_service.importers.fields import decimal_to_minor_units
from offer_service.importers.result import Rejection
from offer_service.importers.text import is_blank, lines_of

RETAIL_COLUMNS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)
_OPTIONAL_COLUMNS = frozenset({"country"})
CANCELLATION_PREFIX = "C"


class InvoiceLine(NamedTuple):
    """One row of the invoice file, typed: the stock code as written, the description with
    its whitespace collapsed, money in minor units, time in epoch ms (the data set's times
    are UTC). A NamedTuple: half a million are built per file, and a frozen dataclass costs
    several times as much."""

    invoice_no: str
    stock_code: str
    description: str
    quantity: int
    price: int
    at_ms: int
    customer_id: str | None
    country: str
    line: int
    source: str | None = None

    @property
    def is_cancellation(self) -> bool:
        return self.invoice_no.startswith(CANCELLATION_PREFIX)


def iter_invoice_lines(
    text: str | Iterable[str], *, source: str | None = None
) -> Iterator[InvoiceLine | Rejection]:
    """Each data row of one invoice CSV (its text, or its lines as `decoded_lines` gives them),
    typed, or a Rejection (with its physical line) for a malformed row. Blank lines are
    skipped. Raises ValidationFailed if the header is not the Online Retail layout."""
    reader = csv.reader(lines_of(text))
    previous = 0
    columns: dict[str, int] | None = None
    width = 0
    dates: dict[str, int] = {}
    prices: dict[str, int] = {}
    customers: dict[str, str | None] = {}
    descriptions: dict[str, str] = {}
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            yield Rejection(
                f"The row cannot be read as CSV ({exc}).", line=previous + 1, source=source
            )
            if reader.line_num == previous:
                break
            previous = reader.line_num
            continue
        line = previous + 1
        previous = reader.line_num
        if columns is None:
            if is_blank(cells):
                continue
            columns = _header_columns(cells, line, source)
            width = len(cells)
            i_invoice, i_code, i_description, i_quantity, i_date, i_price, i_customer = (
                columns[name.lower()] for name in RETAIL_COLUMNS[:7]
            )
            i_country = columns.get("country")
            continue
        if len(cells) != width:
            if is_blank(cells):
                continue
            message = f"The row has {len(cells)} cells but the header has {width}."
            yield Rejection(message, line=line, source=source)
            continue
        # The first bad field ends the fast path; `_row_problems` then names every one.
        raw_quantity = cells[i_quantity]
        try:
            quantity = int(raw_quantity)
        except ValueError:
            whole = _float_quantity(raw_quantity)
            if whole is None:
                yield from _row_problems(cells, columns, line, source)
                continue
            quantity = whole
        raw_price = cells[i_price]
        price = prices.get(raw_price)
        if price is None:
            try:
                price = prices[raw_price] = decimal_to_minor_units(raw_price)
            except ValueError:
                yield from _row_problems(cells, columns, line, source)
                continue
        raw_date = cells[i_date]
        at_ms = dates.get(raw_date)
        if at_ms is None:
            try:
                at_ms = dates[raw_date] = _date_ms(raw_date)
            except ValueError:
                yield from _row_problems(cells, columns, line, source)
                continue
        invoice_no = cells[i_invoice].strip()
        stock_code = cells[i_code].strip()
        if not invoice_no or not stock_code:
            yield from _row_problems(cells, columns, line, source)
            continue
        raw_customer = cells[i_customer]
        if raw_customer in customers:
            customer_id = customers[raw_customer]
        else:
            customer_id = customers[raw_customer] = _customer_id(raw_customer)
        raw_description = cells[i_description]
        description = descriptions.get(raw_description)
        if description is None:
            # Titles: no stray, doubled or line-breaking whitespace ("CUTTERS  SET ").
            description = descriptions[raw_description] = " ".join(raw_description.split())
        yield InvoiceLine(
            invoice_no,
            stock_code,
            description,
            quantity,
            price,
            at_ms,
            customer_id,
            cells[i_country].strip() if i_country is not None else "",
            line,
            source,
        )
    if columns is None:
        where = f" ({source})" if source else ""
        message = f"The file{where} is empty: it needs the header {','.join(RETAIL_COLUMNS)}."
        raise ValidationFailed(message, details=[field_error(source or "line 1", message)])


def _header_columns(cells: list[str], line: int, source: str | None) -> dict[str, int]:
    """Column positions by lower-cased name; extra columns (pandas' unnamed index) are fine."""
    names = [cell.strip().lower() for cell in cells]
    columns = {name: i for i, name in reversed(list(enumerate(names))) if name}
    missing = [
        name
        for name in RETAIL_COLUMNS
        if name.lower() not in columns and name.lower() not in _OPTIONAL_COLUMNS
    ]
    if missing:
        where = f"{source}, line {line}" if source else f"line {line}"
        message = (
            f"The header ({where}) is not the Online Retail layout: missing "
            + ", ".join(missing)
            + f". Expected {','.join(RETAIL_COLUMNS)}."
        )
        raise ValidationFailed(message, details=[field_error(where, message)])
    return columns


def _float_quantity(text: str) -> int | None:
    """pandas writes an integer column that held a NaN as floats: '6.0' is 6."""
    whole, dot, fraction = text.strip().partition(".")
    if dot and fraction and not fraction.strip("0"):
        try:
            return int(whole)
        except ValueError:
            return None
    return None


def _date_ms(text: str) -> int:
    """'2010-12-01 08:26:00' or the pandas export's '12/1/2010 8:26', as UTC epoch ms.
    The second is the data set's own layout, not ISO 8601, so it is read here."""
    value = text.strip()
    if "/" in value:
        day, _, clock = value.partition(" ")
        month, mday, year = (int(part) for part in day.split("/"))
        hms = [int(part) for part in clock.split(":")] if clock else []
        if len(hms) > 3 or len(hms) == 1:
            raise ValueError(value)
        hour, minute, second = (*hms, 0, 0, 0)[:3]
        moment = datetime(year, month, mday, hour, minute, second, tzinfo=UTC)
    else:
        moment = parse_datetime(value)
    return epoch_ms(moment)


def _customer_id(text: str) -> str | None:
    """'17850.0' -> '17850' (pandas turned the ids into floats); empty -> None (a guest)."""
    value = text.strip()
    if value.endswith(".0"):
        value = value[:-2]
    return value or None


def _quantity(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        whole = _float_quantity(text)
        if whole is None:
            raise
        return whole


# The typed columns, what each must be, and how it is read (raising ValueError if it is not).
_TYPED_COLUMNS: tuple[tuple[str, str, Callable[[str], int]], ...] = (
    ("Quantity", "a whole number", _quantity),
    ("InvoiceDate", "a date such as 2010-12-01 08:26:00 or 12/1/2010 8:26", _date_ms),
    ("UnitPrice", "a decimal amount such as 2.55", decimal_to_minor_units),
)


def _row_problems(
    cells: list[str], columns: dict[str, int], line: int, source: str | None
) -> list[Rejection]:
    """Every bad field of a row, in the layout's column order."""
    out = []
    for name in ("InvoiceNo", "StockCode"):
        if not cells[columns[name.lower()]].strip():
            out.append(Rejection(f"{name} is empty.", line=line, field=name, source=source))
    for name, expected, read in _TYPED_COLUMNS:
        value = cells[columns[name.lower()]]
        try:
            read(value)
        except ValueError:
            message = f"{name} must be {expected}, not {value!r}."
            out.append(Rejection(message, line=line, field=name, source=source))
    return out
