"""Turning uploaded bytes into text and CSV rows that know their physical line numbers."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

UTF8_BOM = b"\xef\xbb\xbf"
# A line and its ending (\n, \r\n or a lone \r), or a last line without one.
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
_STRINGIO_MAX_CHARS = 8 * 2**20


def decode_text(data: bytes | str) -> str:
    """UTF-8 with or without a BOM; anything else is taken as Windows-1252, the usual
    encoding of a spreadsheet saved on Windows, rather than refused."""
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # cp1252 leaves five bytes undefined; replacing them beats losing the whole file.
        return data.decode("cp1252", errors="replace")


def text_lines(text: str) -> Iterable[str]:
    """The lines of `text` with their endings, as csv.reader wants them.

    io.StringIO is the fastest source but copies the text at four bytes a character (a 256 MiB
    upload would cost a gigabyte), so beyond a few MiB lines are sliced out lazily instead.
    """
    if len(text) <= _STRINGIO_MAX_CHARS:
        return io.StringIO(text, newline="")
    return map(re.Match.group, _LINE.finditer(text))


@dataclass(frozen=True, slots=True)
class CsvRow:
    """One CSV record: the physical line it starts on, and its cells or why it could not be read."""

    line: int
    cells: list[str]
    error: str | None = None


def csv_rows(text: str) -> Iterator[CsvRow]:
    """Every record of `text`, blank lines included (as empty `cells`), never raising.

    Line numbers are physical: a quoted cell spanning three lines moves the next record's
    number on by three, which is what an editor shows the user.
    """
    reader = csv.reader(text_lines(text))
    previous = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield CsvRow(previous + 1, [], f"The row cannot be read as CSV ({exc}).")
            if reader.line_num == previous:  # no progress: stop rather than spin
                return
            previous = reader.line_num
            continue
        yield CsvRow(previous + 1, cells)
        previous = reader.line_num


def is_blank(cells: list[str]) -> bool:
    """An empty line, or a line of empty cells (spreadsheets leave these at the end)."""
    return all(not cell.strip() for cell in cells)
