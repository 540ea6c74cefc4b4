"""Catalog CSV: the native layout (the JSON fields as columns) and Shopify's product export."""

from __future__ import annotations

import dataclasses
import heapq
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Literal
from urllib.parse import quote

from offer_service.domain.products import Product
from offer_service.exceptions import ValidationFailed, field_error
from offer_service.importers.catalog_json import ProductIn, duplicate_id, validate_product
from offer_service.importers.fields import currency_parameter, decimal_to_minor_units
from offer_service.importers.result import MAX_LISTED_REJECTIONS, ImportResult, Rejection
from offer_service.importers.seen import FirstSeen
from offer_service.importers.text import CsvRow, csv_rows, decoded_lines, is_blank
from offer_service.types import is_whole

CsvFormat = Literal["csv", "shopify", "auto"]

NATIVE_COLUMNS: tuple[str, ...] = tuple(ProductIn.model_fields)
REQUIRED_NATIVE_COLUMNS = ("id", "title", "price")
_KNOWN_NATIVE = frozenset(NATIVE_COLUMNS)
# A header of thousands of unknown columns is refused with the first few named, not all of them.
MAX_HEADER_PROBLEMS = 20
_MONEY_COLUMNS = frozenset({"price", "cost", "compare_at_price"})
_INT_COLUMNS = frozenset({"tier", "inventory", "replenish_days"})
_BOOL_COLUMNS = frozenset({"active"})
_LIST_COLUMNS = frozenset({"tags", "complements", "flags"})
LIST_SEPARATOR = "|"
_TRUE = frozenset({"true", "1", "yes", "y"})
_FALSE = frozenset({"false", "0", "no", "n"})
_WHOLE = re.compile(r"[+-]?\d+")

# Shopify's product export, by lower-cased header. Real exports carry ~50 columns; the rest
# (Body (HTML), Vendor, SEO Title, Variant Grams, ...) are ignored.
SHOPIFY_DETECT = ("handle", "variant price")
REQUIRED_SHOPIFY_COLUMNS = ("handle", "title", "variant price")
_SHOPIFY_COLUMNS = (
    "handle",
    "title",
    "type",
    "tags",
    "status",
    "published",
    "option1 value",
    "option2 value",
    "option3 value",
    "variant sku",
    "variant price",
    "variant compare at price",
    "cost per item",
    "variant inventory tracker",
    "variant inventory qty",
    "image src",
    "variant image",
)
# Model fields named as the export's columns, so that messages point at what the user sees.
_SHOPIFY_NAMES = {
    "id": "Variant SKU",
    "title": "Title",
    "price": "Variant Price",
    "compare_at_price": "Variant Compare At Price",
    "cost": "Cost per item",
    "inventory": "Variant Inventory Qty",
    "category": "Type",
    "tags": "Tags",
    "image_url": "Image Src",
    "url": "Handle",
    "family": "Handle",
}
_NO_OPTION = "Default Title"  # Shopify's option value for a product without variants


def parse_catalog_csv(
    data: bytes | str | IO[bytes], default_currency: str = "USD", format: CsvFormat = "auto"
) -> ImportResult[Product]:
    """Parse a catalog CSV (native layout or Shopify export; `auto` tells them apart by the
    `Handle` and `Variant Price` headers). Every rejection names its 1-based physical line.

    Raises ValidationFailed only for the file as a whole: empty, or a header that is neither
    layout. Malformed rows are rejected and the rest kept.
    """
    result: ImportResult[Product] = ImportResult()
    result.items.extend(iter_catalog_csv(data, result, default_currency, format))
    return result


