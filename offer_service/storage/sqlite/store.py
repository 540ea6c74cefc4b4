"""The embedded default backend: one SQLite file in WAL mode, shared by every local process.

`connection.py` holds the connections, snapshots and checkpoints; `schema.py` every table and
the migration; one module per role of the Store protocol holds its queries, and `SQLiteStore`
is all of them on one connection.
"""

from __future__ import annotations

from collections.abc import Sequence

from offer_service.storage.protocols import CandidateSources
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

    async def candidate_sources(
        self,
        store_id: str,
        anchor_ids: Sequence[str],
        families: Sequence[str],
        categories: Sequence[str],
        *,
        neighbors: int,
        best_sellers: int,
    ) -> CandidateSources:
        # One read after another: each is a query of an indexed table in this process.
        lists = {a: await self.neighbors(store_id, a, neighbors) for a in anchor_ids}
        counted = set(anchor_ids) | {pc.product_id for pcs in lists.values() for pc in pcs}
        return CandidateSources(
            neighbors=lists,
            family_members={f: await self.family_products(store_id, f) for f in families},
            best_sellers={
                c: await self.best_sellers(store_id, c, best_sellers) for c in categories
            },
            basket_total=await self.basket_count(store_id),
            basket_counts=await self.product_basket_counts(store_id, counted),
        )

    @property
    def streams(self) -> None:
        """Events are counted as they are written: there is no stream to aggregate."""
        return None

    @property
    def shared_limits(self) -> None:
        """Rate limits are each process's own."""
        return None

    @property
    def local_reads(self) -> SQLiteStore:
        """Every read is a query on this process's own connection (`SQLiteConnection._query`)."""
        return self
