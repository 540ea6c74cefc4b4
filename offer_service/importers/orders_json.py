"""The native orders JSON: a list of orders in the API's Order shape."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from offer_service.domain.orders import Order, OrderLine, OrderStatus
from offer_service.domain.time import ISO_EXAMPLE, epoch_ms, parse_datetime
from offer_service.importers.fields import Currency, Identifier, MinorUnits, rejections_from
from offer_service.importers.json_body import JsonSource, json_list_items, with_lines
from offer_service.importers.result import ImportResult, Rejection
from offer_service.importers.seen import FirstSeen

MAX_LINES = 1000
MAX_TOKEN = 2048


def parse_placed_at(value: object) -> datetime:
    """ISO 8601 text (domain.time's forms) as an aware UTC datetime."""
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO 8601 date-time string, not {value!r}")
    try:
        return parse_datetime(value)
    except ValueError:
        raise ValueError(
            f"must be an ISO 8601 date-time such as {ISO_EXAMPLE}, not {value!r}"
        ) from None


class OrderLineIn(BaseModel):
    """One line of an order: a product, how many, and the unit price paid."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    product_id: Identifier
    quantity: Annotated[int, Field(ge=1, le=1_000_000)]
    price: MinorUnits
    # The token of the offer the line was bought from: credits the line to it (checked when
    # the order is recorded, `commerce.offer_credit`).
    offer_token: Annotated[str, Field(min_length=1, max_length=MAX_TOKEN)] | None = None


class OrderIn(BaseModel):
    """An order as merchants send it (docs/importing.md, the order fields), validated strictly."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    id: Identifier
    customer_id: Identifier | None = None
    visitor_id: Identifier | None = None
    placed_at: Annotated[datetime, BeforeValidator(parse_placed_at)]
    currency: Currency
    lines: Annotated[list[OrderLineIn], Field(min_length=1, max_length=MAX_LINES)]
    status: OrderStatus = "placed"

    def to_order(self) -> Order:
        return Order(
            id=self.id,
            placed_at_ms=epoch_ms(self.placed_at),
            currency=self.currency,
            lines=tuple(
                OrderLine(ln.product_id, ln.quantity, ln.price, offer_token=ln.offer_token)
                for ln in self.lines
            ),
            customer_id=self.customer_id,
            visitor_id=self.visitor_id,
            status=self.status,
        )


def parse_orders_json(raw: JsonSource) -> ImportResult[Order]:
    """Parse a JSON list of orders; a bad order is rejected with its index, line and field
    (`lines[2].quantity`), good ones kept. Raises ValidationFailed when the body is not a list.
    A `returned` order is still an order: its status says it came back. A large file (`raw`
    may be a seekable binary file) is parsed an order at a time."""
    result: ImportResult[Order] = ImportResult()
    first_index = FirstSeen()
    try:
        for index, item in enumerate(json_list_items(raw, "orders")):
            try:
                order = OrderIn.model_validate(item).to_order()
            except ValidationError as exc:
                result.reject(rejections_from(exc, index=index))
                continue
            first = first_index.first(order.id, index)
            if first is not None:
                message = f"id {order.id!r} was already used by item {first}."
                result.reject([Rejection(message, index=index, field="id")])
                continue
            result.items.append(order)
    finally:
        first_index.close()
    result.rejected = with_lines(raw, result.rejected)
    return result
