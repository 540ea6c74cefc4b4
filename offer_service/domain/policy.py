"""A store's business rules: the part of the engine's behaviour a merchant configures."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from offer_service.domain.charge_urls import check_charge_url
from offer_service.domain.money import MAX_MINOR_UNITS
from offer_service.domain.surfaces import SURFACES, Surface

# No rule, however configured, can discount more than this (DESIGN section 4).
ABSOLUTE_DISCOUNT_CAP = 30
# A bundle's discount off its items' sum: "5 to 15 percent off a bundle preserves margin";
# below 5% it is no reason to take the bundle.
BUNDLE_DISCOUNT_MIN = 5
BUNDLE_DISCOUNT_MAX = 15


# How StoreRules checks its charge_url, chosen by the validation context (`rules_context`):
# rules a merchant sets must name a public https host ("public", the default) unless the operator
# allows private hosts ("private"); rules read back from storage are taken as they were stored
# ("stored"), since the charge client checks the address again before every call.
ChargeUrlCheck = Literal["public", "private", "stored"]


def rules_context(charge_urls: ChargeUrlCheck) -> dict[str, ChargeUrlCheck]:
    """The validation context of StoreRules: which check its charge_url gets."""
    return {"charge_urls": charge_urls}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DiscountRules(_Model):
    """Discount per offer kind and the caps by product flag, in whole percent."""

    upsell: int = Field(0, ge=0, le=ABSOLUTE_DISCOUNT_CAP)
    cross_sell: int = Field(10, ge=0, le=ABSOLUTE_DISCOUNT_CAP)
    downsell: int = Field(10, ge=0, le=ABSOLUTE_DISCOUNT_CAP)
    replenish: int = Field(5, ge=0, le=ABSOLUTE_DISCOUNT_CAP)
    bundle: int = Field(
        10,
        ge=BUNDLE_DISCOUNT_MIN,
        le=BUNDLE_DISCOUNT_MAX,
        description="Percent off a bundle's items' sum (each item's cap still applies).",
    )
    # Caps: an ordinary product never above `default_cap`; `new` up to `new_cap`;
    # above `new_cap` only for `clearance`, and never above the absolute cap.
    default_cap: int = Field(10, ge=0, le=ABSOLUTE_DISCOUNT_CAP)
    new_cap: int = Field(15, ge=0, le=ABSOLUTE_DISCOUNT_CAP)
    clearance_cap: int = Field(30, ge=0, le=ABSOLUTE_DISCOUNT_CAP)
    # Extra percent offered on new and clearance products (still capped).
    new_bonus: int = Field(5, ge=0, le=ABSOLUTE_DISCOUNT_CAP)
    clearance_bonus: int = Field(20, ge=0, le=ABSOLUTE_DISCOUNT_CAP)


class PriceBand(_Model):
    """Post-purchase offers prefer a price of `low`-`high` of the order's value."""

    low: float = Field(0.15, ge=0, le=1)
    high: float = Field(0.30, ge=0, le=1)
    # Outside the band the score is multiplied by this; above 100% of the order: excluded.
    outside_penalty: float = Field(0.5, gt=0, le=1)


class PriceFit(_Model):
    """Before the purchase, a cross-sell far pricier than what the shopper is buying is left out:
    above `cart` times the cart's subtotal (cart and checkout) or `product_page` times the viewed
    product's price. Null turns a surface's check off. The defaults remove 0.07% and 1.1% of the
    real co-purchases of the Online Retail data (docs/choosing-offers.md)."""

    cart: float | None = Field(3.0, gt=0)
    product_page: float | None = Field(20.0, gt=0)


class FrequencyCap(_Model):
    """A product shown `impressions` times without a click within `window_hours` is rested."""

    impressions: int = Field(3, ge=1, le=1000)
    window_hours: int = Field(24, ge=1, le=24 * 30)


# Experiment and variant names travel in arms ("<experiment>:<variant>"), tokens and CSV reports.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$"


class Variant(_Model):
    """One arm of an experiment: the store's rules with these fields replaced."""

    name: str = Field(pattern=NAME_PATTERN)
    weight: float = Field(1.0, gt=0, le=1000, description="Relative share of the visitors.")
    discounts: DiscountRules | None = None
    value: Literal["price", "margin"] | None = Field(None, description="Ranking strategy.")
    margin_floor: int | None = Field(None, ge=0)
    price_band: PriceBand | None = None


class Experiment(_Model):
    """Named variants of rules or ranking on some surfaces; a visitor's arm is sticky (a hash of
    store, experiment name and visitor id, independent of the holdout's)."""

    name: str = Field(pattern=NAME_PATTERN)
    surfaces: list[Surface] = Field(
        default_factory=list, description="Surfaces it runs on; empty: every surface."
    )
    variants: list[Variant] = Field(min_length=2, max_length=10)
    active: bool = True

    @model_validator(mode="after")
    def _distinct_variants(self) -> Experiment:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment {self.name}: variant names must be distinct")
        if self.name == "holdout":
            raise ValueError("the experiment name holdout is reserved for the holdout group")
        return self


