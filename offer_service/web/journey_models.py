"""Wire models of post-purchase journeys: order lifecycle webhooks, SMS consent, the journey
timeline, feed keys and feeds. They validate requests and generate `/openapi.json`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, RootModel, model_validator

from offer_service.domain.lifecycle import ConsentStatus, OrderEventType
from offer_service.web.models import Id, OfferFields, Wire, _missing

TIME = "ISO 8601 time with a zone (2026-11-25T18:00:00Z); default: now."


class OrderEventRequest(Wire):
    """POST /v1/admin/orders/{order_id}/events: a step of the order's life."""

    type: OrderEventType
    at: str | None = Field(None, max_length=64, description=TIME)
    product_ids: list[Id] = Field(
        default_factory=list,
        max_length=1000,
        description="The lines this event covers (a partial return); default: the whole order.",
    )


class OrderEventResponse(BaseModel):
    order_id: str
    type: OrderEventType
    at: str
    product_ids: list[str]
    duplicate: bool = Field(description="The same event was recorded before (a redelivery).")


class SmsConsentRequest(Wire):
    """POST /v1/admin/customers/{customer_id}/sms-consent: an opt-in (with its source) or an
    opt-out."""

    status: ConsentStatus
    at: str | None = Field(None, max_length=64, description=TIME)
    source: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Where the opt-in was given (checkout_checkbox, keyword:JOIN, popup, ...).",
    )

    @model_validator(mode="after")
    def _opt_in_has_a_source(self) -> SmsConsentRequest:
        if self.status == "opted_in" and not self.source:
            raise _missing("source", "source is required with an opt-in")
        return self


class ConsentChange(BaseModel):
    status: ConsentStatus
    at: str
    source: str | None = None


class SmsConsentResponse(BaseModel):
    customer_id: str
    status: Literal["opted_in", "opted_out", "none"] = Field(description="In force now.")
    since: str | None = Field(None, description="When the consent in force was given or taken.")
    source: str | None = Field(None, description="Where the opt-in in force was given.")
    history: list[ConsentChange]


class JourneyOffer(OfferFields):
    """An offer in an email or SMS: absolute https URLs, clicks through `click_url`."""

    click_url: str


class Touchpoint(BaseModel):
    name: str
    channel: Literal["web", "email", "sms"]
    surface: str
    due_at: str
    ends_at: str
    status: Literal["due", "upcoming", "done", "suppressed"]
    reason: str | None = None
    offers: list[JourneyOffer]
    sms: str | None = Field(None, description="SMS touchpoints: the text, null without an offer.")
    product_ids: list[str] = Field(
        default_factory=list, description="Replenishment: the consumables that run out."
    )
    review_request: bool = False
    feed_path: str | None = Field(
        None, description="Append to /v1/feeds/{feed_key} to fetch this touchpoint as a feed."
    )


class JourneyResponse(BaseModel):
    order_id: str
    at: str
    customer_id: str | None
    sms_consent: bool = Field(description="The customer's SMS opt-in is in force at `at`.")
    touchpoints: list[Touchpoint]


class ReviewProduct(BaseModel):
    product_id: str
    title: str
    url: str
    image_url: str


class FeedResponse(BaseModel):
    """GET /v1/feeds/{feed_key}/{touchpoint}: one touchpoint, ready for an email or SMS."""

    order_id: str
    touchpoint: str
    channel: Literal["email", "sms"]
    status: Literal["due", "upcoming", "done", "suppressed"]
    reason: str | None = None
    due_at: str
    offers: list[JourneyOffer]
    html: str = Field(description="Email-safe HTML fragment of the offers; empty without any.")
    sms: str | None = Field(description="The SMS text (one message), or null without an offer.")
    review_request: list[ReviewProduct] = Field(
        default_factory=list, description="Delivery email: the order's products to review."
    )


class StoreFeedResponse(BaseModel):
    """GET /v1/feeds/{feed_key}/{touchpoint} without order_id: every order whose touchpoint is
    due now, by order id."""

    touchpoint: str
    channel: Literal["email", "sms"]
    orders: dict[str, FeedResponse]


class FeedAnswer(RootModel[FeedResponse | StoreFeedResponse]):
    """One order's feed (with order_id) or the store-wide feed (without)."""


class FeedKeyResponse(BaseModel):
    feed_key: str
    previous: str | None = Field(None, description="Still valid until the next rotation.")
    feed_url: str = Field(description="Template of a feed URL with this key.")
