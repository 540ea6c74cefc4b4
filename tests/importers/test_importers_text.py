"""Decoding uploads and reading CSV rows with their physical line numbers."""

from __future__ import annotations

import csv
import io

import pytest

from offer_service.importers import parse_catalog_csv, text
from offer_service.importers.text import csv_rows, decode_text, decoded_lines, text_lines


def test_utf8_with_or_without_bom_and_cp1252_all_decode() -> None:
    assert decode_text("caf\u00e9".encode()) == "caf\u00e9"
    assert decode_text(b"\xef\xbb\xbfcaf\xc3\xa9") == "caf\u00e9"
    assert decode_text(b"caf\xe9 \x80") == "caf\u00e9 \u20ac"  # cp1252, euro sign included
    assert decode_text("\ufeffcaf\u00e9") == "caf\u00e9"


def test_bytes_undefined_in_cp1252_are_replaced_not_fatal() -> None:
    assert decode_text(b"a\x81b\xff") == "a\ufffdb\u00ff"


@pytest.mark.parametrize(
    "sample", ["a\nb\n", "a\r\nb\r\n", "a\rb\r", "a\n\nb", "", "a", 'x,"1\r\n2"\n']
)
def test_text_lines_split_like_a_universal_newline_stringio(
    sample: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = list(io.StringIO(sample, newline=""))
    monkeypatch.setattr(text, "_STRINGIO_MAX_CHARS", 0)

    assert list(text_lines(sample)) == expected


@pytest.mark.parametrize(
    "sample",
    [
        b"a\r\nb\r\n",
        b"a\rb\r\n\nc",
        b'x,"1\r\n2"\n',
        b"\xef\xbb\xbfcaf\xc3\xa9\n\xf0\x9f\x98\x80",  # BOM, then a character past Latin-1
        b"caf\xe9 \x80\r\nx",  # Windows-1252
        b"\xef\xbb\xbfcaf\xe9\n",  # a BOM, yet not UTF-8: all of it is Windows-1252
        b"a\x81b\xff",
    ],
)
def test_large_uploads_decode_line_by_line_as_the_whole_text_would(
    sample: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = list(io.StringIO(decode_text(sample), newline=""))
    monkeypatch.setattr(text, "_STRINGIO_MAX_CHARS", 0)  # take the line-by-line path
    monkeypatch.setattr(text, "_CHECK_BYTES", 3)  # and check UTF-8 a few bytes at a time

    assert list(decoded_lines(sample)) == expected


def test_large_texts_keep_physical_line_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text, "_STRINGIO_MAX_CHARS", 0)  # take the lazy path
    data = 'id,title,price\r\na,"two\r\nlines",1\r\nb,B,x\r\n'

    result = parse_catalog_csv(data)

    assert [p.title for p in result.items] == ["two\r\nlines"]
    assert [r.line for r in result.rejected] == [4]


def test_csv_rows_number_records_by_the_line_they_start_on() -> None:
    rows = list(csv_rows('h1,h2\n"a\nb\nc",1\n\nx,2\n'))

    assert [(row.line, row.cells) for row in rows] == [
        (1, ["h1", "h2"]),
        (2, ["a\nb\nc", "1"]),
        (5, []),
        (6, ["x", "2"]),
    ]


def test_csv_rows_report_an_unreadable_record_and_go_on() -> None:
    too_big = "y" * (csv.field_size_limit() + 1)

    rows = list(csv_rows(f'a\n"{too_big}"\nb\n'))

    assert [(row.line, row.error is not None) for row in rows] == [
        (1, False),
        (2, True),
        (3, False),
    ]
