"""Orders, their lines and returns, as the engine records them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from offer_service.types import OrderId, ProductId

OrderStatus = Literal["placed", "shipped", "delivered", "returned"]


@dataclass(frozen=True, slots=True)
class OfferCredit:
    """The offer an order line was bought from, as its verified offer token named it."""

    offer_id: str
    surface: str
    kind: str
    arm: str | None = None


@dataclass(frozen=True, slots=True)
class OrderLine:
    product_id: ProductId
    quantity: int
    price: int  # unit price, minor units
    # The offer token the line was sent with, until it is verified (never stored).
    offer_token: str | None = None
    # The offer the line is credited to, from its verified token (stored with the line).
    offer: OfferCredit | None = None


@dataclass(frozen=True, slots=True)
class Order:
    """A paid order. `lines` hold product lines only: fee lines are kept out of baskets."""

    id: OrderId
    placed_at_ms: int
    currency: str
    lines: tuple[OrderLine, ...]
    customer_id: str | None = None
    visitor_id: str | None = None
    status: OrderStatus = "placed"
    # Product ids sent back so far (the whole order once `status` is "returned").
    returned: tuple[ProductId, ...] = ()

    @property
    def product_ids(self) -> frozenset[ProductId]:
        return frozenset(line.product_id for line in self.lines)

    @property
    def total(self) -> int:
        return sum(line.price * line.quantity for line in self.lines)


@dataclass(frozen=True, slots=True)
class ProductReturn:
    """Products sent back. With an order id, a return of every line suppresses that order's
    post-purchase offers; with a customer id, the products are never offered to them again."""

    product_ids: tuple[ProductId, ...]
    at_ms: int
    order_id: OrderId | None = None
    customer_id: str | None = None


@dataclass(frozen=True, slots=True)
class AcceptedOffer:
    """An offer accepted one-click and charged: its line was appended to the order."""

    order_id: OrderId
    product_id: ProductId
    charge_id: str
    at_ms: int
