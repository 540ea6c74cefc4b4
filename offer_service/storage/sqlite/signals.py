"""SQLite's SignalStore: what each visitor did with offers, and which visitors changed."""

from __future__ import annotations

import sqlite3
from functools import partial

import orjson

from offer_service.domain.records import (
    EMPTY_VISITOR,
    SignalKind,
    VisitorChanges,
    VisitorIds,
    VisitorState,
)
from offer_service.storage.codec import (
    VISITOR_SUBJECT,
    VISITOR_SUBJECTS_END,
    customer_subject,
    visitor_subject,
)
from offer_service.storage.protocols import VISITOR_CHANGES_MAX, VISITOR_IDS_PAGE
from offer_service.storage.sqlite.connection import SQLiteConnection

# Everything `visitor_state` needs in one statement: the purchases of both subjects, their
# returns, declines and accepts ever, and impressions since the window start that came after
# the last click on the product (a click resets the frequency cap).
_VISITOR_STATE = """
SELECT 'purchases', subject, products FROM purchases
    WHERE store_id = :store AND subject IN (:customer, :visitor)
UNION ALL
SELECT 'return', product_id, 0 FROM returned
    WHERE store_id = :store AND subject IN (:customer, :visitor)
UNION ALL
SELECT kind, product_id, at_ms FROM visitor_signals
    WHERE store_id = :store AND visitor_id = :visitor_id
      AND (kind IN ('decline', 'accept') OR (kind IN ('impression', 'click') AND at_ms >= :since))
"""

# A page of the visitor ids with state (`visitor_ids`), in id order after :after: each source's
# first :n ids after it (each an index range read), merged. Purchases and returns are kept by
# subject (codec.visitor_subject): a visitor's are those from :first to :end, id from :skip.
_VISITOR_IDS = """
SELECT visitor_id FROM (
    SELECT DISTINCT visitor_id FROM visitor_signals
    WHERE store_id = :store AND visitor_id > :after
      AND (kind IN ('decline', 'accept') OR (kind IN ('impression', 'click') AND at_ms >= :since))
    ORDER BY visitor_id LIMIT :n)
UNION
SELECT visitor_id FROM (
    SELECT substr(subject, :skip) AS visitor_id FROM purchases
    WHERE store_id = :store AND subject > :first AND subject < :end
    ORDER BY subject LIMIT :n)
UNION
SELECT visitor_id FROM (
    SELECT DISTINCT substr(subject, :skip) AS visitor_id FROM returned
    WHERE store_id = :store AND subject > :first AND subject < :end
    ORDER BY subject LIMIT :n)
ORDER BY visitor_id LIMIT :n
"""


def _visitor_ids_page(
    conn: sqlite3.Connection, store_id: str, since_ms: int, after: str | None
) -> VisitorIds:
    # The cursor first: whatever is written while the pages are read is listed after it.
    cursor = None
    if after is None:
        ((last,),) = conn.execute("SELECT MAX(rowid) FROM visitor_signals").fetchall()
        cursor = str(last or 0)
    params = {
        "store": store_id,
        "after": after or "",
        "first": visitor_subject(after or ""),
        "end": VISITOR_SUBJECTS_END,
        "skip": len(VISITOR_SUBJECT) + 1,
        "since": since_ms,
        "n": VISITOR_IDS_PAGE,
    }
    ids = tuple(v for (v,) in conn.execute(_VISITOR_IDS, params))
    return VisitorIds(ids, ids[-1] if len(ids) == VISITOR_IDS_PAGE else None, cursor)


class SQLiteSignals(SQLiteConnection):
    """The SignalStore part of the Store protocol."""

    async def visitor_state(
        self, store_id: str, visitor_id: str | None, customer_id: str | None, since_ms: int
    ) -> VisitorState:
        return self.visitor_state_now(store_id, visitor_id, customer_id, since_ms)

    def visitor_state_now(
        self, store_id: str, visitor_id: str | None, customer_id: str | None, since_ms: int
    ) -> VisitorState:
        if not visitor_id and not customer_id:
            return EMPTY_VISITOR
        rows = self._query(
            "read visitor state",
            _VISITOR_STATE,
            {
                "store": store_id,
                "customer": customer_subject(customer_id) if customer_id else None,
                "visitor": visitor_subject(visitor_id) if visitor_id else None,
                "visitor_id": visitor_id,
                "since": since_ms,
            },
        )
        purchased: dict[str, int] = {}
        sets: dict[str, set[str]] = {"return": set(), "decline": set(), "accept": set()}
        # Impressions in the window count until the visitor clicks that product (one plain
        # index range read; counted here rather than with a correlated subquery per product).
        shown: list[tuple[str, int]] = []
        clicked: dict[str, int] = {}
        for kind, key, value in rows:
            if kind == "purchases":
                for product_id, ms in orjson.loads(value).items():
                    if purchased.get(product_id, -1) < ms:
                        purchased[product_id] = ms
            elif kind == "impression":
                shown.append((key, value))
            elif kind == "click":
                if clicked.get(key, -1) < value:
                    clicked[key] = value
            else:
                sets[kind].add(key)
        impressions: dict[str, int] = {}
        for key, at_ms in shown:
            if at_ms > clicked.get(key, -1):
                impressions[key] = impressions.get(key, 0) + 1
        return VisitorState(
            purchased=purchased,
            returned=frozenset(sets["return"]),
            declined=frozenset(sets["decline"]),
            accepted=frozenset(sets["accept"]),
            impressions=impressions,
        )

    async def visitor_changes(self, store_id: str, after: str | None) -> VisitorChanges:
        # Signals are only ever added, one writer at a time: rowids grow in commit order.
        ((last,),) = self._query("read the signals' end", "SELECT MAX(rowid) FROM visitor_signals")
        top = last or 0
        if after is None:
            return VisitorChanges(str(top))
        since = int(after)
        if top - since > VISITOR_CHANGES_MAX or top < since:
            return VisitorChanges(str(top), None)  # too many to list, or another file
        # `+store_id`: read the rowid range alone. Planned on the (store_id, visitor_id, ...)
        # index, the statement walked every signal of the store: 23 ms at 333,000 rows, twice
        # a second, against 0.2 ms for the range.
        rows = self._query(
            "read visitor changes",
            "SELECT DISTINCT visitor_id FROM visitor_signals"
            " WHERE rowid > ? AND rowid <= ? AND +store_id = ?",
            (since, top, store_id),
        )
        return VisitorChanges(str(top), frozenset(v for (v,) in rows))

    async def visitor_ids(
        self, store_id: str, since_ms: int, page: str | None = None
    ) -> VisitorIds:
        # Each page off the loop, as `iter_baskets` reads its pages: a large store's listing
        # must not hold the requests.
        return await self._on_writer(
            "list visitors with state",
            partial(_visitor_ids_page, store_id=store_id, since_ms=since_ms, after=page),
        )

    async def record_visitor_signal(
        self, store_id: str, visitor_id: str, product_id: str, kind: SignalKind, at_ms: int
    ) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO visitor_signals (store_id, visitor_id, kind, product_id, at_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (store_id, visitor_id, kind, product_id, at_ms),
            )

        await self._write("record a visitor signal", insert)
