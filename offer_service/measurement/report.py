"""The measurement report: offer metrics by surface, kind, product and arm (`tallies.py`), order
metrics, the treatment-versus-holdout comparison and attach rate over time, from events,
accepts and orders.

Pure: the caller reads the data (`endpoints/metrics.py`) and this module only counts. Every
figure is defined in docs/measurement.md; the definitions in the comments below are the same.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from offer_service.domain.attribution import CreditedLine, credit
from offer_service.domain.events import StoredEvent
from offer_service.domain.orders import AcceptedOffer, Order
from offer_service.domain.products import Product
from offer_service.domain.traffic import REASONS
from offer_service.measurement.exposures import EXPOSURE, HOLDOUT
from offer_service.measurement.statistics import (
    Estimate,
    Moments,
    RatioMoments,
    difference_of_means,
    difference_of_proportions,
    mean,
    proportion,
    ratio,
    scaled,
)
from offer_service.measurement.tallies import ReportQuery as ReportQuery
from offer_service.measurement.tallies import breakdowns, money, offer_tallies
from offer_service.types import DAY_MS

# Bucket widths for the time series, the smallest that keeps it within MAX_BUCKETS points.
BUCKET_STEPS_MS = (
    1_000,
    5_000,
    15_000,
    60_000,
    300_000,
    900_000,
    3_600_000,
    3 * 3_600_000,
    6 * 3_600_000,
    DAY_MS,
    7 * DAY_MS,
)
MAX_BUCKETS = 40


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def average(e: Estimate, currency: str) -> dict[str, Any]:
    """An average amount: minor units with two decimals (an average of amounts is no integer)."""
    out = e.as_dict(digits=2)
    out["currency"] = currency
    return out


def _order_total(order: Order) -> int:
    return sum(line.price * line.quantity for line in order.lines)


def _returned_total(order: Order) -> int:
    if order.status == "returned":
        return _order_total(order)
    gone = set(order.returned)
    return sum(line.price * line.quantity for line in order.lines if line.product_id in gone)


def main_currency(orders: Iterable[Order]) -> str | None:
    """The currency most orders are in (ties: alphabetical); the report's money is in it."""
    counts = Counter(o.currency for o in orders)
    if not counts:
        return None
    return min(counts, key=lambda c: (-counts[c], c))


def order_metrics(
    orders: Sequence[Order], lines: Sequence[CreditedLine], currency: str
) -> dict[str, Any]:
    """AOV with and without offer items and the attach rate, over the period's orders."""
    offer_revenue: Counter[str] = Counter()
    for line in lines:
        offer_revenue[line.order_id] += line.revenue
    aov, aov_without = Moments(), Moments()
    with_items, without_items = Moments(), Moments()
    for order in orders:
        total = _order_total(order)
        extra = offer_revenue.get(order.id, 0)
        aov.add(total)
        aov_without.add(total - extra)
        (with_items if order.id in offer_revenue else without_items).add(total)
    n = len(orders)
    return {
        "orders": n,
        "orders_with_offer_items": len(offer_revenue),
        "attach_rate": proportion(len(offer_revenue), n).as_dict(),
        "revenue": money(int(aov.total), currency),
        "offer_item_revenue": money(sum(offer_revenue.values()), currency),
        "aov": average(mean(aov), currency),
        "aov_without_offer_items": average(mean(aov_without), currency),
        "aov_of_orders_with_offer_items": average(mean(with_items), currency),
        "aov_of_orders_without_offer_items": average(mean(without_items), currency),
    }


