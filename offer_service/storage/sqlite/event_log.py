"""SQLite's event log: each write's events in one row, and the ids of the last day in memory.

Shopper event ids are random (the snippet sends UUIDs). Kept in a B-tree keyed by id, every new
event lands on a different page: a page written to the WAL, then copied into the file, per event.
Here a write appends one row holding all its events (pages filled in order), and duplicates are
found in a set of the ids received in the dedupe window, built from the log itself:

- when first needed, from the log rows of the window (`last_ms >= since`);
- before each write, from the rows other processes appended since this one last looked (the write
  holds the file's write lock, so no row can be added between that look and its own);
- after each commit, from the ids it just wrote.

So every process writing the file sees every id of the window, and the answer is the one a lookup
in the file would give. The set holds a 64-bit hash of (store, id) per event: two different ids
of one store collide with odds of about n / 2**64 for n ids in the window (1e-13 for a million).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from offer_service.domain.events import StoredEvent
from offer_service.domain.traffic import NEEDS_IMPRESSION, NO_IMPRESSION, match_window_ms
from offer_service.storage.codec import counter_key, event_row
from offer_service.types import HOUR_MS

# The fields of StoredEvent, in its order: a row of `events` is StoredEvent(*row).
EVENT_FIELDS = (
    "id, type, ts_ms, received_ms, visitor_id, surface, kind, product_id, offer_id, order_id,"
    " arm, offer_price, currency, flag"
)

# Rows of an older release's `events` table moved into one log row at a time when upgrading.
UPGRADE_ROW_EVENTS = 1000

# Ids that left the window are dropped from memory at most this often.
PRUNE_EVERY_MS = HOUR_MS

_APPEND = "INSERT INTO event_log (store_id, first_ms, last_ms, events) VALUES (?, ?, ?, ?)"

# A valid impression of the same offer by the same visitor, recent enough to match an action.
_SHOWN = """
SELECT 1 FROM impressions_seen
    WHERE store_id = ? AND visitor_id = ? AND offer_id = ? AND last_ms >= ?
