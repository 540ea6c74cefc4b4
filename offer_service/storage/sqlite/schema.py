"""SQLite's tables, every one, and the migration that brings an older file up to them."""

from __future__ import annotations

import sqlite3

from offer_service.exceptions import StoreError
from offer_service.storage.sqlite.event_log import upgrade as upgrade_event_log

SCHEMA_VERSION = 9

# Data is kept in the shape it is read: an order's lines in its row, a shopper's purchases in
# one row, a product's co-purchase counts and neighbour list in one row each. Importing 20k
# orders or replacing millions of pair counts then writes thousands of rows, not millions
# (a B-tree insert costs about a microsecond even from C; Python's per-row binding more).
_STORES_ORDERS_AND_SIGNALS = """
CREATE TABLE IF NOT EXISTS stores (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    publishable_key TEXT NOT NULL UNIQUE,
    secret_key TEXT NOT NULL UNIQUE,
    webhook_secrets TEXT NOT NULL,   -- JSON list, the first one signs
    signing_keys TEXT NOT NULL,      -- JSON list of {"kid", "secret": hex}, the first one signs
    rules TEXT NOT NULL,             -- StoreRules as JSON
    version INTEGER NOT NULL DEFAULT 1,
    baskets INTEGER NOT NULL DEFAULT 0,  -- N: orders with at least one product line
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS products (
    store_id TEXT NOT NULL REFERENCES stores (id),
    id TEXT NOT NULL,
    family TEXT,
    category TEXT NOT NULL,
    data BLOB NOT NULL,              -- the Product as JSON
    PRIMARY KEY (store_id, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS products_by_family ON products (store_id, family);

CREATE TABLE IF NOT EXISTS orders (
    store_id TEXT NOT NULL REFERENCES stores (id),
    id TEXT NOT NULL,
    placed_at_ms INTEGER NOT NULL,
    currency TEXT NOT NULL,
    customer_id TEXT,
    visitor_id TEXT,
    status TEXT NOT NULL,
    lines BLOB NOT NULL,             -- JSON [[product_id, quantity, unit price], ...]
    returned BLOB NOT NULL DEFAULT '[]',  -- JSON list of the product ids sent back so far
    PRIMARY KEY (store_id, id)
) WITHOUT ROWID;
-- Orders by time (the learner's and the reports' reads): without it a read of the last minutes
-- scans every order the store ever had.
CREATE INDEX IF NOT EXISTS orders_by_time ON orders (store_id, placed_at_ms);

-- subject: 'c:<customer_id>' or 'v:<visitor_id>'. products: JSON {product_id: last epoch ms}.
CREATE TABLE IF NOT EXISTS purchases (
    store_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    products BLOB NOT NULL,
    PRIMARY KEY (store_id, subject)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS returned (
    store_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    product_id TEXT NOT NULL,
    last_ms INTEGER NOT NULL,
    PRIMARY KEY (store_id, subject, product_id)
) WITHOUT ROWID;

-- Baskets holding each product. `category` is copied from the catalog so that the best
-- sellers of a category are one index range scan.
CREATE TABLE IF NOT EXISTS product_stats (
    store_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    baskets INTEGER NOT NULL,
    category TEXT,
    PRIMARY KEY (store_id, product_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS product_stats_best
    ON product_stats (store_id, baskets DESC, product_id);
CREATE INDEX IF NOT EXISTS product_stats_best_by_category
    ON product_stats (store_id, category, baskets DESC, product_id);

-- Undirected co-purchase counts, kept under both products: JSON {partner_id: baskets}.
CREATE TABLE IF NOT EXISTS pair_counts (
    store_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    partners BLOB NOT NULL,
    PRIMARY KEY (store_id, product_id)
) WITHOUT ROWID;

-- Precomputed top-K lists, best first: JSON [[neighbor_id, pair_count], ...].
CREATE TABLE IF NOT EXISTS neighbors (
    store_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    ranked BLOB NOT NULL,
    PRIMARY KEY (store_id, product_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS visitor_signals (
    store_id TEXT NOT NULL,
    visitor_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    product_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS visitor_signals_by_visitor
    ON visitor_signals (store_id, visitor_id, kind, product_id, at_ms);
"""

# event_log.events: a JSON array of the rows of EVENT_FIELDS, in the order they were received.
_EVENTS = """
CREATE TABLE IF NOT EXISTS event_log (
    seq INTEGER PRIMARY KEY,
    store_id TEXT NOT NULL,
    first_ms INTEGER NOT NULL,       -- the earliest received_ms of its events
    last_ms INTEGER NOT NULL,        -- the latest
    events TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS event_log_by_time ON event_log (store_id, last_ms);

CREATE TABLE IF NOT EXISTS event_counters (
    store_id TEXT NOT NULL,
    surface TEXT NOT NULL,
    kind TEXT NOT NULL,
    product_id TEXT NOT NULL,
    arm TEXT NOT NULL,
    type TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (store_id, surface, kind, product_id, arm, type)
) WITHOUT ROWID
"""

_IMPRESSIONS_SEEN = """
-- The latest valid (unflagged) impression of each offer by each visitor, '' for none: what a
-- click, accept or decline needs to be valid. It grows with the pairs, not with the impressions.
-- Keyed by visitor first: a page view's impressions (one visitor, offers with random ids) land
-- side by side, not each on a page of its own.
CREATE TABLE IF NOT EXISTS impressions_seen (
    store_id TEXT NOT NULL,
    visitor_id TEXT NOT NULL,
    offer_id TEXT NOT NULL,
    last_ms INTEGER NOT NULL,
    PRIMARY KEY (store_id, visitor_id, offer_id)
) WITHOUT ROWID
"""