def iter_catalog_csv(
    data: bytes | str | IO[bytes],
    result: ImportResult[Product],
    default_currency: str = "USD",
    format: CsvFormat = "auto",
) -> Iterator[Product]:
    """`parse_catalog_csv` one product at a time, for callers that write as they read; the
    rejections go to `result`, complete once the iterator is exhausted. The whole-file errors
    are raised by the call itself, before any product. A large file (`data` may be a seekable
    binary file) is read a chunk at a time."""
    currency = currency_parameter(default_currency)
    rows = csv_rows(decoded_lines(data))
    header = next((row for row in rows if row.error or not is_blank(row.cells)), None)
    if header is None:
        raise _header_error(1, "The CSV file is empty: it needs a header row.")
    if header.error:
        raise _header_error(header.line, f"The header on line {header.line}: {header.error}")
    names = [cell.strip().lower() for cell in header.cells]
    if format == "auto":
        format = "shopify" if all(name in names for name in SHOPIFY_DETECT) else "csv"
    if format not in ("csv", "shopify"):
        message = f"format must be csv, shopify or auto, not {format!r}."
        raise ValidationFailed(message, details=[field_error("format", message)])
    if format == "shopify":
        built = _shopify_products(header, names, rows, currency)
    else:
        built = _native_products(header, names, rows, currency)
    return _collect(built, result)


def _header_error(line: int, message: str) -> ValidationFailed:
    return ValidationFailed(message, details=[field_error(f"line {line}", message)])


def _collect(
    built: Iterator[tuple[int, Product | None, list[Rejection]]], result: ImportResult[Product]
) -> Iterator[Product]:
    """Products in order, refusing a second product with an id already seen; the rejections
    listed are those of the lowest lines (a Shopify export's come out grouped by product)."""
    first_line = FirstSeen()
    # A max-heap of (-line, -arrival, rejection): the MAX_LISTED_REJECTIONS lowest seen so far.
    lowest: list[tuple[int, int, Rejection]] = []
    arrival = 0
    try:
        for line, product, problems in built:
            first = None if product is None else first_line.first(product.id, line)
            if product is not None and first is not None:
                duplicate = duplicate_id(product.id, f"line {first}")
                product, problems = None, [dataclasses.replace(duplicate, line=line)]
            if product is None:
                result.rejected_count += 1
                result.rejected_total += len(problems)
                for problem in problems:
                    arrival += 1
                    entry = (-(problem.line or 0), -arrival, problem)
                    if len(lowest) < MAX_LISTED_REJECTIONS:
                        heapq.heappush(lowest, entry)
                    elif entry > lowest[0]:
                        heapq.heapreplace(lowest, entry)
                continue
            yield product
    finally:
        first_line.close()
    result.rejected = [problem for _, _, problem in sorted(lowest, reverse=True)]


def _every_problem(cells: list[Rejection], model: list[Rejection], line: int) -> list[Rejection]:
    """A row's problems: its cells that could not be read, then every other field the model
    refused, so that one look at the report fixes the whole row. A cell that could not be
    read is absent to the model, which would call it missing as well: that is left out."""
    unread = {r.field for r in cells}
    return cells + [
        dataclasses.replace(r, line=line)
        for r in model
        if r.field is None or r.field.partition("[")[0].partition(".")[0] not in unread
    ]


def _cell_count_problem(row: CsvRow, width: int) -> Rejection | None:
    if row.error:
        return Rejection(row.error, line=row.line)
    if len(row.cells) != width:
        return Rejection(
            f"The row has {len(row.cells)} cells but the header has {width}.", line=row.line
        )
    return None


# --- native layout ------------------------------------------------------------------------


def _native_products(
    header: CsvRow, names: list[str], rows: Iterator[CsvRow], currency: str
) -> Iterator[tuple[int, Product | None, list[Rejection]]]:
    _check_native_header(header.line, names)
    for row in rows:
        if not row.error and is_blank(row.cells):
            continue
        problem = _cell_count_problem(row, len(names))
        if problem is not None:
            yield row.line, None, [problem]
            continue
        item: dict[str, Any] = {}
        problems: list[Rejection] = []
        for name, cell in zip(names, row.cells, strict=True):
            value = cell.strip()
            if not name or not value:  # an empty cell is an absent field
                continue
            try:
                item[name] = _native_value(name, value)
            except ValueError as exc:
                problems.append(Rejection(f"{name} {exc}.", line=row.line, field=name))
        product, invalid = validate_product(item, currency)
        problems = _every_problem(problems, invalid, row.line)
        yield row.line, None if problems else product, problems