"""

_SEEN = """
INSERT INTO impressions_seen (store_id, visitor_id, offer_id, last_ms) VALUES (?, ?, ?, ?)
ON CONFLICT (store_id, visitor_id, offer_id) DO UPDATE SET last_ms = MAX(last_ms, excluded.last_ms)
"""

_COUNT_EVENTS = """
INSERT INTO event_counters (store_id, surface, kind, product_id, arm, type, n)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (store_id, surface, kind, product_id, arm, type) DO UPDATE SET n = n + excluded.n
"""

_SIGNAL = """
INSERT INTO visitor_signals (store_id, visitor_id, kind, product_id, at_ms) VALUES (?, ?, ?, ?, ?)
"""

# Event types that are also a visitor's signals for the per-visitor filters.
_SIGNAL_TYPES = frozenset(("impression", "click", "decline", "accept"))


def _key(store_id: str, event_id: Any) -> int:
    return hash((store_id, event_id))


@dataclass(slots=True)
class _Chunk:
    last_ms: int
    keys: list[int]


@dataclass(slots=True)
class EventIds:
    """The ids of the log rows with `last_ms >= since_ms` (and possibly older ones), as of the
    log row `seq`. Used only by the writer, one write at a time."""

    keys: set[int] = field(default_factory=set)
    chunks: list[_Chunk] = field(default_factory=list)
    since_ms: int | None = None  # None: nothing read yet
    seq: int = 0

    def catch_up(self, conn: sqlite3.Connection, since_ms: int) -> None:
        """Hold every id of the window from `since_ms` on, as the file has it now."""
        if self.since_ms is None:
            (top,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM event_log").fetchone()
            self._read(conn, "last_ms >= ? AND seq <= ?", (since_ms, top))
            self.since_ms, self.seq = since_ms, top
            return
        if since_ms < self.since_ms:  # a wider window than read so far (a spool replay)
            self._read(
                conn,
                "last_ms >= ? AND last_ms < ? AND seq <= ?",
                (since_ms, self.since_ms, self.seq),
            )
            self.since_ms = since_ms
        elif since_ms - self.since_ms >= PRUNE_EVERY_MS:
            self._prune(since_ms)
        # Rows other processes appended since this one last looked.
        self._read(conn, "seq > ?", (self.seq,), advance=True)

    def add(self, seq: int, last_ms: int, keys: list[int]) -> None:
        """The ids of this process's own row `seq`, once committed. A row that follows one this
        process has not read yet is left for `catch_up` to read, in order."""
        if seq == self.seq + 1:
            self.keys.update(keys)
            self.chunks.append(_Chunk(last_ms, keys))
            self.seq = seq

    def _read(
        self, conn: sqlite3.Connection, where: str, params: tuple[int, ...], advance: bool = False
    ) -> None:
        rows = conn.execute(
            f"SELECT seq, store_id, last_ms, events FROM event_log WHERE {where} ORDER BY seq",
            params,
        )
        for seq, store_id, last_ms, events in rows:
            keys = [_key(store_id, row[0]) for row in orjson.loads(events)]
            self.keys.update(keys)
            self.chunks.append(_Chunk(last_ms, keys))
            if advance:
                self.seq = seq

    def _prune(self, since_ms: int) -> None:
        kept: list[_Chunk] = []
        for chunk in self.chunks:
            if chunk.last_ms >= since_ms:
                kept.append(chunk)
            else:
                self.keys.difference_update(chunk.keys)
        self.chunks = kept
        self.since_ms = since_ms


@dataclass(frozen=True, slots=True)
class Written:
    """What a write appended: the answer per event, and its log row for `EventIds.add`."""

    fresh: list[bool]
    seq: int = 0  # 0: nothing appended
    last_ms: int = 0
    keys: list[int] = field(default_factory=list)


def record_events(
    store_id: str,
    events: Sequence[StoredEvent],
    since_ms: int,
    ids: EventIds,
    conn: sqlite3.Connection,
) -> Written:
    """The events (one log row), their counters (one upsert per key), visitor signals and
    impressions seen, inside the caller's transaction."""
    ids.catch_up(conn, since_ms)
    stored = ids.keys
    fresh: list[bool] = []
    keys: list[int] = []
    new: set[int] = set()
    rows: list[tuple[Any, ...]] = []
    counts: Counter[tuple[str, str, str, str, str]] = Counter()
    signals: list[tuple[str, str, str, str, int]] = []
    # The latest valid impression of each (offer, visitor) written so far in this call: the
    # store holds the earlier ones.
    shown: dict[tuple[str, str | None], int] = {}
    for e in events:
        key = _key(store_id, e.id)
        if key in stored or key in new:
            fresh.append(False)
            continue
        new.add(key)
        keys.append(key)
        fresh.append(True)
        flag = e.flag
        if flag is None:
            if e.type == "impression":
                if shown.get((e.offer_id, e.visitor_id), -1) < e.received_ms:
                    shown[e.offer_id, e.visitor_id] = e.received_ms
            elif e.type in NEEDS_IMPRESSION:
                since = e.received_ms - match_window_ms(e.surface)
                if (
                    shown.get((e.offer_id, e.visitor_id), since - 1) < since
                    and conn.execute(
                        _SHOWN, (store_id, e.visitor_id or "", e.offer_id, since)
                    ).fetchone()
                    is None
                ):
                    flag = NO_IMPRESSION
        rows.append(event_row(e, flag))
        counts[counter_key(e)] += 1
        if e.visitor_id and e.type in _SIGNAL_TYPES:
            signals.append((store_id, e.visitor_id, e.type, e.product_id, e.ts_ms))
    if not rows:
        return Written(fresh)
    seq, last_ms = _append(conn, store_id, rows)
    conn.executemany(_COUNT_EVENTS, [(store_id, *key, n) for key, n in counts.items()])
    conn.executemany(_SIGNAL, signals)
    conn.executemany(
        _SEEN, [(store_id, visitor or "", offer, ms) for (offer, visitor), ms in shown.items()]
    )
    return Written(fresh, seq, last_ms, keys)


def received_in(
    events: str, since_ms: int, until_ms: int, types: frozenset[str] | None = None
) -> list[tuple[Any, ...]]:
    """The events of one log row received in [since_ms, until_ms) (of `types`, if given),
    unsorted (`received_order` sorts them)."""
    return [
        tuple(row)
        for row in orjson.loads(events)
        if since_ms <= row[3] < until_ms and (types is None or row[1] in types)
    ]


def received_order(row: tuple[Any, ...]) -> tuple[int, str]:
    """Events by time received, then id."""
    return row[3], row[0]


def upgrade(conn: sqlite3.Connection) -> None:
    """Move the rows of an older release's `events` table (one row per event) into the log."""
    rows = conn.execute(
        f"SELECT store_id, {EVENT_FIELDS} FROM events ORDER BY store_id, received_ms, id"
    )
    batch: list[tuple[Any, ...]] = []
    store = None
    for store_id, *event in rows:
        if batch and (store_id != store or len(batch) >= UPGRADE_ROW_EVENTS):
            _append(conn, store, batch)
            batch = []
        store = store_id
        batch.append(tuple(event))
    if batch:
        _append(conn, store, batch)
    conn.execute("DROP TABLE events")


def _append(
    conn: sqlite3.Connection, store_id: str | None, rows: list[tuple[Any, ...]]
) -> tuple[int, int]:
    """One log row holding `rows`: its seq and the latest received_ms of its events."""
    received = [row[3] for row in rows]
    last_ms = max(received)
    cursor = conn.execute(_APPEND, (store_id, min(received), last_ms, orjson.dumps(rows).decode()))
    return cursor.lastrowid or 0, last_ms
