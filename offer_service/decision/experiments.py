"""Deterministic bucketing of visitors: the holdout and the arms of a store's experiments.

A visitor's bucket is a hash of (store, salt, visitor id) mapped to [0, 1): the same visitor
always lands in the same place, with no state kept anywhere. The holdout uses the salt
"holdout"; an experiment uses its own name, so the holdout and every experiment are independent
of one another. Renaming an experiment re-randomises it; changing its weights moves only the
visitors near the changed boundaries.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from offer_service.domain.policy import Experiment, StoreRules, Variant
from offer_service.domain.surfaces import Surface

HOLDOUT_SALT = "holdout"
_SCALE = 2.0**64


# Recent visitors' buckets: a returning visitor costs a dict lookup, not a hash.
_BUCKETS: dict[tuple[str, str, str], float] = {}
_BUCKETS_MAX = 100_000
# The hash state of each (store, salt) prefix: a new visitor's bucket hashes only its id (a copy
# and an update: half the time of hashing the whole key, with the same digest).
_PREFIXES: dict[tuple[str, str], hashlib.blake2b] = {}
_PREFIXES_MAX = 10_000


def bucket(store_id: str, salt: str, visitor_id: str) -> float:
    """A uniform number in [0, 1), fixed for (store, salt, visitor)."""
    key = (store_id, salt, visitor_id)
    found = _BUCKETS.get(key)
    if found is not None:
        return found
    prefix = _PREFIXES.get((store_id, salt))
    if prefix is None:
        if len(_PREFIXES) >= _PREFIXES_MAX:
            _PREFIXES.clear()
        prefix = hashlib.blake2b(f"{store_id}:{salt}:".encode(), digest_size=8)
        _PREFIXES[store_id, salt] = prefix
    hasher = prefix.copy()
    hasher.update(visitor_id.encode())
    digest = hasher.digest()
    if len(_BUCKETS) >= _BUCKETS_MAX:
        _BUCKETS.clear()
    value = _BUCKETS[key] = int.from_bytes(digest, "big") / _SCALE
    return value


def in_holdout(store_id: str, visitor_id: str, share: float, salt: str = HOLDOUT_SALT) -> bool:
    """Whether the visitor is in the store's holdout group (a `share` of all visitors)."""
    return share > 0 and bucket(store_id, salt, visitor_id) < share


@dataclass(frozen=True, slots=True)
class Assignment:
    """A visitor's arm of the experiment running on a surface."""

    experiment: Experiment
    variant: Variant

    @property
    def arm(self) -> str:
        """The arm's label, as the response's `experiment`, the token and every event carry it."""
        return f"{self.experiment.name}:{self.variant.name}"


def running_on(rules: StoreRules, surface: Surface) -> Experiment | None:
    """The active experiment on `surface` (StoreRules allows at most one)."""
    for experiment in rules.experiments:
        if experiment.active and (not experiment.surfaces or surface in experiment.surfaces):
            return experiment
    return None


def pick(experiment: Experiment, u: float) -> Variant:
    """The variant owning point `u` of [0, 1) when the interval is split by weight, in order."""
    total = sum(v.weight for v in experiment.variants)
    edge = 0.0
    for variant in experiment.variants:
        edge += variant.weight / total
        if u < edge:
            return variant
    return experiment.variants[-1]  # u within float rounding of 1


def assign(
    store_id: str, rules: StoreRules, surface: Surface, visitor_id: str | None
) -> Assignment | None:
    """The visitor's arm on `surface`; None without an experiment there or without a visitor
    (an anonymous request cannot be kept in one arm, so it gets the store's own rules)."""
    if not visitor_id or not rules.experiments:
        return None
    experiment = running_on(rules, surface)
    if experiment is None:
        return None
    return Assignment(experiment, pick(experiment, bucket(store_id, experiment.name, visitor_id)))


_OVERRIDES = ("discounts", "value", "margin_floor", "price_band")


def variant_rules(rules: StoreRules, variant: Variant) -> StoreRules:
    """The store's rules with the variant's fields replaced."""
    update: dict[str, Any] = {
        name: getattr(variant, name) for name in _OVERRIDES if getattr(variant, name) is not None
    }
    return rules.model_copy(update=update) if update else rules
