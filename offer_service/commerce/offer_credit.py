"""Order lines bought from an offer: each line's offer token verified into the offer it credits.

A line sent with the token of the offer it was bought from (`offer_token`) is credited to that
offer exactly, without a click: the offer, surface, kind and arm come from the signed token. The
token is checked for its signature and store, and for naming the line's product (a bundle's
token names each of its items); its expiry is not checked, since an order may arrive long after
the offer was taken. A token that fails never rejects the order: its line is kept uncredited and
the refusal is reported with the line it was on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from offer_service.domain.orders import OfferCredit, Order, OrderLine
from offer_service.domain.records import StoreRecord
from offer_service.domain.tokens import BadToken, verify

BAD_TOKEN = "bad_token"
WRONG_PRODUCT = "wrong_product"
MESSAGES = {
    BAD_TOKEN: "The offer token is not a valid offer token of this store; the line is kept "
    "without credit.",
    WRONG_PRODUCT: "The offer token is for another product; the line is kept without credit.",
}


@dataclass(frozen=True, slots=True)
class RefusedToken:
    """An order line whose offer token credited nothing, and why."""

    order_id: str
    line: int  # the line's index in the order
    code: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "field": f"lines[{self.line}].offer_token",
            "code": self.code,
            "message": MESSAGES[self.code],
        }


def _credited(record: StoreRecord, line: OrderLine, now_s: float) -> tuple[OrderLine, str | None]:
    """The line with its offer credited (and its token dropped), or uncredited and why."""
    plain = OrderLine(line.product_id, line.quantity, line.price)
    try:
        claims = verify(line.offer_token or "", record.signing_keys, now_s, any_age=True)
    except BadToken:
        return plain, BAD_TOKEN
    if claims.store_id != record.id:
        return plain, BAD_TOKEN
    products = {claims.product_id, *(item.product_id for item in claims.items)}
    if line.product_id not in products:
        return plain, WRONG_PRODUCT
    credit = OfferCredit(claims.offer_id, claims.surface, claims.kind, claims.arm)
    return OrderLine(line.product_id, line.quantity, line.price, offer=credit), None


def credit_lines(
    record: StoreRecord, orders: Sequence[Order], now_s: float | None = None
) -> tuple[list[Order], list[RefusedToken]]:
    """The orders with every line that carries an offer token credited to its offer, and the
    tokens refused."""
    now_s = time.time() if now_s is None else now_s
    out: list[Order] = []
    refused: list[RefusedToken] = []
    for order in orders:
        if not any(line.offer_token is not None for line in order.lines):
            out.append(order)
            continue
        lines = []
        for i, line in enumerate(order.lines):
            if line.offer_token is None:
                lines.append(line)
                continue
            credited, code = _credited(record, line, now_s)
            lines.append(credited)
            if code is not None:
                refused.append(RefusedToken(order.id, i, code))
        out.append(
            Order(
                order.id,
                order.placed_at_ms,
                order.currency,
                tuple(lines),
                order.customer_id,
                order.visitor_id,
                order.status,
                order.returned,
            )
        )
    return out, refused
