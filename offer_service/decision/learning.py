"""Learned P(accept): a time-decayed Beta posterior per surface and product, Thompson-sampled.

Every impression is one trial, credited by the strongest thing the shopper did after it
(`SignalWeights`): a purchase after a click > a one-click accept > a click > nothing. With the
surface's prior P(accept) worth `prior_strength` pseudo-impressions,

    alpha = prior * strength + credit        beta = (1 - prior) * strength + trials - credit

so the posterior mean starts at the surface prior (where the ranking's relevance x P(accept) x
value starts) and moves to the observed take rate as evidence accumulates. Counts fade with a
half-life, so stale behaviour weighs less than this week's.

The request path never computes any of this: `Feedback` folds stored events and orders into
decayed counts, `Learned` is the immutable per-store snapshot the ranking reads when it builds a
prepared list, and `serving.learner.Learner` refreshes snapshots in the background, at most one
load per store in flight. Everything here is pure.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from offer_service.domain.attribution import credit
from offer_service.domain.events import StoredEvent
from offer_service.domain.orders import Order
from offer_service.domain.policy import LearningRules
from offer_service.domain.surfaces import SURFACES, Surface
from offer_service.types import DAY_MS, MINUTE_MS

__all__ = [
    "SIGNALS",
    "Beta",
    "Evidence",
    "Feedback",
    "Learned",
    "LearningConfig",
    "SignalWeights",
    "evidence",
]

UNORDERED_WEIGHTS = (
    "signal weights must satisfy 1 >= purchase > accept > click > impression >= 0, got {weights}"
)

# An entry whose decayed counts all fell below this carries no evidence worth keeping.
NEGLIGIBLE = 1e-3
# Orders are read this long after they are placed: a webhook arrives a little after checkout.
ORDER_SETTLE_MS = 10 * MINUTE_MS
REFRESH_S = 60.0
# The per-store settings (`StoreRules.learning`) and their defaults: one source for both.
_STORE_DEFAULTS = LearningRules()


# The four decayed counts kept per (surface, product), by index.
SIGNALS = ("impression", "click", "accept", "purchase")
_INDEX = {name: i for i, name in enumerate(SIGNALS)}
# The event types a Feedback counts (`add_event` skips the others).
LEARNED_TYPES = frozenset(("impression", "click", "accept"))


@dataclass(frozen=True, slots=True)
class SignalWeights:
    """The credit (share of a success) an impression earns by its strongest outcome.

    Credits stay in [0, 1], so credit is at most trials and the posterior mean stays a take
    rate; a purchase after a click proves more than a one-click accept (which can still be
    refunded), which proves more than a click, which proves more than being shown.
    """

    purchase: float = 1.0
    accept: float = 0.9
    click: float = 0.2
    impression: float = 0.0  # an impression without a click (or accept)

    def __post_init__(self) -> None:
        if not 1.0 >= self.purchase > self.accept > self.click > self.impression >= 0.0:
            raise ValueError(UNORDERED_WEIGHTS.format(weights=self))


@dataclass(frozen=True, slots=True)
class LearningConfig:
    """How P(accept) is learned. `prior_strength`, `half_life_days` and `explore_share` are a
    store's own (`StoreRules.learning`, see `for_store`); the rest is the process's."""

    weights: SignalWeights = field(default_factory=SignalWeights)
    # Pseudo-impressions the surface prior is worth: a new offer's draws spread widely, and a
    # few dozen impressions already move its mean.
    prior_strength: float = _STORE_DEFAULTS.prior_strength
    half_life_days: float = _STORE_DEFAULTS.half_life_days
    # Below this many (decayed) impressions an offer is under-explored: ranked by its posterior
    # mean and shown for exploration only through the exploration slot (see `decide.finish`).
    min_evidence: float = 50.0
    # At most this share of responses give one slot to an under-explored offer.
    explore_share: float = _STORE_DEFAULTS.explore_share
    # A first load reads this many half-lives of history (older events weigh under 2%).
    horizon_half_lives: float = 6.0

    def __post_init__(self) -> None:
        if self.prior_strength <= 0 or self.half_life_days <= 0 or self.min_evidence < 0:
            raise ValueError("prior_strength and half_life_days must be > 0, min_evidence >= 0")
        if not 0.0 <= self.explore_share <= 1.0:
            raise ValueError("explore_share must be in [0, 1]")

    def for_store(self, rules: LearningRules) -> LearningConfig:
        """This configuration with a store's own learning settings."""
        return replace(
            self,
            prior_strength=rules.prior_strength,
            half_life_days=rules.half_life_days,
            explore_share=rules.explore_share,
        )

    @property
    def half_life_ms(self) -> float:
        return self.half_life_days * DAY_MS

    @property
    def horizon_ms(self) -> int:
        return int(self.horizon_half_lives * self.half_life_ms)


@dataclass(frozen=True, slots=True)
class Evidence:
    """Decayed impressions (trials) and the credit they earned (0 <= credit <= trials)."""

    trials: float
    credit: float


NO_EVIDENCE = Evidence(0.0, 0.0)


