"""Online Retail invoice lines (UCI data set 352) turned into orders, returns and a catalog."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import quote

from offer_service.domain.orders import Order, OrderLine, ProductReturn
from offer_service.domain.products import Product, is_product_code
from offer_service.exceptions import ValidationFailed
from offer_service.importers.fields import currency_parameter
from offer_service.importers.invoice_lines import (
    CANCELLATION_PREFIX,
    InvoiceLine,
    iter_invoice_lines,
)
from offer_service.importers.result import ImportResult, Rejection
from offer_service.importers.text import decode_text, decoded_lines

PROGRESS_EVERY = 10_000

Progress = Callable[[int], None]


@dataclass(slots=True)
class OnlineRetailStats:
    """Counts over every data row read. Categories overlap (a fee line on a cancellation
    counts in both `fee_lines` and the return); `rows` includes rejected rows."""

    rows: int = 0
    rejected: int = 0
    invoices: int = 0  # distinct invoice numbers, cancellations included
    orders: int = 0  # Orders produced
    return_invoices: int = 0  # distinct C invoices
    returns: int = 0  # ProductReturns produced (C invoices with a product line)
    product_lines: int = 0  # rows that became order lines, before merging repeats
    fee_lines: int = 0  # rows whose stock code is a fee or accounting code
    stock_adjustments: int = 0  # negative quantity on an ordinary invoice
    zero_price_lines: int = 0  # price 0 after conversion (0.001 rounds to 0 pence)
    negative_price_lines: int = 0
    stock_codes: int = 0  # distinct codes as written ("85123a" and "85123A" count twice)
    products: int = 0
    customers: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class OnlineRetailImport:
    """What an invoice file holds, in the engine's terms."""

    products: list[Product]
    orders: list[Order]
    returns: list[ProductReturn]
    stats: OnlineRetailStats
    rejected: list[Rejection]  # the first MAX_LISTED_REJECTIONS
    rejected_total: int = 0


def parse_online_retail(
    source: bytes | str | IO[bytes] | os.PathLike[str],
    *,
    currency: str = "GBP",
    progress: Progress | None = None,
) -> OnlineRetailImport:
    """Parse Online Retail invoice lines into products, orders and returns.

    `source` is CSV content (bytes in UTF-8, with or without BOM, or cp1252; str; or a
    seekable binary file of it, read a chunk at a time), or a `Path` to a CSV file or to a tar
    archive of daily CSVs (`retail-data-by-day.tar.xz`), read member by member in name order
    without unpacking to disk. A plain str is content: pass a
    Path, or use `read_online_retail`, for a file name. Both the data set's own layout and the
    pandas export (leading index column, `M/D/YYYY H:MM` dates, CRLF) are read; times are UTC.
    `progress`, if given, is called with the number of rows read every 10,000 rows and at the end.
    """
    if isinstance(source, os.PathLike):
        return read_online_retail(source, currency=currency, progress=progress)
    code = currency_parameter(currency)
    return _import([(None, lambda: decoded_lines(source))], code, progress)


def read_online_retail(
    path: str | os.PathLike[str], *, currency: str = "GBP", progress: Progress | None = None
) -> OnlineRetailImport:
    """Parse an invoice CSV file or a tar archive of them (see `parse_online_retail`)."""
    code = currency_parameter(currency)
    file = Path(path)
    if tarfile.is_tarfile(file):
        with tarfile.open(file, "r:*") as archive:
            return _import(_archive_texts(archive), code, progress)
    with file.open("rb") as handle:
        return _import([(None, lambda: decoded_lines(handle))], code, progress)


def _archive_texts(archive: tarfile.TarFile) -> Iterator[tuple[str, Callable[[], str]]]:
    members = sorted(
        (m for m in archive.getmembers() if m.isfile() and _is_csv_name(m.name)),
        key=lambda m: m.name,
    )
    for member in members:

        def read(member: tarfile.TarInfo = member) -> str:
            handle = archive.extractfile(member)
            if handle is None:  # not a regular file after all
                return ""
            with handle:
                return decode_text(handle.read())

        yield member.name, read


def _is_csv_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.lower().endswith(".csv") and not base.startswith("._")  # skip macOS droppings


def _import(
    texts: Iterable[tuple[str | None, Callable[[], str | Iterable[str]]]],
    currency: str,
    progress: Progress | None,
) -> OnlineRetailImport:
    aggregate = _Aggregate(currency)
    rejections: ImportResult[None] = ImportResult()
    rows = 0
    for source, read in texts:
        row: list[Rejection] = []  # the bad fields of the row being read
        try:
            for item in iter_invoice_lines(read(), source=source):
                if isinstance(item, Rejection):
                    # One rejection per bad field: a row's second one is not another row.
                    if row and row[-1].line == item.line:
                        row.append(item)
                        continue
                    rejections.reject(row)
                    row = [item]
                else:
                    rejections.reject(row)
                    row = []
                    aggregate.add(item)
                rows += 1
                if progress is not None and rows % PROGRESS_EVERY == 0:
                    progress(rows)
        except ValidationFailed as exc:
            # A whole file in the wrong layout (or empty). Alone, that is the caller's error;
            # one bad member of an archive is a rejection, and the other days still count.
            if source is None:
                raise
            rejections.reject([Rejection(exc.message, line=1, source=source)])
        rejections.reject(row)
    if progress is not None:
        progress(rows)
    result = aggregate.finish()
    result.stats.rows = rows
    result.stats.rejected = rejections.rejected_count
    result.rejected_total = rejections.rejected_total
    result.rejected = rejections.rejected
    return result


