"""Offline evaluation: hide one product of each later basket and ask the engine to find it again.

`offer-service evaluate --orders FILE --format online-retail --split 2011-11-01 --k 1,2,5`
trains on the orders placed before the split exactly as a store would hold them after
`offer-service train` (the item model's top-50 neighbour lists, lambda chosen on the last 30 days
before the split; best sellers), then for every later basket of two or more products hides each
product in turn and asks the real decision pipeline (`decide.prepare` on the cart surface, the
store's default `StoreRules`, no visitor) for cross-sells of the rest. The cart surface shows at
most 2 offers, so the ranking scored at k is the prepared list, one product per family, cut at k:
for k <= 2 exactly what `decide.decide` answers with `limit=k`. The engine is also ranked under
other value weights (ENGINE_VARIANTS), and the standard recommenders of `baselines` (EASE with
full rows, max-confidence rules, item-kNN cosine, co-occurrence) answer the same queries.

Metrics, over leave-one-out queries: hit rate@k (the hidden product is among the first k), MRR
(1/rank of the hidden product within the first max-k, 0 when absent), catalog coverage (the
share of the products sold before the split that appear in at least one top-max-k list) and
revenue@k (the hidden product's price when found within k). Best sellers (all time and the last
30 days before the split) and random products of that catalog (seeded) answer every query; all
skip products already in the cart, as the engine does.

The engine's cost grows with the cart, and Online Retail baskets are wholesale orders (up to 748
products): asking it all 104,513 queries takes tens of minutes of CPU. So by default every basket
takes part but the engine (and each model baseline, on the same queries) is asked about
`--per-basket` (4) of its products or a `--share` (a quarter) of them, whichever is more, drawn
with a seeded RNG, each answer standing for n / asked queries of a basket of n: its figures
estimate the mean over every query, and the report gives their standard error (`--per-basket 0`
asks every query: no sampling, no error). Four answers for a 300-product basket left the gap
between the engine and EASE (a few tenths of a point) to chance; a quarter of each basket
brings the sampling's standard deviation of that gap to about 0.15 points. The model baselines
sum (or max) a basket's rows once and take each hidden product's row out.
The engine's coverage counts the queries asked. Work is split over `--jobs` processes (default:
one per CPU). `--until` ends the test window: settings are chosen on a validation month (split a
month earlier, test until the official split) so that the official figure is measured once.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import random
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from offer_service.commerce.ingest import NEIGHBORS_K
from offer_service.decision import affinity, decide, ease
from offer_service.decision.candidates import CandidateInputs, generate
from offer_service.decision.rules import diversify
from offer_service.decision.rules import price as price_offers
from offer_service.domain.orders import Order
from offer_service.domain.policy import StoreRules
from offer_service.domain.products import Product
from offer_service.domain.records import PairCount
from offer_service.domain.surfaces import Surface
from offer_service.domain.time import epoch_ms, parse_date
from offer_service.types import DAY_MS
from offer_service_tools import baselines
from offer_service_tools.baselines import MODEL_METHODS, Baselines
from offer_service_tools.best_sellers import (
    _first_outside,
    _with_hidden,
    best_seller_ranking,
    random_ranking,
)

# The engine as a store runs it, and as it ranks with value left out, by price and by margin:
# the trade-off of docs/evaluation.md. Asked the sampled queries, like the model baselines.
ENGINE_VARIANTS: dict[str, dict[str, Any]] = {
    "engine": {},
    "engine_relevance": {"value_weight": 0.0},
    "engine_price_0.25": {"value": "price", "value_weight": 0.25},
    "engine_price_0.5": {"value": "price", "value_weight": 0.5},
    "engine_price": {"value": "price", "value_weight": 1.0},
    "engine_margin": {"value": "margin", "value_weight": 1.0},
}
SAMPLED = (*ENGINE_VARIANTS, *MODEL_METHODS)
# Cheap enough to answer every query.
EVERY_QUERY = ("best_sellers", "best_sellers_30d", "random")
METHODS = (*SAMPLED, *EVERY_QUERY)
RECENT_DAYS = 30  # "best sellers, last 30 days" and the model's validation window
# Basket sizes (distinct products) the text report breaks hit rates down by.
SIZES = ((2, 10, "2-10"), (11, 30, "11-30"), (31, 100, "31-100"), (101, math.inf, "101+"))
DEFAULT_PER_BASKET = 4
# ...or this share of a basket's products, whichever is more: a wholesale basket's queries are a
# third of all, and 4 answers standing for 300 left the engine-against-EASE gap to chance.
DEFAULT_SHARE = 0.25
DEFAULT_SEED = 7
BEST_SELLERS_PER_CATEGORY = 20  # as the engine reads them (engine.BEST_SELLERS_PER_CATEGORY)

BAD_K = "--k takes positive integers separated by commas, e.g. 1,2,5"
BAD_SPLIT = "--split takes a date, YYYY-MM-DD (UTC)"
BAD_UNTIL = "--until takes a date, YYYY-MM-DD (UTC), after --split"


@dataclass(slots=True)
class Trained:
    """What a store knows at the split: its catalog, affinity and best sellers."""

    products: dict[str, Product]  # every product, at its last price before the split
    catalog: list[str]  # products sold before the split: what any method may recommend
    catalog_set: frozenset[str]
    neighbors: dict[str, list[PairCount]]
    basket_counts: dict[str, int]
    basket_total: int
    best_sellers: list[str]  # the catalog, most baskets first, then id
    best_seller_rank: dict[str, int]
    category_best_sellers: dict[str, list[tuple[str, int]]]
    family_members: dict[str, list[Product]]
    rules: StoreRules
    # The best sellers of the last RECENT_DAYS before the split, then the rest by all-time rank.
    recent_best_sellers: list[str] = field(default_factory=list)
    recent_rank: dict[str, int] = field(default_factory=dict)
    baselines: Baselines | None = None
    lam: float | None = None  # the item model's, chosen on the last RECENT_DAYS before the split
    tuned: tuple[float, float] | None = None  # its title weight and popularity exponent


@dataclass(slots=True)
class Tally:
    """Weighted hits per k, reciprocal ranks and recommended products of one method."""

    hits: dict[int, float]
    reciprocal: float = 0.0
    shown: set[str] = field(default_factory=set)
    # Sampling variance of the estimated number of hits per k (0 when every query is asked).
    variance: dict[int, float] = field(default_factory=dict)
    # The hidden products' prices (minor units) found within k, weighted like the hits.
    revenue: dict[int, float] = field(default_factory=dict)
    weight: float = 0.0  # the queries this method answered

    def add(
        self,
        ranking: Sequence[str],
        hidden: str,
        weight: float,
        ks: Sequence[int],
        price: int = 0,
    ) -> None:
        self.shown.update(ranking)
        self.weight += weight
        if hidden in ranking:
            rank = ranking.index(hidden) + 1
            self.reciprocal += weight / rank
            for k in ks:
                if rank <= k:
                    self.hits[k] += weight
                    self.revenue[k] = self.revenue.get(k, 0.0) + weight * price

    def merge(self, other: Tally) -> None:
        self.weight += other.weight
        for k, v in other.revenue.items():
            self.revenue[k] = self.revenue.get(k, 0.0) + v
        for k, v in other.hits.items():
            self.hits[k] += v
        for k, v in other.variance.items():
            self.variance[k] = self.variance.get(k, 0.0) + v
        self.reciprocal += other.reciprocal
        self.shown |= other.shown


@dataclass(slots=True)
class Result:
    ks: tuple[int, ...]
    tallies: dict[str, Tally]
    weight: float = 0.0  # the leave-one-out queries
    evaluated: int = 0  # the queries the engine was asked
    baskets: int = 0
    unseen: float = 0.0  # weight of queries whose hidden product was never sold before
    # basket size label -> [baskets, weight, weighted hits at max k per method in METHODS order]
    sizes: dict[str, list[float]] = field(default_factory=dict)

    def merge(self, other: Result) -> None:
        for name, tally in other.tallies.items():
            self.tallies[name].merge(tally)
        self.weight += other.weight
        self.evaluated += other.evaluated
        self.baskets += other.baskets
        self.unseen += other.unseen
        for label, row in other.sizes.items():
            mine = self.sizes.setdefault(label, [0.0] * len(row))
            for i, v in enumerate(row):
                mine[i] += v

    def standard_error(self, k: int) -> float:
        """The standard error of the engine's hit rate@k from sampling hidden products."""
        return math.sqrt(self.tallies["engine"].variance.get(k, 0.0)) / (self.weight or 1.0)

    def metrics(self, catalog_size: int) -> dict[str, dict[str, float]]:
        """Per method: hit rate@k, MRR and coverage; revenue@k is the mean price found within k
        per query, in minor units. Every rate is over all the queries (a sampled method's
        weights stand for the queries it was not asked)."""
        w = self.weight or 1.0
        return {
            name: {
                **{f"hit_rate@{k}": t.hits[k] / w for k in self.ks},
                "mrr": t.reciprocal / w,
                "coverage": len(t.shown) / catalog_size if catalog_size else 0.0,
                **{f"revenue@{k}": t.revenue.get(k, 0.0) / w for k in self.ks},
            }
            for name, t in self.tallies.items()
            if t.weight > 0 or not self.weight
        }