def evidence(
    impressions: float, clicks: float, accepts: float, purchases: float, weights: SignalWeights
) -> Evidence:
    """Trials and credit from signal counts: each impression counts once, by its best outcome.

    Counts come from separate counters, not linked per impression: a purchase is credited only
    after a click (purchases <= clicks), and a click or accept whose impression was never
    reported (the widget was clicked before it had been visible for a second) is still a trial.
    """
    purchases = min(purchases, clicks)
    trials = max(impressions, clicks + accepts)
    credit = (
        weights.purchase * purchases
        + weights.click * (clicks - purchases)
        + weights.accept * accepts
        + weights.impression * (trials - clicks - accepts)
    )
    return Evidence(trials, credit)


@dataclass(frozen=True, slots=True)
class Beta:
    alpha: float
    beta: float

    @classmethod
    def posterior(cls, prior: float, ev: Evidence, strength: float) -> Beta:
        return cls(prior * strength + ev.credit, (1.0 - prior) * strength + ev.trials - ev.credit)

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def draw(self, rng: random.Random) -> float:
        """One Thompson sample of P(accept)."""
        return rng.betavariate(self.alpha, self.beta)


@dataclass(frozen=True, slots=True)
class Learned:
    """A store's learned state at one moment: evidence per (surface, product id)."""

    evidence: Mapping[tuple[str, str], Evidence]
    config: LearningConfig = field(default_factory=LearningConfig)
    as_of_ms: int = 0

    def posterior(self, surface: Surface, product_id: str) -> Beta:
        ev = self.evidence.get((surface.value, product_id), NO_EVIDENCE)
        prior = SURFACES[surface].accept_prior
        return Beta.posterior(prior, ev, self.config.prior_strength)

    def explored(self, surface: Surface, product_id: str) -> bool:
        """Whether the offer has enough evidence to compete on Thompson draws."""
        ev = self.evidence.get((surface.value, product_id), NO_EVIDENCE)
        return ev.trials >= self.config.min_evidence


class Feedback:
    """Decayed signal counts per (surface, product) as of `as_of_ms`, folded from stored events
    and orders. `refresh` copies, advances and extends it; nothing here reads the store."""

    def __init__(self, config: LearningConfig, as_of_ms: int, window_ms: int) -> None:
        self.config = config
        self.as_of_ms = as_of_ms
        self.orders_until_ms = as_of_ms - ORDER_SETTLE_MS
        self.window_ms = window_ms
        self.counts: dict[tuple[str, str], list[float]] = {}
        # Clicks still inside an attribution window: what a later order can credit.
        self.clicks: list[StoredEvent] = []

    def copy(self) -> Feedback:
        other = Feedback(self.config, self.as_of_ms, self.window_ms)
        other.orders_until_ms = self.orders_until_ms
        other.counts = {key: list(c) for key, c in self.counts.items()}
        other.clicks = list(self.clicks)
        return other

    def weight(self, at_ms: int) -> float:
        """What a signal at `at_ms` weighs now: halved every half-life (never above 1)."""
        age = max(self.as_of_ms - at_ms, 0)
        return math.exp2(-age / self.config.half_life_ms)

    def advance(self, now_ms: int) -> None:
        """Move the clock to `now_ms`: every count fades by the time passed."""
        if now_ms <= self.as_of_ms:
            return
        factor = math.exp2(-(now_ms - self.as_of_ms) / self.config.half_life_ms)
        self.as_of_ms = now_ms
        for key in list(self.counts):
            c = self.counts[key]
            for i in range(4):
                c[i] *= factor
            if max(c) < NEGLIGIBLE:
                del self.counts[key]

    def add(self, surface: str, product_id: str, signal: str, at_ms: int) -> None:
        """Count one `signal` (one of SIGNALS) of the offer of `product_id` on `surface`."""
        c = self.counts.get((surface, product_id))
        if c is None:
            c = self.counts[(surface, product_id)] = [0.0, 0.0, 0.0, 0.0]
        c[_INDEX[signal]] += self.weight(at_ms)

    def add_event(self, e: StoredEvent) -> None:
        if e.type not in LEARNED_TYPES:  # views, declines (impressions without a click), ...
            return
        if e.flag is not None:  # invalid traffic (traffic.py) teaches nothing about shoppers
            return
        # A bundle's events are under its viewed product, whose own offers (a cross-sell on
        # another product's page) they would mislead; bundles rank by their complements.
        if e.kind == "bundle":
            return
        self.add(e.surface, e.product_id, e.type, e.received_ms)
        if e.type == "click" and e.visitor_id:
            self.clicks.append(e)

    def add_orders(self, orders: Iterable[Order], until_ms: int) -> None:
        """Credit purchases after a click: the lines `attribution.credit` gives to a click, the
        same rule the measurement reports use. `until_ms` is where the next batch starts."""
        batch = list(orders)
        if batch:
            for line in credit(batch, (), self.clicks, self.window_ms):
                if line.via == "click":
                    self.add(line.offer.surface, line.product_id, "purchase", line.placed_at_ms)
        self.orders_until_ms = max(self.orders_until_ms, until_ms)
        # A click older than the window can no longer credit an order not yet read.
        oldest = self.orders_until_ms - self.window_ms
        self.clicks = [e for e in self.clicks if e.ts_ms >= oldest]

    def snapshot(self) -> Learned:
        w = self.config.weights
        return Learned(
            {key: evidence(c[0], c[1], c[2], c[3], w) for key, c in self.counts.items()},
            self.config,
            self.as_of_ms,
        )
