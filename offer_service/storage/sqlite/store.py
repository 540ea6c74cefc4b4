"""The embedded default backend: one SQLite file in WAL mode, shared by every local process.

`connection.py` holds the connections, snapshots and checkpoints; `schema.py` every table and
the migration; one module per role of the Store protocol holds its queries, and `SQLiteStore`
is all of them on one connection.
"""

from __future__ import annotations

from offer_service.storage.sqlite.affinity import SQLiteAffinity
from offer_service.storage.sqlite.catalog import SQLiteCatalog
from offer_service.storage.sqlite.commerce import SQLiteCommerce
from offer_service.storage.sqlite.connection import (
    CHECKPOINT_INTERVAL_S,
    READ_MAP_BYTES,
    SNAPSHOT_MAX_S,
)
from offer_service.storage.sqlite.credentials import SQLiteCredentials
from offer_service.storage.sqlite.events import SQLiteEvents
from offer_service.storage.sqlite.journeys import SQLiteJourneys
from offer_service.storage.sqlite.orders import SQLiteOrders
from offer_service.storage.sqlite.redemptions import SQLiteRedemptions
from offer_service.storage.sqlite.schema import SCHEMA_VERSION
from offer_service.storage.sqlite.signals import SQLiteSignals

__all__ = [
    "CHECKPOINT_INTERVAL_S",
    "READ_MAP_BYTES",
    "SCHEMA_VERSION",
    "SNAPSHOT_MAX_S",
    "SQLiteStore",
]


class SQLiteStore(
    SQLiteCredentials,
    SQLiteCatalog,
    SQLiteOrders,
    SQLiteAffinity,
    SQLiteSignals,
    SQLiteEvents,
    SQLiteCommerce,
    SQLiteRedemptions,
    SQLiteJourneys,
):
    """The `Store` protocol on one SQLite file (see `SQLiteConnection` for how it is used)."""

    @property
    def streams(self) -> None:
        """Events are counted as they are written: there is no stream to aggregate."""
        return None

    @property
    def shared_limits(self) -> None:
        """Rate limits are each process's own."""
        return None
