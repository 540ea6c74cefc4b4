"""How far the aggregation of a store's event stream is behind, read from the stream itself."""

from __future__ import annotations

from typing import Any

from redis.exceptions import ResponseError

from offer_service.storage.health import AggregationLag
from offer_service.storage.redis.keys import GROUP

NONE = AggregationLag(0, False, 0.0)


def _field(info: dict[Any, Any], name: str) -> Any:
    return info.get(name, info.get(name.encode()))


def _entry_ms(entry_id: bytes | str) -> int:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.split("-", 1)[0])


async def aggregation_lag(c: Any, stream: str) -> AggregationLag:
    """The lag of the aggregators' group on `stream`, from the group's last-delivered id, its
    oldest pending entry and the server's clock. XINFO GROUPS' own `lag` is not used: it is
    derived from an entries-read counter that a restart or a trim can leave invalid, and then it
    reads thousands while nothing waits."""
    try:
        groups = await c.xinfo_groups(stream)
    except ResponseError:
        return NONE  # no stream yet: nothing recorded
    group = next((g for g in groups if _field(g, "name") in (GROUP, GROUP.encode())), None)
    if group is None:
        return NONE
    oldest: list[int] = []
    pending = int(_field(group, "pending") or 0)
    if pending:
        summary = await c.xpending(stream, GROUP)
        if summary.get("min"):
            oldest.append(_entry_ms(summary["min"]))
    last = _field(group, "last-delivered-id")
    last = last.decode() if isinstance(last, bytes) else str(last)
    after = await c.xrange(stream, min="(" + last, max="+", count=1)
    if after:
        oldest.append(_entry_ms(after[0][0]))
    if not oldest:
        return AggregationLag(pending, False, 0.0)
    seconds, micros = await c.time()
    now_ms = seconds * 1000 + micros // 1000
    return AggregationLag(pending, bool(after), max(0.0, (now_ms - min(oldest)) / 1000))
