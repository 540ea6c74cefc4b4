"""Reading a JSON list body whose items are validated one by one, and finding their lines."""

from __future__ import annotations

import collections
import dataclasses
import io
import re
from collections.abc import Iterable, Iterator
from typing import IO, Any

import ijson
import orjson

from offer_service.exceptions import ValidationFailed, field_error
from offer_service.importers.result import Rejection
from offer_service.importers.text import FILE_IN_MEMORY_BYTES, UTF8_BOM, file_chunks, file_size

_NON_SPACE = re.compile(rb"\S")

_JSON_KINDS = {dict: "an object", str: "a string", int: "a number", float: "a number"}
# The same, by the first event of an incremental parse.
_EVENT_KINDS = {"start_map": "an object", "string": "a string", "number": "a number"}
# Enough to find where each top-level item starts without a full second parse: a quote or one
# structural character; and the rest of a string up to its closing quote, escapes included.
_FILE_TOKEN = re.compile(rb'["\[\]{},]')
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)

JsonSource = bytes | str | IO[bytes]


def json_list_items(source: JsonSource, what: str) -> Iterable[Any]:
    """The items of a JSON list body, to be validated one by one (see `load_json_list`).

    A large file is parsed incrementally: checked whole first (so that a body that is not a
    JSON list is refused before any item is used), then read an item at a time, so that
    neither its bytes nor its objects ever all sit in memory.
    """
    if isinstance(source, bytes | str):
        return load_json_list(source, what)
    if file_size(source) <= FILE_IN_MEMORY_BYTES:
        return load_json_list(source.read(), what)
    start = _content_start(source)
    try:
        events = ijson.basic_parse(source, use_float=True)
        first, _ = next(events)
        if first != "start_array":
            kind = "null" if first == "null" else _EVENT_KINDS.get(first, "a boolean")
            message = f"The body must be a JSON list of {what}, not {kind}."
            raise ValidationFailed(message, details=[field_error("body", message)])
        collections.deque(events, maxlen=0)  # the rest of the syntax, at C speed
    except (ijson.JSONError, StopIteration) as exc:
        # yajl's message goes on over lines of context: its first says what went wrong.
        reason = (str(exc).strip().splitlines() or ["it ends too early"])[0].strip()
        message = f"The body is not valid JSON ({reason})."
        raise ValidationFailed(message, details=[field_error("body", message)]) from exc
    return _file_items(source, start)


def _content_start(file: IO[bytes]) -> int:
    start = len(UTF8_BOM) if file.read(len(UTF8_BOM)) == UTF8_BOM else 0
    file.seek(start)
    return start


def _file_items(file: IO[bytes], start: int) -> Iterator[Any]:
    file.seek(start)
    yield from ijson.items(file, "item", use_float=True)


def load_json_list(raw: bytes | str, what: str) -> list[Any]:
    """The body as a list of raw items. Items are validated separately so that one bad item
    does not sink the others; a body that is not a JSON list at all is a 422."""
    body = raw.encode() if isinstance(raw, str) else raw
    body = body.removeprefix(UTF8_BOM)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        message = f"The body is not valid JSON ({exc})."
        raise ValidationFailed(message, details=[field_error("body", message)]) from exc
    if not isinstance(data, list):
        kind = "null" if data is None else _JSON_KINDS.get(type(data), "a boolean")
        message = f"The body must be a JSON list of {what}, not {kind}."
        raise ValidationFailed(message, details=[field_error("body", message)])
    return data


def item_lines(raw: bytes | str, indexes: Iterable[int]) -> dict[int, int]:
    """The 1-based line on which each wanted top-level item of a JSON list starts.

    Scans only as far as the last wanted item, so it costs nothing when nothing was rejected.
    """
    body = raw.encode() if isinstance(raw, str) else raw
    return file_item_lines(io.BytesIO(body), indexes)


def file_item_lines(file: IO[bytes], indexes: Iterable[int]) -> dict[int, int]:
    """`item_lines` of a JSON list in a file, read a chunk at a time (a string may go on from
    one chunk to the next)."""
    wanted = set(indexes)
    if not wanted:
        return {}
    last = max(wanted)
    found: dict[int, int] = {}
    depth = 0
    index = -1
    lines = 1  # the line of `counted` in the file
    in_string = False
    waiting: int | None = None  # a wanted item whose first byte is still to come
    carry = b""  # a backslash whose escaped byte is in the next chunk
    for chunk in file_chunks(file, _content_start(file)):
        buffer = carry + chunk
        carry = b""
        counted = pos = 0
        while True:
            if waiting is not None:
                start = _NON_SPACE.search(buffer, pos)
                if start is None:
                    break
                lines += buffer.count(b"\n", counted, start.start())
                counted = start.start()
                found[waiting] = lines
                waiting = None
                if len(found) == len(wanted) or index >= last:
                    return found
            if in_string:
                end = _STRING_REST.match(buffer, pos).end()  # type: ignore[union-attr]
                if end >= len(buffer) - 1 and buffer[end : end + 1] != b'"':
                    carry = buffer[end:]  # the string goes on in the next chunk
                    break
                pos, in_string = end + 1, False
            token = _FILE_TOKEN.search(buffer, pos)
            if token is None:
                break
            pos = token.end()
            char = token.group()
            if char == b'"':
                in_string = True
                continue
            if char in b"[{":
                depth += 1
            elif char in b"]}":
                depth -= 1
            if depth == 1 and char in b"[,":
                index += 1
                if index in wanted:
                    waiting = index
                elif index > last:
                    return found
        lines += buffer.count(b"\n", counted, len(buffer) - len(carry))
    return found


def with_lines(source: JsonSource, rejected: list[Rejection]) -> list[Rejection]:
    """`rejected` with the line each item starts on filled in from its index."""
    if not rejected:
        return rejected
    indexes = {r.index for r in rejected if r.index is not None}
    if isinstance(source, bytes | str):
        lines = item_lines(source, indexes)
    else:
        lines = file_item_lines(source, indexes)
    return [
        dataclasses.replace(r, line=lines.get(r.index)) if r.index is not None else r
        for r in rejected
    ]