def _check_native_header(line: int, names: list[str]) -> None:
    # Counted once rather than names.count() per column: a 40,000-column header took 38 s.
    seen = Counter(name for name in names if name)
    unknown = [name for name in names if name and name not in _KNOWN_NATIVE]
    duplicated = sorted(name for name, count in seen.items() if count > 1)
    missing = [name for name in REQUIRED_NATIVE_COLUMNS if name not in seen]
    problems = [f"unknown column {name!r}" for name in unknown]
    problems += [f"column {name!r} appears twice" for name in duplicated]
    problems += [f"required column {name!r} is missing" for name in missing]
    if problems:
        listed = problems[:MAX_HEADER_PROBLEMS]
        more = len(problems) - len(listed)
        raise ValidationFailed(
            f"The CSV header on line {line} is neither the native layout nor a Shopify export: "
            + "; ".join(listed)
            + (f"; and {more} more problems" if more else "")
            + f". Native columns are: {', '.join(NATIVE_COLUMNS)}.",
            details=[field_error(f"line {line}", problem) for problem in listed],
        )


def _native_value(name: str, value: str) -> Any:
    """A cell as the JSON value it stands for; the model then validates it like JSON."""
    if name in _MONEY_COLUMNS:
        if is_whole(value):
            return int(value)
        if _WHOLE.fullmatch(value):
            raise ValueError("must not be negative")
        raise ValueError(f"must be a whole number of minor units (2999 for 29.99), not {value!r}")
    if name in _INT_COLUMNS:
        if _WHOLE.fullmatch(value):
            return int(value)
        raise ValueError(f"must be a whole number, not {value!r}")
    if name in _BOOL_COLUMNS:
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ValueError(f"must be true or false, not {value!r}")
    if name in _LIST_COLUMNS:
        return [part.strip() for part in value.split(LIST_SEPARATOR) if part.strip()]
    return value


# --- Shopify product export ---------------------------------------------------------------


@dataclass(slots=True)
class _Handle:
    """The rows of one Shopify product: product-level fields, variant rows, images."""

    handle: str
    line: int
    title: str = ""
    product_type: str = ""
    tags: str = ""
    status: str = ""
    published: str = ""
    image: str = ""
    variants: list[tuple[int, dict[str, str]]] = field(default_factory=list)


def _shopify_products(
    header: CsvRow, names: list[str], rows: Iterator[CsvRow], currency: str
) -> Iterator[tuple[int, Product | None, list[Rejection]]]:
    missing = [name for name in REQUIRED_SHOPIFY_COLUMNS if name not in names]
    if missing:
        labels = ", ".join(name.title() for name in missing)
        message = f"The Shopify export's header on line {header.line} lacks {labels}."
        raise _header_error(header.line, message)
    columns = {name: names.index(name) for name in _SHOPIFY_COLUMNS if name in names}
    handles: dict[str, _Handle] = {}
    for row in rows:
        if not row.error and is_blank(row.cells):
            continue
        problem = _cell_count_problem(row, len(names))
        if problem is not None:
            yield row.line, None, [problem]
            continue
        cells = {name: row.cells[i].strip() for name, i in columns.items()}
        handle = cells["handle"]
        if not handle:
            yield row.line, None, [Rejection("Handle is empty.", line=row.line, field="Handle")]
            continue
        product = handles.get(handle)
        if product is None:
            product = handles[handle] = _Handle(handle, row.line)
        # Product-level fields live on the handle's first row; take the first one filled in.
        product.title = product.title or cells.get("title", "")
        product.product_type = product.product_type or cells.get("type", "")
        product.tags = product.tags or cells.get("tags", "")
        product.status = product.status or cells.get("status", "")
        product.published = product.published or cells.get("published", "")
        product.image = product.image or cells.get("image src", "")
        # Rows with only Handle and Image Src add pictures, not variants.
        if any(cells.get(name) for name in ("variant price", "variant sku", "option1 value")):
            product.variants.append((row.line, cells))
    for product in handles.values():
        if not product.variants:
            message = f"Product {product.handle!r} has no variant row (no Variant Price)."
            yield product.line, None, [Rejection(message, line=product.line, field="Variant Price")]
            continue
        for position, (line, cells) in enumerate(product.variants):
            yield _shopify_variant(product, position, line, cells, currency)