@dataclass(slots=True)
class Group:
    """Visitors of one group (treatment, holdout, or one arm) and what they bought."""

    visitors: int = 0
    converted: int = 0
    orders: int = 0
    rpv: Moments = field(default_factory=Moments)
    net_rpv: Moments = field(default_factory=Moments)
    aov: RatioMoments = field(default_factory=RatioMoments)

    def add(self, orders: int, revenue: int, net: int) -> None:
        self.visitors += 1
        self.orders += orders
        self.rpv.add(revenue)
        self.net_rpv.add(net)
        if orders:
            self.converted += 1
            self.aov.add(orders, revenue)

    def as_dict(self, currency: str) -> dict[str, Any]:
        return {
            "visitors": self.visitors,
            "converted": self.converted,
            "orders": self.orders,
            "revenue": money(int(self.rpv.total), currency),
            "conversion_rate": proportion(self.converted, self.visitors).as_dict(),
            "revenue_per_visitor": average(mean(self.rpv), currency),
            "net_revenue_per_visitor": average(mean(self.net_rpv), currency),
            "aov": average(ratio(self.aov), currency),
        }


def _versus(a: Group, b: Group, currency: str) -> dict[str, Any]:
    """a against b: the conversion difference and the incremental (net) revenue per visitor."""
    incremental = difference_of_means(a.rpv, b.rpv)
    return {
        "conversion_rate_difference": difference_of_proportions(
            a.converted, a.visitors, b.converted, b.visitors
        ).as_dict(),
        "incremental_revenue_per_visitor": average(incremental, currency),
        "incremental_net_revenue_per_visitor": average(
            difference_of_means(a.net_rpv, b.net_rpv), currency
        ),
        "incremental_revenue": average(scaled(incremental, a.visitors), currency),
    }


def holdout_comparison(
    q: ReportQuery, events: Iterable[StoredEvent], orders: Sequence[Order], currency: str
) -> dict[str, Any]:
    """Visitors seen in the period (an offers request with their visitor id; with a surface, on
    that surface), treatment against holdout and each arm against the holdout."""
    group_of: dict[str, bool] = {}  # visitor -> in holdout
    arms_of: dict[str, set[str]] = {}
    for e in events:
        if e.type != EXPOSURE or not e.visitor_id or not q.since_ms <= e.ts_ms < q.until_ms:
            continue
        if e.flag is not None:  # a bot's or a prefetch's request: nobody saw anything
            continue
        if q.surface and e.surface != q.surface:
            continue
        held = e.kind == HOLDOUT
        group_of[e.visitor_id] = group_of.get(e.visitor_id, False) or held
        if e.arm:
            arms_of.setdefault(e.visitor_id, set()).add(e.arm)
    bought: dict[str, list[int]] = {}  # visitor -> [orders, revenue, net revenue]
    for order in orders:
        if order.visitor_id in group_of:
            total = _order_total(order)
            row = bought.setdefault(order.visitor_id, [0, 0, 0])
            row[0] += 1
            row[1] += total
            row[2] += total - _returned_total(order)
    treatment, holdout = Group(), Group()
    arms: dict[str, Group] = {}
    for visitor, held in group_of.items():
        n, revenue, net = bought.get(visitor, (0, 0, 0))
        (holdout if held else treatment).add(n, revenue, net)
        if not held:
            for arm in arms_of.get(visitor, ()):
                arms.setdefault(arm, Group()).add(n, revenue, net)
    arm_rows = []
    for arm in sorted(arms):
        g = arms[arm]
        arm_rows.append({"arm": arm, **g.as_dict(currency), **_versus(g, holdout, currency)})
    return {
        "share": q.holdout_share,
        "sample_sizes": {"treatment": treatment.visitors, "holdout": holdout.visitors},
        "groups": {"treatment": treatment.as_dict(currency), "holdout": holdout.as_dict(currency)},
        **_versus(treatment, holdout, currency),
        "arms": arm_rows,
    }


