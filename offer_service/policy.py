"""A store's business rules: the part of the engine's behaviour a merchant configures."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .surfaces import SURFACES, Surface

# No rule, however configured, can discount more than this (DESIGN section 4).
ABSOLUTE_DISCOUNT_CAP = 30


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DiscountRules(_Model):
    """Discount per offer kind and the caps by product flag, in whole percent."""

    upsell: int = Field(0, ge=0, le=ABSOLUTE_DISCOUNT_CAP)
    cross_sell: int = Field(10, ge=0, le=ABSOLUTE_DISCOUNT_CAP)
    downsell: int = Field(10, ge=0, le=ABSOLUTE_DISCOUNT_CAP)
    replenish: int = Field(5, ge=0, le=ABSOLUTE_DISCOUNT_CAP)
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


class FrequencyCap(_Model):
    """A product shown `impressions` times without a click within `window_hours` is rested."""

    impressions: int = Field(3, ge=1, le=1000)
    window_hours: int = Field(24, ge=1, le=24 * 30)


class StoreRules(_Model):
    """`PUT /v1/admin/rules`. Every field has a default, so `{}` is a valid rule set."""

    surface_counts: dict[Surface, int] = Field(default_factory=dict)
    margin_floor: int = Field(0, ge=0, description="Minimum offer price minus cost, minor units.")
    discounts: DiscountRules = Field(default_factory=DiscountRules)
    price_band: PriceBand = Field(default_factory=PriceBand)
    frequency_cap: FrequencyCap = Field(default_factory=FrequencyCap)
    value: Literal["price", "margin"] = "price"
    holdout_share: float = Field(0.10, ge=0, le=1)
    accept_cap: int = Field(3, ge=1, le=100)
    post_purchase_window_minutes: int = Field(60, ge=1, le=60 * 24 * 30)
    checkout_accept: bool = False
    allowed_origins: list[str] = Field(default_factory=list)
    charge_url: str | None = None
    min_pair_count: int = Field(2, ge=1, le=1000)
    offer_ttl_seconds: int = Field(3600, ge=60, le=7 * 86400)

    @model_validator(mode="after")
    def _counts_within_hard_max(self) -> StoreRules:
        for surface, count in self.surface_counts.items():
            hard_max = SURFACES[surface].hard_max
            if not 1 <= count <= hard_max:
                raise ValueError(f"surface_counts.{surface.value} must be between 1 and {hard_max}")
        return self
