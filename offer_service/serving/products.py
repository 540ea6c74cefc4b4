"""Catalog products as one service process holds them, decoded, per store version."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

from offer_service.domain.products import Product
from offer_service.serving.limits import PRODUCTS_MAX
from offer_service.storage.protocols import Store


class Products:
    """`Store.get_products`, with the products this process has read since the store's version
    last changed held decoded: an answer that misses the prepared-offer cache reads only the
    candidates it has not met yet, however big the catalog."""

    def __init__(
        self,
        store: Store,
        version: Callable[[str], Awaitable[int]],
        most: int = PRODUCTS_MAX,
    ) -> None:
        """`most`: products held, all stores together; past it the copy starts again (a store's
        are dropped too when its version changes: every catalog write bumps it)."""
        self.store = store
        self._version = version
        self._most = most
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
            if sum(len(p) for _, p in self._held.values()) + len(found) > self._most:
                self._held.clear()
                known = {}
                self._held[store_id] = (version, known)
            # Kept under the version they were read for: a newer one starts afresh.
            known.update(found)
        return answer