def invalid_traffic(q: ReportQuery, events: Iterable[StoredEvent]) -> dict[str, Any]:
    """The period's events stored as invalid traffic (left out of every figure above: bots,
    prefetches, actions without an impression), by reason and by event type."""
    by_reason: dict[str, int] = dict.fromkeys(REASONS, 0)
    by_type: Counter[str] = Counter()
    total = 0
    for e in events:
        if not q.since_ms <= e.ts_ms < q.until_ms or (q.surface and e.surface != q.surface):
            continue
        total += 1
        if e.flag is not None:
            by_reason[e.flag] = by_reason.get(e.flag, 0) + 1
            by_type[e.type] += 1
    flagged = sum(by_reason.values())
    return {
        "events": flagged,
        "share_of_events": round(flagged / total, 6) if total else None,
        "by_reason": by_reason,
        "by_type": dict(sorted(by_type.items())),
    }


def bucket_step(first_ms: int, last_ms: int) -> int:
    span = max(last_ms - first_ms, 1)
    for step in BUCKET_STEPS_MS:
        if span // step + 1 <= MAX_BUCKETS:
            return step
    return BUCKET_STEPS_MS[-1]


def attach_series(orders: Sequence[Order], lines: Sequence[CreditedLine]) -> dict[str, Any]:
    """Attach rate over time, in buckets as wide as the data needs (at most MAX_BUCKETS)."""
    if not orders:
        return {"bucket_ms": DAY_MS, "points": []}
    with_items = {line.order_id for line in lines}
    first = min(o.placed_at_ms for o in orders)
    last = max(o.placed_at_ms for o in orders)
    step = bucket_step(first, last)
    counts: dict[int, list[int]] = {}
    for o in orders:
        start = o.placed_at_ms // step * step
        row = counts.setdefault(start, [0, 0])
        row[0] += 1
        row[1] += o.id in with_items
    points = []
    start = first // step * step
    while start <= last:
        n, k = counts.get(start, (0, 0))
        points.append(
            {
                "start": iso(start),
                "orders": n,
                "orders_with_offer_items": k,
                "attach_rate": proportion(k, n).as_dict(),
            }
        )
        start += step
    return {"bucket_ms": step, "points": points}


def build(
    q: ReportQuery,
    events: Sequence[StoredEvent],
    accepts: Sequence[AcceptedOffer],
    orders: Sequence[Order],
    products: Mapping[str, Product],
    generated_ms: int,
) -> dict[str, Any]:
    """The report. `events` must cover [since - window - 7 days, until + 7 days) by receipt
    time (clicks before the period can earn its orders; `ts` may be 7 days off receipt);
    `orders` are the orders placed in [since, until)."""
    currency = main_currency(orders) or next(iter({p.currency for p in products.values()}), "USD")
    kept = [o for o in orders if o.currency == currency]
    window_ms = q.window_days * DAY_MS
    lines = credit(kept, accepts, events, window_ms)
    costs = {pid: p.cost for pid, p in products.items()}
    titles = {pid: p.title for pid, p in products.items()}
    cells = offer_tallies(q, events, lines, costs)
    surface_lines = [ln for ln in lines if not q.surface or ln.offer.surface == q.surface]
    totals, by = breakdowns(cells, len(kept), currency, titles)
    return {
        "store_id": q.store_id,
        "from": iso(q.since_ms),
        "to": iso(q.until_ms),
        "surface": q.surface,
        "generated_at": iso(generated_ms),
        "currency": currency,
        "attribution": {
            "window_days": q.window_days,
            "rule": (
                "An order line is credited to an offer when it was accepted one-click, when "
                "it was sent with the offer's token (offer_token), or when the order's visitor "
                f"clicked an offer of that product within {q.window_days} days before the "
                "order (last click wins); each line at most once."
            ),
        },
        "orders_in_other_currencies": len(orders) - len(kept),
        "totals": totals,
        "orders": order_metrics(kept, surface_lines, currency),
        "holdout": holdout_comparison(q, events, kept, currency),
        "breakdown": by,
        "series": {"attach_rate": attach_series(kept, surface_lines)},
        "invalid_traffic": invalid_traffic(q, events),
    }
