"""The baselines that answer every query of the offline evaluation: best sellers (of all time
and of the last 30 days before the split) and random catalog products, all skipping the cart."""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from offer_service_tools.evaluate import Trained

__all__ = ["_first_outside", "_with_hidden", "best_seller_ranking", "random_ranking"]


def best_seller_ranking(trained: Trained, cart: Collection[str], k: int) -> list[str]:
    """The k best sellers not in the cart."""
    out: list[str] = []
    for pid in trained.best_sellers:
        if pid not in cart:
            out.append(pid)
            if len(out) == k:
                break
    return out


def random_ranking(
    trained: Trained, cart: Collection[str], k: int, rng: random.Random, hidden: str | None = None
) -> list[str]:
    """k distinct random catalog products not in the cart (`cart` minus `hidden`, if given)."""
    catalog = trained.catalog
    held = sum(1 for pid in cart if pid in trained.catalog_set and pid != hidden)
    out: list[str] = []
    while len(out) < min(k, len(catalog) - held):
        pid = catalog[rng.randrange(len(catalog))]
        if (pid not in cart or pid == hidden) and pid not in out:
            out.append(pid)
    return out


def _with_hidden(
    trained: Trained, outside: list[str], hidden: str, k: int, rank: Mapping[str, int] | None = None
) -> list[str]:
    """The best sellers for a basket less `hidden`, from `outside` (those for the whole basket):
    the hidden product goes back in at its own rank (`rank`: all time by default)."""
    ranks = trained.best_seller_rank if rank is None else rank
    at_rank = ranks.get(hidden)
    if at_rank is None:
        return outside[:k]
    at = sum(1 for pid in outside if ranks[pid] < at_rank)
    return [*outside[:at], hidden, *outside[at:]][:k]


def _first_outside(ranked: Sequence[str], cart: Collection[str], k: int) -> list[str]:
    out: list[str] = []
    for pid in ranked:
        if pid not in cart:
            out.append(pid)
            if len(out) == k:
                break
    return out