def empty_result(ks: Sequence[int]) -> Result:
    return Result(tuple(ks), {m: Tally(dict.fromkeys(ks, 0.0)) for m in METHODS})


def train(
    orders: Iterable[Order],
    products: Iterable[Product],
    rules: StoreRules | None = None,
    *,
    model: bool = False,
    with_baselines: bool = True,
) -> Trained:
    """The store's state after importing `orders` (all before the split): affinity as
    `ingest.rebuild_affinity` computes it (with `model`, the item model's neighbour lists as
    `offer-service train` stores them), prices as of the last order line seen, and the
    baselines' matrices."""
    rules = rules or StoreRules()
    by_id = {p.id: p for p in products}
    last_price: dict[str, tuple[int, int]] = {}
    baskets = []
    dated: list[tuple[int, frozenset[str]]] = []
    for order in orders:
        baskets.append(order.product_ids)
        dated.append((order.placed_at_ms, frozenset(order.product_ids)))
        for line in order.lines:
            seen = last_price.get(line.product_id)
            if seen is None or order.placed_at_ms >= seen[0]:
                last_price[line.product_id] = (order.placed_at_ms, line.price)
    for pid, (_, price) in last_price.items():
        p = by_id.get(pid)
        by_id[pid] = (
            Product(id=pid, title=pid, price=price) if p is None else replace(p, price=price)
        )
    counts = affinity.count_pairs(baskets)
    neighbors = affinity.build_neighbor_lists(
        counts, k=NEIGHBORS_K, min_pair_count=rules.min_pair_count
    )
    lam: float | None = None
    tuned: tuple[float, float] | None = None
    matrices: Baselines | None = None
    if (model or with_baselines) and any(len(b) >= 2 for b in baskets):
        titles = {pid: p.title for pid, p in by_id.items()}
        fitted = ease.train(dated, k=NEIGHBORS_K, window_ms=RECENT_DAYS * DAY_MS, titles=titles)
        lam = fitted.lam
        tuned = (fitted.title_weight, fitted.exponent)
        if model:
            neighbors = fitted.lists
        if with_baselines:
            matrices = baselines.build(baskets, lam)
    del baskets
    basket_counts = counts.basket_counts
    catalog = sorted(basket_counts)
    best = sorted(catalog, key=lambda pid: (-basket_counts[pid], pid))
    by_category: dict[str, list[tuple[str, int]]] = {}
    for pid in best:
        category = by_id[pid].category
        if category and len(by_category.setdefault(category, [])) < BEST_SELLERS_PER_CATEGORY:
            by_category[category].append((pid, basket_counts[pid]))
    families: dict[str, list[Product]] = {}
    for p in by_id.values():
        if p.family:
            families.setdefault(p.family, []).append(p)
    last = max((t for t, _ in dated), default=0)
    recent: dict[str, int] = {}
    for t, basket in dated:
        if t > last - RECENT_DAYS * DAY_MS:
            for pid in basket:
                recent[pid] = recent.get(pid, 0) + 1
    rank = {pid: i for i, pid in enumerate(best)}
    recent_best = sorted(catalog, key=lambda pid: (-recent.get(pid, 0), rank[pid]))
    return Trained(
        products=by_id,
        catalog=catalog,
        catalog_set=frozenset(catalog),
        neighbors=neighbors,
        basket_counts=basket_counts,
        basket_total=counts.n,
        best_sellers=best,
        best_seller_rank=rank,
        category_best_sellers=by_category,
        family_members=families,
        rules=rules,
        recent_best_sellers=recent_best,
        recent_rank={pid: i for i, pid in enumerate(recent_best)},
        baselines=matrices,
        lam=lam,
        tuned=tuned,
    )


