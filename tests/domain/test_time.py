"""The one timestamp parser: its accepted forms, UTC for naive times, epoch ms where allowed."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from offer_service.domain.time import (
    TimeFormatError,
    epoch_ms,
    parse_date,
    parse_datetime,
    parse_ms,
)

NOV_25_18H = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
NOV_25_18H_MS = 1_795_629_600_000


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-25T18:00:00Z",
        "2026-11-25t18:00:00z",
        "2026-11-25 18:00:00",
        "2026-11-25T18:00",
        "2026-11-25T18:00:00",
        "2026-11-25T19:00:00+01:00",
        "2026-11-25T19:00:00+0100",
        "2026-11-25T13:00:00-05:00",
        # A query string's unescaped '+' arrives as a space.
        "2026-11-25T19:00:00 01:00",
        "  2026-11-25T18:00:00Z\n",
    ],
)
def test_every_accepted_form_is_the_same_utc_moment(text: str) -> None:
    parsed = parse_datetime(text)

    assert parsed == NOV_25_18H
    assert parsed.tzinfo is UTC
    assert parse_ms(text) == NOV_25_18H_MS


def test_a_date_alone_is_its_midnight_utc_and_fractions_are_kept() -> None:
    assert parse_datetime("2026-11-25") == datetime(2026, 11, 25, tzinfo=UTC)
    assert parse_ms("2026-11-25T18:00:00.250Z") == NOV_25_18H_MS + 250
    assert parse_date("2026-11-25") == date(2026, 11, 25)


def test_digits_are_epoch_ms_only_where_epoch_ms_are_allowed() -> None:
    assert parse_ms(str(NOV_25_18H_MS)) == NOV_25_18H_MS
    assert parse_ms("-1000") == -1000
    for digits in (str(NOV_25_18H_MS), "1764093600", "20261125"):
        with pytest.raises(TimeFormatError):
            parse_datetime(digits)  # never guessed to be Unix seconds or a basic-format date


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "\u00b2",
        "\u0663\u0663",  # Arabic-Indic digits: not ASCII, not epoch ms
        "1" * 16,
        "2026-13-01",
        "2026-02-30",
        "2026-11-25T24:00:00",
        "2026-11-25T18",
        "2026-W48-3",
        "2026-11-25T18:00:00+01",
        "0001-01-01T00:00:00+01:00",  # year 0 in UTC
        "1764093600.5",
    ],
)
def test_anything_else_is_a_time_format_error(text: str) -> None:
    with pytest.raises(TimeFormatError):
        parse_ms(text)
    with pytest.raises(ValueError):
        parse_datetime(text)


def test_parse_date_takes_a_date_alone() -> None:
    for text in ("2026-11-25T00:00:00", "11/25/2026", "2026-1-5", "1764093600"):
        with pytest.raises(TimeFormatError):
            parse_date(text)


def test_epoch_ms_is_exact_where_float_seconds_would_round() -> None:
    moment = datetime(2026, 11, 25, 18, 0, 0, 999_999, tzinfo=UTC)

    assert epoch_ms(moment) == NOV_25_18H_MS + 999
    assert epoch_ms(datetime(1969, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)) == -1
