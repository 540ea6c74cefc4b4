"""Wire models (pydantic): what requests must look like and what responses promise.

The same models validate requests and generate `/openapi.json`. Responses on the hot path are
assembled from cached bytes, not built through these models; the response models document them
and the tests validate real responses against them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from offer_service.domain.events import MAX_CLOCK_SKEW_DAYS
from offer_service.domain.surfaces import SURFACES, Surface
from offer_service.exceptions import ValidationFailed
from offer_service.types import OfferKind

MAX_ITEMS = 100
MAX_EXCLUDE = 100
Id = Annotated[str, Field(min_length=1, max_length=128)]


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Money(Wire):
    amount: int
    currency: str = Field(min_length=3, max_length=3)


def _split_csv(value: Any) -> Any:
    # The query string carries lists as comma-separated ids.
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _items(value: Any) -> Any:
    value = _split_csv(value)
    if isinstance(value, list):
        return [{"product_id": v} if isinstance(v, str) else v for v in value]
    return value


class CartItem(Wire):
    product_id: Id
    quantity: int = Field(1, ge=1, le=10_000)
    price: int | None = Field(None, ge=0, description="Unit price in minor units, if known.")


class OffersRequest(Wire):
    """GET /v1/offers query parameters, or the POST /v1/offers JSON body."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    key: str | None = Field(None, description="Publishable key (or X-Offer-Key header).")
    surface: Surface
    product_id: Id | None = None
    items: Annotated[list[CartItem], BeforeValidator(_items)] | None = Field(
        None, max_length=MAX_ITEMS
    )
    order_id: Id | None = None
    order_token: str | None = Field(None, max_length=128)
    visitor_id: str | None = Field(None, max_length=128)
    customer_id: str | None = Field(None, max_length=128)
    limit: int | None = Field(None, ge=1, le=1000)
    exclude: Annotated[list[Id], BeforeValidator(_split_csv)] = Field(
        default_factory=list, max_length=MAX_EXCLUDE
    )

    @model_validator(mode="after")
    def _anchor_present(self) -> OffersRequest:
        anchor = SURFACES[self.surface].anchor
        if anchor == "product" and not self.product_id:
            raise _missing("product_id", f"product_id is required on {self.surface.value}")
        if anchor == "items" and not self.items:
            raise _missing("items", f"items is required on {self.surface.value}")
        if anchor == "order":
            if not self.order_id:
                raise _missing("order_id", f"order_id is required on {self.surface.value}")
            if not self.order_token:
                raise _missing("order_token", "order_token is required with order_id")
        return self


@dataclass(slots=True)
class OfferQuery:
    """A GET /v1/offers query already checked field by field against OffersRequest's limits
    (the hot path's parser): the same attributes, without building a model per request."""

    surface: Surface
    key: str | None = None
    product_id: str | None = None
    items: list[CartItem] | None = None
    order_id: str | None = None
    order_token: str | None = None
    visitor_id: str | None = None
    customer_id: str | None = None
    limit: int | None = None
    exclude: list[str] = field(default_factory=list)


