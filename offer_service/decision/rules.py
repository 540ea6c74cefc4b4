"""Business rules between candidates and ranking: eligibility, pricing, suppression, diversity."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from offer_service.domain.policy import ABSOLUTE_DISCOUNT_CAP, StoreRules
from offer_service.domain.products import Product
from offer_service.domain.records import VisitorState, bundle_signal
from offer_service.domain.surfaces import SURFACES, Surface
from offer_service.types import DAY_MS, OfferKind

if TYPE_CHECKING:  # candidates.py imports `eligible` from here at run time
    from offer_service.decision.candidates import Candidate


@dataclass(frozen=True, slots=True)
class PricedItem:
    """One product of a bundle at its share of the bundle's price."""

    product: Product
    offer_price: int  # minor units


@dataclass(frozen=True, slots=True)
class PricedOffer:
    """A candidate that passed the static (visitor-independent) rules, with its price decided."""

    candidate: Candidate
    discount_pct: int
    offer_price: int  # minor units
    margin: int | None  # offer_price - cost; None when the cost is unknown
    band_factor: float  # post-purchase price band multiplier (1.0 inside it and pre-purchase)
    # A candidate for the per-request exploration slot (see `decide.finish`).
    explore: bool = False
    # A bundle's products, the viewed one (the candidate's product) first; () for other kinds.
    items: tuple[PricedItem, ...] = ()

    @property
    def list_price(self) -> int:
        """What the offer costs without its discount: the product's price, a bundle's sum."""
        if self.items:
            return sum(i.product.price for i in self.items)
        return self.candidate.product.price


# --- static rules: the product and the store ---------------------------------------------------


def eligible(product: Product, anchor_ids: Collection[str]) -> bool:
    """Offerable at all: active, in stock (untracked inventory passes), a real product line,
    and not already in the cart or order the offer is anchored on."""
    return (
        product.active and product.in_stock and not product.is_fee and product.id not in anchor_ids
    )


def order_suppressed(order_status: str) -> bool:
    """A returned order gets no post-purchase offers at all."""
    return order_status == "returned"


def offer_price(price: int, discount_pct: int) -> int:
    """`price` less `discount_pct` percent, rounded half up to a whole minor unit."""
    return (price * (100 - discount_pct) + 50) // 100


def discount_for(kind: OfferKind, product: Product, rules: StoreRules) -> int:
    """The discount, in whole percent, to offer `product` at as a `kind` offer.

    The kind's base discount, plus the store's bonus for `new` / `clearance` products, capped by
    the product's cap (ordinary: `default_cap`; `new`: `new_cap`; `clearance`: `clearance_cap`) and
    always by ABSOLUTE_DISCOUNT_CAP, even when the rules were built without validation. A product
    already on sale gets none (no discount on top of a markdown). The bonuses only deepen a
    discount the kind already has: an upsell sells on visible value and stays at 0% unless the
    store gives upsells a base discount.
    """
    if product.on_sale:
        return 0
    d = rules.discounts
    base = {
        "upsell": d.upsell,
        "cross_sell": d.cross_sell,
        "downsell": d.downsell,
        "replenish": d.replenish,
        "bundle": d.bundle,
    }[kind]
    if base <= 0:
        return 0
    bonus = 0
    if "new" in product.flags:
        bonus = max(bonus, d.new_bonus)
    if "clearance" in product.flags:
        bonus = max(bonus, d.clearance_bonus)
    return max(0, min(base + max(bonus, 0), discount_cap(product, rules)))


def discount_cap(product: Product, rules: StoreRules) -> int:
    """The most `product` may be discounted: its flag's cap (`default_cap`, `new_cap`,
    `clearance_cap`, the largest that applies), never above ABSOLUTE_DISCOUNT_CAP."""
    d = rules.discounts
    cap = d.default_cap
    if "new" in product.flags:
        cap = max(cap, d.new_cap)
    if "clearance" in product.flags:
        cap = max(cap, d.clearance_cap)
    return max(0, min(cap, ABSOLUTE_DISCOUNT_CAP))


def apply_margin_floor(product: Product, discount_pct: int, rules: StoreRules) -> int | None:
    """The largest discount up to `discount_pct` that keeps offer price minus cost at or above
    the store's margin floor; None when even the full price fails it. Unknown cost passes."""
    if product.cost is None:
        return discount_pct
    for pct in range(max(discount_pct, 0), -1, -1):
        if keeps_margin(product, offer_price(product.price, pct), rules):
            return pct
    return None


def keeps_margin(product: Product, amount: int, rules: StoreRules) -> bool:
    """Whether selling `product` at `amount` keeps the store's margin floor (unknown cost
    passes)."""
    return product.cost is None or amount - product.cost >= rules.margin_floor


def price_band_factor(
    offer_price: int, order_total: int | None, surface: Surface, rules: StoreRules
) -> float | None:
    """Post-purchase offers prefer a price inside the store's band (a share of the order value):
    1.0 inside, `outside_penalty` outside, None (exclude) above the order's own value.
    Pre-purchase surfaces, and an unknown order total, are not banded (1.0)."""
    if not SURFACES[surface].post_purchase or order_total is None:
        return 1.0
    if offer_price > order_total:
        return None
    band = rules.price_band
    # Tolerance so a price exactly on an edge counts as inside despite float shares.
    eps = 1e-9 * max(order_total, 1)
    if band.low * order_total - eps <= offer_price <= band.high * order_total + eps:
        return 1.0
    return band.outside_penalty


