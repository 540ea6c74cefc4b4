"""Reading a JSON list body whose items are validated one by one, and finding their lines."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

import orjson

from offer_service.exceptions import ValidationFailed, field_error
from offer_service.importers.result import Rejection
from offer_service.importers.text import UTF8_BOM

# A JSON string (escapes included) or one structural character: enough to find where each
# top-level item starts without a full second parse.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]')
_NON_SPACE = re.compile(rb"\S")

_JSON_KINDS = {dict: "an object", str: "a string", int: "a number", float: "a number"}


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
    wanted = set(indexes)
    if not wanted:
        return {}
    body = raw.encode() if isinstance(raw, str) else raw
    last = max(wanted)
    found: dict[int, int] = {}
    depth = 0
    index = -1
    line = 1
    counted_to = 0
    for token in _TOKEN.finditer(body):
        char = token.group()[:1]
        if char == b'"':
            continue
        if char in b"[{":
            depth += 1
        elif char in b"]}":
            depth -= 1
        if depth == 1 and char in b"[,":
            index += 1
            if index in wanted:
                start = _NON_SPACE.search(body, token.end())
                if start is None:
                    break
                line += body.count(b"\n", counted_to, start.start())
                counted_to = start.start()
                found[index] = line
            if index >= last:
                break
    return found


def with_lines(raw: bytes | str, rejected: list[Rejection]) -> list[Rejection]:
    """`rejected` with the line each item starts on filled in from its index."""
    if not rejected:
        return rejected
    lines = item_lines(raw, {r.index for r in rejected if r.index is not None})
    return [
        dataclasses.replace(r, line=lines.get(r.index)) if r.index is not None else r
        for r in rejected
    ]
