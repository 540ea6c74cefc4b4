"""Wire models of taking a pre-purchase offer: `POST /v1/offers/redeem`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from offer_service.web.models import Money, Wire

MAX_REDEEM_TOKENS = 50
MAX_CART_ID = 255
MAX_TOKEN = 2048

RefusalCode = Literal["bad_token", "offer_expired", "inactive", "out_of_stock", "price_changed"]


class RedeemRequest(Wire):
    """The offer tokens a cart took, to be priced by the service (never by the browser)."""

    cart_id: str = Field(
        min_length=1,
        max_length=MAX_CART_ID,
        description="The store's id of the cart (or checkout); a repeat of the same cart and "
        "token answers the same line(s).",
    )
    tokens: list[Annotated[str, Field(min_length=1, max_length=MAX_TOKEN)]] = Field(
        min_length=1,
        max_length=MAX_REDEEM_TOKENS,
        description="Offer tokens, as the offers and the snippet's add handler carry them.",
    )


class RedeemedLine(BaseModel):
    """A product the store may add to the cart at `offer_price`."""

    valid: Literal[True]
    token_index: int = Field(description="The index in `tokens` of the token this line answers.")
    offer_id: str
    product_id: str
    kind: str = Field(description="The offer's kind; `bundle` for each item of a bundle.")
    surface: str
    quantity: int = Field(ge=1)
    price: Money = Field(description="The product's list price, as the offer was made.")
    discount_pct: int = Field(ge=0, le=100)
    offer_price: Money = Field(description="The unit price to charge.")


class RefusedLine(BaseModel):
    """A token that cannot be charged at its offered price, and why."""

    valid: Literal[False]
    token_index: int
    code: RefusalCode
    message: str
    offer_id: str | None = Field(None, description="Absent for a bad_token.")
    product_id: str | None = Field(
        None, description="The product at fault (for a bundle, its first item at fault)."
    )


class RedeemResponse(BaseModel):
    lines: list[RedeemedLine | RefusedLine] = Field(
        description="In token order; a valid bundle answers one line per item, in its order."
    )