def fits_price(offer_price: int, subtotal: int | None, surface: Surface, rules: StoreRules) -> bool:
    """Whether a pre-purchase cross-sell's price fits what the shopper is buying: at most
    `price_fit.cart` times the cart's subtotal on cart and checkout, `price_fit.product_page`
    times the viewed product's price on the product page. Without a subtotal (or a ratio), and
    after the purchase (the price band's domain), everything fits."""
    spec = SURFACES[surface]
    if spec.post_purchase or subtotal is None:
        return True
    ratio = rules.price_fit.product_page if spec.anchor == "product" else rules.price_fit.cart
    return ratio is None or offer_price <= ratio * subtotal


def price(
    candidates: Iterable[Candidate],
    surface: Surface,
    anchor_ids: Collection[str],
    order_total: int | None,
    rules: StoreRules,
    *,
    subtotal: int | None = None,
) -> list[PricedOffer]:
    """Apply the static rules in order (kind allowed on the surface, eligibility, discount,
    margin floor, price band, price fit of cross-sells against the `subtotal` of the anchors)
    and price what survives; input order is kept."""
    kinds = SURFACES[surface].kinds
    offers: list[PricedOffer] = []
    for c in candidates:
        p = c.product
        # Replenish deliberately re-offers a consumable from the anchoring order.
        if c.kind not in kinds or not eligible(p, () if c.kind == "replenish" else anchor_ids):
            continue
        pct = apply_margin_floor(p, discount_for(c.kind, p, rules), rules)
        if pct is None:
            continue
        amount = offer_price(p.price, pct)
        band = price_band_factor(amount, order_total, surface, rules)
        if band is None:
            continue
        if c.kind == "cross_sell" and not fits_price(amount, subtotal, surface, rules):
            continue
        margin = None if p.cost is None else amount - p.cost
        offers.append(PricedOffer(c, pct, amount, margin, band))
    return offers


# --- per-visitor rules -------------------------------------------------------------------------


def replenish_due_ms(offer: PricedOffer, visitor: VisitorState) -> int | None:
    """When a replenish offer becomes due: `replenish_days` after the later of the anchoring
    order and the customer's last purchase of the product. None when it has no due date."""
    c = offer.candidate
    due = c.due_at_ms
    last = visitor.purchased.get(c.product.id)
    days = c.product.replenish_days
    if last is not None and days is not None:
        restocked = last + days * DAY_MS
        due = restocked if due is None else max(due, restocked)
    return due


def visitor_allows(
    offer: PricedOffer, visitor: VisitorState, rules: StoreRules, now_ms: int
) -> bool:
    """Whether this shopper may see `offer` now.

    Never a product they declined, returned or accepted, nor one they bought before; a replenish
    offer is the exception to "bought" and "accepted" (both are purchases of the consumable) and
    instead shows only once due. Never an upsell to someone who owns that tier or a higher one of
    the family. A product shown `frequency_cap.impressions` times without a click is rested. A
    bundle passes only when every one of its products would and the visitor has not declined
    the bundle itself (`bundle_signal` of the viewed product, its first; its impressions are
    counted under the viewed product).
    """
    if offer.items:
        if bundle_signal(offer.items[0].product.id) in visitor.declined:
            return False
        return all(_product_allowed(i.product.id, visitor, rules) for i in offer.items)
    c = offer.candidate
    pid = c.product.id
    if pid in visitor.declined or pid in visitor.returned:
        return False
    if c.kind == "replenish":
        due = replenish_due_ms(offer, visitor)
        if due is None or now_ms < due:
            return False
    elif pid in visitor.accepted or pid in visitor.purchased:
        return False
    if c.kind == "upsell" and any(i in visitor.purchased for i in c.ladder_above):
        return False
    return visitor.impressions.get(pid, 0) < rules.frequency_cap.impressions


def _product_allowed(pid: str, visitor: VisitorState, rules: StoreRules) -> bool:
    if pid in visitor.declined or pid in visitor.returned:
        return False
    if pid in visitor.accepted or pid in visitor.purchased:
        return False
    return visitor.impressions.get(pid, 0) < rules.frequency_cap.impressions


# --- diversity ---------------------------------------------------------------------------------


def family_key(product: Product) -> tuple[str, str]:
    """The diversity group: the product's family, or the product alone when it has none
    (tagged so a product id never collides with a family name)."""
    return ("family", product.family) if product.family is not None else ("product", product.id)


def offer_keys(offer: PricedOffer) -> tuple[tuple[str, str], ...]:
    """The diversity groups an offer takes in a response, its own first: a product's family; for
    a bundle, the one bundle slot and its complements' families (its viewed product is the
    page's, not an offer of its family)."""
    if not offer.items:
        return (family_key(offer.candidate.product),)
    return (("bundle", ""), *(family_key(i.product) for i in offer.items[1:]))


def diversify(offers: Sequence[PricedOffer]) -> list[PricedOffer]:
    """Keep the first offer of each family, in order: at most one product per family."""
    seen: set[tuple[str, str]] = set()
    kept: list[PricedOffer] = []
    for o in offers:
        key = family_key(o.candidate.product)
        if key not in seen:
            seen.add(key)
            kept.append(o)
    return kept
