"""What a backend tells the metrics of itself: errors by kind, the breaker, aggregation lag."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

# Kinds of failure: cannot connect, no answer (or no free connection) in time, refused by the
# breaker unasked, any other.
UNAVAILABLE = "unavailable"
TIMEOUT = "timeout"
FAIL_FAST = "fail_fast"
ERROR = "error"


@dataclass(slots=True)
class StoreHealth:
    """Failures by (operation class, kind), and until when the store is treated as down."""

    errors: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    down_until: float = 0.0  # time.monotonic(); 0 while the store answers

    def failed(self, op: str, kind: str) -> None:
        self.errors[(op, kind)] += 1

    def fail_fast(self) -> bool:
        """Whether requests are being refused without asking the store."""
        return time.monotonic() < self.down_until


@dataclass(frozen=True, slots=True)
class AggregationLag:
    """`pending`: entries delivered to a consumer and not yet counted; `undelivered`: whether
    entries wait that no consumer has read; `oldest_s`: the age of the oldest entry not yet
    counted (pending or undelivered), 0 when every entry is counted."""

    pending: int
    undelivered: bool
    oldest_s: float