_COMMERCE = """
-- state: 'running' (owner holds it since started_ms), 'open' (released: the same fingerprint
-- may claim it again) or 'done' (status and body replayable).
CREATE TABLE IF NOT EXISTS idempotency (
    store_id TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    status INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL DEFAULT x'',
    started_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (store_id, key)
) WITHOUT ROWID;

-- One row per offer accepted (or being accepted) on an order. state: 'reserved', 'charging'
-- (a charge is recorded in charge_attempts) or 'charged'.
CREATE TABLE IF NOT EXISTS accepts (
    store_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    state TEXT NOT NULL,
    charge_id TEXT,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (store_id, order_id, product_id)
) WITHOUT ROWID;

-- A charge written down before the charge endpoint is called (attempt: codec's JSON). due_ms:
-- no call before it (the current call's lease), NULL once settled. calls: calls leased so far.
CREATE TABLE IF NOT EXISTS charge_attempts (
    store_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    attempt BLOB NOT NULL,
    calls INTEGER NOT NULL DEFAULT 0,
    due_ms INTEGER,
    PRIMARY KEY (store_id, order_id, product_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS charge_attempts_due ON charge_attempts (due_ms)
    WHERE due_ms IS NOT NULL;

-- The first answer of each (cart, offer token) pair redeemed, keyed by the pair's digest, kept
-- until expires_ms (a repeat answers it again).
CREATE TABLE IF NOT EXISTS redemptions (
    store_id TEXT NOT NULL,
    key TEXT NOT NULL,
    answer BLOB NOT NULL,
    redeemed_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (store_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS redemptions_expiry ON redemptions (expires_ms)
"""

_JOURNEYS = """
-- product_ids: JSON list, sorted. A redelivered webhook is the same row.
CREATE TABLE IF NOT EXISTS order_events (
    store_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    type TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    product_ids TEXT NOT NULL,
    PRIMARY KEY (store_id, order_id, type, at_ms, product_ids)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS sms_consent (
    store_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (store_id, customer_id, at_ms, status, source)
) WITHOUT ROWID;

-- position 0 is the current feed key, 1 the previous one (valid until the next rotation).
CREATE TABLE IF NOT EXISTS feed_keys (
    key TEXT PRIMARY KEY,
    store_id TEXT NOT NULL,
    position INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS feed_keys_by_store ON feed_keys (store_id, position);

-- Codes are global (a link names no store). data: the ShortLink as JSON.
CREATE TABLE IF NOT EXISTS short_links (
    code TEXT PRIMARY KEY,
    store_id TEXT NOT NULL,
    data BLOB NOT NULL
) WITHOUT ROWID
"""

_RETIRED_KEYS = """
CREATE TABLE IF NOT EXISTS retired_keys (
    key TEXT PRIMARY KEY,
    store_id TEXT NOT NULL REFERENCES stores (id),
    kind TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS retired_keys_by_store ON retired_keys (store_id)
"""

# `CREATE ... IF NOT EXISTS` throughout: every process that opens the file may run this.
# It is split on ";", so comments in it must not hold one.
SCHEMA = ";".join(
    (_STORES_ORDERS_AND_SIGNALS, _EVENTS, _IMPRESSIONS_SEEN, _COMMERCE, _JOURNEYS, _RETIRED_KEYS)
)

# The first schema with impressions_seen: a file older than it fills the table from its events.
IMPRESSIONS_SEEN_SINCE = 5
# The first schema with impressions_seen keyed by visitor first: an older one is rebuilt.
VISITOR_FIRST_SINCE = 7
# impressions_seen as schemas 5 and 6 made it: the offer the second column of its key.
_KEYED_BY_OFFER = (
    "SELECT 1 FROM pragma_table_info('impressions_seen') WHERE name = 'offer_id' AND pk = 2"
)


def _upgrade_events(conn: sqlite3.Connection, found: int) -> None:
    """Bring the events of a file at schema `found` up to this schema (inside the migration)."""
    if found < VISITOR_FIRST_SINCE and conn.execute(_KEYED_BY_OFFER).fetchone():
        conn.execute("ALTER TABLE impressions_seen RENAME TO impressions_seen_by_offer")
        conn.execute(_IMPRESSIONS_SEEN)
        conn.execute(
            "INSERT INTO impressions_seen (store_id, visitor_id, offer_id, last_ms)"
            " SELECT store_id, visitor_id, offer_id, last_ms FROM impressions_seen_by_offer"
        )
        conn.execute("DROP TABLE impressions_seen_by_offer")
    if not conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'events'").fetchone():
        return  # its events are in the log already
    columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    if "flag" not in columns:
        conn.execute("ALTER TABLE events ADD COLUMN flag TEXT")
    # Impressions stored before impressions_seen existed still make later actions valid; a file
    # that has the table keeps it as it stands (reading every impression again is not needed).
    if found < IMPRESSIONS_SEEN_SINCE:
        conn.execute(
            "INSERT OR REPLACE INTO impressions_seen (store_id, visitor_id, offer_id, last_ms)"
            " SELECT store_id, COALESCE(visitor_id, ''), offer_id, MAX(received_ms) FROM events"
            " WHERE type = 'impression' AND flag IS NULL GROUP BY 1, 2, 3"
        )
    upgrade_event_log(conn)


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the file to SCHEMA_VERSION, creating what is missing (every process may run it)."""
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return  # the common case: opening takes no write lock
    conn.execute("BEGIN IMMEDIATE")
    try:
        (found,) = conn.execute("PRAGMA user_version").fetchone()
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"the database has schema version {found}; this release knows {SCHEMA_VERSION}"
            )
        if found == SCHEMA_VERSION:  # another process migrated it while this one waited
            conn.execute("COMMIT")
            return
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        _upgrade_events(conn, found)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
