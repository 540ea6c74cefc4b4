"""The demo cart: product ids and quantities in a first-party cookie that the server sets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

from starlette.responses import Response

from offer_service.domain.products import Product
from offer_service.types import is_whole, whole_in

CART_COOKIE = "demo_cart"
CART_MAX_AGE_S = 30 * 24 * 3600
MAX_CART_LINES = 50
MAX_QUANTITY = 99


@dataclass(frozen=True, slots=True)
class CartLine:
    """A product in the cart and how many of it."""

    product: Product
    quantity: int

    @property
    def total(self) -> int:
        return self.product.price * self.quantity


def parse_cart(value: str | None) -> dict[str, int]:
    """`id:qty|id:qty` with each id percent-encoded; anything malformed is dropped."""
    cart: dict[str, int] = {}
    for part in (value or "").split("|"):
        pid, _, qty = part.rpartition(":")
        count = _count(qty)
        if pid and count and len(cart) < MAX_CART_LINES:
            cart[unquote(pid)] = count
    return cart


def format_cart(cart: Mapping[str, int]) -> str:
    return "|".join(f"{quote(pid, safe='')}:{qty}" for pid, qty in cart.items())


def quantity(text: str | None, default: int = 1) -> int:
    """A quantity typed into a form, within 0..MAX_QUANTITY; `default` when it is no number."""
    count = _count((text or "").strip())
    return default if count is None else count


def _count(text: str) -> int | None:
    """ASCII digits as a quantity, at most MAX_QUANTITY however many digits there are (int()
    would refuse a few thousand); None when the text is no number."""
    if not is_whole(text):
        return None
    number = whole_in(text)
    return MAX_QUANTITY if number is None else min(number, MAX_QUANTITY)


def purchasable(product: Product | None) -> bool:
    return product is not None and product.active and product.in_stock and not product.is_fee


def subtotal(lines: Sequence[CartLine]) -> tuple[int, str]:
    """The lines' total and its currency (the first line's; USD for an empty cart)."""
    currency = lines[0].product.currency if lines else "USD"
    return sum(line.total for line in lines), currency


def set_cart(response: Response, cart: Mapping[str, int]) -> None:
    """Store `cart` in the cookie of `response` (an empty cart deletes the cookie)."""
    if cart:
        response.set_cookie(
            CART_COOKIE,
            format_cart(cart),
            max_age=CART_MAX_AGE_S,
            path="/demo",
            httponly=True,
            samesite="lax",
        )
    else:
        response.delete_cookie(CART_COOKIE, path="/demo", httponly=True, samesite="lax")
