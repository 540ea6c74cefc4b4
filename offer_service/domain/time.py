"""Timestamps on input: one parser, ISO 8601 or epoch milliseconds to aware UTC.

The one set of accepted forms, every route and importer alike (surrounding spaces ignored):
- a date-time `2026-11-25T18:00:00Z`: `T`, `t` or a space between date and time, seconds and a
  fraction optional, then `Z`, `z`, `+01:00`, `+0100` or nothing, which means UTC. A space before
  a trailing `01:00` is a `+` that a query string decoded (`?from=...T18:00:00+01:00` unescaped);
- a date alone, `2026-11-25`: its midnight UTC (the dashboard's date picker makes a date-only
  `to` inclusive itself);
- epoch milliseconds (`-`? and 1 to 15 ASCII digits), only through `parse_ms`, which the fields
  documented "ISO 8601 or epoch milliseconds" use (metrics `from`/`to`, journey `at`). Elsewhere
  a string of digits is refused rather than guessed at (pydantic would read it as Unix seconds).
Anything else raises `TimeFormatError` (a ValueError), as does a time datetime cannot hold in
UTC; callers turn it into their stable 422 naming the field, or an importer's rejection with its
line. Refused although `datetime.fromisoformat` took them: week and ordinal dates, the basic
format without separators, an hour without minutes, an offset of hours alone, non-ASCII digits.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from pydantic import TypeAdapter, ValidationError

ISO_EXAMPLE = "2026-11-25T18:00:00Z"
# The latest time the API reads, 3000-01-01, and the earliest, the epoch: a report or a
# timeline shows its times as dates, which stop at the year 9999.
MAX_MS = 32_503_680_000_000

_DATETIME = TypeAdapter(datetime)
# `[0-9]`, not `\d`: `\d` also matches other scripts' digits.
_EPOCH_MS = re.compile(r"-?[0-9]{1,15}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_QUERY_PLUS = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?)"
    r" ([0-9]{2}:?[0-9]{2})"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


class TimeFormatError(ValueError):
    """The text is not one of the accepted forms, or not a time UTC can hold."""


def parse_datetime(text: str) -> datetime:
    """ISO 8601 text (a date-time or a date) as an aware UTC datetime."""
    value = text.strip()
    plus = _QUERY_PLUS.fullmatch(value)
    if plus:
        value = f"{plus[1]}+{plus[2]}"
    # Only text that starts as a date reaches pydantic, which would take digits for a Unix time.
    if not _DATE.match(value):
        raise TimeFormatError(f"not an ISO 8601 time such as {ISO_EXAMPLE}: {text!r}")
    try:
        moment = _DATETIME.validate_python(value)
    except ValidationError:
        raise TimeFormatError(f"not an ISO 8601 time such as {ISO_EXAMPLE}: {text!r}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is in year 0 in UTC
        raise TimeFormatError(f"out of range in UTC: {text!r}") from None


def parse_ms(text: str) -> int:
    """Epoch milliseconds, or ISO 8601 text (`parse_datetime`), as integer epoch ms."""
    value = text.strip()
    if _EPOCH_MS.fullmatch(value):
        return int(value)
    return epoch_ms(parse_datetime(value))


def parse_date(text: str) -> date:
    """A date alone, `2026-11-25`."""
    value = text.strip()
    if not _DATE.fullmatch(value):
        raise TimeFormatError(f"not a date such as 2026-11-25: {text!r}")
    return parse_datetime(value).date()


def epoch_ms(moment: datetime) -> int:
    """An aware datetime as integer epoch milliseconds, without float rounding."""
    return (moment - _EPOCH) // _ONE_MS
