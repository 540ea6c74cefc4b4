"""What an import yields: the items that parsed and a rejection for every bad field or row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

# Rejections listed in an answer; the rest are only counted, so that a body of a million bad
# rows answers in kilobytes instead of echoing itself back many times over.
MAX_LISTED_REJECTIONS = 1000


@dataclass(frozen=True, slots=True)
class Rejection:
    """One problem with one input item, located as precisely as the format allows.

    `line` is the 1-based physical line where the item starts (CSV always, JSON when found),
    `index` the 0-based position in a JSON list, `field` the offending field (`lines[1].price`,
    a CSV column name) and `source` the archive member for multi-file inputs.
    """

    message: str
    line: int | None = None
    index: int | None = None
    field: str | None = None
    source: str | None = None

    def as_dict(self) -> dict[str, str | int]:
        """The wire form: `{"line", "index", "field", "message"}` with absent keys left out."""
        out: dict[str, str | int] = {}
        if self.source is not None:
            out["source"] = self.source
        if self.line is not None:
            out["line"] = self.line
        if self.index is not None:
            out["index"] = self.index
        if self.field is not None:
            out["field"] = self.field
        out["message"] = self.message
        return out


@dataclass(slots=True)
class ImportResult(Generic[T]):
    """Items that parsed, in input order, and the rejections of the rest (one per bad field).

    `rejected` lists the first MAX_LISTED_REJECTIONS rejections; `rejected_total` counts them
    all and `rejected_count` the input items they belong to (two bad fields count once).
    """

    items: list[T] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    rejected_total: int = 0
    rejected_count: int = 0

    def reject(self, problems: Sequence[Rejection]) -> None:
        """Count one rejected item and list its problems while there is room (no problems:
        nothing to count)."""
        if not problems:
            return
        self.rejected_count += 1
        self.rejected_total += len(problems)
        room = MAX_LISTED_REJECTIONS - len(self.rejected)
        if room > 0:
            self.rejected.extend(problems[:room])
