"""How many entries each per-process table that grows with traffic may hold."""

from __future__ import annotations

from dataclasses import dataclass

# Prepared offer lists, one per (store, surface, anchors, version): a cart's contents are a key.
# About 13 KB each (docs/memory.md); each is prepared again after 60 s anyway, so 10,000 hold
# every cart a process meets at up to 160 new carts a second.
PREPARED_MAX = 10_000
# Catalog products decoded, all stores together.
PRODUCTS_MAX = 200_000
# Visitors' states held between their requests.
VISITORS_MAX = 100_000
# Keys counted in this process: rate-limit buckets (per client address, visitor and offer), the
# visitors seen from each address, and the exposures already written today.
KEYS_MAX = 200_000


@dataclass(frozen=True, slots=True)
class CacheLimits:
    """The bounds of the engine's tables (settings.py reads them from OFFER_CACHE_*)."""

    prepared: int = PREPARED_MAX
    products: int = PRODUCTS_MAX
    visitors: int = VISITORS_MAX
    keys: int = KEYS_MAX


DEFAULT_LIMITS = CacheLimits()
