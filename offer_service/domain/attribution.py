"""Attribution: which order lines an offer earned.

An order line is credited to an offer, once, when
1. it was accepted one-click (a charged accept of that product on that order), or else
2. it was sent with the token of the offer it was bought from (`offer_token`, verified when
   the order was recorded: `commerce.offer_credit`), or else
3. the order's visitor clicked an offer of that product within the attribution window before
   the order was placed (the last such click wins).
Clicks flagged as invalid traffic (`traffic.py`) credit nothing. The offer's surface, kind and
experiment arm come from its signed token, as the offer's events carry it; a one-click accept
is matched to its offer through the events of the same order and product (the snippet sends an
impression before any accept).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from offer_service.domain.events import StoredEvent
from offer_service.domain.orders import AcceptedOffer, Order

OFFER_EVENT_TYPES = frozenset(("impression", "click", "accept", "decline"))
UNKNOWN_KIND = "unknown"
# Where a one-click accept whose offer sent no event is counted (the surface that accepts).
DEFAULT_ONE_CLICK_SURFACE = "thank_you"

Via = Literal["one_click", "token", "click"]


@dataclass(frozen=True, slots=True)
class OfferRef:
    """The offer a credit goes to, as its token described it."""

    surface: str
    kind: str
    product_id: str
    arm: str | None


@dataclass(frozen=True, slots=True)
class CreditedLine:
    """An order line an offer earned."""

    order_id: str
    visitor_id: str | None
    placed_at_ms: int
    product_id: str
    quantity: int
    unit_price: int
    returned: bool
    offer: OfferRef
    via: Via
    # The id of the offer that earned a line taken by token or click (None for one-click: that
    # offer is found through the order's events).
    offer_id: str | None = None

    @property
    def revenue(self) -> int:
        return self.unit_price * self.quantity


def _ref(e: StoredEvent) -> OfferRef:
    return OfferRef(e.surface, e.kind, e.product_id, e.arm)


class ClickIndex:
    """Clicks by (visitor, product), in time order, for last-click lookups."""

    def __init__(self, events: Iterable[StoredEvent]) -> None:
        clicks: dict[tuple[str, str], list[tuple[int, OfferRef, str]]] = {}
        for e in events:
            # A flagged click (a bot's, or one without an impression) earns nothing.
            if e.type == "click" and e.visitor_id and e.flag is None:
                clicks.setdefault((e.visitor_id, e.product_id), []).append(
                    (e.ts_ms, _ref(e), e.offer_id)
                )
        self._times: dict[tuple[str, str], list[int]] = {}
        self._refs: dict[tuple[str, str], list[tuple[OfferRef, str]]] = {}
        for key, found in clicks.items():
            found.sort(key=lambda c: c[0])
            self._times[key] = [t for t, _, _ in found]
            self._refs[key] = [(r, offer_id) for _, r, offer_id in found]

    def last_before(
        self, visitor_id: str, product_id: str, at_ms: int, window_ms: int
    ) -> tuple[OfferRef, str] | None:
        """The offer (and its id) of the visitor's last click on the product in
        [at - window, at]."""
        times = self._times.get((visitor_id, product_id))
        if not times:
            return None
        i = bisect.bisect_right(times, at_ms) - 1
        if i < 0 or times[i] < at_ms - window_ms:
            return None
        return self._refs[(visitor_id, product_id)][i]


def one_click_offers(events: Iterable[StoredEvent]) -> dict[tuple[str, str], OfferRef]:
    """(order id, product id) -> the post-purchase offer, from the offer's own events."""
    found: dict[tuple[str, str], OfferRef] = {}
    for e in events:
        if e.order_id and e.type in OFFER_EVENT_TYPES:
            found.setdefault((e.order_id, e.product_id), _ref(e))
    return found


def credit(
    orders: Sequence[Order],
    accepts: Iterable[AcceptedOffer],
    events: Sequence[StoredEvent],
    window_ms: int,
) -> list[CreditedLine]:
    """Every credited line of `orders`, in order of the orders; each line credited at most once."""
    by_order: Mapping[str, Order] = {o.id: o for o in orders}
    accepted: dict[str, set[str]] = {}
    for a in accepts:
        if a.order_id in by_order:
            accepted.setdefault(a.order_id, set()).add(a.product_id)
    offers = one_click_offers(events) if accepted else {}
    clicks = ClickIndex(events)
    out: list[CreditedLine] = []
    for order in orders:
        one_click = accepted.get(order.id, set())
        returned_all = order.status == "returned"
        returned = set(order.returned)
        seen: set[str] = set()
        # A product's line bought by token is the one its offer earned.
        by_token = {
            line.product_id: (line, line.offer) for line in order.lines if line.offer is not None
        }
        # The last line of a product is the accepted one when an accept appended it.
        for line in reversed(order.lines):
            pid = line.product_id
            if pid in seen:
                continue
            seen.add(pid)
            via: Via
            offer_id = None
            if pid in one_click:
                via = "one_click"
                ref = offers.get((order.id, pid)) or OfferRef(
                    DEFAULT_ONE_CLICK_SURFACE, UNKNOWN_KIND, pid, None
                )
            elif pid in by_token:
                line, taken = by_token[pid]
                via, offer_id = "token", taken.offer_id
                ref = OfferRef(taken.surface, taken.kind, pid, taken.arm)
            elif order.visitor_id:
                found = clicks.last_before(order.visitor_id, pid, order.placed_at_ms, window_ms)
                if found is None:
                    continue
                via, (ref, offer_id) = "click", found
            else:
                continue
            out.append(
                CreditedLine(
                    order_id=order.id,
                    visitor_id=order.visitor_id,
                    placed_at_ms=order.placed_at_ms,
                    product_id=pid,
                    quantity=line.quantity,
                    unit_price=line.price,
                    returned=returned_all or pid in returned,
                    offer=ref,
                    via=via,
                    offer_id=offer_id,
                )
            )
    return out