class RateLimits(_Model):
    """Requests per second (sustained) and burst, per publishable key and client address on the
    browser routes, and per secret key on the admin routes; events per second and burst per
    client address (the event budget: a batch of 50 costs 50); and the rates no shopper reaches,
    past which events are stored flagged as invalid traffic (docs/security.md#event-floods)."""

    # Generous enough for many shoppers behind one NAT; a page makes a handful of calls.
    browser_per_second: float = Field(100.0, gt=0, le=1_000_000)
    browser_burst: int = Field(200, ge=1, le=1_000_000)
    admin_per_second: float = Field(50.0, gt=0, le=1_000_000)
    admin_burst: int = Field(200, ge=1, le=1_000_000)
    # A page view sends a handful of events: 50 a second is dozens of shoppers at once.
    events_per_second: float = Field(50.0, gt=0, le=1_000_000)
    events_burst: int = Field(1000, ge=1, le=1_000_000)
    # Flagged past these, each a sliding minute: one visitor's events (a shopper sends about ten
    # a page), new visitors from one address, impressions of one offer from one address (a
    # shopper sees an offer once or twice a page, and its token changes every minute or so).
    visitor_events_per_minute: int = Field(300, ge=1, le=1_000_000)
    address_visitors_per_minute: int = Field(300, ge=1, le=1_000_000)
    offer_impressions_per_minute: int = Field(120, ge=1, le=1_000_000)

    @classmethod
    def lifted(cls) -> RateLimits:
        """Every limit and rate at its highest: for a store that one load generator drives from
        one address (the demo, a benchmark), where nothing is a shopper's pace."""
        return cls.model_validate(dict.fromkeys(cls.model_fields, 1_000_000))


class LearningRules(_Model):
    """How the engine learns each offer's P(accept) from this store's shoppers."""

    explore_share: float = Field(
        0.1,
        ge=0,
        le=0.5,
        description="Share of responses whose last slot may try an under-explored offer.",
    )
    prior_strength: float = Field(
        20.0,
        ge=1,
        le=10_000,
        description="Impressions the surface's prior P(accept) is worth in each posterior.",
    )
    half_life_days: float = Field(
        14.0, ge=1, le=365, description="Days after which an impression or take counts half."
    )


# The default value weight, chosen from the trade-off measured in docs/evaluation.md.
VALUE_WEIGHT = 0.05


class StoreRules(_Model):
    """`PUT /v1/admin/rules`. Every field has a default, so `{}` is a valid rule set."""

    surface_counts: dict[Surface, int] = Field(default_factory=dict)
    margin_floor: int = Field(0, ge=0, description="Minimum offer price minus cost, minor units.")
    discounts: DiscountRules = Field(default_factory=DiscountRules)
    price_band: PriceBand = Field(default_factory=PriceBand)
    price_fit: PriceFit = Field(default_factory=PriceFit)
    frequency_cap: FrequencyCap = Field(default_factory=FrequencyCap)
    value: Literal["price", "margin"] = "price"
    value_weight: float = Field(
        VALUE_WEIGHT,
        ge=0,
        le=1,
        description="How much an offer's value counts against its chance of being bought: offers "
        "rank by P(accept) x value ** value_weight (0: the likeliest first, 1: expected value).",
    )
    holdout_share: float = Field(0.10, ge=0, le=1)
    accept_cap: int = Field(3, ge=1, le=100)
    post_purchase_window_minutes: int = Field(60, ge=1, le=60 * 24 * 30)
    checkout_accept: bool = False
    bundles: bool = Field(
        True, description="Offer the viewed product with its strongest complements as a bundle."
    )
    free_shipping_threshold: int | None = Field(
        None,
        ge=0,
        le=MAX_MINOR_UNITS,
        strict=True,
        description="The cart subtotal, minor units, from which shipping is free; below it cart "
        "and checkout answers say what remains and offers that close the gap rank first. Null: "
        "no threshold.",
    )
    allowed_origins: list[str] = Field(default_factory=list)
    charge_url: str | None = None
    storefront_url: str | None = Field(
        None,
        pattern=r"^https://[^\s/?#]+(/[^\s?#]*)?$",
        max_length=300,
        description="The shop's https address: relative product URLs in emails and SMS start here.",
    )
    min_pair_count: int = Field(2, ge=1, le=1000)
    offer_ttl_seconds: int = Field(3600, ge=60, le=7 * 86400)
    rate_limits: RateLimits = Field(default_factory=lambda: RateLimits())
    experiments: list[Experiment] = Field(default_factory=list, max_length=20)
    attribution_window_days: int = Field(
        7, ge=1, le=90, description="Days after a click in which buying the product credits it."
    )
    learning: LearningRules = Field(default_factory=LearningRules)

    @field_validator("charge_url")
    @classmethod
    def _charge_url_callable(cls, url: str | None, info: ValidationInfo) -> str | None:
        check = (info.context or {}).get("charge_urls", "public")
        if url is not None and check != "stored":
            check_charge_url(url, allow_private=check == "private")
        return url

    @model_validator(mode="after")
    def _counts_within_hard_max(self) -> StoreRules:
        for surface, count in self.surface_counts.items():
            hard_max = SURFACES[surface].hard_max
            if not 1 <= count <= hard_max:
                raise ValueError(f"surface_counts.{surface.value} must be between 1 and {hard_max}")
        return self

    @model_validator(mode="after")
    def _one_experiment_per_surface(self) -> StoreRules:
        # A visitor's arm on a surface must be unambiguous: it is the response's `experiment`.
        names = [e.name for e in self.experiments]
        if len(set(names)) != len(names):
            raise ValueError("experiment names must be distinct")
        taken: set[Surface] = set()
        for e in self.experiments:
            if not e.active:
                continue
            surfaces = set(e.surfaces or SURFACES)
            if surfaces & taken:
                raise ValueError(
                    f"experiment {e.name}: another active experiment already runs on "
                    + ", ".join(sorted(s.value for s in surfaces & taken))
                )
            taken |= surfaces
        return self