def _cart_inputs(trained: Trained, cart: Sequence[str]) -> CandidateInputs:
    anchors = tuple(trained.products[pid] for pid in sorted(cart) if pid in trained.products)
    return CandidateInputs(
        surface=Surface.CART,
        anchors=anchors,
        products=trained.products,
        neighbors=trained.neighbors,
        basket_counts=trained.basket_counts,
        basket_total=trained.basket_total,
        family_members={
            f: trained.family_members.get(f, []) for f in {a.family for a in anchors if a.family}
        },
        category_best_sellers={
            c: trained.category_best_sellers.get(c, [])
            for c in {a.category for a in anchors if a.category}
        },
        min_pair_count=trained.rules.min_pair_count,
    )


def engine_ranking(trained: Trained, cart: Sequence[str], k: int) -> list[str]:
    """The engine's cart cross-sells for `cart`, best first, at most k (see the module doc)."""
    prepared = decide.prepare(_cart_inputs(trained, cart), trained.rules)
    return [o.candidate.product.id for o in diversify(prepared)[:k]]


def engine_rankings(trained: Trained, cart: Sequence[str], k: int) -> dict[str, list[str]]:
    """`engine_ranking` under each of ENGINE_VARIANTS' rules: candidates generated and priced
    once (the variants differ in ranking only), every candidate priced, so each list is the
    one `decide.prepare` keeps."""
    inputs = _cart_inputs(trained, cart)
    anchor_ids = frozenset(a.id for a in inputs.anchors)
    subtotal = decide.anchors_subtotal(inputs)
    candidates = generate(inputs)
    priced = price_offers(
        candidates, inputs.surface, anchor_ids, None, trained.rules, subtotal=subtotal
    )
    out: dict[str, list[str]] = {}
    for name, change in ENGINE_VARIANTS.items():
        rules = trained.rules.model_copy(update=change) if change else trained.rules
        ranked = diversify(decide.arrange(priced, inputs.surface, rules))[:k]
        out[name] = [o.candidate.product.id for o in ranked]
    return out


