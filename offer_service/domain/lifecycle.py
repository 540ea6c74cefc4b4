"""What happens to an order after payment, and what a customer agreed to: the journey's inputs.

Order lifecycle events (shipped, delivered, returned) arrive as signed webhooks; SMS consent
(an opt-in with its time and source, an opt-out) is kept per customer as a history, so a
journey evaluated at any time sees the consent that was in force then. Short links are the
tracked links that emails and SMS carry: a code that resolves to the offer it was made for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from offer_service.types import OrderId, ProductId

OrderEventType = Literal["shipped", "delivered", "returned"]
ConsentStatus = Literal["opted_in", "opted_out"]


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One step of an order's life. A return may name the lines sent back (empty: all)."""

    order_id: OrderId
    type: OrderEventType
    at_ms: int
    product_ids: tuple[ProductId, ...] = ()


@dataclass(frozen=True, slots=True)
class SmsConsent:
    """One change of a customer's SMS consent. An opt-in names where it was given (a checkout
    checkbox, a keyword reply, a pop-up): that record is what proves consent."""

    customer_id: str
    status: ConsentStatus
    at_ms: int
    source: str = ""


@dataclass(frozen=True, slots=True)
class ShortLink:
    """A tracked link in an email or SMS: the offer it leads to and where to send the click."""

    code: str
    store_id: str
    order_id: OrderId
    touchpoint: str
    surface: str
    product_id: ProductId
    kind: str
    offer_id: str
    offer_price: int
    currency: str
    url: str
    visitor_id: str | None = None


def consent_at(history: Iterable[SmsConsent], at_ms: int) -> SmsConsent | None:
    """The consent in force at `at_ms`: the latest change at or before it (on a tie, an
    opt-out wins), or None when the customer never answered."""
    current: SmsConsent | None = None
    for c in history:
        if c.at_ms > at_ms:
            continue
        if current is None or (c.at_ms, c.status == "opted_out") > (
            current.at_ms,
            current.status == "opted_out",
        ):
            current = c
    return current