def _shopify_variant(
    product: _Handle, position: int, line: int, cells: dict[str, str], currency: str
) -> tuple[int, Product | None, list[Rejection]]:
    several = len(product.variants) > 1
    title = product.title
    options = [cells.get(f"option{n} value", "") for n in (1, 2, 3)]
    options = [value for value in options if value and value != _NO_OPTION]
    if several and options:
        title = f"{title} - {' / '.join(options)}"
    item: dict[str, Any] = {
        "id": cells.get("variant sku") or _variant_id(product.handle, position),
        "title": title,
        "url": "/products/" + quote(product.handle, safe=""),
        "image_url": cells.get("variant image") or cells.get("image src") or product.image,
        "category": product.product_type,
        "tags": [tag.strip() for tag in product.tags.split(",") if tag.strip()],
        "active": _shopify_active(product),
    }
    if several:
        item["family"] = product.handle
    problems: list[Rejection] = []
    money = (
        ("price", "variant price", "Variant Price"),
        ("compare_at_price", "variant compare at price", "Variant Compare At Price"),
        ("cost", "cost per item", "Cost per item"),
    )
    for key, column, label in money:
        value = cells.get(column, "")
        if not value:
            continue
        try:
            item[key] = major_to_minor_units(value)
        except ValueError as exc:
            problems.append(Rejection(f"{label} {exc}.", line=line, field=label))
    if not cells.get("variant price"):
        problems.append(Rejection("Variant Price is empty.", line=line, field="Variant Price"))
    compare_at = item.get("compare_at_price")
    if compare_at is not None and compare_at <= item.get("price", 0):
        del item["compare_at_price"]  # not on sale: Shopify leaves stale compare-at prices
    quantity = cells.get("variant inventory qty", "")
    untracked = "variant inventory tracker" in cells and not cells["variant inventory tracker"]
    if quantity and not untracked:
        if _WHOLE.fullmatch(quantity):
            item["inventory"] = int(quantity)
        else:
            label = "Variant Inventory Qty"
            message = f"{label} must be a whole number, not {quantity!r}."
            problems.append(Rejection(message, line=line, field=label))
    built, invalid = validate_product(item, currency, _SHOPIFY_NAMES)
    problems = _every_problem(problems, invalid, line)
    return line, None if problems else built, problems


def _variant_id(handle: str, position: int) -> str:
    """A variant without a SKU: the handle, then `handle-2`, `handle-3` for later ones."""
    return handle if position == 0 else f"{handle}-{position + 1}"


def _shopify_active(product: _Handle) -> bool:
    if product.status:
        return product.status.lower() == "active"
    # Exports from before the Status column said whether the product was published.
    return product.published.lower() not in _FALSE


def major_to_minor_units(text: str) -> int:
    """'29.99' -> 2999 exactly. A price with more decimals than cents ('19.999') is refused
    rather than rounded: a catalog price is what the buyer will be charged."""
    _, dot, fraction = text.strip().partition(".")
    if dot and len(fraction.rstrip("0")) > 2:
        raise ValueError(f"has more than two decimals ({text!r})")
    try:
        amount = decimal_to_minor_units(text)
    except ValueError:
        raise ValueError(f"must be a decimal amount such as 29.99, not {text!r}") from None
    if amount < 0:
        raise ValueError("must not be negative")
    return amount
