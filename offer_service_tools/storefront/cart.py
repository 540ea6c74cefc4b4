"""The demo cart: product ids and quantities in a first-party cookie that the server sets, and
the offers taken into it: their tokens (never a price: the price comes from redeeming them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

from starlette.responses import Response

from offer_service.domain.products import Product
from offer_service.types import is_whole, whole_in

CART_COOKIE = "demo_cart"
# The offers taken into the cart, as their tokens, and the cart's id that redeems them: the
# service keeps each (cart, token) answer, so the cart, the checkout and the order all read the
# same price however often they ask.
OFFERS_COOKIE = "demo_offers"
CART_ID_COOKIE = "demo_cart_id"
CART_MAX_AGE_S = 30 * 24 * 3600
MAX_CART_LINES = 50
MAX_OFFER_TOKENS = 6  # a cookie holds about 4 kB; a bundle's token is the longest, ~600 bytes
MAX_TOKEN_CHARS = 2048
MAX_QUANTITY = 99


@dataclass(frozen=True, slots=True)
class CartLine:
    """A product in the cart and how many of it."""

    product: Product
    quantity: int
    # An offer's line: the price its redeemed token set, and the token the order carries.
    offer_price: int | None = None
    offer_token: str | None = None
    discount_pct: int = 0

    @property
    def unit_price(self) -> int:
        return self.product.price if self.offer_price is None else self.offer_price

    @property
    def total(self) -> int:
        return self.unit_price * self.quantity


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


def parse_offers(value: str | None) -> list[str]:
    """The offer tokens taken into the cart, in the order they were added (at most
    MAX_OFFER_TOKENS); a token is base64url and one dot, so "|" separates them safely."""
    tokens: list[str] = []
    for token in (value or "").split("|"):
        if token and len(token) <= MAX_TOKEN_CHARS and token not in tokens:
            tokens.append(token)
    return tokens[:MAX_OFFER_TOKENS]


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
    _set(response, CART_COOKIE, format_cart(cart))


def set_offers(response: Response, tokens: Sequence[str], cart_id: str) -> None:
    """Store the offers taken and the cart id that redeemed them (none: delete both)."""
    _set(response, OFFERS_COOKIE, "|".join(tokens[:MAX_OFFER_TOKENS]))
    _set(response, CART_ID_COOKIE, cart_id if tokens else "")


def _set(response: Response, name: str, value: str) -> None:
    if value:
        response.set_cookie(
            name, value, max_age=CART_MAX_AGE_S, path="/demo", httponly=True, samesite="lax"
        )
    else:
        response.delete_cookie(name, path="/demo", httponly=True, samesite="lax")