class _MissingField(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _missing(field: str, message: str) -> _MissingField:
    return _MissingField(field, message)


class OfferFields(BaseModel):
    """What an offer says of itself wherever it is shown: on the page (Offer) and in an email
    or SMS (journey_models.JourneyOffer)."""

    offer_id: str
    product_id: str
    kind: OfferKind
    rank: int = Field(ge=1)
    title: str
    url: str
    image_url: str
    reason: str
    price: Money
    discount_pct: int = Field(ge=0, le=30)
    offer_price: Money


class BundleItem(Wire):
    """One product of a bundle: its list price and its share of the bundle's offer price."""

    product_id: str
    title: str
    url: str
    image_url: str
    price: Money
    offer_price: Money


class Offer(Wire, OfferFields):
    token: str
    expires_at: str
    items: list[BundleItem] | None = Field(
        None,
        description="A bundle's products, the viewed product first; their offer prices add up "
        "to the bundle's. Only on offers of kind bundle.",
    )


class FreeShipping(Wire):
    """How far a cart is from the store's free-shipping threshold."""

    threshold: Money
    remaining: Money = Field(description="What the cart's subtotal lacks to reach it.")


class OffersResponse(Wire):
    request_id: str
    surface: Surface
    limit: int
    holdout: bool
    experiment: str | None
    offers: list[Offer]
    free_shipping: FreeShipping | None = Field(
        None,
        description="Cart and checkout, while the cart's subtotal is below the store's "
        "free_shipping_threshold; absent at or above it, without a threshold, and in holdout.",
    )


class ErrorDetail(BaseModel):
    field: str | None = None
    line: int | None = None
    index: int | None = None
    message: str


class ErrorInfo(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    error: ErrorInfo


class ProductOut(BaseModel):
    """A catalog product as `GET /v1/admin/catalog` returns it (docs/importing.md)."""

    id: str
    title: str
    url: str
    image_url: str
    price: int
    currency: str
    cost: int | None = None
    compare_at_price: int | None = None
    category: str
    family: str | None = None
    tier: int | None = None
    tags: list[str]
    inventory: int | None = None
    active: bool
    complements: list[str]
    flags: list[str]
    replenish_days: int | None = None


class Rejection(BaseModel):
    line: int | None = None
    index: int | None = None
    field: str | None = None
    message: str


class CatalogImportResponse(BaseModel):
    upserted: int
    rejected: list[Rejection] = Field(description="The first 1,000 rejections, in input order.")
    rejected_total: int = Field(description="Every rejection, listed or not.")


class CatalogPage(BaseModel):
    products: list[ProductOut]
    next_cursor: str | None


class RefusedOfferToken(BaseModel):
    order_id: str
    field: str = Field(description="The line's token, as lines[<index>].offer_token.")
    code: Literal["bad_token", "wrong_product"]
    message: str


class OrdersImportResponse(BaseModel):
    imported: int
    duplicates: int = 0
    returns: int
    rejected: list[Rejection] = Field(description="The first 1,000 rejections, in input order.")
    rejected_total: int = Field(description="Every rejection, listed or not.")
    order_tokens: dict[str, str] = Field(default_factory=dict)
    refused_tokens: list[RefusedOfferToken] = Field(
        default_factory=list,
        description="Order lines whose offer_token credited nothing (the order is imported, "
        "the line kept without credit).",
    )


class ReturnRequest(Wire):
    order_id: Id | None = None
    customer_id: str | None = Field(None, max_length=128)
    product_ids: list[Id] = Field(min_length=1, max_length=1000)
    at: str | None = Field(None, description="ISO 8601 time of the return; default now.")

    @model_validator(mode="after")
    def _subject_present(self) -> ReturnRequest:
        if not self.order_id and not self.customer_id:
            raise _missing("order_id", "order_id or customer_id is required")
        return self


class ReturnsResponse(BaseModel):
    recorded: int


class Neighbor(BaseModel):
    product_id: str
    title: str
    pair_count: int
    support: float
    confidence: float
    lift: float
    score: float | None = Field(
        None,
        description="The item model's weight of this product for the anchor, as a probability "
        "it is bought with it; null for a list not trained by the model.",
    )


class NeighborsResponse(BaseModel):
    product_id: str
    baskets: int
    neighbors: list[Neighbor]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]


def field_path(loc: tuple[int | str, ...]) -> str:
    """('items', 2, 'product_id') -> 'items[2].product_id'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not out:
            out = part
        else:
            out += f".{part}"
    return out


def validation_failed(
    exc: ValidationError, message: str = "The request is invalid."
) -> ValidationFailed:
    """A 422 listing every bad field of a pydantic error."""
    details: list[dict[str, Any]] = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _MissingField):
            details.append({"field": ctx_error.field, "message": str(ctx_error)})
            continue
        msg = err["msg"].removeprefix("Value error, ")
        details.append({"field": field_path(loc) or None, "message": msg})
    return ValidationFailed(message, details=details)


class AcceptRequest(Wire):
    """POST /v1/accept; the Idempotency-Key header is required."""

    key: str | None = None
    token: str = Field(min_length=1, max_length=2048)
    quantity: int = Field(1, ge=1, le=10)


class AcceptResponse(BaseModel):
    status: Literal["accepted"]
    order_id: str
    product_id: str
    charged: Money
    charge_id: str
    offer_id: str | None = None


class AcceptPending(BaseModel):
    """202: the charge was sent and its outcome is not known yet; the service settles it with
    the store's charge endpoint, and the same Idempotency-Key then answers the final outcome."""

    status: Literal["pending"]
    code: Literal["charge_pending"]
    message: str
    order_id: str
    product_id: str
    quantity: int
    amount: Money
    offer_id: str | None = None


class DeclineRequest(Wire):
    key: str | None = None
    token: str = Field(min_length=1, max_length=2048)
    visitor_id: str | None = Field(None, max_length=128)


class DeclineResponse(BaseModel):
    downsell: Offer | None


class EventIn(BaseModel):
    id: str = Field(min_length=1, max_length=64)
    type: Literal["impression", "click", "add", "accept", "decline", "view"]
    token: str
    ts: int = Field(
        description="When it happened, in epoch ms: within "
        f"{MAX_CLOCK_SKEW_DAYS} days of the server's clock, else rejected."
    )
    visitor_id: str | None = None


class EventsRequest(BaseModel):
    """POST /v1/events (application/json or text/plain). Each event is validated on its own."""

    key: str | None = None
    events: list[EventIn] = Field(max_length=100)


class EventRejection(BaseModel):
    index: int
    code: str = Field(
        description="invalid_event, bad_token, or rate_limited: past the client's event budget "
        "(the 202 then carries Retry-After)."
    )
    field: str | None = None
    message: str | None = Field(None, description="Why, in one sentence.")


class EventsResponse(BaseModel):
    accepted: int
    duplicates: int
    rejected: list[EventRejection]


class SigningKeyResponse(BaseModel):
    kid: str
    verifying: list[str]


class WebhookSecretResponse(BaseModel):
    webhook_secret: str


class KeyRotationRequest(Wire):
    """POST /v1/admin/publishable-key/rotate and /v1/admin/secret-key/rotate (body optional)."""

    grace_seconds: int = Field(
        86_400,
        ge=0,
        le=30 * 86_400,
        description="How long the replaced key keeps working; 0 revokes it (and every earlier "
        "key of the kind) at once.",
    )


class PublishableKeyResponse(BaseModel):
    publishable_key: str
    previous_key_expires_at: str | None = Field(description="null when revoked at once")


class SecretKeyResponse(BaseModel):
    secret_key: str
    previous_key_expires_at: str | None = Field(description="null when revoked at once")
    webhook_secret: str | None = Field(
        None,
        description="only when revoked at once: the new webhook secret, which replaced every "
        "earlier one",
    )
