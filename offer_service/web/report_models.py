"""The measurement report's wire shape (`GET /v1/admin/metrics`), for `/openapi.json` and tests.

The report is built as plain data by `report.py`; these models document it and the tests
validate real reports against them (extra fields are errors, so the two cannot drift apart).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from offer_service.web.models import Money


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Interval(_Out):
    """A rate (a fraction) or a difference of rates, with its 95% interval."""

    value: float | None
    ci: list[float] | None = Field(description="[low, high], 95%")


class Amount(Interval):
    """An average amount of money in minor units (two decimals), with its 95% interval."""

    currency: str


class OfferMetrics(_Out):
    impressions: int = Field(description="Distinct (offer, visitor) impression events.")
    clicks: int = Field(
        description="Distinct (offer, visitor) click events whose impression is counted."
    )
    accepts: int = Field(
        description="One-click accepts plus token-credited and click-attributed purchases."
    )
    one_click_accepts: int
    click_attributed_purchases: int
    taken_impressions: int = Field(
        description="Counted impressions an accept, an add to cart, or a purchase credited "
        "by token or click followed: the take rate's numerator."
    )
    take_rate: Interval
    click_through_rate: Interval
    orders_with_offer_items: int
    attach_rate: Interval
    attributed_revenue: Money
    refunded_revenue: Money
    refund_adjusted_revenue: Money
    margin_contribution: Money
    items_with_known_cost: int
    returned_items: int
    return_rate: Interval
    adds: int = Field(
        description="Counted impressions of pre-purchase offers followed by an add to cart "
        "(an `add` event of the same offer and visitor)."
    )
    add_rate: Interval = Field(description="adds / impressions.")
    redeemed_lines: int = Field(
        description="Lines POST /v1/offers/redeem priced for a cart the first time (a bundle: "
        "one per item): offers the store's cart took."
    )
    token_purchases: int = Field(
        description="Order lines credited to the offer by the offer_token they were sent "
        "with (no click needed); counted in accepts."
    )
    token_orders: int = Field(description="Orders with at least one token-credited line.")
    token_revenue: Money = Field(
        description="Revenue of token-credited lines; part of attributed_revenue."
    )


class SurfaceRow(OfferMetrics):
    surface: str


class KindRow(OfferMetrics):
    kind: str


class ProductRow(OfferMetrics):
    product_id: str
    title: str


class ArmRow(OfferMetrics):
    arm: str | None


class Breakdown(_Out):
    surface: list[SurfaceRow]
    kind: list[KindRow]
    product: list[ProductRow]
    arm: list[ArmRow]


class OrderMetrics(_Out):
    orders: int
    orders_with_offer_items: int
    attach_rate: Interval
    revenue: Money
    offer_item_revenue: Money
    aov: Amount
    aov_without_offer_items: Amount
    aov_of_orders_with_offer_items: Amount
    aov_of_orders_without_offer_items: Amount


class Group(_Out):
    visitors: int
    converted: int
    orders: int
    revenue: Money
    conversion_rate: Interval
    revenue_per_visitor: Amount
    net_revenue_per_visitor: Amount
    aov: Amount


class Versus(_Out):
    conversion_rate_difference: Interval
    incremental_revenue_per_visitor: Amount
    incremental_net_revenue_per_visitor: Amount
    incremental_revenue: Amount


class ArmVersusHoldout(Group, Versus):
    arm: str


class Groups(_Out):
    treatment: Group
    holdout: Group


class SampleSizes(_Out):
    treatment: int
    holdout: int


class HoldoutComparison(Versus):
    share: float
    sample_sizes: SampleSizes
    groups: Groups
    arms: list[ArmVersusHoldout]


class Attribution(_Out):
    window_days: int
    rule: str


class SeriesPoint(_Out):
    start: str
    orders: int
    orders_with_offer_items: int
    attach_rate: Interval


class Series(_Out):
    bucket_ms: int
    points: list[SeriesPoint]


class ReportSeries(_Out):
    attach_rate: Series


class InvalidTraffic(_Out):
    """Events stored as invalid traffic in the period, left out of every other figure."""

    events: int
    share_of_events: float | None = Field(description="of every event stored in the period")
    by_reason: dict[str, int] = Field(
        description="bot, prefetch, no_impression; and, when there are any, visitor_rate, "
        "address_visitors, offer_impressions (rates no shopper reaches)"
    )
    by_type: dict[str, int] = Field(description="impression, click, ..., exposure")


class MetricsReport(_Out):
    """GET /v1/admin/metrics (JSON; `Accept: text/csv` for one figure per row)."""

    store_id: str
    from_: str = Field(alias="from")
    to: str
    surface: str | None
    generated_at: str
    currency: str
    attribution: Attribution
    orders_in_other_currencies: int
    totals: OfferMetrics
    orders: OrderMetrics
    holdout: HoldoutComparison
    breakdown: Breakdown
    series: ReportSeries
    invalid_traffic: InvalidTraffic
