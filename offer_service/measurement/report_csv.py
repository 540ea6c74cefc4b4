"""The measurement report as CSV: one figure per row, ready for a spreadsheet's pivot table.

Columns: `section,dimension,key,metric,value,ci_low,ci_high,currency`. Money is in minor units
(`currency` names them); averages of money carry two decimals; rates are fractions. Text that
would start a formula is prefixed with `'` (see `_cell`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from typing import Any

HEADER = ("section", "dimension", "key", "metric", "value", "ci_low", "ci_high", "currency")
# Fields that name a row rather than measure it.
_LABELS = frozenset(("surface", "kind", "product_id", "arm", "title", "start"))

# What a spreadsheet reads as the start of a formula (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

Row = tuple[str, str, str, str, Any, Any, Any, str]


def _figures(section: str, dimension: str, key: str, data: Mapping[str, Any]) -> Iterator[Row]:
    for metric, v in data.items():
        if metric in _LABELS:
            continue
        if isinstance(v, Mapping) and "ci" in v:
            low, high = v["ci"] if v["ci"] is not None else (None, None)
            yield (section, dimension, key, metric, v["value"], low, high, v.get("currency", ""))
        elif isinstance(v, Mapping) and "amount" in v:
            yield (section, dimension, key, metric, v["amount"], None, None, v["currency"])
        elif isinstance(v, int | float) and not isinstance(v, bool):
            yield (section, dimension, key, metric, v, None, None, "")


def rows(report: Mapping[str, Any]) -> Iterator[Row]:
    """Every figure of the report as a row."""
    for name in ("store_id", "from", "to", "surface", "currency", "generated_at"):
        yield ("report", "", "", name, report[name], None, None, "")
    yield (
        "report",
        "",
        "",
        "attribution_window_days",
        report["attribution"]["window_days"],
        None,
        None,
        "",
    )
    yield from _figures("totals", "", "", report["totals"])
    yield from _figures("orders", "", "", report["orders"])
    holdout = report["holdout"]
    yield from _figures("holdout", "", "", holdout)
    for group, data in holdout["groups"].items():
        yield from _figures("holdout", "group", group, data)
    for arm in holdout["arms"]:
        yield from _figures("holdout", "arm", arm["arm"], arm)
    for dimension, table in report["breakdown"].items():
        label = "product_id" if dimension == "product" else dimension
        for row in table:
            key = row[label]
            yield from _figures("breakdown", dimension, "" if key is None else str(key), row)
    for point in report["series"]["attach_rate"]["points"]:
        yield from _figures("series", "attach_rate", point["start"], point)
    invalid = report["invalid_traffic"]
    yield from _figures("invalid_traffic", "", "", invalid)
    for dimension in ("by_reason", "by_type"):
        label = dimension.removeprefix("by_")
        for key, n in invalid[dimension].items():
            yield ("invalid_traffic", label, key, "events", n, None, None, "")


def _cell(x: Any) -> Any:
    """A value as its cell. Text that a spreadsheet would run as a formula (a product id such
    as `=HYPERLINK(...)`) gets a leading `'`, as OWASP recommends against CSV injection; figures
    are numbers, never text, so a negative one is written as it is."""
    if x is None:
        return ""
    if isinstance(x, str) and x.startswith(FORMULA_STARTS):
        return "'" + x
    return x


def to_csv(report: Mapping[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    # The writer quotes a cell holding its line terminator, "\n", but not a bare "\r", which a
    # spreadsheet reads as a line break too (a new row, whose first cell may be a formula): a
    # row with one has all its text quoted.
    quoting = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    writer.writerow(HEADER)
    for row in rows(report):
        cells = [_cell(x) for x in row]
        breaks = any(isinstance(x, str) and "\r" in x for x in cells)
        (quoting if breaks else writer).writerow(cells)
    return out.getvalue()
