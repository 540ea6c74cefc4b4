"""Offer metrics of the report: impressions, clicks, adds, redeemed lines and credited purchases
per offer cell, and their rows by surface, kind, product and arm (docs/measurement.md defines
each figure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from offer_service.domain.attribution import CreditedLine, OfferRef
from offer_service.domain.events import REDEEM, StoredEvent
from offer_service.measurement.statistics import proportion

DIMENSIONS = ("surface", "kind", "product", "arm")
# Events that act on an offer shown: each counts once per counted impression it follows.
_ACTIONS = ("click", "add")
_COUNTED = frozenset(("impression", *_ACTIONS, REDEEM))


@dataclass(frozen=True, slots=True)
class ReportQuery:
    store_id: str
    since_ms: int
    until_ms: int
    surface: str | None
    window_days: int
    holdout_share: float


# Who saw an offer: (offer id, visitor id), or (offer id, "event:<id>") without a visitor.
Viewer = tuple[str, str]


def money(amount: int, currency: str) -> dict[str, Any]:
    return {"amount": amount, "currency": currency}


@dataclass(slots=True)
class Tally:
    """Offer metrics of one group of offers (a surface, a kind, a product, an arm, or all).

    A rate's numerator is drawn from its denominator's traffic: `clicked`, `added` and `taken`
    are the counted `impressions` that a click, an add to cart, or an accept, an add or a
    credited purchase followed. An accept after an impression that does not count (a bot's, a
    prefetch's, one outside the period) still counts as an accept, with its revenue, but takes
    no impression."""

    impressions: set[Viewer] = field(default_factory=set)
    clicked: set[Viewer] = field(default_factory=set)
    added: set[Viewer] = field(default_factory=set)
    taken: set[Viewer] = field(default_factory=set)
    redeemed: int = 0
    one_click: int = 0
    via_token: int = 0
    via_click: int = 0
    orders: set[str] = field(default_factory=set)
    token_orders: set[str] = field(default_factory=set)
    revenue: int = 0
    token_revenue: int = 0
    refunded: int = 0
    margin: int = 0
    costed_items: int = 0
    returned_items: int = 0

    @property
    def accepts(self) -> int:
        return self.one_click + self.via_token + self.via_click

    def add_line(self, line: CreditedLine, cost: int | None) -> None:
        if line.via == "one_click":
            self.one_click += 1
        elif line.via == "token":
            self.via_token += 1
            self.token_orders.add(line.order_id)
            self.token_revenue += line.revenue
        else:
            self.via_click += 1
        self.orders.add(line.order_id)
        self.revenue += line.revenue
        if line.returned:
            self.returned_items += 1
            self.refunded += line.revenue
        if cost is not None:
            self.costed_items += 1
            if not line.returned:  # a returned item earned no margin
                self.margin += (line.unit_price - cost) * line.quantity

    def merge(self, other: Tally) -> None:
        self.impressions |= other.impressions
        self.clicked |= other.clicked
        self.added |= other.added
        self.taken |= other.taken
        self.redeemed += other.redeemed
        self.one_click += other.one_click
        self.via_token += other.via_token
        self.via_click += other.via_click
        self.orders |= other.orders
        self.token_orders |= other.token_orders
        self.revenue += other.revenue
        self.token_revenue += other.token_revenue
        self.refunded += other.refunded
        self.margin += other.margin
        self.costed_items += other.costed_items
        self.returned_items += other.returned_items

    def as_dict(self, total_orders: int, currency: str) -> dict[str, Any]:
        impressions, clicks, taken = len(self.impressions), len(self.clicked), len(self.taken)
        return {
            "impressions": impressions,
            "clicks": clicks,
            "accepts": self.accepts,
            "one_click_accepts": self.one_click,
            "click_attributed_purchases": self.via_click,
            "taken_impressions": taken,
            "take_rate": proportion(taken, impressions).as_dict(),
            "click_through_rate": proportion(clicks, impressions).as_dict(),
            "orders_with_offer_items": len(self.orders),
            "attach_rate": proportion(len(self.orders), total_orders).as_dict(),
            "attributed_revenue": money(self.revenue, currency),
            "refunded_revenue": money(self.refunded, currency),
            "refund_adjusted_revenue": money(self.revenue - self.refunded, currency),
            "margin_contribution": money(self.margin, currency),
            "items_with_known_cost": self.costed_items,
            "returned_items": self.returned_items,
            "return_rate": proportion(self.returned_items, self.accepts).as_dict(),
            "adds": len(self.added),
            "add_rate": proportion(len(self.added), impressions).as_dict(),
            "redeemed_lines": self.redeemed,
            "token_purchases": self.via_token,
            "token_orders": len(self.token_orders),
            "token_revenue": money(self.token_revenue, currency),
        }


def _dimension_key(ref: OfferRef, dimension: str) -> str | None:
    if dimension == "surface":
        return ref.surface
    if dimension == "kind":
        return ref.kind
    if dimension == "product":
        return ref.product_id
    return ref.arm


def offer_tallies(
    q: ReportQuery,
    events: Iterable[StoredEvent],
    lines: Iterable[CreditedLine],
    costs: Mapping[str, int | None],
) -> dict[OfferRef, Tally]:
    """Tallies per offer cell (surface, kind, product, arm): unique impressions in the period
    (distinct offer and visitor), those of them clicked or added to a cart, and the credited
    lines of the period's orders with the impressions they took."""
    cells: dict[OfferRef, Tally] = {}
    actions: list[tuple[OfferRef, StoredEvent]] = []
    # Counted impressions of post-purchase offers by order, which is how a one-click accept
    # finds its offer; and anonymous ones by offer, for anonymous clicks and adds to pair with.
    on_order: dict[tuple[str, OfferRef], set[Viewer]] = {}
    anonymous: dict[tuple[OfferRef, str], set[Viewer]] = {}
    for e in events:
        if e.type not in _COUNTED or not q.since_ms <= e.ts_ms < q.until_ms:
            continue
        if e.flag is not None:  # invalid traffic: counted in `invalid_traffic` only
            continue
        if q.surface and e.surface != q.surface:
            continue
        ref = OfferRef(e.surface, e.kind, e.product_id, e.arm)
        if e.type == REDEEM:  # the service's record of a line priced for a cart
            cells.setdefault(ref, Tally()).redeemed += 1
            continue
        if e.type != "impression":
            actions.append((ref, e))
            continue
        who = (e.offer_id, e.visitor_id or f"event:{e.id}")
        cells.setdefault(ref, Tally()).impressions.add(who)
        if not e.visitor_id:
            anonymous.setdefault((ref, e.offer_id), set()).add(who)
        if e.order_id:
            on_order.setdefault((e.order_id, ref), set()).add(who)
    # A click or an add counts when the impression it follows does (the same offer and
    # visitor); an anonymous one pairs with an anonymous impression of the same offer, each
    # used once per kind of action. An add takes its impression.
    anonymous_actions: dict[tuple[str, OfferRef, str], set[str]] = {}
    for ref, e in actions:
        tally = cells.get(ref)
        if tally is None:
            continue
        if e.visitor_id:
            who = (e.offer_id, e.visitor_id)
            if who in tally.impressions:
                _acted(tally, e.type, [who])
        else:
            anonymous_actions.setdefault((e.type, ref, e.offer_id), set()).add(e.id)
    for (kind, ref, offer_id), ids in anonymous_actions.items():
        shown = sorted(anonymous.get((ref, offer_id), ()))
        _acted(cells[ref], kind, shown[: len(ids)])
    for line in lines:
        if q.surface and line.offer.surface != q.surface:
            continue
        tally = cells.setdefault(line.offer, Tally())
        tally.add_line(line, costs.get(line.product_id))
        seen = _impression_taken(line, tally, on_order)
        if seen is not None:
            tally.taken.add(seen)
    return cells


def _acted(tally: Tally, kind: str, viewers: Iterable[Viewer]) -> None:
    """Counted impressions followed by a click, or by an add (which also takes them)."""
    if kind == "click":
        tally.clicked.update(viewers)
        return
    for who in viewers:
        tally.added.add(who)
        tally.taken.add(who)


def _impression_taken(
    line: CreditedLine, tally: Tally, on_order: Mapping[tuple[str, OfferRef], set[Viewer]]
) -> Viewer | None:
    """The counted impression a credited line followed, if any: for a purchase by click or by
    token the offer's impression by the order's visitor, for a one-click accept an impression
    of the offer on the order it was accepted on."""
    if line.via != "one_click":
        who = (line.offer_id or "", line.visitor_id or "")
        return who if who in tally.impressions else None
    shown = on_order.get((line.order_id, line.offer))
    return min(shown) if shown else None


def breakdowns(
    cells: Mapping[OfferRef, Tally],
    total_orders: int,
    currency: str,
    titles: Mapping[str, str],
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The totals row and one list of rows per dimension, largest attributed revenue first."""
    total = Tally()
    groups: dict[str, dict[str | None, Tally]] = {d: {} for d in DIMENSIONS}
    for ref, tally in cells.items():
        total.merge(tally)
        for d in DIMENSIONS:
            groups[d].setdefault(_dimension_key(ref, d), Tally()).merge(tally)
    out: dict[str, list[dict[str, Any]]] = {}
    for d, by_key in groups.items():
        rows = []
        name = "product_id" if d == "product" else d
        for key, tally in by_key.items():
            row: dict[str, Any] = {name: key}
            if d == "product":
                row["title"] = titles.get(key or "", "")
            row.update(tally.as_dict(total_orders, currency))
            rows.append(row)
        rows.sort(
            key=lambda r: (-r["attributed_revenue"]["amount"], -r["impressions"], str(r[name]))
        )
        out[d] = rows
    return total.as_dict(total_orders, currency), out
