"""Catalog products as one service process holds them, decoded, per store version."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

from offer_service.domain.products import Product
from offer_service.storage.protocols import Store

# Catalog products decoded by this process, all stores together; a store's are dropped when its
# version changes (every catalog write bumps it).
PRODUCTS_MAX = 200_000


class Products:
    """`Store.get_products`, with the products this process has read since the store's version
    last changed held decoded: an answer that misses the prepared-offer cache reads only the
    candidates it has not met yet, however big the catalog."""

    def __init__(self, store: Store, version: Callable[[str], Awaitable[int]]) -> None:
        self.store = store
        self._version = version
        # store id -> (store version, product id -> product)
        self._held: dict[str, tuple[int, dict[str, Product]]] = {}

    async def get(self, store_id: str, ids: Collection[str]) -> dict[str, Product]:
        """The products of `ids` the catalog has, by id."""
        version = await self._version(store_id)
        held = self._held.get(store_id)
        if held is None or held[0] != version:
            held = self._held[store_id] = (version, {})
        known = held[1]
        answer = {i: known[i] for i in ids if i in known}
        if len(answer) < len(ids):
            found = await self.store.get_products(store_id, [i for i in ids if i not in known])
            answer.update(found)
            if sum(len(p) for _, p in self._held.values()) + len(found) > PRODUCTS_MAX:
                self._held.clear()
                known = {}
                self._held[store_id] = (version, known)
            # Kept under the version they were read for: a newer one starts afresh.
            known.update(found)
        return answer
