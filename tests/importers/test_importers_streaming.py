"""Imports read from a file a chunk at a time: the same answers as from bytes, bounded memory."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Callable

import orjson
import pytest

from offer_service.exceptions import ValidationFailed
from offer_service.importers import (
    ImportResult,
    iter_catalog_csv,
    iter_catalog_json,
    json_body,
    parse_catalog_csv,
    parse_catalog_json,
    parse_online_retail,
    parse_orders_json,
    text,
)
from offer_service.importers.seen import FirstSeen
from offer_service.importers.text import decode_text, decoded_lines

MIB = 2**20
SAMPLES = [
    b"a\r\nb\r\n",
    b"a\rb\r\n\nc",
    b'x,"1\r\n2"\n',
    b"\xef\xbb\xbfcaf\xc3\xa9\n\xf0\x9f\x98\x80\r",  # BOM, then a character past Latin-1
    b"caf\xe9 \x80\r\nx",  # Windows-1252
    b"\xef\xbb\xbfcaf\xe9\n",  # a BOM, yet not UTF-8: all of it is Windows-1252
    b"a\x81b\xff",
    b"\r\r\n\n\r",
    b"",
]


@pytest.fixture
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file read a few bytes at a time, so chunk edges fall everywhere."""
    monkeypatch.setattr(text, "FILE_IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(json_body, "FILE_IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(text, "_READ_BYTES", 3)


@pytest.mark.parametrize("sample", SAMPLES)
def test_a_file_decodes_line_by_line_as_its_whole_text_would(
    sample: bytes, tiny_chunks: None
) -> None:
    expected = list(io.StringIO(decode_text(sample), newline=""))

    assert list(decoded_lines(io.BytesIO(sample))) == expected


def test_a_catalog_csv_file_gives_what_its_bytes_give(tiny_chunks: None) -> None:
    data = b'id,title,price\r\na,"two\r\nlines",1\r\nb,B,x\r\nc,C\xc3\xa9,3\ra,again,4\n\nd,D,5'

    from_file = parse_catalog_csv(io.BytesIO(data))
    from_bytes = parse_catalog_csv(data)

    assert from_file == from_bytes
    assert [p.id for p in from_file.items] == ["a", "c", "d"]
    assert [r.line for r in from_file.rejected] == [4, 6]


def test_a_catalog_json_file_gives_what_its_bytes_give_lines_included(
    tiny_chunks: None,
) -> None:
    data = (
        b'\xef\xbb\xbf[\n  {"id": "a", "title": "A \\\\\\" [{,", "price": 1},\n'
        b'  {"id": "b", "title": "B", "price": 2.5},\n\n'
        b'  {"id": "a", "title": "again", "price": 3},\n'
        b'  {"id": "c", "title": "C", "price": 4, "tags": ["x", "y"]}, 7\n]'
    )

    from_file = parse_catalog_json(io.BytesIO(data))
    from_bytes = parse_catalog_json(data)

    assert from_file == from_bytes
    assert [p.id for p in from_file.items] == ["a", "c"]
    assert [(r.index, r.line) for r in from_file.rejected] == [(1, 3), (2, 5), (4, 6)]


def test_an_orders_json_file_gives_what_its_bytes_give(tiny_chunks: None) -> None:
    order = {"placed_at": "2026-01-02T03:04:05Z", "currency": "GBP"}
    line = {"product_id": "p1", "quantity": 1, "price": 100}
    items = [
        {"id": "o1", **order, "lines": [line]},
        {"id": "o2", **order, "lines": []},
        {"id": "o1", **order, "lines": [line]},
    ]
    data = orjson.dumps(items, option=orjson.OPT_INDENT_2)

    assert parse_orders_json(io.BytesIO(data)) == parse_orders_json(data)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"id": "a"}', "The body must be a JSON list of products, not an object."),
        (b'"a"', "The body must be a JSON list of products, not a string."),
        (b"null", "The body must be a JSON list of products, not null."),
        (b'[{"id": "a", "title": "A", "price": 1}, {"id": ', "The body is not valid JSON"),
        (b'[{"id": "a", "title": "A", "price": 1}] []', "The body is not valid JSON"),
    ],
)
def test_a_json_file_that_is_not_a_list_is_refused_before_any_product(
    body: bytes, message: str, tiny_chunks: None
) -> None:
    result: ImportResult[object] = ImportResult()
    with pytest.raises(ValidationFailed) as refused:
        iter_catalog_json(io.BytesIO(body), result)  # type: ignore[arg-type]

    assert refused.value.message.startswith(message)


def test_an_online_retail_file_gives_what_its_bytes_give(tiny_chunks: None) -> None:
    data = (
        b"InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\r\n"
        b"536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850,United Kingdom\r\n"
        b"536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,x,17850,United Kingdom\r\n"
        b"C536379,85123A,WHITE HANGING HEART,-1,2010-12-01 09:41:00,2.55,17850,United Kingdom\r\n"
    )

    assert parse_online_retail(io.BytesIO(data)) == parse_online_retail(data)


def test_ids_seen_past_the_spill_to_disk_are_still_found() -> None:
    seen = FirstSeen(spill_at=3)
    try:
        firsts = [seen.first(key, at) for at, key in enumerate("abcdeafe")]
    finally:
        seen.close()

    assert firsts == [None, None, None, None, None, 0, None, 4]


def catalog_csv(mib: float) -> bytes:
    rows = int(mib * MIB / 40)
    return b"id,title,price\n" + b"".join(
        b"p%07d,Product number %07d,%d\n" % (n, n, n + 1) for n in range(rows)
    )


def catalog_json(mib: float) -> bytes:
    rows = int(mib * MIB / 56)
    return (
        b"[\n"
        + b",\n".join(
            b'{"id": "p%07d", "title": "Product %07d", "price": %d}' % (n, n, n + 1)
            for n in range(rows)
        )
        + b"\n]"
    )


def peak_while(consume: Callable[[], int]) -> tuple[int, int]:
    """What `consume` returned, and the peak of memory it allocated while it ran."""
    tracemalloc.start()
    try:
        count = consume()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return count, peak


@pytest.mark.parametrize(
    ("make", "parse"),
    [(catalog_csv, iter_catalog_csv), (catalog_json, iter_catalog_json)],
    ids=["csv", "json"],
)
def test_a_catalog_file_four_times_larger_peaks_at_about_the_same_memory(
    make: Callable[[float], bytes], parse: Callable[..., object]
) -> None:
    peaks = []
    for mib in (1.5, 6):
        file = io.BufferedReader(io.BytesIO(make(mib)))  # type: ignore[arg-type]

        def consume(file: io.BufferedReader = file) -> int:
            result: ImportResult[object] = ImportResult()
            return sum(1 for _ in parse(file, result))  # type: ignore[attr-defined]

        count, peak = peak_while(consume)
        assert count == int(mib * MIB / (40 if make is catalog_csv else 56))
        peaks.append(peak)

    small, large = peaks
    # Held whole, the larger body's products would cost four times the smaller's (and several
    # times its size); read a chunk and a batch at a time, about as much as the smaller's.
    assert large < 1.5 * small, f"{small / MIB:.1f} MiB, then {large / MIB:.1f} MiB"
