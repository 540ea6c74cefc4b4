"""The simulator's shoppers: their true behaviour, what each one did, and the true values of the
report's figures (expectations under the behaviour, given the offers actually shown)."""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PRE_PURCHASE = ("product_page", "cart")


def _pairs(items: Sequence[str] | None, name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: {name} takes NAME=VALUE, not {item!r}")
        out[key] = float(value)
    return out


@dataclass(frozen=True)
class Behaviour:
    """The true parameters of the synthetic shoppers."""

    surface_mix: Mapping[str, float] = field(
        default_factory=lambda: {"product_page": 0.6, "cart": 0.4}
    )
    conversion: float = 0.25  # P(order), holdout and treatment alike...
    conversion_lift: float = 0.0  # ...plus this for treatment visitors
    click_rate: Mapping[str, float] = field(
        default_factory=lambda: {"product_page": 0.12, "cart": 0.10}
    )
    # P(buy the offered product | clicked it and placed an order).
    buy_after_click: Mapping[str, float] = field(
        default_factory=lambda: {"product_page": 0.5, "cart": 0.6}
    )
    thank_you_take: float = 0.15  # P(accept one-click | a thank-you offer shown)
    # Share of offer purchases that would have happened anyway: holdout visitors buy the
    # products they would have been offered at this share of the treatment's rates.
    organic_share: float = 0.5
    offer_return_rate: float = 0.10
    base_return_rate: float = 0.05
    # Multiplier on buy_after_click for visitors of an experiment arm ("experiment:variant").
    arm_multiplier: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for s in self.surface_mix:
            if s not in PRE_PURCHASE:
                raise ValueError(f"the simulation's entry surfaces are {PRE_PURCHASE}, not {s}")
        worst = max(self.arm_multiplier.values(), default=1.0)
        for s in self.surface_mix:
            if not 0 <= self.buy_after_click[s] * max(worst, 1.0) <= 1:
                raise ValueError(f"buy_after_click on {s} times an arm multiplier exceeds 1")
        if not 0 <= self.conversion + self.conversion_lift <= 1:
            raise ValueError("conversion + conversion_lift must be a probability")

    def multiplier(self, arm: str | None) -> float:
        return self.arm_multiplier.get(arm or "", 1.0)

    def p_buy(self, surface: str, holdout: bool, arm: str | None) -> float:
        """P(an offered product is bought | the visitor converts), per offer shown."""
        p = self.click_rate[surface] * self.buy_after_click[surface]
        return p * self.organic_share if holdout else p * self.multiplier(arm)

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        d = cls()
        p.add_argument(
            "--conversion", type=float, default=d.conversion, help="base chance a visitor orders"
        )
        p.add_argument(
            "--conversion-lift",
            type=float,
            default=d.conversion_lift,
            help="added to the treatment's chance to order (the offers' true effect on it)",
        )
        p.add_argument(
            "--thank-you-take",
            type=float,
            default=d.thank_you_take,
            help="chance a buyer accepts each thank-you offer one-click",
        )
        p.add_argument(
            "--organic-share",
            type=float,
            default=d.organic_share,
            help="holdout buyers buy what they would have been offered at this share of the"
            " treatment's rates (1 = the offers add nothing)",
        )
        p.add_argument(
            "--offer-return-rate",
            type=float,
            default=d.offer_return_rate,
            help="chance an offer item is returned",
        )
        p.add_argument(
            "--base-return-rate",
            type=float,
            default=d.base_return_rate,
            help="chance any other item is returned",
        )
        p.add_argument(
            "--click-rate", action="append", metavar="SURFACE=P", help="chance an offer is clicked"
        )
        p.add_argument(
            "--buy-after-click",
            action="append",
            metavar="SURFACE=P",
            help="chance a clicked offer is bought with the order",
        )
        p.add_argument(
            "--surface-mix", action="append", metavar="SURFACE=W", help="landing page weights"
        )
        p.add_argument(
            "--arm-multiplier",
            action="append",
            metavar="ARM=X",
            help="an experiment arm's shoppers buy what they clicked X times as often",
        )

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> Behaviour:
        d = cls()
        return cls(
            surface_mix=_pairs(a.surface_mix, "--surface-mix") or d.surface_mix,
            conversion=a.conversion,
            conversion_lift=a.conversion_lift,
            click_rate={**d.click_rate, **_pairs(a.click_rate, "--click-rate")},
            buy_after_click={**d.buy_after_click, **_pairs(a.buy_after_click, "--buy-after-click")},
            thank_you_take=a.thank_you_take,
            organic_share=a.organic_share,
            offer_return_rate=a.offer_return_rate,
            base_return_rate=a.base_return_rate,
            arm_multiplier=_pairs(a.arm_multiplier, "--arm-multiplier"),
        )


def uniform(key: str) -> float:
    """A uniform number in [0, 1) fixed by `key` (a hash, so keys that differ by a character
    give independent numbers)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True, slots=True)
class OfferSeen:
    product_id: str
    offer_price: int
    offer_id: str
    token: str


@dataclass(eq=False)
class Shopper:
    """One synthetic visitor and everything they did."""

    index: int
    visitor_id: str
    surface: str
    anchor: tuple[str, ...]
    base: list[tuple[str, int]]
    # Every random choice of the shopper is a hash of this key and what is being decided
    # (`draw`), not the next number of a stream: a choice never depends on how many others came
    # before it, so the same shopper decides the same whatever offers the service showed.
    key: str
    holdout: bool = False
    arm: str | None = None
    offers: list[OfferSeen] = field(default_factory=list)
    would_be: list[OfferSeen] = field(default_factory=list)
    p_conv: float = 0.0
    converted: bool = False
    clicked: list[OfferSeen] = field(default_factory=list)
    bought: list[OfferSeen] = field(default_factory=list)  # through offers, or organically
    order_token: str = ""
    thank_you_offers: list[OfferSeen] = field(default_factory=list)
    organic_later: list[OfferSeen] = field(default_factory=list)  # holdout's thank-you twin
    organic_later_pool: list[OfferSeen] = field(default_factory=list)
    to_accept: list[OfferSeen] = field(default_factory=list)
    accepted: list[OfferSeen] = field(default_factory=list)
    returned: list[str] = field(default_factory=list)
    _events: int = 0

    def draw(self, what: str, about: OfferSeen | str = "") -> float:
        """A uniform number in [0, 1) for one decision of this shopper (about a product)."""
        product = about.product_id if isinstance(about, OfferSeen) else about
        return uniform(f"{self.key}:{what}:{product}")

    @property
    def order_id(self) -> str:
        return f"{self.visitor_id}-o"

    @property
    def base_value(self) -> int:
        return sum(price for _, price in self.base)

    def basket_key(self) -> frozenset[str]:
        return frozenset([pid for pid, _ in self.base] + [o.product_id for o in self.bought])

    def decide(self, b: Behaviour, would_be: list[OfferSeen]) -> None:
        """Convert or not, click, and buy offers (or, in the holdout, the same products)."""
        self.p_conv = b.conversion + (0.0 if self.holdout else b.conversion_lift)
        self.converted = self.draw("convert") < self.p_conv
        p_buy_given_click = b.buy_after_click[self.surface] * b.multiplier(self.arm)
        if self.holdout:
            self.would_be = would_be
            p = b.p_buy(self.surface, True, None)
            self.bought = [o for o in would_be if self.converted and self.draw("buy", o) < p]
            return
        for o in self.offers:
            if self.draw("click", o) < b.click_rate[self.surface]:
                self.clicked.append(o)
                if self.converted and self.draw("buy", o) < p_buy_given_click:
                    self.bought.append(o)

    def _event(self, kind: str, o: OfferSeen, ts: int) -> dict[str, Any]:
        self._events += 1
        return {
            "id": f"{self.visitor_id}-e{self._events}",
            "type": kind,
            "token": o.token,
            "ts": ts,
            "visitor_id": self.visitor_id,
        }

    def pre_purchase_events(self, now_ms: int, not_before_ms: int = 0) -> list[dict[str, Any]]:
        # Stamped before the order, which is placed after these (attribution needs the click
        # before the purchase), but never before `not_before_ms`, the start of the run's
        # report: a run's report counts its own events and none of an earlier run's.
        seen_ms, clicked_ms = max(now_ms - 3000, not_before_ms), max(now_ms - 2000, not_before_ms)
        out = [self._event("impression", o, seen_ms) for o in self.offers]
        out += [self._event("click", o, clicked_ms) for o in self.clicked]
        return out

    def organic_thank_you(self, b: Behaviour, pool: list[OfferSeen]) -> None:
        """A holdout buyer adds what a treatment buyer of the same order was offered on the
        thank-you page, at the organic share of the treatment's take rate."""
        self.organic_later_pool = pool
        p = b.thank_you_take * b.organic_share
        self.organic_later = [o for o in pool if self.draw("accept", o) < p]

    def order(self, placed_at: str) -> dict[str, Any]:
        lines = [{"product_id": pid, "quantity": 1, "price": price} for pid, price in self.base]
        lines += [
            {"product_id": o.product_id, "quantity": 1, "price": o.offer_price}
            for o in self.bought + self.organic_later
        ]
        return {
            "id": self.order_id,
            "visitor_id": self.visitor_id,
            "customer_id": f"c-{self.visitor_id}",
            "placed_at": placed_at,
            "currency": "USD",
            "lines": lines,
        }

    def decide_thank_you(self, b: Behaviour) -> None:
        p = b.thank_you_take
        self.to_accept = [o for o in self.thank_you_offers if self.draw("accept", o) < p]

    def thank_you_events(self, now_ms: int) -> list[dict[str, Any]]:
        return [self._event("impression", o, now_ms) for o in self.thank_you_offers]

    def accept_events(self, now_ms: int) -> list[dict[str, Any]]:
        return [self._event("accept", o, now_ms) for o in self.accepted]

    def decide_returns(self, b: Behaviour) -> None:
        offered = [o.product_id for o in self.bought + self.organic_later + self.accepted]
        self.returned = [p for p in offered if self.draw("return", p) < b.offer_return_rate]
        self.returned += [p for p, _ in self.base if self.draw("return", p) < b.base_return_rate]


# --- the true values ---------------------------------------------------------------------------


@dataclass
class _Expected:
    """A shopper's expected outcomes given the offers they were shown."""

    p_conv: float
    revenue: float  # E[order value | converted]
    net: float  # ... less expected returns
    credited: float  # E[revenue of offer items credited to offers | converted]
    attach: float  # P(the order holds a credited offer item | converted)


def _thank_you_part(s: Shopper, b: Behaviour) -> tuple[float, float] | None:
    """(E[thank-you revenue | converted], P(no thank-you purchase | converted)), when known."""
    if not s.converted:
        return None
    if s.holdout:
        p = b.thank_you_take * b.organic_share
        pool = s.organic_later_pool
    else:
        p = b.thank_you_take
        pool = s.thank_you_offers
    miss = 1.0
    for _ in pool:
        miss *= 1 - p
    return sum(p * o.offer_price for o in pool), miss


def expectations(shoppers: Sequence[Shopper], b: Behaviour) -> list[_Expected]:
    """Per shopper; the thank-you part of a shopper who did not convert (and so never saw the
    thank-you page) is the mean of the converted shoppers of the same page and group."""
    known: dict[tuple[Any, ...], list[tuple[float, float]]] = {}
    for s in shoppers:
        part = _thank_you_part(s, b)
        if part is not None:
            known.setdefault((s.surface, s.anchor, s.holdout), []).append(part)
            known.setdefault((s.holdout,), []).append(part)
    means = {
        k: (sum(x for x, _ in v) / len(v), sum(y for _, y in v) / len(v)) for k, v in known.items()
    }
    out = []
    r_off, r_base = b.offer_return_rate, b.base_return_rate
    for s in shoppers:
        part = _thank_you_part(s, b)
        if part is None:
            part = means.get((s.surface, s.anchor, s.holdout)) or means.get((s.holdout,), (0, 1))
        ty_revenue, ty_miss = part
        shown = s.would_be if s.holdout else s.offers
        p = b.p_buy(s.surface, s.holdout, s.arm)
        pre = sum(p * o.offer_price for o in shown)
        miss = (1 - p) ** len(shown) * ty_miss
        extra = pre + ty_revenue
        out.append(
            _Expected(
                p_conv=s.p_conv,
                revenue=s.base_value + extra,
                net=s.base_value * (1 - r_base) + extra * (1 - r_off),
                credited=0.0 if s.holdout else extra,
                attach=0.0 if s.holdout else 1 - miss,
            )
        )
    return out


Cell = tuple[str, tuple[str, ...]]  # (surface, anchor): the page a visitor lands on


@dataclass
class _Sums:
    """Expected per-visitor quantities of one group, averaged over the page mix."""

    conv: float = 0.0  # P(order)
    revenue: float = 0.0  # E[revenue]
    net: float = 0.0
    credited: float = 0.0
    attach: float = 0.0  # P(order with a credited offer item)

    def add(self, e: _Expected, weight: float) -> None:
        self.conv += weight * e.p_conv
        self.revenue += weight * e.p_conv * e.revenue
        self.net += weight * e.p_conv * e.net
        self.credited += weight * e.p_conv * e.credited
        self.attach += weight * e.p_conv * e.attach

    def mix(self, other: _Sums, weight: float) -> None:
        self.conv += weight * other.conv
        self.revenue += weight * other.revenue
        self.net += weight * other.net
        self.credited += weight * other.credited
        self.attach += weight * other.attach


def _group_sums(members: Sequence[tuple[Shopper, _Expected]], cells: Mapping[Cell, float]) -> _Sums:
    """E over the page mix of a group's expectations: each page's mean over the group's visitors
    who landed on it, weighted by the page's probability (so the truth does not depend on which
    pages the random draw happened to give each group). A page none of them landed on counts as
    the group's average page."""
    by_cell: dict[Cell, list[_Expected]] = {}
    for s, e in members:
        by_cell.setdefault((s.surface, s.anchor), []).append(e)
    overall = _Sums()
    for _, e in members:
        overall.add(e, 1 / len(members))
    out = _Sums()
    for cell, p in cells.items():
        found = by_cell.get(cell)
        if not found:
            out.mix(overall, p)
            continue
        for e in found:
            out.add(e, p / len(found))
    return out


def truths(
    shoppers: Sequence[Shopper], b: Behaviour, cells: Mapping[Cell, float]
) -> dict[str, float]:
    """The true value of every checked figure of the report: expectations under the behaviour,
    over the page mix `cells` (page -> probability), given the offers each page showed."""
    ex = expectations(shoppers, b)
    t: dict[str, float] = {}
    for surface in b.surface_mix:
        num = den = 0.0
        for s, e in zip(shoppers, ex, strict=True):
            if s.surface == surface and not s.holdout:
                den += len(s.offers)
                num += len(s.offers) * e.p_conv * b.p_buy(surface, False, s.arm)
        if den:
            t[f"take_rate[{surface}]"] = num / den
            t[f"click_through_rate[{surface}]"] = b.click_rate[surface]
    if any(s.thank_you_offers for s in shoppers):
        t["take_rate[thank_you]"] = b.thank_you_take
    # Groups: the holdout, and the treatment arm by arm (a visitor without an arm: arm "").
    members: dict[str | None, list[tuple[Shopper, _Expected]]] = {}
    for s, e in zip(shoppers, ex, strict=True):
        members.setdefault(None if s.holdout else (s.arm or ""), []).append((s, e))
    sums = {k: _group_sums(v, cells) for k, v in members.items()}
    holdout = sums.pop(None, None)
    n_treatment = sum(len(v) for k, v in members.items() if k is not None)
    treatment = _Sums()
    for arm, g in sums.items():
        treatment.mix(g, len(members[arm]) / n_treatment)
    groups = {"treatment": treatment} if n_treatment else {}
    if holdout is not None:
        groups["holdout"] = holdout
    for name, g in groups.items():
        t[f"conversion_rate[{name}]"] = g.conv
        t[f"revenue_per_visitor[{name}]"] = g.revenue
        t[f"aov[{name}]"] = g.revenue / g.conv
    if holdout is not None and n_treatment:
        t["conversion_rate_difference"] = treatment.conv - holdout.conv
        t["incremental_revenue_per_visitor"] = treatment.revenue - holdout.revenue
        t["incremental_net_revenue_per_visitor"] = treatment.net - holdout.net
        for arm in sorted(a for a in sums if a):
            t[f"incremental_revenue_per_visitor[{arm}]"] = sums[arm].revenue - holdout.revenue
    everyone = _Sums()
    for name, g in groups.items():
        n = n_treatment if name == "treatment" else len(members[None])
        everyone.mix(g, n / len(shoppers))
    t["attach_rate"] = everyone.attach / everyone.conv
    t["aov"] = everyone.revenue / everyone.conv
    t["aov_without_offer_items"] = (everyone.revenue - everyone.credited) / everyone.conv
    t["return_rate"] = b.offer_return_rate
    t["attributed_revenue (expected total)"] = everyone.credited * len(shoppers)
    return t


def _row(data: Iterable[Mapping[str, Any]], key: str, value: str) -> Mapping[str, Any]:
    for row in data:
        if row.get(key) == value:
            return dict(row)
    return {}


def estimate_of(name: str, report: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The report's estimate of a figure named as `truths` names it."""
    base, _, arg = name.partition("[")
    arg = arg.rstrip("]")
    h = report["holdout"]
    if base in ("take_rate", "click_through_rate"):
        return _row(report["breakdown"]["surface"], "surface", arg).get(base)
    if base in ("conversion_rate", "revenue_per_visitor", "aov") and arg:
        return dict(h["groups"][arg][base])
    if base == "incremental_revenue_per_visitor" and arg:
        return _row(h["arms"], "arm", arg).get(base)
    if base in ("conversion_rate_difference", "incremental_revenue_per_visitor"):
        return dict(h[base])
    if base == "incremental_net_revenue_per_visitor":
        return dict(h[base])
    if base in ("attach_rate", "aov", "aov_without_offer_items"):
        return dict(report["orders"][base])
    if base == "return_rate":
        return dict(report["totals"]["return_rate"])
    if base.startswith("attributed_revenue"):
        return {"value": report["totals"]["attributed_revenue"]["amount"], "ci": None}
    return None


def compare(true: Mapping[str, float], report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each true value next to the report's estimate; `checked` rows have an interval."""
    rows = []
    for name, value in true.items():
        est = estimate_of(name, report) or {}
        ci = est.get("ci")
        rows.append(
            {
                "parameter": name,
                "true": value,
                "estimate": est.get("value"),
                "ci": ci,
                "checked": ci is not None,
                "inside": ci is not None and ci[0] <= value <= ci[1],
            }
        )
    return rows


def _fmt(name: str, v: float | None) -> str:
    if v is None:
        return "n/a"
    if "rate" in name and "revenue" not in name:
        return f"{v * 100:.2f}%" if "difference" not in name else f"{v * 100:+.2f} pp"
    return f"{v / 100:,.2f}"


def format_table(rows: Iterable[Mapping[str, Any]], report: Mapping[str, Any]) -> str:
    lines = [
        f"Report {report.get('from')} to {report.get('to')}, attribution window "
        f"{report.get('attribution', {}).get('window_days')} days; money in "
        f"{report.get('currency')} (major units)",
        f"{'parameter':<52} {'true':>12} {'estimate':>12}   {'95% interval':<27} inside",
    ]
    for r in rows:
        name = r["parameter"]
        ci = r["ci"]
        interval = f"[{_fmt(name, ci[0])}, {_fmt(name, ci[1])}]" if ci else ""
        mark = ("yes" if r["inside"] else "NO") if r["checked"] else ""
        lines.append(
            f"{name:<52} {_fmt(name, r['true']):>12} {_fmt(name, r['estimate']):>12}   "
            f"{interval:<27} {mark}"
        )
    return "\n".join(lines)
