"""What the engine reads of an offers request, whichever parser built it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from offer_service.domain.surfaces import Surface


class AnchorItem(Protocol):
    """A cart or checkout line as an anchor: its product, and for the free-shipping threshold
    the cart's subtotal, its quantity and the unit price sent (None: the catalog's)."""

    @property
    def product_id(self) -> str: ...
    @property
    def quantity(self) -> int: ...
    @property
    def price(self) -> int | None: ...


class OfferAsk(Protocol):
    """A validated offers request: the wire model (`web.models.OffersRequest`) and the hot
    path's field-by-field parse (`web.models.OfferQuery`) both are one."""

    @property
    def surface(self) -> Surface: ...
    @property
    def product_id(self) -> str | None: ...
    @property
    def items(self) -> Sequence[AnchorItem] | None: ...
    @property
    def order_id(self) -> str | None: ...
    @property
    def order_token(self) -> str | None: ...
    @property
    def visitor_id(self) -> str | None: ...
    @property
    def customer_id(self) -> str | None: ...
    @property
    def limit(self) -> int | None: ...
    @property
    def exclude(self) -> Sequence[str]: ...