def evaluate_baskets(
    trained: Trained,
    baskets: Sequence[tuple[str, Sequence[str]]],
    ks: Sequence[int],
    *,
    per_basket: int = DEFAULT_PER_BASKET,
    seed: int = DEFAULT_SEED,
    share: float = DEFAULT_SHARE,
) -> Result:
    """Leave-one-out over `baskets` ((basket id, product ids)); baskets of fewer than two
    distinct products are skipped. The engine and the model baselines are asked, per basket of
    n, max(`per_basket`, ceil(`share` x n)) hidden products (all n when that is n or more, or
    when `per_basket` is 0). Deterministic per basket, whatever the batching."""
    result = empty_result(ks)
    k_max = max(ks)
    catalog = trained.catalog_set
    tallies = result.tallies
    prices = {pid: p.price for pid, p in trained.products.items()}
    sampled = [m for m in SAMPLED if m in ENGINE_VARIANTS or trained.baselines is not None]
    for basket_id, product_ids in baskets:
        items = sorted(set(product_ids))
        n = len(items)
        if n < 2:
            continue
        rng = random.Random(f"{seed}:{basket_id}")
        m = n if not per_basket else min(n, max(per_basket, math.ceil(share * n)))
        asked = set(items if m == n else rng.sample(items, m))
        weight = n / len(asked)
        basket = frozenset(items)
        outside = best_seller_ranking(trained, basket, k_max)
        recent_outside = _first_outside(trained.recent_best_sellers, basket, k_max)
        label = next(name for low, high, name in SIZES if low <= n <= high)
        model_rankings = (
            trained.baselines.leave_one_out(items, sorted(asked), k_max)
            if trained.baselines is not None
            else {}
        )
        by_size = result.sizes.setdefault(label, [0.0] * (2 + len(METHODS)))
        by_size[0] += 1
        by_size[1] += n
        result.baskets += 1
        result.weight += n
        engine_hits = dict.fromkeys(ks, 0)
        for h in items:
            if h not in catalog:
                result.unseen += 1
            value = prices.get(h, 0)
            rankings = {
                "best_sellers": _with_hidden(trained, outside, h, k_max),
                "best_sellers_30d": _with_hidden(
                    trained, recent_outside, h, k_max, trained.recent_rank
                ),
                "random": random_ranking(trained, basket, k_max, rng, hidden=h),
            }
            w = {name: 1.0 for name in rankings}
            if h in asked:
                cart = [p for p in items if p != h]
                rankings.update(engine_rankings(trained, cart, k_max))
                rankings.update(model_rankings.get(h, {}))
                w.update(dict.fromkeys(sampled, weight))
                result.evaluated += 1
                ranking = rankings["engine"]
                if h in ranking:
                    for k in ks:
                        engine_hits[k] += ranking.index(h) < k
            for name, ranking in rankings.items():
                tallies[name].add(ranking, h, w[name], ks, value)
                by_size[2 + METHODS.index(name)] += w[name] * (h in ranking)
        m = len(asked)
        if 1 < m < n:
            # The estimated total n * mean hits has variance n^2 (1 - m/n) s^2 / m (sampling
            # without replacement), s^2 the sample variance of the 0/1 hits.
            for k, x in engine_hits.items():
                s2 = (x - x * x / m) / (m - 1)
                variance = tallies["engine"].variance
                variance[k] = variance.get(k, 0.0) + n * n * (1 - m / n) * s2 / m
    return result


