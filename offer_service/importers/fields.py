"""Validated field types shared by the importers, and pydantic errors turned into rejections."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints, ValidationError

from offer_service.domain.money import MAX_MINOR_UNITS
from offer_service.domain.products import to_minor_units
from offer_service.exceptions import ValidationFailed, field_error
from offer_service.importers.result import Rejection

MAX_URL_LENGTH = 2048

MINOR_UNITS_REQUIRED = "must be an integer amount in minor units (2999 for 29.99), not {value!r}"
# Browsers drop tabs and newlines inside URLs ("java\tscript:" runs as javascript:), and treat
# a backslash as a slash, so any of them makes a URL unsafe to put in an href.
_URL_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")


def check_minor_units(value: object) -> int:
    """Money on input: a non-negative integer of minor units, never a float or a string."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(MINOR_UNITS_REQUIRED.format(value=value))
    if value < 0:
        raise ValueError("must not be negative")
    if value > MAX_MINOR_UNITS:
        raise ValueError(f"must be at most {MAX_MINOR_UNITS}")
    return value


def check_url(value: str) -> str:
    """Only http(s) URLs and relative paths are stored: they end up in the snippet's hrefs."""
    if not value:
        return value
    if _URL_UNSAFE.search(value):
        raise ValueError("must not contain spaces, control characters or backslashes")
    parts = urlsplit(value)
    if parts.scheme:
        if parts.scheme not in ("http", "https"):
            scheme = parts.scheme
            raise ValueError(f"must be an http(s) URL or a relative path, not a {scheme}: URL")
        if not parts.netloc:
            raise ValueError("must name a host after http(s)://")
    return value


def check_currency(value: str) -> str:
    """An ISO 4217 code, upper-cased ('usd' is what Stripe sends)."""
    if not _CURRENCY.fullmatch(value):
        raise ValueError("must be a three-letter ISO 4217 currency code such as USD")
    return value.upper()


def currency_parameter(value: str) -> str:
    """A caller-supplied default currency (a query parameter, a CLI flag): 422 when bad."""
    try:
        return check_currency(value)
    except ValueError as exc:
        message = f"currency {exc}, not {value!r}."
        raise ValidationFailed(message, details=[field_error("currency", message)]) from None


def decimal_to_minor_units(text: str) -> int:
    """'29.99' -> 2999, '30' -> 3000, exactly; rounds half up past the second decimal.
    Raises ValueError for anything that is not a plain decimal number."""
    value = text.strip()
    if not _DECIMAL.fullmatch(value):
        raise ValueError(f"not a price: {text!r}")
    _, dot, fraction = value.partition(".")
    # catalog.to_minor_units reads a third decimal digit, so give it one ('30' -> '30.000').
    return to_minor_units(value + ("" if dot else ".") + "0" * max(0, 3 - len(fraction)))


MinorUnits = Annotated[int, Field(ge=0, le=MAX_MINOR_UNITS), BeforeValidator(check_minor_units)]
Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
SafeUrl = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=MAX_URL_LENGTH),
    AfterValidator(check_url),
]
Currency = Annotated[str, AfterValidator(check_currency)]


_PLAIN_DETAILS = {
    "int_type": "must be a whole number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "model_type": "must be an object",
}


def field_path(loc: Sequence[int | str]) -> str:
    """('lines', 2, 'quantity') -> 'lines[2].quantity'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def rejections_from(
    exc: ValidationError,
    *,
    line: int | None = None,
    index: int | None = None,
    source: str | None = None,
    field_names: dict[str, str] | None = None,
) -> list[Rejection]:
    """One rejection per bad field, each with a one-sentence message naming the field.

    `field_names` renames top-level fields for formats whose columns are named differently
    (a Shopify export's 'Variant Price' is the model's `price`).
    """
    out = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        if loc and field_names and isinstance(loc[0], str):
            loc[0] = field_names.get(loc[0], loc[0])
        path = field_path(loc) or None
        kind = error["type"]
        ctx = error.get("ctx", {})
        if kind == "missing":
            detail = "is required"
        elif kind == "extra_forbidden":
            detail = "is not a known field"
        elif kind == "value_error":
            detail = str(ctx.get("error", error["msg"]))
        elif kind == "model_type" and path is None:
            detail = "must be a JSON object"
        elif kind in _PLAIN_DETAILS:
            detail = _PLAIN_DETAILS[kind]
        elif kind in ("string_too_short", "too_short") and ctx.get("min_length") == 1:
            detail = "must not be empty"
        elif kind == "literal_error":
            detail = f"must be {ctx.get('expected')}"
        elif kind == "greater_than_equal":
            detail = f"must be at least {ctx.get('ge')}"
        elif kind == "less_than_equal":
            detail = f"must be at most {ctx.get('le')}"
        else:  # pydantic's own wording, which starts a sentence
            detail = "is invalid: " + error["msg"][:1].lower() + error["msg"][1:]
        subject = path if path is not None else "The item"
        out.append(
            Rejection(f"{subject} {detail}.", line=line, index=index, field=path, source=source)
        )
    return out
