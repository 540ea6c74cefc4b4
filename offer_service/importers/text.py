"""Turning uploaded bytes into text and CSV rows that know their physical line numbers."""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

UTF8_BOM = b"\xef\xbb\xbf"
# A line and its ending (\n, \r\n or a lone \r), or a last line without one.
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
_BYTE_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
_STRINGIO_MAX_CHARS = 8 * 2**20
_CHECK_BYTES = 2**20
# A file up to this size is read whole; a larger one a chunk at a time.
FILE_IN_MEMORY_BYTES = 2**20
_READ_BYTES = 2**20


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


def lines_of(text: str | Iterable[str]) -> Iterable[str]:
    """A text split by `text_lines`; lines already split pass through."""
    return text_lines(text) if isinstance(text, str) else text


def decoded_lines(data: bytes | str | IO[bytes]) -> Iterable[str]:
    """The lines of an upload (its content, or a seekable binary file of it) as `text_lines`
    gives them, decoded as `decode_text` would.

    A large upload is decoded a line at a time rather than into one string, which would cost
    its size again, four times over if a single character lies outside Latin-1; a large file
    is also read a chunk at a time, so that its size never sits in memory. Neither UTF-8 nor
    Windows-1252 puts a line-ending byte inside a character, so bytes split where the text
    would.
    """
    if not isinstance(data, bytes | str):
        if file_size(data) <= FILE_IN_MEMORY_BYTES:
            return decoded_lines(data.read())
        return _file_lines(data)
    if isinstance(data, str) or len(data) <= _STRINGIO_MAX_CHARS:
        return text_lines(decode_text(data))
    if _is_utf8(data):
        start = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
        return (m.group().decode("utf-8") for m in _BYTE_LINE.finditer(data, start))
    return (m.group().decode("cp1252", errors="replace") for m in _BYTE_LINE.finditer(data))


def file_size(file: IO[bytes]) -> int:
    """The size of a seekable file, left positioned at its start."""
    size = file.seek(0, io.SEEK_END)
    file.seek(0)
    return size


def file_chunks(file: IO[bytes], start: int = 0) -> Iterator[bytes]:
    """A file's bytes from `start` on, a chunk at a time."""
    file.seek(start)
    while chunk := file.read(_READ_BYTES):
        yield chunk


def _file_lines(file: IO[bytes]) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for chunk in file_chunks(file):
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        encoding, errors, start = "cp1252", "replace", 0
    else:
        file.seek(0)
        encoding, errors = "utf-8", "strict"
        start = len(UTF8_BOM) if file.read(len(UTF8_BOM)) == UTF8_BOM else 0
    # Bytes after the last line ending of a chunk wait for the next; a chunk's trailing \r
    # too, since it may be the first half of \r\n.
    pending: list[bytes] = []
    for chunk in file_chunks(file, start):
        end = len(chunk) - 1 if chunk.endswith(b"\r") else len(chunk)
        last = max(chunk.rfind(b"\n", 0, end), chunk.rfind(b"\r", 0, end))
        if last < 0:
            pending.append(chunk)
            continue
        pending.append(chunk[: last + 1])
        buffer = b"".join(pending)
        pending = [chunk[last + 1 :]]
        for match in _BYTE_LINE.finditer(buffer):
            yield match.group().decode(encoding, errors)
    for match in _BYTE_LINE.finditer(b"".join(pending)):
        yield match.group().decode(encoding, errors)


def _is_utf8(data: bytes) -> bool:
    """Whether `data` decodes as UTF-8, checked a slice at a time so as to keep no copy."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    try:
        for start in range(0, len(data), _CHECK_BYTES):
            decoder.decode(view[start : start + _CHECK_BYTES])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class CsvRow:
    """One CSV record: the physical line it starts on, and its cells or why it could not be read."""

    line: int
    cells: list[str]
    error: str | None = None


def csv_rows(text: str | Iterable[str]) -> Iterator[CsvRow]:
    """Every record of `text` (or of its lines, as `decoded_lines` gives them), blank lines
    included (as empty `cells`), never raising.

    Line numbers are physical: a quoted cell spanning three lines moves the next record's
    number on by three, which is what an editor shows the user.
    """
    reader = csv.reader(lines_of(text))
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