@dataclass(slots=True)
class _Invoice:
    at_ms: int
    customer_id: str | None
    is_return: bool
    # product id -> summed quantity / latest unit price; two flat dicts rather than a list per
    # line, because half a million small lists keep the garbage collector busy.
    quantities: dict[str, int] = field(default_factory=dict)
    prices: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _ProductSeen:
    # Titles come from priced lines: the price-0 stock adjustment rows carry notes ("?",
    # "damaged", "check") in the Description column, not product names. Those notes are only
    # a last resort for a product that never had a described priced line.
    title_ms: int = -1
    title: str = ""
    note_ms: int = -1
    note: str = ""
    price_ms: int = -1
    price: int = 0


class _Aggregate:
    """Folds typed rows into invoices and product facts, in one pass."""

    def __init__(self, currency: str) -> None:
        self.currency = currency
        self.invoices: dict[str, _Invoice] = {}
        self.products: dict[str, _ProductSeen] = {}
        self.codes: dict[str, str | None] = {}  # code as written -> product id, None for a fee
        self.customers: set[str] = set()
        self.stats = OnlineRetailStats()
        self.last: tuple[str, _Invoice] | None = None  # an invoice's rows come together

    def add(self, row: InvoiceLine) -> None:
        invoice_no, code, description, quantity, price, at_ms, customer_id, _, _, _ = row
        last = self.last
        if last is not None and last[0] == invoice_no:
            invoice = last[1]
        else:
            found = self.invoices.get(invoice_no)
            if found is None:
                is_return = invoice_no.startswith(CANCELLATION_PREFIX)
                found = self.invoices[invoice_no] = _Invoice(at_ms, customer_id, is_return)
            invoice = found
            self.last = (invoice_no, invoice)
        if at_ms < invoice.at_ms:  # an invoice keyed across a minute boundary
            invoice.at_ms = at_ms
        if customer_id is not None:
            self.customers.add(customer_id)
            if invoice.customer_id is None:
                invoice.customer_id = customer_id
        if price <= 0:
            if price == 0:
                self.stats.zero_price_lines += 1
            else:
                self.stats.negative_price_lines += 1
        product_id = self.codes.get(code, "")
        if product_id == "":
            # The data set writes some codes in two cases ("85123a", "85123A"): one product.
            product_id = self.codes[code] = code.upper() if is_product_code(code) else None
        if product_id is None:
            self.stats.fee_lines += 1
            if quantity < 0 and not invoice.is_return:
                self.stats.stock_adjustments += 1
            return
        seen = self.products.get(product_id)
        if seen is None:
            seen = self.products[product_id] = _ProductSeen()
        if description:
            if price > 0:
                if at_ms >= seen.title_ms:
                    seen.title_ms = at_ms
                    seen.title = description
            elif at_ms >= seen.note_ms:
                seen.note_ms = at_ms
                seen.note = description
        quantities = invoice.quantities
        if invoice.is_return:
            quantities[product_id] = quantities.get(product_id, 0) + quantity
        elif quantity < 0:
            self.stats.stock_adjustments += 1
        elif quantity > 0 and price > 0:
            self.stats.product_lines += 1
            quantities[product_id] = quantities.get(product_id, 0) + quantity
            invoice.prices[product_id] = price
            if at_ms >= seen.price_ms:
                seen.price_ms = at_ms
                seen.price = price

    def finish(self) -> OnlineRetailImport:
        products = [
            Product(
                id=product_id,
                title=seen.title or seen.note or product_id,
                price=seen.price,
                currency=self.currency,
                url="/products/" + quote(product_id, safe=""),
            )
            for product_id, seen in self.products.items()
            if seen.price_ms >= 0  # never sold at a price: nothing to offer
        ]
        orders: list[Order] = []
        returns: list[ProductReturn] = []
        # The same product, quantity and price recur across invoices (72k distinct lines among
        # half a million): sharing the immutable OrderLines saves most of their cost and memory.
        shared: dict[tuple[str, int, int], OrderLine] = {}
        for invoice_no, invoice in self.invoices.items():
            if not invoice.quantities:
                continue
            if invoice.is_return:
                product_ids = tuple(invoice.quantities)
                returns.append(ProductReturn(product_ids, invoice.at_ms, None, invoice.customer_id))
                continue
            lines = []
            for product_id, quantity in invoice.quantities.items():
                key = (product_id, quantity, invoice.prices[product_id])
                line = shared.get(key)
                if line is None:
                    line = shared[key] = OrderLine(*key)
                lines.append(line)
            orders.append(
                Order(invoice_no, invoice.at_ms, self.currency, tuple(lines), invoice.customer_id)
            )
        stats = self.stats
        stats.invoices = len(self.invoices)
        stats.orders = len(orders)
        stats.return_invoices = sum(1 for inv in self.invoices.values() if inv.is_return)
        stats.returns = len(returns)
        stats.stock_codes = len(self.codes)
        stats.products = len(products)
        stats.customers = len(self.customers)
        return OnlineRetailImport(products, orders, returns, stats, [])
