"""What an import yields: the items that parsed and a rejection for every bad field or row."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


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
    """Items that parsed, in input order, and the rejections of the rest (one per bad field)."""

    items: list[T] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def rejected_count(self) -> int:
        """How many input items were rejected (an item with two bad fields counts once)."""
        return len({(r.source, r.line, r.index) for r in self.rejected})