# Set before the worker processes fork, so they share the trained state without pickling it.
_WORK: tuple[Trained, list[tuple[str, list[str]]], tuple[int, ...], int, int, float, int] | None = (
    None
)


def _work_chunk(index: int) -> Result:
    assert _WORK is not None
    trained, baskets, ks, per_basket, seed, share, chunks = _WORK
    return evaluate_baskets(
        trained, baskets[index::chunks], ks, per_basket=per_basket, seed=seed, share=share
    )


def evaluate(
    trained: Trained,
    baskets: list[tuple[str, list[str]]],
    ks: Sequence[int],
    *,
    per_basket: int = DEFAULT_PER_BASKET,
    seed: int = DEFAULT_SEED,
    jobs: int = 1,
    share: float = DEFAULT_SHARE,
) -> Result:
    """`evaluate_baskets` over `jobs` forked processes (in this one when fork is unavailable)."""
    global _WORK
    ks = tuple(ks)
    if jobs <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return evaluate_baskets(trained, baskets, ks, per_basket=per_basket, seed=seed, share=share)
    # Many small interleaved chunks: basket sizes vary 300-fold, and big ones come in runs.
    chunks = jobs * 16
    _WORK = (trained, baskets, ks, per_basket, seed, share, chunks)
    try:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            result = empty_result(ks)
            for part in pool.imap_unordered(_work_chunk, range(chunks)):
                result.merge(part)
    finally:
        _WORK = None
    return result


# --- the command ---------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="offline hit rate, MRR, coverage and revenue of the engine against baselines",
    )
    p.add_argument("--orders", required=True, help="Online Retail CSV or .tar.xz of daily CSVs")
    p.add_argument("--format", default="online-retail", choices=["online-retail"])
    p.add_argument("--split", required=True, help="train before this UTC date, test from it")
    p.add_argument("--until", help="test only on orders before this UTC date (a validation window)")
    p.add_argument("--k", default="1,2,5", help="cut-offs, comma-separated (default 1,2,5)")
    p.add_argument(
        "--per-basket",
        type=int,
        default=DEFAULT_PER_BASKET,
        help=f"hidden products drawn per basket at least, 0 = all (default {DEFAULT_PER_BASKET})",
    )
    p.add_argument(
        "--share",
        type=float,
        default=DEFAULT_SHARE,
        help=f"...or this share of each basket's products if more (default {DEFAULT_SHARE})",
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise SystemExit(f"error: {BAD_K}") from None
    if not ks or ks[0] < 1:
        raise SystemExit(f"error: {BAD_K}")
    return tuple(ks)


def parse_split(text: str, error: str = BAD_SPLIT) -> int:
    try:
        day = parse_date(text)
    except ValueError:
        raise SystemExit(f"error: {error}") from None
    return epoch_ms(datetime(day.year, day.month, day.day, tzinfo=UTC))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from offer_service.importers.online_retail import parse_online_retail

    ks = parse_ks(args.k)
    split_ms = parse_split(args.split)
    until_ms = math.inf if args.until is None else parse_split(args.until, BAD_UNTIL)
    if until_ms <= split_ms:
        raise SystemExit(f"error: {BAD_UNTIL}")
    if args.per_basket == 1 or args.per_basket < 0:
        # One answer per basket leaves its share of the standard error unknown.
        raise SystemExit("error: --per-basket takes 0 (every query) or at least 2")
    if not 0 <= args.share <= 1:
        raise SystemExit("error: --share takes a number from 0 to 1")
    path = Path(args.orders)
    if not path.exists():
        print(f"error: no such file: {path}", file=sys.stderr)
        return 2
    started = time.monotonic()
    parsed = parse_online_retail(path)
    before = [o for o in parsed.orders if o.placed_at_ms < split_ms]
    after = [
        (o.id, sorted(o.product_ids))
        for o in parsed.orders
        if split_ms <= o.placed_at_ms < until_ms
    ]
    trained = train(before, parsed.products, model=True)
    result = evaluate(
        trained,
        after,
        ks,
        per_basket=args.per_basket,
        seed=args.seed,
        jobs=args.jobs,
        share=args.share,
    )
    seconds = time.monotonic() - started
    metrics = result.metrics(len(trained.catalog))
    if args.json:
        sys.stdout.write(orjson.dumps(metrics).decode() + "\n")
    else:
        from offer_service_tools.evaluation_table import table

        text = table(
            metrics,
            result,
            ks,
            len(before),
            len(trained.catalog),
            args.split,
            seconds,
            args.until,
            trained.lam,
            trained.tuned,
        )
        sys.stdout.write(text)
    return 0
